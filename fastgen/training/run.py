"""`train(config)`: data on the device, the step loop, metrics and files. The path of one batch:
DeviceSplit.epoch_batches -> DeviceSplit.batch -> Trainer.step (fused ops) -> device-side sums -> metrics.jsonl.
"""
from __future__ import annotations

import math
import signal
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import torch
from tqdm import tqdm

from fastgen.config import TrainConfig
from fastgen.data import DeviceSplit
from fastgen.environment import cpu_has_fast_bf16, device_name, resolve_device, versions
from fastgen.errors import FastgenError
from fastgen.ops import triton_runs_on
from fastgen.training import checkpoint as run_state
from fastgen.training import distributed
from fastgen.training.compiled_step import build_step, describe
from fastgen.training.cpu_tuning import tune_for_cpu_training
from fastgen.training.run_files import RunWriter, default_out, prepare_out
from fastgen.training.trainers import GANTrainer, VAETrainer

_POSTFIX_EVERY = 50  # steps between progress-bar loss readouts (each one is a host sync)


def _notice(message: str) -> None:
    print(f"fastgen: {message}", file=sys.stderr)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def resolve_amp(config: TrainConfig, device: torch.device, notice=_notice) -> torch.dtype | None:
    """The autocast dtype to train with, or None for float32 (saying why, once, when --amp was asked for)."""
    if not config.amp:
        return None
    dtype = torch.float16 if config.amp_dtype == "fp16" else torch.bfloat16
    if device.type == "cuda":
        if dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
            notice("--amp: this GPU has no bf16; training runs in float32 (try --amp-dtype fp16)")
            return None
        return dtype
    if dtype == torch.float16:
        notice("--amp-dtype fp16 is for CUDA devices; training runs in float32 on the CPU")
        return None
    if not cpu_has_fast_bf16():
        notice("--amp: this CPU has no fast bf16 (no AVX512-BF16 or AMX), so training runs in float32")
        return None
    return dtype


class Interrupted(FastgenError):
    """SIGINT/SIGTERM: the current step finished, a checkpoint was written, the run can be resumed."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum


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


def _resumed_config(config: TrainConfig) -> tuple[TrainConfig, run_state.Checkpoint]:
    """The saved run's configuration, with the few settings a resume may change taken from `config`."""
    checkpoint = run_state.load(config.resume)
    saved = dict(checkpoint.config)
    for key in ("epochs", "max_steps", "quiet", "device", "compile", "cuda_graphs", "checkpoint_every"):
        if getattr(config, key) not in (None, False):
            saved[key] = getattr(config, key)
    if config.model is not None and config.model != saved["model"]:
        raise FastgenError(f"--resume {config.resume} holds a {saved['model']} run, not a {config.model} run")
    saved.update(out=str(config.resume), overwrite=True, resume=str(config.resume))
    return TrainConfig(**saved), checkpoint


def train(config: TrainConfig) -> dict:
    """Train one model as `config` says, write its run folder, and return the summary dict.

    Under torchrun every process calls this; they train data-parallel and rank 0 writes the files.
    """
    owns_group = distributed.launched_by_torchrun() and not torch.distributed.is_initialized()
    try:
        return _train(config)
    except torch.OutOfMemoryError:
        batch = config.batch_size or "the default"
        raise FastgenError(f"out of GPU memory at batch size {batch}; try a smaller --batch-size, --amp, "
                           "or --no-cuda-graphs") from None
    finally:
        if owns_group:
            distributed.shutdown()


