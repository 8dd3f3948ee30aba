"""Groups of seeds (`--seeds S`): each replica of a group is the single run with its seed, drawing the same
initial weights, data order, latent noise and dropout masks, ending within float32's own rounding of it; a
group resumes exactly, a kill between two replicas' checkpoint writes never leaves a group a resume accepts at
mixed steps, and every replica's folder is a single run's (load, sample, resume)."""

import json
import os
import signal

import pytest
import torch
from safetensors.torch import load_file

import fastgen
from fastgen.config import TrainConfig
from fastgen.errors import FastgenError, Interrupted
from fastgen.models.stacked import replica_state
from fastgen.ops import cpu_backend, native
from fastgen.training import group as seed_group
from fastgen.training import memory
from fastgen.training.compiled_step import build_step
from fastgen.training.trainers import TRAINERS
from tests.helpers import signal_after_step, train_cli

SEEDS = (4, 5, 6)
KERNELS = ["eager"] + (["native"] if native.load() else [])
NETWORKS = {"gan": ("generator", "discriminator"), "vae": ("vae",)}
STEPS = 5


def _trainer(model, kernels, dtype=torch.float32, **config):
    config = TrainConfig(model=model, kernels=kernels, ema=0, **config).resolved()
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        return TRAINERS[model](config, torch.device("cpu"))
    finally:
        torch.set_default_dtype(previous)


def _batches(model, seed=0):
    """STEPS batches of 3 replicas x 16 images in the model's data range."""
    x = torch.rand(STEPS, len(SEEDS), 16, 784, generator=torch.Generator().manual_seed(seed))
    return x * 2 - 1 if model == "gan" else x


def _states(trainer, replica=None):
    """The trainer's networks' states (one replica's for a group), by '<network>.<name>'."""
    states = {}
    for network in NETWORKS[trainer.__class__.__name__[:3].lower()]:
        module = getattr(trainer, network)
        state = module.state_dict() if replica is None else replica_state(module, replica)
        states.update({f"{network}.{k}": v for k, v in state.items()})
    return states


def _float64_runs(model, kernels, singles):
    """The float64 run of each seed: the single run's initial weights and keys, every draw the same (masks and
    noise are keyed)."""
    references = [_trainer(model, kernels, dtype=torch.float64, seed=seed) for seed in SEEDS]
    for reference, single in zip(references, singles):
        state = _states(single)
        if model == "gan":
            reference.noise_key.copy_(single.noise_key)
        for network in NETWORKS[model]:
            prefix = f"{network}."
            getattr(reference, network).load_state_dict({k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)})
    return references


def _assert_within_float32s_spread(group, singles, references):
    """The spread float32 shows, per tensor: how far the single float32 runs land from the float64 runs of their
    seeds, as the norm of the difference (the largest over the seeds; a norm rather than the largest element,
    since Adam's first steps move a weight whose gradient is near 0 by a whole step either way, so single
    elements flip between float32 runs that round differently). A replica rounds differently again (batched
    matmuls, compiled code), which put it up to 2.3x that far in these runs; 3x bounds it, while one other draw of
    noise lands about 1e5 times as far (measured: VAE encoder weights 1.5 against a float32 spread of 1.1e-5).
    Dropout keys must be equal: every replica's masks are its single run's."""
    spread = {}
    for single, reference in zip(singles, references):
        exact = _states(reference)
        for name, value in _states(single).items():
            if value.is_floating_point():
                spread[name] = max(spread.get(name, 0.0), (value.double() - exact[name]).norm().item())
    for s, (single, reference) in enumerate(zip(singles, references)):
        replica, alone, exact = _states(group, s), _states(single), _states(reference)
        for name, value in replica.items():
            if not value.is_floating_point():
                assert torch.equal(value, alone[name]), name
                continue
            distance = (value.double() - exact[name]).norm().item()
            assert distance <= 3 * spread[name] + 1e-7, (
                f"replica {s} {name}: {distance:.3g} from float64, spread {spread[name]:.3g}"
            )


@pytest.mark.parametrize("kernels", KERNELS)
@pytest.mark.parametrize("model", ["gan", "vae"])
def test_each_replica_draws_its_single_runs_numbers_and_lands_within_float32s_rounding(model, kernels):
    with cpu_backend("native" if kernels == "native" else "eager"):
        group = _trainer(model, kernels, seed=SEEDS[0], seeds=len(SEEDS))
        singles = [_trainer(model, kernels, seed=seed) for seed in SEEDS]
        start = [_states(single) for single in singles]
        for s in range(len(SEEDS)):  # the same initial weights and (seed, step) keys, bit for bit
            assert all(torch.equal(v, start[s][k]) for k, v in _states(group, s).items())
        references = _float64_runs(model, kernels, singles)
        for x in _batches(model):
            group.step(x)
            for s, (single, reference) in enumerate(zip(singles, references)):
                single.step(x[s])
                reference.step(x[s].double())
                if model == "gan":  # the next step's latent noise, bit for bit
                    assert torch.equal(group.noise_key[s], single.noise_key)
    _assert_within_float32s_spread(group, singles, references)


