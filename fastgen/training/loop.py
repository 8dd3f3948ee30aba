"""The epoch loop: the path of one batch is `DeviceSplit.epoch_batches` (indices) -> the step built in
`run._build_step` (compiled/graphed: `DeviceSplit.batch` gathers and scales, `Trainer.step` runs the
fused ops) -> device-side sums, read once an epoch -> metrics.jsonl.

Around the steps: a progress bar, checkpoints (at an epoch's end once --save-interval seconds have passed,
at the last epoch and on a stop, and every --checkpoint-every steps),
SIGINT/SIGTERM handled after the current step (checkpoint, then `Interrupted`), a divergence check
before any checkpoint is overwritten, sample grids and the weights file.
"""

from __future__ import annotations

import math
import signal
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from fastgen.config import TrainConfig
from fastgen.data import DeviceSplit
from fastgen.errors import FastgenError, Interrupted
from fastgen.training import checkpoint as run_state
from fastgen.training import distributed
from fastgen.training import group as seed_group
from fastgen.training.run_files import RunWriter
from fastgen.training.trainers import Trainer

POSTFIX_EVERY = 50  # steps between progress-bar loss readouts (each one is a host sync)


@dataclass
class Replica:
    """One seed's run folder and data order: a single run has one replica, a group of seeds one per seed."""

    seed: int
    writer: RunWriter
    data_gen: torch.Generator  # draws each epoch's permutation
    config: dict  # the configuration its files record: a single run's with this seed and folder
    checkpoint: run_state.Checkpoint | None = None  # the checkpoint resumed from


@dataclass
class Run:
    """A run ready to train: what the epoch loop reads and writes."""

    config: TrainConfig
    device: torch.device
    group: distributed.Group | None  # torchrun's process group (not a group of seeds: see `replicas`)
    trainer: Trainer
    step_fn: object  # batch indices -> the trainer's step on that batch (compiled, graphed)
    train_split: DeviceSplit
    replicas: list[Replica]
    out: Path  # the run folder; a group's folder holds group.json and the replicas' folders
    position: run_state.Position  # where to start
    notice: object

    @property
    def is_main(self) -> bool:
        return self.group is None or self.group.is_main

    @property
    def seed_group(self) -> bool:
        return self.trainer.replicas is not None

    @property
    def checkpoint(self) -> run_state.Checkpoint | None:
        """The (first replica's) checkpoint resumed from."""
        return self.replicas[0].checkpoint

    @property
    def writer(self) -> RunWriter:
        """The first replica's files (a single run's only ones)."""
        return self.replicas[0].writer


@dataclass
class Progress:
    """Where the run is, and the steady-state timing (after warm-up; evaluation and files not counted)."""

    step: int
    last_epoch: int
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int  # the step after which throughput is timed
    steady_start: float | None = None
    steady_s: float = 0.0
    last_save: float = 0.0  # perf_counter of the last weights/checkpoint write

    def samples_per_s(self, batch_size: int) -> float | None:
        samples = (self.step - self.warmup_steps) * batch_size
        return samples / self.steady_s if samples > 0 and self.steady_s > 0 else None


def run_epochs(run: Run) -> Progress:
    """Train from `run.position` to the last epoch (or --max-steps); raise `Interrupted` on a signal."""
    progress = _schedule(run)
    progress.last_save = time.perf_counter()
    with _stop_requests() as stop:
        for epoch in range(run.position.epoch, progress.last_epoch + 1):
            epoch_start = time.perf_counter()
            epoch_gen_state = [replica.data_gen.get_state() for replica in run.replicas]
            n_steps = min(progress.steps_per_epoch, progress.total_steps - (epoch - 1) * progress.steps_per_epoch)
            sums, first = _run_steps(run, progress, epoch, n_steps, epoch_gen_state, stop)
            stopping = _stop_agreed(stop, run)
            _finish_epoch(run, progress, epoch, n_steps, first, sums, epoch_start, epoch_gen_state, stopping)
            if stopping:
                raise Interrupted(
                    f"interrupted after epoch {epoch} (step {progress.step}); checkpoint saved; "
                    f"resume with: python -m fastgen.train --resume {run.out}",
                    _signal_number(stop),
                )
    _sync(run.device)
    return progress


