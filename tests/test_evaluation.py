"""The evaluator, its cache, the scores' sanity on real data, the VAE likelihood, and the two CLIs.

The tests of quality (the evaluator's accuracy, the scores of real digits) need real MNIST; the others
run on the synthetic MNIST, with an evaluator trained on synthetic digits where they need one.
"""

import json
import math

import pytest
import torch

from fastgen import VAE, Generator
from fastgen.data import load_split
from fastgen.errors import DataError
from fastgen.evaluation.classifier import Recipe, evaluator_path, load_evaluator, to_unit
from fastgen.evaluation.likelihood import iwae_nll, loss_per_image
from fastgen.evaluation.scoring import evaluate, reference_scores
from fastgen.models.weights import read_weights
from tests.helpers import run_cli, train_cli, write_split


@pytest.mark.slow
def test_evaluator_reaches_99_percent_on_the_mnist_test_split(real_evaluator, real_mnist):
    assert real_evaluator.accuracy >= 0.99
    images, labels = load_split("mnist", "test", real_mnist, download=False)
    _, probs = real_evaluator.to("cpu").features_and_probs(to_unit(images))
    assert (probs.argmax(1) == labels).double().mean().item() == real_evaluator.accuracy  # the recorded one is real


def test_evaluator_cache_is_reused_and_a_corrupt_file_retrains(tmp_path, mnist):
    recipe = Recipe(epochs=1, train_images=512)
    first = load_evaluator("mnist", recipe, data_dir=mnist, download=False, folder=tmp_path, progress=False)
    path = evaluator_path("mnist", recipe, tmp_path)
    assert first.path == path and path.with_suffix(".json").exists()
    stamp = path.stat().st_mtime_ns
    again = load_evaluator("mnist", recipe, data_dir=mnist, download=False, folder=tmp_path, progress=False)
    assert path.stat().st_mtime_ns == stamp and again.sha256 == first.sha256

    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # one flipped byte in the weights: the checksum catches it
    path.write_bytes(bytes(raw))
    retrained = load_evaluator("mnist", recipe, data_dir=mnist, download=False, folder=tmp_path, progress=False)
    # Training is deterministic, so the retrained network is the very same file.
    assert retrained.sha256 == first.sha256 and path.read_bytes() != bytes(raw)

    path.write_bytes(path.read_bytes()[:100])  # truncated
    assert load_evaluator("mnist", recipe, data_dir=mnist, download=False, folder=tmp_path, progress=False).sha256 == first.sha256
    # Another recipe is another cache entry.
    assert evaluator_path("mnist", Recipe(epochs=2, train_images=512), tmp_path) != path


@pytest.mark.slow
def test_training_split_scores_near_best_and_noise_far_worse(real_evaluator, real_mnist):
    ref = reference_scores(real_evaluator, n=3000, data_dir=real_mnist, download=False)
    real, noise = ref["train_split"], ref["uniform_noise"]
    assert real["frechet_distance"] < 5 and noise["frechet_distance"] > 100 * real["frechet_distance"]
    assert real["inception_style_score"] > 9.3 and noise["inception_style_score"] < 2
    assert real["class_kl_to_uniform"] < 0.01 and noise["class_kl_to_uniform"] > 1
    assert real["precision"] > 0.75 and real["recall"] > 0.75
    assert noise["recall"] < 0.01 and noise["precision"] < real["precision"]
    assert sum(real["class_histogram"]) == pytest.approx(1.0, abs=1e-5)


def test_iwae_bound_tightens_with_k_and_k1_matches_the_test_loss(mnist):
    torch.manual_seed(0)
    vae = VAE().eval()
    images, _ = load_split("mnist", "test", mnist, download=False)
    images = images[:300]
    elbo = loss_per_image(vae, images, seed=0)
    k1 = iwae_nll(vae, images, k=1, seed=0)
    k64 = iwae_nll(vae, images, k=64, seed=0)
    assert k1 == pytest.approx(elbo, rel=0.01)  # one importance sample is the ELBO (other noise draws)
    assert k64 < k1
    with pytest.raises(ValueError, match="k must be"):
        iwae_nll(vae, images, k=0)


