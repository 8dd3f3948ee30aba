"""Shared test helpers: a closeness check that says where and how it failed, IDX files and a synthetic
MNIST written by the tests themselves, the command lines run as a user runs them, a real signal after a given
training step, and where real MNIST is.

Importing this module has no side effects (bench/conftest.py imports it for `find_real_mnist`).
"""

from __future__ import annotations

import gzip
import os
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from fastgen.data import find_data_dir
from fastgen.ops import native

REPO = Path(__file__).resolve().parent.parent

# (rtol, atol relative to the reference's largest magnitude) per input dtype.
TOLERANCES = {torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 2e-2}


def assert_close(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype, what: str) -> None:
    """|a - e| <= tol * (|e| + max|e|), NaN/inf must match; reports the first bad index."""
    tol = TOLERANCES[dtype]
    a, e = actual.detach().double().cpu(), expected.detach().double().cpu()
    assert a.shape == e.shape, f"{what}: shape {tuple(a.shape)} != {tuple(e.shape)}"
    finite_a, finite_e = torch.isfinite(a), torch.isfinite(e)
    if not torch.equal(finite_a, finite_e):
        bad = (finite_a != finite_e).nonzero()[0].tolist()
        raise AssertionError(f"{what}: NaN/inf mismatch first at {bad}: {a[tuple(bad)].item()} vs {e[tuple(bad)].item()}")
    if a.numel() == 0:
        return
    scale = e[finite_e].abs().max().item() if finite_e.any() else 0.0
    bound = tol * (e.abs() + max(scale, 1e-6))
    bad_mask = finite_e & ((a - e).abs() > bound)
    if bad_mask.any():
        idx = tuple(bad_mask.nonzero()[0].tolist())
        raise AssertionError(
            f"{what}: {int(bad_mask.sum())} of {a.numel()} elements off (tol {tol}); "
            f"first at {list(idx)}: {a[idx].item()} vs {e[idx].item()}"
        )


# ---------------------------------------------------------------------------------------------------
# IDX files and a synthetic MNIST


def write_idx(path: Path, array: np.ndarray, magic=None, truncate=0, gz=False) -> Path:
    """An unsigned-byte IDX file holding `array` (a wrong `magic`, a `truncate`d tail, or gzipped on request)."""
    magic = magic if magic is not None else 0x800 + array.ndim
    raw = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape) + array.astype(np.uint8).tobytes()
    raw = raw[: len(raw) - truncate] if truncate else raw
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return path


def write_split(root: Path, n=10, gz=False, folder="MNIST/raw", split="train", images=None, labels=None):
    """One split's IDX pair under root/folder: random bytes unless images (N, 28, 28) and labels are given."""
    if images is None:
        rng = np.random.default_rng(0)
        images, labels = rng.integers(0, 256, (n, 28, 28)), rng.integers(0, 10, n)
    prefix = "train" if split == "train" else "t10k"
    suffix = ".gz" if gz else ""
    write_idx(root / folder / f"{prefix}-images-idx3-ubyte{suffix}", images, gz=gz)
    write_idx(root / folder / f"{prefix}-labels-idx1-ubyte{suffix}", labels, gz=gz)
    return images, labels


# The synthetic MNIST's size. One epoch holds 64 VAE steps (batch 100) or 200 GAN steps (batch 32), so
# the tests' short runs (at most 60 steps) stay within one epoch, as they do on real MNIST.
SYNTHETIC_TRAIN = 6_400
SYNTHETIC_TEST = 1_000

# Seven-segment digits: each segment a stroke between two corners of a unit box (x right, y down).
_CORNERS = {"tl": (0, 0), "tr": (1, 0), "ml": (0, 0.5), "mr": (1, 0.5), "bl": (0, 1), "br": (1, 1)}
_SEGMENTS = {
    "a": ("tl", "tr"),
    "b": ("tr", "mr"),
    "c": ("mr", "br"),
    "d": ("bl", "br"),
    "e": ("ml", "bl"),
    "f": ("tl", "ml"),
    "g": ("ml", "mr"),
}
_DIGITS = ["abcdef", "bc", "abged", "abgcd", "fgbc", "afgcd", "afgedc", "abc", "abcdefg", "abcdfg"]