def _schedule(run: Run) -> Progress:
    """Steps per epoch, the last step and epoch (--epochs, --max-steps) and the warm-up excluded from timing:
    the first epoch when several remain, else the first tenth of the remaining steps."""
    config, start = run.config, run.position.step
    steps_per_epoch = len(run.train_split) // config.batch_size
    total_steps = config.epochs * steps_per_epoch
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)
    remaining = total_steps - start
    warmup = start + (steps_per_epoch if remaining > steps_per_epoch else max(1, remaining // 10))
    return Progress(
        step=start,
        last_epoch=-(-total_steps // steps_per_epoch),
        steps_per_epoch=steps_per_epoch,
        total_steps=total_steps,
        warmup_steps=warmup,
    )


def _run_steps(run: Run, progress: Progress, epoch: int, n_steps: int, epoch_gen_state, stop) -> tuple[torch.Tensor, int]:
    """One epoch's steps (continuing a partial epoch after a resume); returns the metric sums and the first step."""
    trainer, group = run.trainer, run.group
    orders = [run.train_split.epoch_batches(run.config.batch_size, replica.data_gen) for replica in run.replicas]
    batches = torch.stack(orders, dim=1) if run.seed_group else orders[0]  # (steps, S, B) for a group of seeds
    if group is not None:
        batches = batches[:, group.rank :: group.world_size]  # this rank's shard of every global batch
    lead = (len(run.replicas),) if run.seed_group else ()
    first, sums = 0, torch.zeros((*lead, len(trainer.metric_names)), device=run.device)
    if run.checkpoint is not None and epoch == run.position.epoch and run.position.step_in_epoch:
        first = run.position.step_in_epoch
        saved = [replica.checkpoint.tensors["progress.epoch_sums"] for replica in run.replicas]
        sums = (torch.stack(saved) if run.seed_group else saved[0]).to(run.device)
    bar = _ProgressBar(run, epoch, progress.last_epoch, n_steps, first)
    for i in range(first, n_steps):
        stats = run.step_fn(batches[i])
        sums += stats
        progress.step += 1
        if progress.step == progress.warmup_steps:
            _sync(run.device)
            progress.steady_start = time.perf_counter()
        bar.update(progress.step, stats)
        due = run.config.checkpoint_every is not None and progress.step % run.config.checkpoint_every == 0
        stopping = _stop_agreed(stop, run, progress.step)
        if (stopping or due) and i + 1 < n_steps:
            if group is not None:
                sums = group.mean(sums)  # every rank continues from the mean, as a resume would
            _check_finite(run, sums, epoch, progress.step)
            _save_checkpoint(run, run_state.Position(epoch, i + 1, progress.step), sums, epoch_gen_state)
            if stopping:
                bar.close()
                raise Interrupted(
                    f"interrupted at step {progress.step}; checkpoint saved; resume with: "
                    f"python -m fastgen.train --resume {run.out}",
                    _signal_number(stop),
                )
    bar.close()
    return sums, first


def _finish_epoch(
    run: Run,
    progress: Progress,
    epoch: int,
    n_steps: int,
    first: int,
    sums: torch.Tensor,
    epoch_start: float,
    epoch_gen_state,
    stopping: bool,
) -> None:
    """The epoch's metrics row and sample grids; the weights and checkpoint when due."""
    if run.group is not None:
        sums = run.group.mean(sums)  # metrics are the mean over ranks
    values = (sums / n_steps).tolist()  # the epoch's one host sync
    loop_end = time.perf_counter()
    epoch_s = loop_end - epoch_start
    if progress.steady_start is not None:
        progress.steady_s += loop_end - max(epoch_start, progress.steady_start)
    _check_finite(run, sums, epoch, progress.step)
    extra = run.trainer.epoch_metrics() if run.is_main else None
    grids = None
    if run.is_main and (epoch % run.config.sample_every == 0 or epoch == progress.last_epoch):
        grids = run.trainer.sample_grids()
    replicas = len(run.replicas)
    if not run.seed_group:
        values, extra, grids = [values], [extra], [grids]
    extra, grids = extra or [None] * replicas, grids or [None] * replicas
    for i, replica in enumerate(run.replicas):
        row = {
            "epoch": epoch,
            "step": progress.step,
            **dict(zip(run.trainer.metric_names, values[i])),
            "epoch_s": epoch_s,
            "samples_per_s": (n_steps - first) * run.config.batch_size / epoch_s,  # this replica's; a group's is S times it
        }
        row.update(extra[i] or {})
        replica.writer.append_metrics(row)
        for name, images in (grids[i] or {}).items():
            replica.writer.save_grid(images, f"{name}_{epoch:04d}.png")
    if stopping or epoch == progress.last_epoch or time.perf_counter() - progress.last_save >= run.config.save_interval:
        _save_run_state(run, progress, epoch, n_steps, sums, epoch_gen_state)
    if run.is_main and not run.config.quiet and not _ProgressBar.shown(run):
        for replica in run.replicas:
            row = replica.writer.metrics[-1]
            shown = ", ".join(f"{k} {v:.4g}" for k, v in row.items() if k not in ("epoch", "step"))
            seed = f" seed {replica.seed}" if run.seed_group else ""
            print(f"epoch {epoch}/{progress.last_epoch}{seed}: {shown}", flush=True)


def _save_run_state(run: Run, progress: Progress, epoch: int, n_steps: int, sums: torch.Tensor, epoch_gen_state) -> None:
    """The weights files and the checkpoint as of this epoch's end."""
    for i, replica in enumerate(run.replicas):
        index = i if run.seed_group else None
        modules = {name: run_state.replica_slices(getattr(run.trainer, name).state_dict(), index) for name in run.trainer.modules}
        ema = run_state.replica_slices(run.trainer.ema.tensors(), index) if run.trainer.ema is not None else None
        replica.writer.save_weights(modules, run.config.model, replica.config, ema)
    if n_steps < progress.steps_per_epoch:  # stopped by --max-steps: a resume may finish this epoch
        _save_checkpoint(run, run_state.Position(epoch, n_steps, progress.step), sums, epoch_gen_state)
    else:
        next_states = [replica.data_gen.get_state() for replica in run.replicas]
        _save_checkpoint(run, run_state.Position(epoch + 1, 0, progress.step), torch.zeros_like(sums), next_states)
    progress.last_save = time.perf_counter()


class _ProgressBar:
    """tqdm on an interactive terminal (main rank, not --quiet); the losses read every POSTFIX_EVERY steps."""

    def __init__(self, run: Run, epoch: int, last_epoch: int, n_steps: int, first: int):
        self.enabled = self.shown(run)
        self.batch_size = run.config.batch_size * len(run.replicas)  # a group's images per step: every replica's
        self.names = run.trainer.metric_names[:2]
        self.bar = tqdm(
            total=n_steps, initial=first, desc=f"epoch {epoch}/{last_epoch}", unit="step", disable=not self.enabled, leave=False
        )

    @staticmethod
    def shown(run: Run) -> bool:
        return run.is_main and not run.config.quiet and sys.stderr.isatty()

    def update(self, step: int, stats: torch.Tensor) -> None:
        if not self.enabled:
            return
        self.bar.update(1)
        if step % POSTFIX_EVERY == 0:
            rate = self.bar.format_dict["rate"] or 0.0
            values = stats.mean(0) if stats.dim() > 1 else stats  # a group shows the mean over its replicas
            self.bar.set_postfix(
                {**dict(zip(self.names, (f"{v:.3f}" for v in values.tolist()))), "img/s": f"{rate * self.batch_size:.0f}"}
            )

    def close(self) -> None:
        self.bar.close()


def _save_checkpoint(run: Run, position: run_state.Position, sums: torch.Tensor, epoch_gen_states: list) -> None:
    """The checkpoint; a group's replicas' checkpoints are written pending, then committed together (group.py)."""
    if not run.is_main:
        return
    name = seed_group.PENDING_FILE if run.seed_group else run_state.CHECKPOINT_FILE
    for i, replica in enumerate(run.replicas):
        index = i if run.seed_group else None
        run_state.save(
            replica.writer.out / name,
            run.trainer,
            position,
            sums[i] if run.seed_group else sums,
            epoch_gen_states[i],
            replica.config,
            replica.writer.metrics,
            run.config.model,
            replica=index,
        )
    if run.seed_group:
        seed_group.commit(run.out, run.config.to_dict(), [r.seed for r in run.replicas], position)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextmanager
def _stop_requests():
    """SIGINT and SIGTERM set a flag the loop checks after each step, instead of killing the step."""
    requested: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield requested
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, lambda signum, frame: requested.append(signum))
    try:
        yield requested
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _stop_agreed(stop: list[int], run: Run, step: int | None = None) -> bool:
    """Whether to stop now. Alone: as soon as a signal came. Under torchrun all ranks must stop after the
    same step, so they agree (one tiny all-reduce) every POSTFIX_EVERY steps and at each epoch's end."""
    if run.group is None:
        return bool(stop)
    if step is not None and step % POSTFIX_EVERY:
        return False
    return run.group.any(bool(stop), run.device)


def _signal_number(stop: list[int]) -> int:
    return stop[0] if stop else signal.SIGINT  # a rank that got no signal itself stops with its peers


def _check_finite(run: Run, sums: torch.Tensor, epoch: int, step: int) -> None:
    """Stop a diverged run before it overwrites the last good checkpoint."""
    if bool(torch.isfinite(sums).all()):
        return
    rows = sums.tolist() if run.seed_group else [sums.tolist()]
    bad = ", ".join(
        f"{name}={value}" + (f" (seed {replica.seed})" if run.seed_group else "")
        for replica, row in zip(run.replicas, rows)
        for name, value in zip(run.trainer.metric_names, row)
        if not math.isfinite(value)
    )
    healthy = ""
    if run.seed_group:
        finite = torch.isfinite(sums).all(1).tolist()
        alone = [f"{run.out}/seed_{r.seed}" for r, ok in zip(run.replicas, finite) if ok]
        healthy = f"; the healthy replicas can continue alone (--resume {' / '.join(alone)})" if alone else ""
    raise FastgenError(
        f"training diverged in epoch {epoch} (by step {step}): {bad}; the last good checkpoint in "
        f"{run.out} is kept; try a lower --lr or train without --amp{healthy}"
    )
