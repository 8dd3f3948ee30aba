"""MNIST / Fashion-MNIST: find or fetch the IDX files, validate them, hold a split on the device as uint8."""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fastgen.config import DATASETS
from fastgen.errors import DataError

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_IDX_MAGIC = {3: 0x00000803, 1: 0x00000801}  # unsigned-byte IDX with 3 (images) or 1 (labels) dimensions


def cache_dir() -> Path:
    """The per-user cache folder: $XDG_CACHE_HOME/fastgen, else ~/.cache/fastgen."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "fastgen"


def search_dirs(dataset: str) -> list[Path]:
    """Where fastgen looks when no --data-dir is given, in order: $FASTGEN_DATA, the cache folder, and
    (Fashion-MNIST) Debian's package folder."""
    dirs = [Path(d) for d in (os.environ.get("FASTGEN_DATA"),) if d]
    dirs.append(cache_dir() / "data")
    if dataset == "fashion-mnist":
        dirs.append(DEBIAN_FASHION_MNIST)
    return dirs


def find_data_dir(dataset: str, split: str = "train") -> Path | None:
    """The first folder of the search order that holds this dataset's split, or None."""
    return next((root for root in search_dirs(dataset) if _has_split(root, dataset, split)), None)


def _find_file(root: Path, folder: str, name: str) -> Path | None:
    for parent in (root / folder / "raw", root / folder, root):
        for candidate in (parent / name, parent / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    return None


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """An unsigned-byte IDX file (optionally gzipped) as a numpy array, with its header checked."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DataError(f"cannot read {path}: {exc}") from None
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path} is truncated: {len(raw)} bytes, shorter than its IDX header")
    magic = int.from_bytes(raw[:4], "big")
    if magic != _IDX_MAGIC[ndim]:
        raise DataError(
            f"{path} is not an IDX file of {ndim}-D unsigned bytes (magic {magic:#010x}, expected {_IDX_MAGIC[ndim]:#010x})"
        )
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(shape))
    if len(raw) != expected:
        raise DataError(f"{path} is truncated or corrupt: {len(raw)} bytes, its header {shape} needs {expected}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _split_paths(root: Path, dataset: str, split: str) -> list[Path | None]:
    return [_find_file(root, DATASETS[dataset], name) for name in SPLIT_FILES[split]]


def _has_split(root: Path, dataset: str, split: str) -> bool:
    return None not in _split_paths(root, dataset, split)


def _read_split(root: Path, dataset: str, split: str) -> tuple[torch.Tensor, torch.Tensor] | None:
    paths = _split_paths(root, dataset, split)
    if None in paths:
        return None
    images, labels = read_idx(paths[0], 3), read_idx(paths[1], 1)
    if images.shape[1:] != (28, 28):
        raise DataError(f"{paths[0]} holds images of {images.shape[1:]}, expected 28x28")
    if len(images) != len(labels):
        raise DataError(f"{paths[0]} has {len(images)} images but {paths[1]} has {len(labels)} labels")
    return torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64))


def _download(dataset: str, root: Path) -> None:
    import torchvision

    dataset_class = getattr(torchvision.datasets, DATASETS[dataset])
    for train in (True, False):
        dataset_class(str(root), train=train, download=True)


def load_split(dataset: str, split: str, data_dir=None, download: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(images uint8 (N, 28, 28), labels int64 (N,)) on the CPU.

    An explicit `data_dir` is the only place looked at: it must exist, and it must hold the split
    (or receive the download). Without one, the search order of `search_dirs` applies, then the
    download into the cache folder."""
    if dataset not in DATASETS:
        raise DataError(f"unknown dataset {dataset!r}; choose one of {sorted(DATASETS)}")
    if data_dir is not None:
        data_dir = Path(data_dir)
        if not data_dir.is_dir():
            raise DataError(f"--data-dir {data_dir} does not exist or is not a folder")
        dirs, target = [data_dir], data_dir
    else:
        dirs, target = search_dirs(dataset), cache_dir() / "data"
    for root in dirs:
        found = _read_split(root, dataset, split)
        if found is not None:
            return found
    tried = ", ".join(str(d) for d in dirs)
    wanted = f"a folder holding {DATASETS[dataset]}/raw/ with the IDX files"
    if download:
        try:
            _download(dataset, target)
        except Exception as exc:  # any network or disk failure ends in the one message below
            reason = " ".join(str(exc).split())[:200]  # torchvision's message spans lines
            raise DataError(
                f"{dataset} {split} split not found in {tried}, and downloading it failed ({type(exc).__name__}: {reason}); "
                f"put the IDX files there ({wanted})"
            ) from None
        found = _read_split(target, dataset, split)
        if found is not None:
            return found
    if data_dir is not None:
        raise DataError(
            f"--data-dir {data_dir} holds no {dataset} {split} split ({wanted}); "
            "fix the path, or leave --data-dir out to use $FASTGEN_DATA or the cache"
        )
    raise DataError(
        f"{dataset} {split} split not found in {tried}; pass --data-dir DIR ({wanted}), set FASTGEN_DATA, or allow the download"
    )


@dataclass
class DeviceSplit:
    """A whole split resident on the device as uint8; batches are gathered and scaled there."""

    images: torch.Tensor  # (N, 28, 28) uint8 on the device
    labels: torch.Tensor  # (N,) int64 on the device
    low: float  # images are scaled to [low, 1]: -1 for the GAN's tanh, 0 for the VAE's Bernoulli targets

    @classmethod
    def load(cls, dataset: str, split: str, device, low: float, data_dir=None, download: bool = True) -> DeviceSplit:
        images, labels = load_split(dataset, split, data_dir, download)
        return cls(images.to(device), labels.to(device), low)

    def head(self, n: int | None) -> DeviceSplit:
        """The first n images (all of them for None)."""
        return self if n is None else DeviceSplit(self.images[:n], self.labels[:n], self.low)

    def __len__(self) -> int:
        return self.images.shape[0]

    def scale(self, images_uint8: torch.Tensor) -> torch.Tensor:
        """uint8 (..., 28, 28) -> float32 (..., 784) in [low, 1] (a group's batches are (S, B, 28, 28))."""
        x = images_uint8.reshape(*images_uint8.shape[:-2], -1).float()
        return x.mul_((1.0 - self.low) / 255.0).add_(self.low)

    def batch(self, index: torch.Tensor) -> torch.Tensor:
        return self.scale(self.images[index])

    def epoch_batches(self, batch_size: int, generator: torch.Generator):
        """Index tensors of one epoch: a device-side permutation cut into full batches (the remainder is dropped)."""
        perm = torch.randperm(len(self), device=self.images.device, generator=generator)
        return perm[: len(self) // batch_size * batch_size].view(-1, batch_size)