def _train(config: TrainConfig) -> dict:
    checkpoint = None
    if config.resume is not None:
        config, checkpoint = _resumed_config(config)
    config = config.resolved()
    if config.data_dir is not None:  # recorded absolute, so that evaluating the run later finds it
        config.data_dir = str(Path(config.data_dir).resolve())
    group, device_choice = distributed.init(config.device)
    device = resolve_device(device_choice)
    is_main = group is None or group.is_main
    notice = _notice if is_main else (lambda message: None)
    world = group.world_size if group is not None else 1
    if config.batch_size % world:
        raise FastgenError(f"--batch-size {config.batch_size} (the global batch) must be divisible by the "
                           f"{world} torchrun processes")
    if config.kernels == "triton" and not triton_runs_on(device):
        raise FastgenError("--kernels triton needs a CUDA device with Triton (or TRITON_INTERPRET=1 on the CPU); "
                           "use --kernels auto or eager")
    amp_dtype = resolve_amp(config, device, notice)

    torch.manual_seed(config.seed)
    cpu_tuning = tune_for_cpu_training() if device.type == "cpu" else None  # before the first parallel op
    low = -1.0 if config.model == "gan" else 0.0
    train_split = DeviceSplit.load(config.dataset, "train", device, low, config.data_dir, config.download)
    train_split = train_split.head(config.train_images)
    if config.batch_size > len(train_split):
        raise FastgenError(f"--batch-size {config.batch_size} is larger than the training split ({len(train_split)} images)")
    test_split = (DeviceSplit.load(config.dataset, "test", device, low, config.data_dir, config.download)
                  if config.model == "vae" else None)
    out = prepare_out(config.out or default_out(config.model), config.overwrite)
    if group is not None:
        group.barrier()  # every rank has checked --out before rank 0 writes into it
    config.out = str(out)
    writer = RunWriter(out, enabled=is_main)

    trainer = (GANTrainer if config.model == "gan" else VAETrainer)(config, device, amp_dtype)
    if group is not None:
        trainer.reduce_grads = group.average_grads
    data_gen = torch.Generator(device=device).manual_seed(config.seed)
    position = run_state.Position(epoch=1, step_in_epoch=0, step=0)
    if checkpoint is not None:
        position = _restore(checkpoint, trainer, data_gen, writer)
    use_compile, use_graphs = _step_paths(config, device, group is not None, notice)
    step_fn = build_step(trainer.step, device, use_compile, use_graphs, notice)
    if use_compile and not config.quiet:
        notice("compiling the training step on its first call (torch.compile: tens of seconds the first time, "
               "seconds once Inductor has cached it; --no-compile skips it)")
    if checkpoint is not None:
        run_state.restore_rng(checkpoint)  # the noise stream as it was after the last saved step
    if group is not None:
        distributed.own_random_streams(trainer, config.seed, group.rank, position.step)
    run_info = {"config": config.to_dict(), "device": str(device), "device_name": device_name(device),
                "amp_dtype": str(amp_dtype).replace("torch.", "") if amp_dtype else None, "versions": versions(),
                "compile": use_compile, "cuda_graphs": use_graphs,
                "triton_kernels": config.kernels != "eager" and triton_runs_on(device),
                "torch_threads": torch.get_num_threads(), "cpu_tuning": cpu_tuning, "world_size": world}
    writer.write_json("config.json", run_info)

    sample_gen = torch.Generator(device="cpu").manual_seed(config.seed + 1)
    fixed_noise = torch.randn(64, trainer.sampler().latent_dim, generator=sample_gen).to(device)
    fixed_test = test_split.scale(test_split.images[:32]) if test_split is not None else None

    steps_per_epoch = len(train_split) // config.batch_size
    total_steps = config.epochs * steps_per_epoch
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)
    last_epoch = -(-total_steps // steps_per_epoch)
    # Throughput excludes warm-up: the first epoch when there are several, else the first tenth of the steps.
    remaining = total_steps - position.step
    warmup_steps = position.step + (steps_per_epoch if remaining > steps_per_epoch else max(1, remaining // 10))
    show_bar = is_main and not config.quiet and sys.stderr.isatty()

    def save_checkpoint(pos: run_state.Position, sums: torch.Tensor, epoch_gen_state: torch.Tensor) -> None:
        if not is_main:
            return
        run_state.save(out / run_state.CHECKPOINT_FILE, trainer, pos, sums, epoch_gen_state, config.to_dict(),
                       writer.metrics, config.model)

    step = position.step
    start = time.perf_counter()
    steady_start = None
    steady_s = 0.0  # training-loop time after warm-up; evaluation and file writing are not counted
    with _stop_requests() as stop:
        for epoch in range(position.epoch, last_epoch + 1):
            epoch_start = time.perf_counter()
            epoch_gen_state = data_gen.get_state()
            batches = train_split.epoch_batches(config.batch_size, data_gen)
            n_steps = min(steps_per_epoch, total_steps - (epoch - 1) * steps_per_epoch)
            first = 0
            sums = torch.zeros(len(trainer.metric_names), device=device)
            if group is not None:
                batches = batches[:, group.rank::world]  # this rank's shard of every global batch
            if checkpoint is not None and epoch == position.epoch and position.step_in_epoch:
                first = position.step_in_epoch
                sums = checkpoint.tensors["progress.epoch_sums"].to(device)
            bar = tqdm(total=n_steps, initial=first, desc=f"epoch {epoch}/{last_epoch}", unit="step",
                       disable=not show_bar, leave=False)
            for i in range(first, n_steps):
                stats = step_fn(train_split.batch(batches[i]))
                sums += stats
                step += 1
                if step == warmup_steps:
                    _sync(device)
                    steady_start = time.perf_counter()
                if show_bar:
                    bar.update(1)
                    if step % _POSTFIX_EVERY == 0:
                        rate = bar.format_dict["rate"] or 0.0
                        bar.set_postfix({**dict(zip(trainer.metric_names[:2], (f"{v:.3f}" for v in stats.tolist()))),
                                         "img/s": f"{rate * config.batch_size:.0f}"})
                due = config.checkpoint_every is not None and step % config.checkpoint_every == 0
                stopping = _stop_agreed(stop, group, device, step)
                if (stopping or due) and i + 1 < n_steps:
                    if group is not None:
                        sums = group.mean(sums)  # every rank continues from the mean, as a resume would
                    _check_finite(trainer, sums, epoch, step, out)
                    save_checkpoint(run_state.Position(epoch, i + 1, step), sums, epoch_gen_state)
                if stopping and i + 1 < n_steps:
                    bar.close()
                    raise Interrupted(f"interrupted at step {step}; checkpoint saved; resume with: "
                                      f"python -m fastgen.train --resume {out}", _signal_number(stop))
            bar.close()
            if group is not None:
                sums = group.mean(sums)  # metrics are the mean over ranks
            values = (sums / n_steps).tolist()  # the epoch's one host sync
            loop_end = time.perf_counter()
            epoch_s = loop_end - epoch_start
            if steady_start is not None:
                steady_s += loop_end - max(epoch_start, steady_start)
            _check_finite(trainer, sums, epoch, step, out)
            row = {"epoch": epoch, "step": step, **dict(zip(trainer.metric_names, values)),
                   "epoch_s": epoch_s, "samples_per_s": (n_steps - first) * config.batch_size / epoch_s}
            if test_split is not None and is_main:
                row["test_loss"] = trainer.test_loss(test_split, seed=config.seed)
            writer.append_metrics(row)
            if is_main and (epoch % config.sample_every == 0 or epoch == last_epoch):
                _save_samples(writer, trainer, fixed_noise, fixed_test, epoch)
            writer.save_weights({name: getattr(trainer, name) for name in trainer.modules}, config.model, config.to_dict())
            if n_steps < steps_per_epoch:  # stopped by --max-steps: a resume may finish this epoch
                save_checkpoint(run_state.Position(epoch, n_steps, step), sums, epoch_gen_state)
            else:
                save_checkpoint(run_state.Position(epoch + 1, 0, step), torch.zeros_like(sums), data_gen.get_state())
            if is_main and not config.quiet and not show_bar:
                shown = ", ".join(f"{k} {v:.4g}" for k, v in row.items() if k not in ("epoch", "step"))
                print(f"epoch {epoch}/{last_epoch}: {shown}", flush=True)
            if _stop_agreed(stop, group, device):
                raise Interrupted(f"interrupted after epoch {epoch} (step {step}); checkpoint saved; resume with: "
                                  f"python -m fastgen.train --resume {out}", _signal_number(stop))

    _sync(device)
    end = time.perf_counter()
    steady_samples = (step - warmup_steps) * config.batch_size
    final = writer.metrics[-1]
    writer.plot_losses(trainer.metric_names[:2] if config.model == "gan" else ("loss", "test_loss"))
    summary = {
        "model": config.model, "dataset": config.dataset, "epochs": last_epoch, "steps": step,
        "batch_size": config.batch_size, "wall_s": end - start,
        "samples_per_s": steady_samples / steady_s if steady_samples > 0 and steady_s > 0 else None,
        "final": {k: v for k, v in final.items() if k not in ("epoch", "step", "epoch_s", "samples_per_s")},
        "device": str(device), "device_name": device_name(device), "amp": amp_dtype is not None,
        "amp_dtype": run_info["amp_dtype"], "kernels": config.kernels, **describe(step_fn),
        "resumed_from_step": checkpoint.position.step if checkpoint is not None else None,
        "out": str(out),
    }
    path = writer.write_json("summary.json", summary)
    if is_main and not config.quiet:
        print(f"summary: {path}")
    return summary


def _restore(checkpoint: run_state.Checkpoint, trainer, data_gen: torch.Generator, writer: RunWriter) -> run_state.Position:
    """Load a checkpoint's training state and finished epochs' metrics; return where to continue."""
    run_state.restore(trainer, checkpoint)
    position = checkpoint.position
    data_gen.set_state(checkpoint.tensors["rng.data_epoch_start"].to(data_gen.get_state().device))
    for row in checkpoint.metrics:
        if row["epoch"] < position.epoch:  # a partial epoch's row is rewritten when it completes
            writer.append_metrics(row)
    return position


def _step_paths(config: TrainConfig, device: torch.device, distributed_run: bool, notice) -> tuple[bool, bool]:
    """(compile, cuda_graphs) as asked for, else the defaults; what the device or torchrun cannot do is dropped, saying so."""
    # Compiled by default on every device: on this project's 2-core CPUs the compiled step measures about
    # 1.2x eager for both models (`pytest bench/test_steps.py --benchmark-only`; README, Performance).
    use_compile = config.compile if config.compile is not None else True
    use_graphs = config.cuda_graphs if config.cuda_graphs is not None else device.type == "cuda"
    if use_graphs and device.type != "cuda":
        notice("--cuda-graphs needs a CUDA device; ignored")
        use_graphs = False
    if distributed_run and (use_compile or use_graphs):
        if config.compile or config.cuda_graphs:
            notice("under torchrun the step runs eagerly (the gradient all-reduce sits inside it); "
                   "--compile and --cuda-graphs are single-process features for now")
        use_compile = use_graphs = False
    return use_compile, use_graphs


def _stop_agreed(stop: list[int], group, device: torch.device, step: int | None = None) -> bool:
    """Whether to stop now. Alone: as soon as a signal came. Under torchrun all ranks must stop after the
    same step, so they agree (one tiny all-reduce) every _POSTFIX_EVERY steps and at each epoch's end."""
    if group is None:
        return bool(stop)
    if step is not None and step % _POSTFIX_EVERY:
        return False
    return group.any(bool(stop), device)


def _signal_number(stop: list[int]) -> int:
    return stop[0] if stop else signal.SIGINT  # a rank that got no signal itself stops with its peers


def _check_finite(trainer, sums: torch.Tensor, epoch: int, step: int, out) -> None:
    """Stop a diverged run before it overwrites the last good checkpoint."""
    if bool(torch.isfinite(sums).all()):
        return
    bad = ", ".join(f"{name}={value}" for name, value in zip(trainer.metric_names, sums.tolist())
                    if not math.isfinite(value))
    raise FastgenError(f"training diverged in epoch {epoch} (by step {step}): {bad}; the last good checkpoint in "
                       f"{out} is kept; try a lower --lr or train without --amp")


@torch.no_grad()
def _save_samples(writer: RunWriter, trainer, fixed_noise, fixed_test, epoch: int) -> None:
    trainer.train(False)
    model = trainer.sampler()
    if fixed_test is None:
        images = (model(fixed_noise).float() + 1) / 2
    else:
        images = torch.sigmoid(model.decode(fixed_noise).float()).view(-1, 1, 28, 28)
        recon = model.reconstruct(fixed_test)
        # Rows alternate: 8 test images, then their 8 reconstructions.
        pairs = torch.stack([fixed_test.view(-1, 8, 1, 28, 28), recon.view(-1, 8, 1, 28, 28)], dim=1)
        writer.save_grid(pairs.reshape(-1, 1, 28, 28), f"recon_{epoch:04d}.png")
    writer.save_grid(images, f"epoch_{epoch:04d}.png")
    trainer.train(True)