@pytest.mark.slow
@pytest.mark.parametrize("model", ["gan", "vae"])
def test_a_compiled_group_step_stays_within_float32s_rounding_of_the_single_runs(model):
    kernels = KERNELS[-1]
    with cpu_backend("native" if kernels == "native" else "eager"):
        group = _trainer(model, kernels, seed=SEEDS[0], seeds=len(SEEDS))
        step = build_step(group.step, torch.device("cpu"), True, False, pytest.fail)
        singles = [_trainer(model, kernels, seed=seed) for seed in SEEDS]
        references = _float64_runs(model, kernels, singles)
        for x in _batches(model, seed=1):
            step(x)
            for single, reference, xs in zip(singles, references, x):
                single.step(xs)
                reference.step(xs.double())
    _assert_within_float32s_spread(group, singles, references)


def _config(mnist, out, **overrides):
    settings = dict(
        model="gan",
        seed=SEEDS[0],
        seeds=len(SEEDS),
        epochs=2,
        train_images=160,
        data_dir=str(mnist),
        download=False,
        out=str(out),
        device="cpu",
        quiet=True,
        compile=False,
        kernels="eager",
    )
    return TrainConfig(**{**settings, **overrides})


def _files(folder):
    return {name: load_file(folder / name) for name in ("model.safetensors", "checkpoint.safetensors")}


def _assert_same_files(a_dir, b_dir):
    for seed in SEEDS:
        a, b = _files(a_dir / f"seed_{seed}"), _files(b_dir / f"seed_{seed}")
        for name in a:
            assert a[name].keys() == b[name].keys()
            assert all(torch.equal(a[name][k], b[name][k]) for k in a[name]), f"seed_{seed}/{name}"


@pytest.mark.parametrize("model", ["gan", "vae"])
def test_a_group_writes_single_run_folders_with_each_seeds_data_order_and_keys(mnist, tmp_path, model, evaluator):
    summary = fastgen.train(_config(mnist, tmp_path / "group", model=model))
    assert summary["seeds"] == list(SEEDS) and [r["seed"] for r in summary["replicas"]] == list(SEEDS)
    assert json.loads((tmp_path / "group" / "group.json").read_text())["position"]["epoch"] == 3
    for s, seed in enumerate(SEEDS):
        folder = tmp_path / "group" / f"seed_{seed}"
        info = json.loads((folder / "config.json").read_text())
        assert info["seed_group"] == {"out": str(tmp_path / "group"), "seeds": list(SEEDS), "replica": s}
        assert info["config"]["seed"] == seed and info["config"]["seeds"] == 1
        fastgen.train(_config(mnist, tmp_path / f"single_{seed}", model=model, seed=seed, seeds=1))
        alone = tmp_path / f"single_{seed}"
        replica, single = _files(folder)["checkpoint.safetensors"], _files(alone)["checkpoint.safetensors"]
        assert replica.keys() == single.keys()
        for key in single:  # data order (the generator's state) and every (seed, step) key, bit for bit
            if key.startswith("rng.data") or single[key].dtype == torch.int64:
                assert torch.equal(replica[key], single[key]), key
        rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
        alone_rows = [json.loads(line) for line in (alone / "metrics.jsonl").read_text().splitlines()]
        assert [r["epoch"] for r in rows] == [1, 2]
        first_metric = "d_loss" if model == "gan" else "loss"
        assert rows[-1][first_metric] == pytest.approx(alone_rows[-1][first_metric], rel=1e-3)
        assert (folder / "samples" / "epoch_0002.png").exists() and (folder / "losses.png").exists()
        loaded = fastgen.load(folder)  # a replica's folder is a single run's
        assert loaded.sample(4, seed=0).shape == (4, 1, 28, 28)
    scores = fastgen.evaluate(folder, n=200, iwae_k=2, device="cpu", data_dir=mnist, download=False, evaluator=evaluator)
    assert scores["model"] == model and scores["frechet_distance"] > 0
    with pytest.raises(FastgenError, match=f"is a group of seeds; name one replica's folder: .*seed_{SEEDS[0]}"):
        fastgen.load(tmp_path / "group")


