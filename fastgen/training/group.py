"""A group of seeds on disk: OUT/group.json, and one run folder per replica, OUT/seed_<S>/, in a single run's format.

A group's checkpoint is its replicas' checkpoints, which must be of one step. They are written in two phases:
each replica's new checkpoint goes to `checkpoint.pending.safetensors` beside its current one; then group.json,
written atomically, records the step (the commit); then each pending file replaces its replica's checkpoint.
A kill before the commit leaves the previous checkpoints and group.json as they were (the pending files are
dropped on resume); a kill after it leaves pending files that the resume moves into place. So a resume never
accepts replicas at different steps, and never loses the last committed step.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from fastgen.errors import FastgenError
from fastgen.files import atomic_write_text, read_checked_safetensors
from fastgen.training import checkpoint as run_state

GROUP_FILE = "group.json"
PENDING_FILE = "checkpoint.pending.safetensors"
GROUP_FORMAT = 1


def replica_dir(out: Path, seed: int) -> Path:
    return Path(out) / f"seed_{seed}"


def is_group(out) -> bool:
    return (Path(out) / GROUP_FILE).is_file()


def read(out: Path) -> dict:
    """group.json: {"format", "config" (the group's TrainConfig), "seeds", "position" (None before the first commit)}."""
    path = Path(out) / GROUP_FILE
    try:
        record = json.loads(path.read_text())
        if record["format"] != GROUP_FORMAT:
            raise FastgenError(f"{path} has group format {record['format']!r}; this fastgen reads format {GROUP_FORMAT}")
        position, seeds = record["position"], record["seeds"]
        if position is not None:
            run_state.Position(**position)
        if not isinstance(record["config"], dict) or not all(type(s) is int for s in seeds) or len(seeds) < 2:
            raise TypeError("config or seeds")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise FastgenError(f"{path} is not a fastgen group record ({type(exc).__name__}); the group cannot be resumed") from None
    return record


def write(out: Path, config: dict, seeds: list[int], position: run_state.Position | None) -> None:
    record = {"format": GROUP_FORMAT, "config": config, "seeds": seeds, "position": position.__dict__ if position else None}
    atomic_write_text(Path(out) / GROUP_FILE, json.dumps(record, indent=2, sort_keys=True) + "\n")


def commit(out: Path, config: dict, seeds: list[int], position: run_state.Position) -> None:
    """Record `position` as the group's checkpoint, then move every replica's pending checkpoint into place."""
    write(out, config, seeds, position)
    for seed in seeds:
        folder = replica_dir(out, seed)
        os.replace(folder / PENDING_FILE, folder / run_state.CHECKPOINT_FILE)


def load_checkpoints(out: Path) -> tuple[dict, list[run_state.Checkpoint]]:
    """The group record and its replicas' checkpoints at its committed step, finishing or dropping an interrupted
    write first (see the module's docstring)."""
    record = read(out)
    if record["position"] is None:
        raise FastgenError(f"--resume {out}: the group never saved a checkpoint (it stopped before its first one)")
    committed = run_state.Position(**record["position"])
    checkpoints = []
    for seed in record["seeds"]:
        folder = replica_dir(out, seed)
        pending = folder / PENDING_FILE
        if pending.exists():
            if _position(pending) == committed:
                os.replace(pending, folder / run_state.CHECKPOINT_FILE)  # committed, not yet moved: finish the move
            else:
                pending.unlink()  # written before a commit that never came
        checkpoint = run_state.load(folder)
        if checkpoint.position != committed:
            raise FastgenError(
                f"--resume {out}: replica {folder.name} is at step {checkpoint.position.step} but the group at step "
                f"{committed.step} (was it resumed on its own?); resume that replica alone, or start the group again"
            )
        checkpoints.append(checkpoint)
    return record, checkpoints


def _position(path: Path) -> run_state.Position | None:
    try:
        _, metadata = read_checked_safetensors(path, "checkpoint")
        return run_state.Position(**json.loads(metadata["position"]))
    except (FastgenError, OSError, ValueError, KeyError, TypeError):
        return None  # unreadable: treated as never committed
