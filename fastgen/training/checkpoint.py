"""Everything needed to continue a run exactly: weights, dropout keys, Adam and loss-scaler state,
RNG states and the position in the epoch, in one safetensors file written atomically."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from fastgen.errors import FastgenError
from fastgen.files import read_checked_safetensors, write_checked_safetensors
from fastgen.version import __version__

CHECKPOINT_FILE = "checkpoint.safetensors"
# 3: the GAN's latent noise is drawn from a (seed, step) key saved here, no longer from torch's generator, so a
# format-2 run would continue on another noise stream.
CHECKPOINT_FORMAT = "3"


@dataclass
class Position:
    epoch: int  # the epoch to run (or continue)
    step_in_epoch: int  # steps of that epoch already done
    step: int  # optimizer steps done in the whole run


def trainer_tensors(trainer, replica: int | None = None) -> dict[str, torch.Tensor]:
    """The trainer's state by checkpoint name; for a group, `replica` picks one replica's slices (what its single
    run's checkpoint holds). Every state tensor of a group has a leading replica dimension but the 0-d ones (Adam's
    step counters and learning rate, the EMA's update count), which the replicas share."""
    return replica_slices(_all_trainer_tensors(trainer), replica)


def replica_slices(tensors: dict[str, torch.Tensor], replica: int | None) -> dict[str, torch.Tensor]:
    """A group's tensors as one replica's (0-d ones are shared); all of them for a single run (`replica` None)."""
    if replica is None:
        return tensors
    return {key: value[replica] if value.dim() else value for key, value in tensors.items()}


def _all_trainer_tensors(trainer) -> dict[str, torch.Tensor]:
    tensors = {}
    for name in trainer.modules:
        for key, value in getattr(trainer, name).state_dict().items():
            tensors[f"module.{name}.{key}"] = value
    for name, opt in trainer.optimizers.items():
        tensors[f"optim.{name}.lr"] = opt.lr
        for i, (m, v, s) in enumerate(zip(opt.exp_avgs, opt.exp_avg_sqs, opt.steps)):
            tensors[f"optim.{name}.{i}.exp_avg"], tensors[f"optim.{name}.{i}.exp_avg_sq"] = m, v
            tensors[f"optim.{name}.{i}.step"] = s
    if trainer.ema is not None:
        tensors.update(trainer.ema.tensors())
    for name, scaler in trainer.scalers.items():
        if scaler is not None:
            tensors[f"scaler.{name}.scale"], tensors[f"scaler.{name}.growth_tracker"] = scaler.scale, scaler.growth_tracker
    if getattr(trainer, "noise_key", None) is not None:
        tensors["noise.latent_key"] = trainer.noise_key
    return tensors


def save(
    path: Path,
    trainer,
    position: Position,
    sums: torch.Tensor,
    data_gen_state: torch.Tensor,
    config: dict,
    metrics: list[dict],
    model: str,
    replica: int | None = None,
) -> None:
    """Write the checkpoint (of one replica of a group: `replica`); `data_gen_state` is the data generator's state
    at the start of `position.epoch`."""
    tensors = trainer_tensors(trainer, replica)
    tensors["rng.torch_cpu"] = torch.get_rng_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        tensors["rng.torch_cuda"] = torch.cuda.get_rng_state()
    tensors["rng.data_epoch_start"] = data_gen_state.cpu()
    tensors["progress.epoch_sums"] = sums.detach().cpu()
    metadata = {
        "fastgen_format": CHECKPOINT_FORMAT,
        "fastgen_version": __version__,
        "model": model,
        "dataset": config["dataset"],
        "config": json.dumps(config),
        "metrics": json.dumps(metrics),
        "position": json.dumps(position.__dict__),
    }
    write_checked_safetensors(path, tensors, metadata)


@dataclass
class Checkpoint:
    tensors: dict[str, torch.Tensor]
    config: dict
    metrics: list[dict]
    position: Position


def load(run_dir) -> Checkpoint:
    path = Path(run_dir) / CHECKPOINT_FILE
    if not path.is_file():
        raise FastgenError(f"--resume {run_dir}: no {CHECKPOINT_FILE} there (not a fastgen run, or it never finished a step)")
    tensors, metadata = read_checked_safetensors(path, "checkpoint")
    if metadata.get("fastgen_format") != CHECKPOINT_FORMAT:
        raise FastgenError(
            f"{path} has checkpoint format {metadata.get('fastgen_format')!r}; this fastgen resumes format {CHECKPOINT_FORMAT} "
            "only (format 3 draws the GAN's latent noise from a saved key: an older run would continue on another stream)"
        )
    saved_version = metadata.get("fastgen_version", "?")
    if saved_version.split(".")[:2] != __version__.split(".")[:2]:
        # Optimizer and RNG semantics may change between minor versions: an exact resume is not promised.
        raise FastgenError(
            f"{path} was written by fastgen {saved_version}; this is fastgen {__version__}, "
            "which resumes only runs of the same minor version"
        )
    try:
        return Checkpoint(
            tensors, json.loads(metadata["config"]), json.loads(metadata["metrics"]), Position(**json.loads(metadata["position"]))
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise FastgenError(
            f"{path} is not a fastgen checkpoint ({type(exc).__name__}: {str(exc)[:120]}); it cannot be resumed"
        ) from None


def restore(trainer, checkpoint: Checkpoint, replica: int | None = None) -> None:
    """Copy the saved state into the trainer's own tensors (their addresses stay, as CUDA graphs need); for a
    group, into replica `replica`'s slices (its shared 0-d tensors must agree across the group's checkpoints)."""
    expected = trainer_tensors(trainer, replica)
    saved = {k: v for k, v in checkpoint.tensors.items() if not k.startswith(("rng.", "progress."))}
    missing, unexpected = expected.keys() - saved.keys(), saved.keys() - expected.keys()
    if missing or unexpected:
        name = sorted(missing or unexpected)[0]
        raise FastgenError(
            f"checkpoint does not match this {checkpoint.config['model']} trainer: "
            f"{'missing' if missing else 'unexpected'} {name}"
        )
    with torch.no_grad():
        for key, target in expected.items():
            value = saved[key]
            if value.shape != target.shape:
                raise FastgenError(
                    f"checkpoint does not match the architecture: {key} has shape "
                    f"{tuple(value.shape)}, expected {tuple(target.shape)}"
                )
            if replica and value.dim() == 0 and not torch.equal(target, value.to(target.device)):
                raise FastgenError(f"the group's checkpoints disagree on {key}: they are not of one group step")
            target.copy_(value)
        for optimizer in trainer.optimizers.values():  # mixed precision: the working copies follow their masters
            optimizer.refresh_working()


def restore_rng(checkpoint: Checkpoint) -> None:
    """torch's CPU (and CUDA) generators as they were when the checkpoint was written."""
    torch.set_rng_state(checkpoint.tensors["rng.torch_cpu"])
    if "rng.torch_cuda" in checkpoint.tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(checkpoint.tensors["rng.torch_cuda"])