def test_evaluate_api_on_a_generator_module(evaluator, mnist):
    torch.manual_seed(0)
    result = evaluate(Generator(), n=200, device="cpu", data_dir=mnist, download=False, evaluator=evaluator)
    assert result["model"] == "gan" and result["n"] == 200 and "test_loss" not in result
    assert all(math.isfinite(result[k]) for k in ("frechet_distance", "inception_style_score", "precision", "recall"))
    # An untrained generator is far from the digits: far worse than the training split scored the same way.
    assert result["frechet_distance"] > 10 * result["reference"]["train_split"]["frechet_distance"]
    assert result["recall"] < result["reference"]["train_split"]["recall"]
    without = evaluate(Generator(), n=200, device="cpu", data_dir=mnist, download=False, evaluator=evaluator, reference=False)
    assert "reference" not in without


@pytest.mark.slow
def test_evaluate_cli_writes_eval_json_for_a_vae_run(tmp_path, mnist, evaluator_cache):
    out = tmp_path / "run"
    assert (
        train_cli(
            "--model", "vae", "--max-steps", "30", "--data-dir", str(mnist), "--out", str(out), "--quiet", "--no-compile"
        ).returncode
        == 0
    )
    result = run_cli(
        "fastgen.evaluate",
        str(out),
        "--n",
        "300",
        "--iwae-k",
        "5",
        "--device",
        "cpu",
        "--data-dir",
        str(mnist),
        "--no-download",
        cwd=tmp_path,
        cache=evaluator_cache,
    )
    assert result.returncode == 0, result.stderr
    assert "training the mnist evaluator" not in result.stderr  # the cached one was used
    scores = json.loads((out / "eval.json").read_text())
    assert scores["model"] == "vae" and scores["iwae_k"] == 5 and scores["iwae_nll"] <= scores["test_loss"] + 5
    assert set(scores["reference"]) == {"train_split", "uniform_noise"}
    assert "frechet distance" in result.stdout and "IWAE NLL, k=5" in result.stdout


@pytest.fixture(scope="module")
def gan_run(tmp_path_factory, mnist):
    """A 2-step GAN run, trained once for the refusals below."""
    run_dir = tmp_path_factory.mktemp("gan") / "run"
    result = train_cli(
        "--model", "gan", "--max-steps", "2", "--data-dir", str(mnist), "--out", str(run_dir), "--quiet", "--no-compile"
    )
    assert result.returncode == 0, result.stderr
    return run_dir


@pytest.mark.parametrize(
    "args, message",
    [
        pytest.param(["no-such-run"], "no fastgen weights at no-such-run", marks=pytest.mark.slow),
        pytest.param(["RUN", "--iwae-k", "5001"], "--iwae-k must be in [1, 5000]", marks=pytest.mark.slow),
        pytest.param(["RUN", "--n", "3"], "--n must be larger than 3", marks=pytest.mark.slow),
        pytest.param(["RUN", "--n", "0"], "argument --n: must be >= 1", marks=pytest.mark.slow),
    ],
)
def test_evaluate_cli_refuses_bad_input_in_one_line(tmp_path, mnist, evaluator_cache, gan_run, args, message):
    args = [str(gan_run) if a == "RUN" else a for a in args]
    result = run_cli(
        "fastgen.evaluate",
        *args,
        "--device",
        "cpu",
        "--data-dir",
        str(mnist),
        "--no-download",
        cwd=tmp_path,
        cache=evaluator_cache,
    )
    assert result.returncode == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (gan_run / "eval.json").exists()


@pytest.mark.slow
def test_evaluate_cli_reads_the_data_the_run_was_trained_on(tmp_path, mnist, evaluator_cache):
    """No --data-dir: the run's recorded (absolute) --data-dir is read, not $FASTGEN_DATA nor the cache.
    A relative --data-dir is given to training; evaluate runs elsewhere with $FASTGEN_DATA holding a corrupt
    MNIST, which fails loudly if it is read."""
    run_dir = tmp_path / "run"
    trained = train_cli(
        "--model",
        "vae",
        "--max-steps",
        "2",
        "--data-dir",
        mnist.name,
        "--out",
        str(run_dir),
        "--quiet",
        "--no-compile",
        cwd=mnist.parent,
    )
    assert trained.returncode == 0, trained.stderr
    assert json.loads((run_dir / "config.json").read_text())["config"]["data_dir"] == str(mnist.resolve())
    assert json.loads(read_weights(run_dir)[1]["config"])["data_dir"] == str(mnist.resolve())  # what evaluate reads
    write_split(tmp_path / "corrupt", n=64, split="train")
    write_split(tmp_path / "corrupt", n=64, split="test")
    (tmp_path / "corrupt" / "MNIST" / "raw" / "t10k-images-idx3-ubyte").write_bytes(b"\0\0\x08\x03")
    with pytest.raises(DataError, match="truncated"):  # reading it fails
        load_split("mnist", "test", tmp_path / "corrupt", download=False)
    (tmp_path / "elsewhere").mkdir()
    result = run_cli(
        "fastgen.evaluate",
        str(run_dir),
        "--n",
        "50",
        "--iwae-k",
        "1",
        "--device",
        "cpu",
        "--no-download",
        cwd=tmp_path / "elsewhere",
        cache=evaluator_cache,
        env={"FASTGEN_DATA": tmp_path / "corrupt"},
    )
    assert result.returncode == 0, result.stderr
    scores = json.loads((run_dir / "eval.json").read_text())
    assert scores["model"] == "vae" and set(scores["reference"]) == {"train_split", "uniform_noise"}


