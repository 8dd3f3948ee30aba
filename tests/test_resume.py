"""Runs are never lost: atomic checkpoints, exact resume after SIGINT/SIGTERM, a divergence guard."""

import os
import signal

import pytest
import torch
from safetensors.torch import load_file

import fastgen
from fastgen.errors import FastgenError, Interrupted
from fastgen.files import atomic_write, atomic_write_text
from fastgen.training import checkpoint as run_state
from fastgen.training.trainers import GANTrainer
from tests.helpers import run_cli, signal_after_step, write_split


def _config(mnist, out, **overrides):
    settings = dict(
        model="gan", max_steps=40, data_dir=str(mnist), download=False, out=str(out), device="cpu", quiet=True, compile=False
    )
    return fastgen.TrainConfig(**{**settings, **overrides})


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_then_resume_is_bit_identical_to_an_uninterrupted_run(mnist, tmp_path, monkeypatch, signum):
    fastgen.train(_config(mnist, tmp_path / "straight"))

    signal_after_step(monkeypatch, 17, signum)
    with pytest.raises(Interrupted, match="resume with: python -m fastgen.train --resume") as info:
        fastgen.train(_config(mnist, tmp_path / "cut"))
    assert info.value.exit_code == 128 + signum
    assert run_state.load(tmp_path / "cut").position.step == 17
    assert signal.getsignal(signal.SIGINT) is not None  # handlers restored
    monkeypatch.undo()

    summary = fastgen.train(fastgen.TrainConfig(resume=str(tmp_path / "cut"), quiet=True, compile=False))
    assert summary["resumed_from_step"] == 17 and summary["steps"] == 40
    for name in ("model.safetensors", "checkpoint.safetensors"):
        a, b = load_file(tmp_path / "straight" / name), load_file(tmp_path / "cut" / name)
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), name
    assert (tmp_path / "cut" / "metrics.jsonl").read_text().count("\n") == 1
    straight = (tmp_path / "straight" / "metrics.jsonl").read_text().split('"epoch_s"')[0]
    assert (tmp_path / "cut" / "metrics.jsonl").read_text().split('"epoch_s"')[0] == straight


def test_resume_extends_a_finished_run(mnist, tmp_path):
    fastgen.train(_config(mnist, tmp_path / "a", max_steps=20))
    fastgen.train(fastgen.TrainConfig(resume=str(tmp_path / "a"), max_steps=40, quiet=True))
    fastgen.train(_config(mnist, tmp_path / "b", max_steps=40))
    a, b = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("amp", [False, True], ids=["fp32", "bf16"])
