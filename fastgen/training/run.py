"""`train(config)`: set a run up (or resume one), hand it to the epoch loop, write its summary.

Set-up, top-down: the configuration (a resumed run's own, with the few settings a resume may change),
the device and torchrun group, the data on the device, the run folder, the model's `Trainer`, the
checkpoint's state, the compiled/graphed step, and config.json. `loop.run_epochs` does the rest.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from pathlib import Path

import torch

from fastgen.config import TrainConfig
from fastgen.data import DeviceSplit
from fastgen.environment import cpu_has_fast_bf16, device_name, resolve_device, versions
from fastgen.errors import FastgenError
from fastgen.ops import cpu_backend, native, triton_runs_on
from fastgen.training import checkpoint as run_state
from fastgen.training import distributed
from fastgen.training import group as seed_group
from fastgen.training.compiled_step import build_step, describe
from fastgen.training.cpu_tuning import tune_for_cpu_training
from fastgen.training.loop import Replica, Run, run_epochs
from fastgen.training.memory import check_group_fits
from fastgen.training.run_files import RunWriter, default_out, prepare_out
from fastgen.training.trainers import TRAINERS, replica_seeds

# Settings a resume may change; everything else is the saved run's. None/False (and "auto" for the
# device) mean "not asked for".
RESUME_OVERRIDES = ("epochs", "max_steps", "quiet", "device", "compile", "cuda_graphs", "checkpoint_every", "save_interval")


def notice(message: str) -> None:
    print(f"fastgen: {message}", file=sys.stderr)


def _silent(message: str) -> None:
    pass


def train(config: TrainConfig) -> dict:
    """Train the paper's GAN or VAE as `config` says; write the run folder; return the summary dict.

    With `seeds=S` (S > 1) the S seeds train as one group in one step, each replica writing a single run's folder
    OUT/seed_<seed>/; the summary returned (and written to OUT/summary.json) holds each replica's summary under
    "replicas". Under torchrun (`torchrun --nproc_per_node N -m fastgen.train ...`) every rank trains its shard of
    each global batch; rank 0 writes the files.
    """
    owns_group = distributed.launched_by_torchrun() and not torch.distributed.is_initialized()
    try:
        run, amp_dtype, run_info = _set_up(config)
        start = time.perf_counter()
        with cpu_backend("native") if run.config.kernels == "native" else contextlib.nullcontext():
            progress = run_epochs(run)
        return _write_summary(run, progress, time.perf_counter() - start, run_info)
    except torch.OutOfMemoryError:
        batch = config.batch_size or "the default"
        raise FastgenError(
            f"out of GPU memory at batch size {batch}; try a smaller --batch-size, --amp, or --no-cuda-graphs"
        ) from None
    finally:
        if owns_group:
            distributed.shutdown()


def _set_up(config: TrainConfig) -> tuple[Run, torch.dtype | None, dict]:
    checkpoints = None
    if config.resume is not None:
        config, checkpoints = resumed_config(config)
    config = config.resolved()
    group, device_choice = distributed.init(config.device)
    if group is not None and config.seeds > 1:
        raise FastgenError("--seeds trains a group of seeds in one process; run it without torchrun")
    device = resolve_device(device_choice)
    config.device = device.type  # recorded resolved, so that a resume continues on the same kind of device
    if config.data_dir is not None:  # recorded absolute, so that evaluating the run later finds it
        config.data_dir = str(Path(config.data_dir).resolve())
    say = notice if group is None or group.is_main else _silent
    _check_device_and_batch(config, device, group)
    amp_dtype = resolve_amp(config, device, say)

    torch.manual_seed(config.seed)
    cpu_tuning = tune_for_cpu_training() if device.type == "cpu" else None  # before the first parallel op
    trainer_class = TRAINERS[config.model]
    seeds = replica_seeds(config)
    check_group_fits(config.model, len(seeds), config.batch_size, device)
    train_split, test_split = _load_splits(config, device, trainer_class)
    compiled = step_paths(config, device, group is not None, _silent)[0]
    config.kernels = resolve_kernels(config.kernels, device, compiled, say)  # recorded resolved: a resume keeps them
    out = prepare_out(config.out or default_out(config.model), config.overwrite, samples=len(seeds) == 1)
    if config.overwrite and config.resume is None:  # what another kind of run left there must not be read as this one's
        stale = ("checkpoint.safetensors", "model.safetensors", "config.json") if len(seeds) > 1 else (seed_group.GROUP_FILE,)
        for name in stale:
            (out / name).unlink(missing_ok=True)
    if group is not None:
        group.barrier()  # every rank has checked --out before rank 0 writes into it
    config.out = str(out)

    trainer = trainer_class(config, device, amp_dtype, test_split)
    if group is not None:
        trainer.reduce_grads = group.average_grads
    replicas = _replicas(config, out, device, seeds, enabled=group is None or group.is_main)
    position = run_state.Position(epoch=1, step_in_epoch=0, step=0)
    if checkpoints is not None:
        position = _restore(checkpoints, trainer, replicas)
    elif trainer.replicas is not None:
        seed_group.write(out, config.to_dict(), seeds, None)  # the group's record, before its first checkpoint
    # Before the step is traced: the fused linear's implementations measured at its shapes (a GPU only).
    linear_choices = trainer.tune_kernels(config.batch_size, amp_dtype or torch.float32)  # none under --kernels eager
    step_fn = _build_step(config, device, trainer, train_split, group, say)
    if checkpoints is not None:
        run_state.restore_rng(checkpoints[0])  # torch's generators as they were after the last saved step
    if group is not None:
        distributed.own_random_streams(trainer, config.seed, group.rank, position.step)
    run = Run(config, device, group, trainer, step_fn, train_split, replicas, out, position, say)
    run_info = _write_run_info(run, amp_dtype, cpu_tuning, linear_choices)
    return run, amp_dtype, run_info


def _replicas(config: TrainConfig, out: Path, device: torch.device, seeds: list[int], enabled: bool) -> list[Replica]:
    """The run's replica (a single run), or a group's, each with its folder and data-order generator."""
    if len(seeds) == 1:
        writer = RunWriter(out, enabled=enabled)
        return [Replica(seeds[0], writer, torch.Generator(device=device).manual_seed(seeds[0]), config.to_dict())]
    replicas = []
    for seed in seeds:
        folder = prepare_out(seed_group.replica_dir(out, seed), overwrite=True)  # the group's folder was checked
        own = {**config.to_dict(), "seed": seed, "seeds": 1, "out": str(folder), "resume": str(folder) if config.resume else None}
        replicas.append(Replica(seed, RunWriter(folder), torch.Generator(device=device).manual_seed(seed), own))
    return replicas


def resumed_config(config: TrainConfig) -> tuple[TrainConfig, list[run_state.Checkpoint]]:
    """The saved run's configuration, with the settings of RESUME_OVERRIDES that `config` asks for, and its
    checkpoint (a group's: one per replica, of one step)."""
    if seed_group.is_group(config.resume):
        record, checkpoints = seed_group.load_checkpoints(Path(config.resume))
        saved = dict(record["config"])
    else:
        if (Path(config.resume) / seed_group.PENDING_FILE).exists():
            raise FastgenError(
                f"--resume {config.resume}: its group's last checkpoint write was interrupted; resume the group "
                f"first (--resume {Path(config.resume).parent}), then this replica alone if you want"
            )
        checkpoints = [run_state.load(config.resume)]
        saved = dict(checkpoints[0].config)
    checkpoint = checkpoints[0]
    if config.seeds != 1 and config.seeds != saved.get("seeds", 1):
        raise FastgenError(f"--resume {config.resume} holds {saved.get('seeds', 1)} seed(s); --seeds cannot change on a resume")
    for key in RESUME_OVERRIDES:
        if getattr(config, key) not in (None, False) and not (key == "device" and config.device == "auto"):
            saved[key] = getattr(config, key)
    if config.model is not None and config.model != saved["model"]:
        raise FastgenError(f"--resume {config.resume} holds a {saved['model']} run, not a {config.model} run")
    trained_on = checkpoint.config.get("device", "auto")
    if trained_on != "auto" and resolve_device(saved["device"]).type != trained_on:
        # The saved generator states are the device's own: restoring them on another kind is not possible.
        raise FastgenError(
            f"--resume {config.resume}: the run trained on {trained_on} and resumes only there "
            f"(asked: --device {saved['device']})"
        )
    if saved.get("kernels") == "auto":  # a run from before kernels were recorded resolved: what it ran
        saved["kernels"] = _recorded_kernels(Path(config.resume)) or "auto"
    saved.update(out=str(config.resume), overwrite=True, resume=str(config.resume))
    return TrainConfig(**saved), checkpoints


def _recorded_kernels(run_dir: Path) -> str | None:
    try:
        return json.loads((run_dir / "config.json").read_text()).get("kernels_used")
    except (OSError, ValueError, AttributeError):
        return None


def _check_device_and_batch(config: TrainConfig, device: torch.device, group) -> None:
    world = group.world_size if group is not None else 1
    if config.batch_size % world:
        raise FastgenError(
            f"--batch-size {config.batch_size} (the global batch) must be divisible by the {world} torchrun processes"
        )
    if config.kernels == "triton" and not triton_runs_on(device):
        raise FastgenError(
            "--kernels triton needs a CUDA device with Triton (or TRITON_INTERPRET=1 on the CPU); use --kernels auto or eager"
        )
    if config.kernels == "native" and (device.type != "cpu" or not native.load()):
        why = "they are CPU kernels" if device.type != "cpu" else native.reason
        raise FastgenError(f"--kernels native cannot run here ({why}); use --kernels auto or eager")


def resolve_amp(config: TrainConfig, device: torch.device, say=notice) -> torch.dtype | None:
    """The autocast dtype to train with, or None for float32 (saying why, once, when --amp was asked for)."""
    if not config.amp:
        return None
    dtype = torch.float16 if config.amp_dtype == "fp16" else torch.bfloat16
    if device.type == "cuda":
        if dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
            say("--amp: this GPU has no bf16; training runs in float32 (try --amp-dtype fp16)")
            return None
        return dtype
    if dtype == torch.float16:
        say("--amp-dtype fp16 is for CUDA devices; training runs in float32 on the CPU")
        return None
    if not cpu_has_fast_bf16():
        say("--amp: this CPU has no fast bf16 (no AVX512-BF16 or AMX), so training runs in float32")
        return None
    return dtype


def _load_splits(config: TrainConfig, device: torch.device, trainer_class) -> tuple[DeviceSplit, DeviceSplit | None]:
    """The training split (its first --train-images) and, if the trainer wants it, the test split."""

    def load(split: str) -> DeviceSplit:
        return DeviceSplit.load(config.dataset, split, device, trainer_class.data_low, config.data_dir, config.download)

    train_split = load("train").head(config.train_images)
    if config.batch_size > len(train_split):
        raise FastgenError(f"--batch-size {config.batch_size} is larger than the training split ({len(train_split)} images)")
    return train_split, load("test") if trainer_class.needs_test_split else None


def _restore(checkpoints: list[run_state.Checkpoint], trainer, replicas: list[Replica]) -> run_state.Position:
    """Load the checkpoints' training state (a group's into each replica's slices) and finished epochs' metrics;
    return where to continue."""
    for i, (checkpoint, replica) in enumerate(zip(checkpoints, replicas)):
        run_state.restore(trainer, checkpoint, i if trainer.replicas is not None else None)
        replica.checkpoint = checkpoint
        replica.data_gen.set_state(checkpoint.tensors["rng.data_epoch_start"].to(replica.data_gen.get_state().device))
        for row in checkpoint.metrics:
            if row["epoch"] < checkpoint.position.epoch:  # a partial epoch's row is rewritten when it completes
                replica.writer.append_metrics(row)
    return checkpoints[0].position


def _build_step(config: TrainConfig, device: torch.device, trainer, train_split: DeviceSplit, group, say):
    """The step from a batch's indices: the gather and scaling of the batch, then the trainer's step, compiled
    and graphed as asked for (else the defaults), saying so. Inside the graph, a CUDA-graph replay copies
    only the B indices into its static input, and the gather fuses with the scaling under torch.compile."""
    use_compile, use_graphs = step_paths(config, device, group is not None, say)

    def indexed_step(index: torch.Tensor) -> torch.Tensor:
        return trainer.step(train_split.batch(index))

    step_fn = build_step(indexed_step, device, use_compile, use_graphs, say)
    if use_compile and not config.quiet:
        say(
            "compiling the training step on its first call (torch.compile: tens of seconds the first time, "
            "seconds once Inductor has cached it; --no-compile skips it)"
        )
    return step_fn


def step_paths(config: TrainConfig, device: torch.device, distributed_run: bool, say) -> tuple[bool, bool]:
    """(compile, cuda_graphs) as asked for, else the defaults; what the device or torchrun cannot do is dropped, saying so."""
    # Compiled by default on every device: on this project's 2-core CPUs the compiled step measures about
    # 1.2x eager for both models (`pytest bench/test_steps.py --benchmark-only`; README, Performance).
    use_compile = config.compile if config.compile is not None else True
    use_graphs = config.cuda_graphs if config.cuda_graphs is not None else device.type == "cuda"
    if use_graphs and device.type != "cuda":
        say("--cuda-graphs needs a CUDA device; ignored")
        use_graphs = False
    if distributed_run and (use_compile or use_graphs):
        if config.compile or config.cuda_graphs:
            say(
                "under torchrun the step runs eagerly (the gradient all-reduce sits inside it); "
                "--compile and --cuda-graphs are single-process features for now"
            )
        use_compile = use_graphs = False
    return use_compile, use_graphs


def resolve_kernels(kernels: str, device: torch.device, compiled: bool = True, say=notice) -> str:
    """What `--kernels auto` means here: on the CPU the native kernels (built on first use) when the step
    is compiled, plain PyTorch ops when it runs eagerly; Triton where it runs (CUDA), else plain ops.

    Measured on a 2-core AMD EPYC (README, Performance): compiled, the native step was faster for the VAE
    in every run and as fast as or faster for the GAN in 3 of 4; eager, it was slower in 3 of 4 runs for
    the GAN and never faster for the VAE (each custom op costs a Python dispatch there)."""
    if kernels != "auto":
        return kernels
    if device.type == "cpu" and not compiled:
        return "eager"
    if device.type == "cpu":
        if native.load():
            return "native"
        say(f"native CPU kernels not in use ({native.reason}); training with plain PyTorch ops")
        return "eager"
    return "triton" if triton_runs_on(device) else "eager"


def kernels_used(kernels: str, device: torch.device) -> str:
    """What the fused layers run: "native" (CPU kernels), "triton", or "eager" (plain PyTorch ops)."""
    if kernels == "native":
        return "native"
    return "triton" if kernels != "eager" and triton_runs_on(device) else "eager"


def _write_run_info(run: Run, amp_dtype, cpu_tuning, linear_choices: dict[str, str]) -> dict:
    info = {
        "config": run.config.to_dict(),
        "device": str(run.device),
        "device_name": device_name(run.device),
        "amp_dtype": str(amp_dtype).replace("torch.", "") if amp_dtype else None,
        "versions": versions(),
        **describe(run.step_fn),
        "triton_kernels": run.config.kernels != "eager" and triton_runs_on(run.device),
        "kernels_used": kernels_used(run.config.kernels, run.device),
        "linear_choices": linear_choices,  # measured per case on a GPU (fastgen/ops/linear_tuning.py)
        "torch_threads": torch.get_num_threads(),
        "cpu_tuning": cpu_tuning,
        "world_size": run.group.world_size if run.group is not None else 1,
    }
    seeds = [replica.seed for replica in run.replicas]
    for i, replica in enumerate(run.replicas):
        own = {**info, "config": replica.config}
        if run.seed_group:  # which group this folder belongs to
            own["seed_group"] = {"out": str(run.out), "seeds": seeds, "replica": i}
        replica.writer.write_json("config.json", own)
    return info


def _write_summary(run: Run, progress, wall_s: float, run_info: dict) -> dict:
    summaries = [_replica_summary(run, replica, progress, wall_s, run_info) for replica in run.replicas]
    if not run.seed_group:
        summary = summaries[0]
    else:
        summary = {
            "model": run.config.model,
            "seeds": [replica.seed for replica in run.replicas],
            "epochs": progress.last_epoch,
            "steps": progress.step,
            "wall_s": wall_s,
            "samples_per_s": _times(progress.samples_per_s(run.config.batch_size), len(run.replicas)),  # all replicas'
            "replicas": summaries,
            "out": str(run.out),
        }
        if run.is_main:
            RunWriter(run.out).write_json("summary.json", summary)
    if run.is_main and not run.config.quiet:
        print(f"summary: {run.out / 'summary.json'}")
    return summary


def _times(value: float | None, factor: int) -> float | None:
    return None if value is None else value * factor


def _replica_summary(run: Run, replica: Replica, progress, wall_s: float, run_info: dict) -> dict:
    final = replica.writer.metrics[-1]
    replica.writer.plot_losses(run.trainer.loss_curves)
    summary = {
        "model": run.config.model,
        "seed": replica.seed,
        "dataset": run.config.dataset,
        "epochs": progress.last_epoch,
        "steps": progress.step,
        "batch_size": run.config.batch_size,
        "wall_s": wall_s,
        "samples_per_s": progress.samples_per_s(run.config.batch_size),
        "final": {k: v for k, v in final.items() if k not in ("epoch", "step", "epoch_s", "samples_per_s")},
        "device": str(run.device),
        "device_name": run_info["device_name"],
        "amp": run_info["amp_dtype"] is not None,
        "amp_dtype": run_info["amp_dtype"],
        "kernels": run.config.kernels,
        **describe(run.step_fn),
        "resumed_from_step": run.checkpoint.position.step if run.checkpoint is not None else None,
        "out": str(replica.writer.out),
    }
    replica.writer.write_json("summary.json", summary)
    return summary
