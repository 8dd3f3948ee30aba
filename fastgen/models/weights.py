"""A trained model's weights as one safetensors file (written atomically, checksummed); `load` rebuilds
the network from it. Loading never unpickles anything."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from fastgen.errors import FastgenError
from fastgen.files import read_checked_safetensors, write_checked_safetensors

WEIGHTS_FILE = "model.safetensors"
FORMAT_VERSION = "2"  # 2: every file carries a SHA-256 of its bytes


def save_weights(path: Path, modules: dict[str, torch.nn.Module], model: str, config: dict) -> None:
    """All modules' state (weights and buffers) under '<name>.' prefixes, with the config as metadata."""
    tensors = {f"{name}.{key}": value for name, module in modules.items() for key, value in module.state_dict().items()}
    metadata = {"fastgen_format": FORMAT_VERSION, "model": model, "config": json.dumps(config)}
    write_checked_safetensors(path, tensors, metadata)


def read_weights(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, metadata) of a fastgen weights file, or a FastgenError saying what is wrong with it."""
    path = Path(path)
    if path.is_dir():
        path = path / WEIGHTS_FILE
    if not path.is_file():
        raise FastgenError(f"no fastgen weights at {path}")
    tensors, metadata = read_checked_safetensors(path, "fastgen weights file")
    if metadata.get("fastgen_format") != FORMAT_VERSION or metadata.get("model") not in ("gan", "vae"):
        raise FastgenError(f"{path} is not a fastgen weights file (format {metadata.get('fastgen_format')!r})")
    return tensors, metadata


def load(path, device="cpu", kernels: str = "auto") -> torch.nn.Module:
    """A trained model from a run folder or its model.safetensors, in eval mode, with `.sample(n, seed)`.

    GAN runs give the Generator; VAE runs give the VAE.
    """
    from fastgen.models.networks import VAE, Generator

    tensors, metadata = read_weights(path)
    model, prefix = (Generator(kernels), "generator.") if metadata["model"] == "gan" else (VAE(kernels), "vae.")
    state = {key[len(prefix) :]: value for key, value in tensors.items() if key.startswith(prefix)}
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise FastgenError(f"{path} does not match fastgen's {metadata['model']} architecture: {first}") from None
    return model.to(device).eval()