def synthetic_digits(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n seven-segment digits, uint8 (n, 28, 28) with labels (n,): thick anti-aliased strokes, each image
    with its own position, size, slant and stroke width. Deterministic in `seed`; any classifier tells
    them apart, and a VAE's or GAN's losses move as on real digits."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n)
    centre = 13.5 + rng.uniform(-2.5, 2.5, (n, 2))
    size = np.stack([rng.uniform(7, 11, n), rng.uniform(14, 19, n)], axis=1)  # width, height
    slant = rng.uniform(-0.25, 0.25, n)
    width = rng.uniform(0.8, 1.8, n)
    ys, xs = np.mgrid[0:28, 0:28].astype(np.float32)
    grid = np.stack([xs.ravel(), ys.ravel()], axis=1)  # (784, 2)

    def place(corner):  # a corner of every image's box, in pixels: (n, 2)
        unit = np.array(_CORNERS[corner], dtype=np.float32) - 0.5
        xy = centre + unit * size
        xy[:, 0] -= slant * unit[1] * size[:, 1]  # slanted to the right like handwriting
        return xy.astype(np.float32)

    distance = np.full((n, 784), np.inf, dtype=np.float32)  # from each pixel to the nearest stroke
    for name, (start, end) in _SEGMENTS.items():
        shown = np.array([name in _DIGITS[label] for label in labels], dtype=bool)
        a, b = place(start)[shown], place(end)[shown]
        ab = (b - a)[:, None]
        ap = grid[None] - a[:, None]  # (shown, 784, 2)
        t = np.clip((ap * ab).sum(-1) / (ab * ab).sum(-1), 0, 1)
        d = np.linalg.norm(ap - t[..., None] * ab, axis=-1)
        distance[shown] = np.minimum(distance[shown], d)
    ink = np.clip(width[:, None] + 0.5 - distance, 0, 1)
    return np.rint(ink * 255).astype(np.uint8).reshape(n, 28, 28), labels


def write_synthetic_mnist(root: Path, train: int = SYNTHETIC_TRAIN, test: int = SYNTHETIC_TEST, seed: int = 0) -> Path:
    """A synthetic MNIST in torchvision's layout (root/MNIST/raw/*-ubyte, plain IDX); returns root."""
    for split, n, split_seed in (("train", train, seed), ("test", test, seed + 1)):
        images, labels = synthetic_digits(n, split_seed)
        write_split(root, split=split, images=images, labels=labels)
    return root


# ---------------------------------------------------------------------------------------------------
# Real MNIST, for the tests of quality and the benchmarks

_MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def _first_place() -> Path:
    given = os.environ.get("FASTGEN_TEST_DATA")
    return Path(given) if given else REPO.parent / "shared" / "data"


def find_real_mnist() -> Path | None:
    """A folder holding real MNIST: $FASTGEN_TEST_DATA (else ../shared/data beside the repository) when it
    holds MNIST/raw/ with the four IDX files (plain or gzipped), else the first folder of fastgen's own
    search order ($FASTGEN_DATA, the per-user cache: `fastgen.data.find_data_dir`) that holds both splits."""
    raw = _first_place() / "MNIST" / "raw"
    if all((raw / name).is_file() or (raw / f"{name}.gz").is_file() for name in _MNIST_FILES):
        return _first_place()
    found = find_data_dir("mnist", "train")
    return found if found is not None and found == find_data_dir("mnist", "test") else None


def require_real_mnist() -> Path:
    """`find_real_mnist()`, or the calling test (or fixture) skipped with a reason naming the places tried."""
    found = find_real_mnist()
    if found is None:
        pytest.skip(
            f"real MNIST not found in {_first_place()} nor where fastgen looks ($FASTGEN_DATA, the per-user "
            "cache): set FASTGEN_TEST_DATA to a folder holding MNIST/raw/ with the four IDX files"
        )
    return found


# ---------------------------------------------------------------------------------------------------
# The command lines

_session_cache: tempfile.TemporaryDirectory | None = None


def session_cache() -> Path:
    """A temporary XDG cache folder shared by this test session's commands (removed when it ends)."""
    global _session_cache
    if _session_cache is None:
        _session_cache = tempfile.TemporaryDirectory(prefix="fastgen-tests-cache-")
    return Path(_session_cache.name)


# Where this machine's native kernels are built, as the environment the tests started in says (a test
# may point XDG_CACHE_HOME elsewhere for itself).
NATIVE_CACHE = native.cache_root()


def cli_env(cache=None, **overrides) -> dict:
    """The environment of a command as users run it: no Triton interpreter, and XDG_CACHE_HOME in `cache`
    (else the session's temporary one), so a command never finds nor writes a real user cache; only the
    native kernels' build is shared (FASTGEN_NATIVE_CACHE: this process's, built once per machine) so that
    commands do not each build it. Overrides set variables; an override of None removes one."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("FASTGEN_NATIVE_CACHE", str(NATIVE_CACHE))
    env["XDG_CACHE_HOME"] = str(cache or session_cache())
    for key, value in overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = str(value)
    return env


def run_cli(module, *args, cwd=None, cache=None, env=None) -> subprocess.CompletedProcess:
    """`python -m module args...` in a fresh process; `env`: variables to set (None removes one)."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        env=cli_env(cache, **(env or {})),
        cwd=cwd,
        timeout=600,
    )


def train_cli(*args, cwd=None, cache=None, env=None) -> subprocess.CompletedProcess:
    """`python -m fastgen.train args... --no-download --device cpu`."""
    return run_cli("fastgen.train", *args, "--no-download", "--device", "cpu", cwd=cwd, cache=cache, env=env)


def signal_after_step(monkeypatch, call: int, signum: int) -> None:
    """Deliver a real signal to this process right after the GAN trainer's given step (a single run's or a group's)."""
    from fastgen.training.trainers import GANTrainer

    original = GANTrainer.step
    calls = []

    def step(self, x):
        out = original(self, x)
        calls.append(1)
        if len(calls) == call:
            os.kill(os.getpid(), signum)
        return out

    monkeypatch.setattr(GANTrainer, "step", step)