@pytest.mark.slow
def test_compare_quick_end_to_end_then_reuses_its_runs(tmp_path, mnist, evaluator_cache):
    out = tmp_path / "cmp"
    args = ["--quick", "--out", str(out), "--device", "cpu", "--data-dir", str(mnist), "--no-download"]
    result = run_cli("fastgen.compare", *args, cwd=tmp_path, cache=evaluator_cache)
    assert result.returncode == 0, result.stderr[-3000:]
    report = (out / "report.md").read_text()
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["epochs"] == [10, 50] and results["config"]["quick"] is True
    assert results["seeds"] == [0, 1] and results["config"]["draws"] == 2
    for model in ("gan", "vae"):
        for kind in ("raw", "ema"):
            scores = results["models"][model]["scores"][kind]
            assert set(scores) == {"10", "50"} and all(set(scores[e]) == {"0", "1"} for e in scores)
            assert all(scores[e][s]["weights"] == kind for e in scores for s in scores[e])
            assert all(math.isfinite(scores[e][s][k]) for e in scores for s in scores[e] for k in ("frechet_distance", "recall"))
            assert all(results["models"][model]["sampling"][kind][e]["frechet_distance"] > 0 for e in ("10", "50"))
        assert all(len(r["metrics"]) == 50 for r in results["models"][model]["runs"].values())
        assert f"| {model.upper()} epoch 50 |" in report
        seeds = results["models"][model]["scores"]["raw"]["10"]
        assert seeds["0"]["frechet_distance"] != seeds["1"]["frechet_distance"]  # two seeds, two trainings
    vae = results["models"]["vae"]["scores"]["raw"]
    assert all(vae["50"][s]["test_loss"] < vae["10"][s]["test_loss"] for s in ("0", "1"))
    for name in ("figures/metrics.png", "figures/losses.png", "figures/samples_epoch_0010.png", "figures/samples_epoch_0050.png"):
        assert f"]({name})" in report and (out / name).stat().st_size > 1000
    assert "## Conclusion" in report and "do not quote" in report and "with 2 seeds" in report

    checkpoint = out / "runs" / "gan" / "seed_1" / "checkpoint.safetensors"
    stamp = checkpoint.stat().st_mtime_ns
    again = run_cli("fastgen.compare", *args, cwd=tmp_path, cache=evaluator_cache)
    assert again.returncode == 0 and "training the" not in again.stderr
    assert checkpoint.stat().st_mtime_ns == stamp

    other = run_cli("fastgen.compare", *args, "--train-images", "2048", cwd=tmp_path, cache=evaluator_cache)
    assert other.returncode == 2 and "train_images 1024 (wanted 2048)" in other.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        pytest.param(["--seeds", "1"], "--seeds: must be >= 2", marks=pytest.mark.slow),
        pytest.param(["--draws", "1"], "--draws: must be >= 2", marks=pytest.mark.slow),
        pytest.param(["--ema", "1.5"], "--ema must be in (0, 1)", marks=pytest.mark.slow),
        pytest.param(["--ema", "0"], "--ema: must be > 0", marks=pytest.mark.slow),
    ],
)
def test_compare_refuses_bad_seed_draw_and_ema_settings_in_one_line(tmp_path, args, message):
    result = run_cli("fastgen.compare", "--quick", "--out", str(tmp_path / "cmp"), *args)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
    assert not (tmp_path / "cmp").exists()
