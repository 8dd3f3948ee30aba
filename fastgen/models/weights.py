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
EMA_PREFIX = "ema."  # the moving average of the weights: ema.<module>.<parameter>
WEIGHT_KINDS = ("raw", "ema")
# The weights `load` gives when not asked for either, per model, chosen from the comparison over 3 seeds
# (docs/comparison/report.md, EMA section): at epoch 10 the GAN's average was better on 4 of 5 scores
# (Fréchet distance 74 -> 54) and worse on none; the VAE's on 3 of 7 (test loss and IWAE NLL by 1.7 and
# 0.7 nats, precision) and worse on 1 (recall, by 0.01).
DEFAULT_WEIGHTS = {"gan": "ema", "vae": "ema"}


def save_weights(
    path: Path, modules: dict[str, torch.nn.Module], model: str, config: dict, ema: dict[str, torch.Tensor] | None = None
) -> None:
    """All modules' state (weights and buffers) under '<name>.' prefixes, the averaged parameters (already
    named ema.<name>.<key>) if any, with the config as metadata. A module may be given as its state dict."""
    states = {name: m.state_dict() if isinstance(m, torch.nn.Module) else m for name, m in modules.items()}
    tensors = {f"{name}.{key}": value for name, state in states.items() for key, value in state.items()}
    tensors.update(ema or {})
    metadata = {"fastgen_format": FORMAT_VERSION, "model": model, "config": json.dumps(config)}
    write_checked_safetensors(path, tensors, metadata)


def read_weights(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, metadata) of a fastgen weights file, or a FastgenError saying what is wrong with it."""
    path = Path(path)
    if path.is_dir() and (path / "group.json").is_file():
        seeds = sorted(p.name for p in path.glob("seed_*") if p.is_dir())
        raise FastgenError(f"{path} is a group of seeds; name one replica's folder: {path / (seeds[0] if seeds else 'seed_<S>')}")
    if path.is_dir():
        path = path / WEIGHTS_FILE
    if not path.is_file():
        raise FastgenError(f"no fastgen weights at {path}")
    tensors, metadata = read_checked_safetensors(path, "fastgen weights file")
    if metadata.get("fastgen_format") != FORMAT_VERSION or metadata.get("model") not in ("gan", "vae"):
        raise FastgenError(f"{path} is not a fastgen weights file (format {metadata.get('fastgen_format')!r})")
    return tensors, metadata


def _state(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {key[len(prefix) :]: value for key, value in tensors.items() if key.startswith(prefix)}


def load(path, device="cpu", kernels: str = "auto", weights: str = "auto") -> torch.nn.Module:
    """A trained model from a run folder or its model.safetensors, in eval mode, with `.sample(n, seed)`.

    GAN runs give the Generator; VAE runs give the VAE. `weights`: "raw" (the optimizer's last weights),
    "ema" (their moving average, when the run kept one) or "auto" (DEFAULT_WEIGHTS for the model, raw for
    a run without an average). The model's `weights_used` attribute says which it holds.
    """
    from fastgen.models.networks import VAE, Generator

    if weights not in ("auto", *WEIGHT_KINDS):
        raise FastgenError(f"weights must be one of auto, raw, ema, got {weights!r}")
    tensors, metadata = read_weights(path)
    model, prefix = (Generator(kernels), "generator.") if metadata["model"] == "gan" else (VAE(kernels), "vae.")
    state, averaged = _state(tensors, prefix), _state(tensors, EMA_PREFIX + prefix)
    kind = DEFAULT_WEIGHTS[metadata["model"]] if weights == "auto" else weights
    if kind == "ema" and not averaged:
        if weights == "ema":
            raise FastgenError(f"{path} holds no moving-average weights (its run was trained with --ema 0); use raw weights")
        kind = "raw"
    if kind == "ema":
        state.update(averaged)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise FastgenError(f"{path} does not match fastgen's {metadata['model']} architecture: {first}") from None
    model.weights_used = kind
    return model.to(device).eval()
