"""Weights as safetensors, written atomically; loading never unpickles anything."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from .errors import FastgenError

WEIGHTS_FILE = "model.safetensors"
FORMAT_VERSION = "1"


def atomic_write(path: Path, write) -> None:
    """Call write(tmp_path), fsync, then rename over `path`: a crash leaves the old file intact."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def atomic_write_text(path: Path, text: str) -> None:
    def write(tmp):
        with open(tmp, "w") as handle:
            handle.write(text)

    atomic_write(path, write)


def save_weights(path: Path, modules: dict[str, torch.nn.Module], model: str, config: dict) -> None:
    """All modules' state (weights and buffers) under '<name>.' prefixes, with the config as metadata."""
    tensors = {f"{name}.{key}": value.detach().cpu().contiguous()
               for name, module in modules.items() for key, value in module.state_dict().items()}
    metadata = {"fastgen_format": FORMAT_VERSION, "model": model, "config": json.dumps(config)}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def read_weights(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, metadata) of a fastgen weights file, or a FastgenError saying what is wrong with it."""
    path = Path(path)
    if path.is_dir():
        path = path / WEIGHTS_FILE
    if not path.is_file():
        raise FastgenError(f"no fastgen weights at {path}")
    try:
        tensors = load_file(str(path))
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise FastgenError(f"{path} is not a readable safetensors file ({exc}); it may be truncated or corrupt") from None
    if metadata.get("fastgen_format") != FORMAT_VERSION or metadata.get("model") not in ("gan", "vae"):
        raise FastgenError(f"{path} is not a fastgen weights file (format {metadata.get('fastgen_format')!r})")
    return tensors, metadata


def load(path, device="cpu", kernels: str = "auto") -> torch.nn.Module:
    """A trained model from a run folder or its model.safetensors, in eval mode, with `.sample(n, seed)`.

    GAN runs give the Generator; VAE runs give the VAE.
    """
    from .models import VAE, Generator

    tensors, metadata = read_weights(path)
    model, prefix = (Generator(kernels), "generator.") if metadata["model"] == "gan" else (VAE(kernels), "vae.")
    state = {key[len(prefix):]: value for key, value in tensors.items() if key.startswith(prefix)}
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise FastgenError(f"{path} does not match fastgen's {metadata['model']} architecture: {first}") from None
    return model.to(device).eval()