def test_a_group_stopped_by_sigterm_resumes_to_the_uninterrupted_groups_weights(mnist, tmp_path, monkeypatch):
    fastgen.train(_config(mnist, tmp_path / "straight"))
    signal_after_step(monkeypatch, 7, signal.SIGTERM)
    with pytest.raises(Interrupted, match=f"--resume {tmp_path / 'cut'}"):
        fastgen.train(_config(mnist, tmp_path / "cut"))
    monkeypatch.undo()
    assert json.loads((tmp_path / "cut" / "group.json").read_text())["position"]["step"] == 7
    summary = fastgen.train(TrainConfig(resume=str(tmp_path / "cut"), quiet=True))
    assert summary["replicas"][0]["resumed_from_step"] == 7
    _assert_same_files(tmp_path / "straight", tmp_path / "cut")


@pytest.mark.parametrize("killed", ["before the commit", "between two replicas' moves"])
def test_a_kill_inside_a_group_checkpoint_resumes_exactly_and_never_mixes_steps(mnist, tmp_path, monkeypatch, killed):
    settings = dict(checkpoint_every=2, epochs=2)
    fastgen.train(_config(mnist, tmp_path / "straight", **settings))
    commits = []
    if killed == "before the commit":
        original = seed_group.write

        def write(out, config, seeds, position):
            if position is not None and position.step == 4:  # the second checkpoint: its pending files are written
                raise OSError("killed")
            original(out, config, seeds, position)

        monkeypatch.setattr(seed_group, "write", write)
    else:
        original = os.replace

        def replace(src, dst):
            if str(src).endswith(seed_group.PENDING_FILE):
                commits.append(dst)
                if len(commits) == 2 * len(SEEDS) - 1:  # the second commit: one replica moved, then the kill
                    raise OSError("killed")
            original(src, dst)

        monkeypatch.setattr(seed_group.os, "replace", replace)
    with pytest.raises(OSError, match="killed"):
        fastgen.train(_config(mnist, tmp_path / "cut", **settings))
    monkeypatch.undo()
    pending = [p for p in (tmp_path / "cut").glob("seed_*/" + seed_group.PENDING_FILE)]
    assert pending  # the kill left a write half done
    record, checkpoints = seed_group.load_checkpoints(tmp_path / "cut")
    expected = 2 if killed == "before the commit" else 4  # the last committed step
    assert record["position"]["step"] == expected and {c.position.step for c in checkpoints} == {expected}
    assert not list((tmp_path / "cut").glob("seed_*/" + seed_group.PENDING_FILE))
    fastgen.train(TrainConfig(resume=str(tmp_path / "cut"), quiet=True))
    _assert_same_files(tmp_path / "straight", tmp_path / "cut")


def test_a_replica_resumes_on_its_own_and_the_group_then_refuses_in_one_line(mnist, tmp_path):
    fastgen.train(_config(mnist, tmp_path / "group", epochs=1))
    replica = tmp_path / "group" / f"seed_{SEEDS[1]}"
    summary = fastgen.train(TrainConfig(resume=str(replica), epochs=2, quiet=True))
    assert summary["seed"] == SEEDS[1] and summary["epochs"] == 2 and summary["out"] == str(replica)
    with pytest.raises(FastgenError, match=f"replica seed_{SEEDS[1]} is at step 10 but the group at step 5"):
        fastgen.train(TrainConfig(resume=str(tmp_path / "group"), epochs=2, quiet=True))


def test_a_group_that_cannot_fit_is_refused_in_one_line(mnist, tmp_path, monkeypatch):
    each = memory.replica_bytes("gan", 32)
    monkeypatch.setattr(memory, "free_bytes", lambda device: int(2.5 * each / memory.USABLE_SHARE))
    with pytest.raises(FastgenError, match="at most 2 replicas fit: use fewer seeds") as info:
        fastgen.train(_config(mnist, tmp_path / "group"))
    assert "\n" not in str(info.value)
    assert not (tmp_path / "group").exists()  # refused before anything was written


def test_group_settings_are_checked(tmp_path):
    with pytest.raises(FastgenError, match="--seeds must be an integer >= 1"):
        TrainConfig(model="gan", seeds=0).resolved()
    with pytest.raises(FastgenError, match="one loss scale"):
        TrainConfig(model="gan", seeds=2, amp=True, amp_dtype="fp16").resolved()


def test_an_older_checkpoint_format_is_refused_naming_the_version(mnist, tmp_path, monkeypatch):
    from fastgen.training import checkpoint as run_state

    monkeypatch.setattr(run_state, "CHECKPOINT_FORMAT", "2")
    fastgen.train(_config(mnist, tmp_path / "old", seeds=1, epochs=1))
    monkeypatch.undo()
    with pytest.raises(FastgenError, match="checkpoint format '2'; this fastgen resumes format 3"):
        fastgen.train(TrainConfig(resume=str(tmp_path / "old"), epochs=2, quiet=True))


