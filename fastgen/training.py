"""`train(config)`: data on the device, the step loop, metrics and files. The path of one batch:
DeviceSplit.epoch_batches -> DeviceSplit.batch -> Trainer.step (fused ops) -> device-side sums -> metrics.jsonl.
"""
from __future__ import annotations

import sys
import time

import torch
from tqdm import tqdm

from .config import TrainConfig
from .data import DeviceSplit
from .environment import cpu_has_fast_bf16, device_name, resolve_device, versions
from .errors import FastgenError
from .ops import triton_runs_on
from .outputs import RunWriter, default_out, prepare_out
from .compiled_step import build_step, describe
from .steps import GANTrainer, VAETrainer

_POSTFIX_EVERY = 50  # steps between progress-bar loss readouts (each one is a host sync)


def _notice(message: str) -> None:
    print(f"fastgen: {message}", file=sys.stderr)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# Measured with `pytest bench/test_steps.py --benchmark-only` on this project's 2-core CPUs: the
# compiled step is 0.73x eager for the GAN and 1.28x for the VAE (README, Performance).
COMPILE_ON_CPU = {"gan": False, "vae": True}


def default_compile(model: str, device: torch.device) -> bool:
    """Compile where it measured faster: always on CUDA; on the CPU per model."""
    return device.type == "cuda" or COMPILE_ON_CPU[model]


def resolve_amp(config: TrainConfig, device: torch.device) -> torch.dtype | None:
    """The autocast dtype to train with, or None for float32 (saying why, once, when --amp was asked for)."""
    if not config.amp:
        return None
    dtype = torch.float16 if config.amp_dtype == "fp16" else torch.bfloat16
    if device.type == "cuda":
        if dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
            _notice("--amp: this GPU has no bf16; training runs in float32 (try --amp-dtype fp16)")
            return None
        return dtype
    if dtype == torch.float16:
        _notice("--amp-dtype fp16 is for CUDA devices; training runs in float32 on the CPU")
        return None
    if not cpu_has_fast_bf16():
        _notice("--amp: this CPU has no fast bf16 (no AVX512-BF16 or AMX), so training runs in float32")
        return None
    return dtype


def train(config: TrainConfig) -> dict:
    """Train one model as `config` says, write its run folder, and return the summary dict."""
    config = config.resolved()
    device = resolve_device(config.device)
    if config.kernels == "triton" and not triton_runs_on(device):
        raise FastgenError("--kernels triton needs a CUDA device with Triton (or TRITON_INTERPRET=1 on the CPU); "
                           "use --kernels auto or eager")
    amp_dtype = resolve_amp(config, device)

    torch.manual_seed(config.seed)
    if device.type == "cpu":
        # Adam's second moments and small activations drift into float32 denormals as training goes
        # on, and x86 arithmetic on denormals is many times slower: flush them to zero.
        torch.set_flush_denormal(True)
    low = -1.0 if config.model == "gan" else 0.0
    train_split = DeviceSplit.load(config.dataset, "train", device, low, config.data_dir, config.download)
    if config.batch_size > len(train_split):
        raise FastgenError(f"--batch-size {config.batch_size} is larger than the training split ({len(train_split)} images)")
    test_split = (DeviceSplit.load(config.dataset, "test", device, low, config.data_dir, config.download)
                  if config.model == "vae" else None)
    out = prepare_out(config.out or default_out(config.model), config.overwrite)
    config.out = str(out)
    writer = RunWriter(out)

    trainer = (GANTrainer if config.model == "gan" else VAETrainer)(config, device, amp_dtype)
    use_compile = config.compile if config.compile is not None else default_compile(config.model, device)
    use_graphs = config.cuda_graphs if config.cuda_graphs is not None else device.type == "cuda"
    if use_graphs and device.type != "cuda":
        _notice("--cuda-graphs needs a CUDA device; ignored")
        use_graphs = False
    step_fn = build_step(trainer.step, device, use_compile, use_graphs, _notice)
    run_info = {"config": config.to_dict(), "device": str(device), "device_name": device_name(device),
                "amp_dtype": str(amp_dtype).replace("torch.", "") if amp_dtype else None, "versions": versions(),
                "compile": use_compile, "cuda_graphs": use_graphs,
                "triton_kernels": config.kernels != "eager" and triton_runs_on(device),
                "torch_threads": torch.get_num_threads()}
    writer.write_json("config.json", run_info)

    sample_gen = torch.Generator(device="cpu").manual_seed(config.seed + 1)
    latent_dim = trainer.sampler().latent_dim
    fixed_noise = torch.randn(64, latent_dim, generator=sample_gen).to(device)
    fixed_test = test_split.scale(test_split.images[:32]) if test_split is not None else None
    data_gen = torch.Generator(device=device).manual_seed(config.seed)

    steps_per_epoch = len(train_split) // config.batch_size
    total_steps = config.epochs * steps_per_epoch
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)
    last_epoch = -(-total_steps // steps_per_epoch)
    # Throughput excludes warm-up: the first epoch when there are several, else the first tenth of the steps.
    warmup_steps = steps_per_epoch if last_epoch > 1 else max(1, total_steps // 10)
    show_bar = not config.quiet and sys.stderr.isatty()

    step = 0
    start = time.perf_counter()
    steady_start = None
    steady_s = 0.0  # training-loop time after warm-up; evaluation and file writing are not counted
    stats = None
    for epoch in range(1, last_epoch + 1):
        epoch_start = time.perf_counter()
        sums = torch.zeros(len(trainer.metric_names), device=device)
        batches = train_split.epoch_batches(config.batch_size, data_gen)
        n_steps = min(steps_per_epoch, total_steps - step)
        bar = tqdm(total=n_steps, desc=f"epoch {epoch}/{last_epoch}", unit="step", disable=not show_bar, leave=False)
        for i in range(n_steps):
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
        bar.close()
        values = (sums / n_steps).tolist()  # the epoch's one host sync
        loop_end = time.perf_counter()
        epoch_s = loop_end - epoch_start
        if steady_start is not None:
            steady_s += loop_end - max(epoch_start, steady_start)
        row = {"epoch": epoch, "step": step, **dict(zip(trainer.metric_names, values)),
               "epoch_s": epoch_s, "samples_per_s": n_steps * config.batch_size / epoch_s}
        if test_split is not None:
            row["test_loss"] = trainer.test_loss(test_split, seed=config.seed)
        writer.append_metrics(row)
        if epoch % config.sample_every == 0 or epoch == last_epoch:
            _save_samples(writer, trainer, fixed_noise, fixed_test, epoch)
        writer.save_weights({name: getattr(trainer, name) for name in trainer.modules}, config.model, config.to_dict())
        if not config.quiet and not show_bar:
            shown = ", ".join(f"{k} {v:.4g}" for k, v in row.items() if k not in ("epoch", "step"))
            print(f"epoch {epoch}/{last_epoch}: {shown}", flush=True)

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
        "out": str(out),
    }
    path = writer.write_json("summary.json", summary)
    if not config.quiet:
        print(f"summary: {path}")
    return summary


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
