"""torchrun on the CPU: 2 processes on gloo train data-parallel, rank 0 alone writes, resume works."""

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from tests.helpers import cli_env, train_cli


def torchrun(*args, cwd):
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "fastgen.train",
        *args,
        "--no-download",
        "--device",
        "cpu",
        "--quiet",
    ]
    return subprocess.run(command, capture_output=True, text=True, env=cli_env(), cwd=cwd, timeout=600)


def _rows(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("model", [pytest.param("gan", marks=pytest.mark.slow), pytest.param("vae", marks=pytest.mark.slow)])
def test_two_processes_match_one_at_the_same_global_batch_and_write_one_run(mnist, tmp_path, model):
    common = ["--model", model, "--max-steps", "60", "--data-dir", str(mnist)]
    alone = train_cli(*common, "--out", str(tmp_path / "one"), "--quiet", "--no-compile", cwd=tmp_path)
    assert alone.returncode == 0, alone.stderr
    pair = torchrun(*common, "--out", str(tmp_path / "two"), cwd=tmp_path)
    assert pair.returncode == 0, pair.stderr[-3000:]

    one, two = _rows(tmp_path / "one"), _rows(tmp_path / "two")
    assert len(two) == 1 and two[0]["step"] == 60  # one metrics row: only rank 0 writes
    loss = "loss" if model == "vae" else "d_loss"
    # Same data order and initial weights; only the noise and dropout draws of the second half differ.
    assert two[0][loss] == pytest.approx(one[0][loss], rel=0.02)
    assert two[0][loss] != one[0][loss]
    config = json.loads((tmp_path / "two" / "config.json").read_text())
    assert config["world_size"] == 2 and config["compile"] is False
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(p.name for p in (tmp_path / "one").iterdir())


@pytest.mark.slow
def test_resume_under_torchrun_continues_exactly(mnist, tmp_path):
    # The VAE draws all its noise from Philox keys kept in the checkpoint, so even the 2-process resume is exact.
    common = ["--model", "vae", "--data-dir", str(mnist)]
    assert torchrun(*common, "--max-steps", "40", "--out", str(tmp_path / "straight"), cwd=tmp_path).returncode == 0
    assert torchrun(*common, "--max-steps", "20", "--out", str(tmp_path / "cut"), cwd=tmp_path).returncode == 0
    resumed = torchrun("--resume", str(tmp_path / "cut"), "--max-steps", "40", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a, b = (load_file(tmp_path / name / "model.safetensors") for name in ("straight", "cut"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert _rows(tmp_path / "cut")[-1]["step"] == 40


def test_a_global_batch_that_does_not_split_evenly_is_refused(mnist, tmp_path):
    result = torchrun(
        "--model",
        "vae",
        "--batch-size",
        "33",
        "--max-steps",
        "2",
        "--data-dir",
        str(mnist),
        "--out",
        str(tmp_path / "run"),
        cwd=tmp_path,
    )
    assert result.returncode != 0
    assert "--batch-size 33 (the global batch) must be divisible by the 2 torchrun processes" in result.stderr
    assert not (tmp_path / "run" / "config.json").exists()