@pytest.mark.parametrize("compile", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["eager", "compiled"])
@pytest.mark.parametrize("model", ["gan", "vae"])
def test_resume_at_an_epoch_boundary_is_bit_identical(mnist, tmp_path, monkeypatch, model, compile, amp):
    # fastgen.compare trains to epoch 10, then continues the same run to 50 and 200 this way, with the
    # default (compiled) step. With --amp the bf16 working copies are derived again from the restored masters.
    monkeypatch.setattr("fastgen.training.run.cpu_has_fast_bf16", lambda: True)  # bf16 on any CPU (slow without it)
    small = dict(model=model, max_steps=None, train_images=320, batch_size=32, compile=compile, amp=amp)
    fastgen.train(_config(mnist, tmp_path / "straight", epochs=3, **small))
    fastgen.train(_config(mnist, tmp_path / "cut", epochs=1, **small))
    summary = fastgen.train(fastgen.TrainConfig(resume=str(tmp_path / "cut"), epochs=3, quiet=True))
    assert summary["amp_dtype"] == ("bfloat16" if amp else None)
    a, b = load_file(tmp_path / "straight" / "model.safetensors"), load_file(tmp_path / "cut" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.gpu
@pytest.mark.parametrize("model", ["gan", "vae"])
def test_resume_on_cuda_with_compile_and_graphs_matches_within_tolerance(mnist, tmp_path, model):
    # The CUDA path (compiled, graph-captured, Triton kernels) is not bit-reproducible run to run
    # (atomics, autotuning), so the promise is closeness: weights within 1e-3 relative after 3 epochs.
    small = dict(model=model, max_steps=None, train_images=3200, device="cuda", compile=None)
    fastgen.train(_config(mnist, tmp_path / "straight", epochs=3, **small))
    fastgen.train(_config(mnist, tmp_path / "cut", epochs=1, **small))
    fastgen.train(fastgen.TrainConfig(resume=str(tmp_path / "cut"), epochs=3, quiet=True))
    a, b = load_file(tmp_path / "straight" / "model.safetensors"), load_file(tmp_path / "cut" / "model.safetensors")
    for key in a:
        if a[key].is_floating_point():
            torch.testing.assert_close(b[key], a[key], rtol=1e-3, atol=1e-4, msg=lambda m, key=key: f"{key}: {m}")
        else:
            assert torch.equal(a[key], b[key]), key  # dropout keys: exact


def test_divergence_stops_and_keeps_the_last_good_checkpoint(mnist, tmp_path, monkeypatch):
    original = GANTrainer.step
    calls = []

    def step(self, x):
        calls.append(1)
        out = original(self, x)
        return out * float("nan") if len(calls) >= 5 else out

    monkeypatch.setattr(GANTrainer, "step", step)
    with pytest.raises(FastgenError, match=r"diverged in epoch 1 .*d_loss=nan.*lower --lr"):
        fastgen.train(_config(mnist, tmp_path / "run", checkpoint_every=2))
    kept = run_state.load(tmp_path / "run")
    assert kept.position.step == 4
    assert all(torch.isfinite(t).all() for k, t in kept.tensors.items() if t.is_floating_point())


@pytest.mark.slow
def test_corrupt_checkpoint_is_one_line_exit_2(tmp_path):
    (tmp_path / "checkpoint.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{trunc")
    result = run_cli("fastgen.train", "--resume", str(tmp_path), cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "corrupt" in result.stderr


@pytest.mark.slow
def test_resume_of_a_folder_without_checkpoint(tmp_path):
    result = run_cli("fastgen.train", "--resume", str(tmp_path), cwd=tmp_path)
    assert result.returncode == 2 and "no checkpoint.safetensors" in result.stderr


def test_resume_with_another_model_names_the_mismatch(mnist, tmp_path):
    fastgen.train(_config(mnist, tmp_path / "run", max_steps=2))
    with pytest.raises(FastgenError, match="holds a gan run, not a vae run"):
        fastgen.train(fastgen.TrainConfig(model="vae", resume=str(tmp_path / "run")))


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "state.json"
    atomic_write_text(path, "old")

    def broken(tmp):
        with open(tmp, "w") as handle:
            handle.write("half")
        raise OSError("disk full")

    with pytest.raises(FastgenError, match=r"^cannot write .*state.json: disk full$"):  # one line for the CLI
        atomic_write(path, broken)
    assert path.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_checkpoint_of_another_fastgen_minor_version_is_refused(mnist, tmp_path):
    from fastgen.files import read_checked_safetensors, write_checked_safetensors

    fastgen.train(_config(mnist, tmp_path / "run", max_steps=2))
    path = tmp_path / "run" / "checkpoint.safetensors"
    tensors, metadata = read_checked_safetensors(path, "checkpoint")
    write_checked_safetensors(path, tensors, {**metadata, "fastgen_version": "0.0.9"})  # a valid file of 0.0.9
    with pytest.raises(FastgenError, match="written by fastgen 0.0.9"):
        fastgen.train(fastgen.TrainConfig(resume=str(tmp_path / "run")))


def test_out_of_memory_becomes_a_suggestion(mnist, tmp_path, monkeypatch):
    def oom(self, x):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(GANTrainer, "step", oom)
    with pytest.raises(FastgenError, match="out of GPU memory at batch size 64; try a smaller --batch-size"):
        fastgen.train(_config(mnist, tmp_path / "run", batch_size=64))


def _rss_mib() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def test_memory_is_flat_across_many_short_epochs(tmp_path, monkeypatch):
    """60 epochs of 2 steps on a tiny split: resident memory after epoch 60 within 25 MiB of epoch 10."""
    from fastgen.training.run_files import RunWriter

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    write_split(tmp_path / "data", n=64)
    rss = []
    original = RunWriter.append_metrics

    def record(self, row):
        rss.append(_rss_mib())
        original(self, row)

    monkeypatch.setattr(RunWriter, "append_metrics", record)
    fastgen.train(
        fastgen.TrainConfig(
            model="gan",
            epochs=60,
            batch_size=32,
            data_dir=str(tmp_path / "data"),
            download=False,
            out=str(tmp_path / "run"),
            device="cpu",
            quiet=True,
            compile=False,
            sample_every=1000,
        )
    )
    assert len(rss) == 60
    assert rss[-1] - rss[9] < 25, f"RSS grew from {rss[9]:.1f} to {rss[-1]:.1f} MiB"
