"""The command lines as a user types them: files written, seeds honoured, bad input refused in one line."""

import json

import pytest
import torch
from PIL import Image

import fastgen
from fastgen.environment import cpu_has_fast_bf16
from tests.helpers import run_cli, train_cli


@pytest.mark.slow
@pytest.mark.parametrize("model", ["gan", "vae"])
def test_short_run_writes_every_file(mnist, tmp_path, model):
    out = tmp_path / "run"
    result = train_cli("--model", model, "--max-steps", "30", "--data-dir", str(mnist), "--out", str(out), "--amp")
    assert result.returncode == 0, result.stderr
    assert "summary.json" in result.stdout
    config = json.loads((out / "config.json").read_text())
    assert config["config"]["model"] == model and config["versions"]["torch"] == torch.__version__
    assert config["device_name"]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and rows[0]["step"] == 30
    expected = {"gan": {"d_loss", "g_loss", "d_real", "d_fake"}, "vae": {"loss", "bce", "kl", "test_loss"}}[model]
    assert expected | {"epoch", "step", "epoch_s", "samples_per_s"} <= set(rows[0])
    summary = json.loads((out / "summary.json").read_text())
    # --amp trains in bf16 where the CPU has fast bf16, else in float32 after one notice
    assert summary["steps"] == 30 and summary["samples_per_s"] > 0 and summary["amp"] is cpu_has_fast_bf16()
    # The CPU default path: compiled (it measured faster for both models), never CUDA graphs; said once.
    assert summary["compile"] is True and summary["cuda_graphs"] is False
    assert result.stderr.count("compiling the training step") == 1
    assert "failed" not in result.stderr and "No CUDA runtime" not in result.stderr
    for png in ["losses.png", "samples/epoch_0001.png"] + (["samples/recon_0001.png"] if model == "vae" else []):
        with Image.open(out / png) as image:
            image.verify()
    with Image.open(out / "samples/epoch_0001.png") as image:
        assert image.size == (8 * 30 + 2, 8 * 30 + 2)  # an 8x8 grid of 28px images with 2px padding
    model_obj = fastgen.load(out)
    images = model_obj.sample(5, seed=0)
    assert images.shape == (5, 1, 28, 28) and 0 <= images.min() and images.max() <= 1
    assert result.stderr.count("--amp") == (0 if cpu_has_fast_bf16() else 1)


@pytest.mark.slow
def test_same_seed_same_losses_different_seed_different_losses(mnist, tmp_path):
    def losses(name, seed):
        out = tmp_path / name
        result = train_cli(
            "--model", "gan", "--max-steps", "15", "--seed", str(seed), "--data-dir", str(mnist), "--out", str(out), "--quiet"
        )
        assert result.returncode == 0, result.stderr
        return json.loads((out / "metrics.jsonl").read_text())["d_loss"]

    assert losses("a", 1) == losses("b", 1)
    assert losses("a2", 1) != losses("c", 2)


@pytest.mark.slow
def test_sample_cli_writes_a_grid(mnist, tmp_path):
    out = tmp_path / "run"
    assert (
        train_cli(
            "--model", "vae", "--max-steps", "5", "--data-dir", str(mnist), "--out", str(out), "--quiet", "--no-compile"
        ).returncode
        == 0
    )
    grid = tmp_path / "grid.png"
    result = run_cli("fastgen.sample", str(out), "--n", "16", "--out", str(grid), "--device", "cpu")
    assert result.returncode == 0, result.stderr
    with Image.open(grid) as image:
        assert image.size == (4 * 30 + 2, 4 * 30 + 2)


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--model", "gan", "--epochs", "-1"], "--epochs"),
        pytest.param(["--model", "gan", "--epochs", "0"], "--epochs", marks=pytest.mark.slow),
        pytest.param(["--model", "gan", "--batch-size", "0"], "--batch-size", marks=pytest.mark.slow),
        pytest.param(["--model", "gan", "--batch-size", "70000"], "larger than the training split", marks=pytest.mark.slow),
        pytest.param(["--model", "gan", "--lr", "-3"], "--lr", marks=pytest.mark.slow),
        pytest.param(["--model", "gan", "--max-steps", "x"], "--max-steps", marks=pytest.mark.slow),
        pytest.param(["--model", "diffusion"], "--model", marks=pytest.mark.slow),
        pytest.param([], "--model", marks=pytest.mark.slow),
        pytest.param(["--model", "gan", "--kernels", "triton"], "--kernels triton", marks=pytest.mark.slow),
        pytest.param(["--model", "gan", "--dataset", "cifar"], "--dataset", marks=pytest.mark.slow),
        pytest.param(["--model", "gan", "--amp-dtype", "fp8"], "--amp-dtype", marks=pytest.mark.slow),
    ],
)
def test_bad_values_exit_2_with_one_line(mnist, tmp_path, args, needle):
    result = train_cli(*args, "--data-dir", str(mnist), "--out", str(tmp_path / "o"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without CUDA")
def test_cuda_asked_for_without_cuda_is_one_line(mnist, tmp_path):
    result = run_cli(
        "fastgen.train",
        "--model",
        "gan",
        "--device",
        "cuda",
        "--data-dir",
        str(mnist),
        "--out",
        str(tmp_path / "o"),
        "--max-steps",
        "1",
        cwd=tmp_path,
    )
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "no CUDA device" in result.stderr


@pytest.mark.slow
def test_cuda_graphs_on_cpu_are_refused_with_a_notice_and_training_goes_on(mnist, tmp_path):
    out = tmp_path / "run"
    result = train_cli(
        "--model", "gan", "--max-steps", "3", "--cuda-graphs", "--data-dir", str(mnist), "--out", str(out), "--quiet"
    )
    assert result.returncode == 0 and "--cuda-graphs needs a CUDA device" in result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["cuda_graphs"] is False


@pytest.mark.slow
def test_out_holding_another_run_is_refused_unless_overwrite(mnist, tmp_path):
    out = tmp_path / "run"
    args = ["--model", "gan", "--max-steps", "2", "--data-dir", str(mnist), "--out", str(out), "--quiet"]
    assert train_cli(*args).returncode == 0
    again = train_cli(*args)
    assert again.returncode == 2 and "--overwrite" in again.stderr
    assert train_cli(*args, "--overwrite").returncode == 0


@pytest.mark.slow
def test_corrupt_weights_file_is_one_line(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"not a safetensors file")
    result = run_cli("fastgen.sample", str(tmp_path), "--out", str(tmp_path / "g.png"))
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "corrupt" in result.stderr


@pytest.mark.slow
def test_unwritable_out_is_one_line(mnist, tmp_path):
    (tmp_path / "a-file").write_text("")
    result = train_cli("--model", "gan", "--max-steps", "1", "--data-dir", str(mnist), "--out", str(tmp_path / "a-file" / "run"))
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "cannot write to --out" in result.stderr