@pytest.mark.slow
def test_the_command_line_trains_and_resumes_a_group(mnist, tmp_path):
    out = tmp_path / "group"
    args = ["--model", "vae", "--seeds", "2", "--train-images", "200", "--data-dir", str(mnist), "--no-download"]
    result = train_cli(*args, "--epochs", "1", "--out", str(out), "--quiet")
    assert result.returncode == 0, result.stderr[-2000:]
    result = train_cli("--resume", str(out), "--epochs", "2", "--quiet")
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["seeds"] == [0, 1] and all(r["epochs"] == 2 for r in summary["replicas"])


def test_the_command_line_refuses_zero_seeds_in_one_line(tmp_path):
    result = train_cli("--model", "gan", "--seeds", "0", "--out", str(tmp_path / "x"))
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "--seeds" in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("kill_after_step", [3, 8, 13])
def test_a_group_killed_by_sigkill_at_any_moment_resumes_to_the_uninterrupted_groups_weights(mnist, tmp_path, kill_after_step):
    """A real SIGKILL while the group checkpoints after every step, so the kill lands inside some write or commit."""
    import subprocess
    import sys
    import time

    from tests.helpers import cli_env

    settings = dict(checkpoint_every=1, save_interval=0.0, epochs=3)
    fastgen.train(_config(mnist, tmp_path / "straight", **settings))
    out = tmp_path / "killed"
    args = ["--model", "gan", "--seed", str(SEEDS[0]), "--seeds", str(len(SEEDS)), "--epochs", "3", "--train-images", "160"]
    args += ["--data-dir", str(mnist), "--no-download", "--device", "cpu", "--no-compile", "--kernels", "eager"]
    args += ["--checkpoint-every", "1", "--save-interval", "0", "--quiet", "--out", str(out)]
    process = subprocess.Popen([sys.executable, "-m", "fastgen.train", *args], env=cli_env(), stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        try:
            position = json.loads((out / seed_group.GROUP_FILE).read_text())["position"]
        except (OSError, ValueError, KeyError):
            position = None
        if position is not None and position["step"] >= kill_after_step:
            break
        time.sleep(0.005)
    assert process.poll() is None, f"the run ended before step {kill_after_step}: {process.stderr.read()[-2000:]}"
    process.send_signal(signal.SIGKILL)
    process.wait()
    fastgen.train(TrainConfig(resume=str(out), quiet=True))
    _assert_same_files(tmp_path / "straight", out)


def test_a_group_shows_its_progress_bar_on_a_terminal(mnist, tmp_path, monkeypatch):
    from fastgen.training import loop

    monkeypatch.setattr(loop._ProgressBar, "shown", staticmethod(lambda run: True))  # as on a terminal
    monkeypatch.setattr(loop, "POSTFIX_EVERY", 2)  # the losses read at every second step
    summary = fastgen.train(_config(mnist, tmp_path / "group", epochs=1))
    assert summary["steps"] == 5


def test_under_torchrun_each_rank_draws_its_own_latent_noise():
    from fastgen.training import distributed

    ranks = [_trainer("gan", "eager", seed=3) for _ in range(2)]
    distributed.own_random_streams(ranks[1], 3, rank=1, step=0)
    assert not torch.equal(ranks[0].noise_key, ranks[1].noise_key)
    assert not torch.equal(ranks[0].latent_noise(8), ranks[1].latent_noise(8))


def test_overwriting_a_group_with_a_run_and_back_leaves_nothing_of_the_other(mnist, tmp_path):
    out = tmp_path / "out"
    fastgen.train(_config(mnist, out, epochs=1))
    fastgen.train(_config(mnist, out, epochs=1, seeds=1, overwrite=True))
    assert not seed_group.is_group(out) and fastgen.load(out).sample(2, seed=0).shape == (2, 1, 28, 28)
    fastgen.train(_config(mnist, out, epochs=1, overwrite=True))
    assert seed_group.is_group(out) and not (out / "checkpoint.safetensors").exists()


def test_a_replica_whose_group_write_was_interrupted_is_refused_alone(mnist, tmp_path):
    fastgen.train(_config(mnist, tmp_path / "group", epochs=1))
    replica = tmp_path / "group" / f"seed_{SEEDS[0]}"
    (replica / seed_group.PENDING_FILE).write_bytes((replica / "checkpoint.safetensors").read_bytes())
    with pytest.raises(FastgenError, match="its group's last checkpoint write was interrupted; resume the group first"):
        fastgen.train(TrainConfig(resume=str(replica), epochs=2, quiet=True))


@pytest.mark.parametrize("record", ["{", '{"format": 1, "config": {}, "seeds": [0, 1], "position": {"epoch": "x"}}'])
def test_a_damaged_group_record_is_one_line(tmp_path, record):
    (tmp_path / seed_group.GROUP_FILE).write_text(record)
    with pytest.raises(FastgenError, match="is not a fastgen group record"):
        fastgen.train(TrainConfig(resume=str(tmp_path), quiet=True))
