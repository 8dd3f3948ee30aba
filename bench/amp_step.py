"""The `--amp` step with bf16 working copies against what `--amp` ran before them (autocast over the float32
weights), both in one process, rounds interleaved:

    python -m bench.amp_step [--models gan vae] [--rounds 5] [--eager] [--out DIR]

Each variant's step is built as training builds it (compiled; on CUDA also captured in a CUDA graph; `--eager`
for neither). Per round, every variant runs 20 steps (timed with CUDA events on a GPU); the result is the median
over rounds and the ratio within each round. On CUDA a profile of one variant's 5 steps also counts the GPU
kernels each step launches (the graph's nodes) and their GPU time. Writes amp-step.json and amp-step.md into
--out (default bench/results/<device>/).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import torch

from bench.telemetry import us_per_call, write_result
from fastgen.config import TrainConfig
from fastgen.environment import device_name
from fastgen.ops import cpu_backend, native
from fastgen.training.compiled_step import build_step
from fastgen.training.cpu_tuning import tune_for_cpu_training
from fastgen.training.trainers import TRAINERS

STEPS = 20
BATCH = {"gan": 32, "vae": 100}
VARIANTS = ("working copies", "autocast over float32 weights")


def autocast_over_float32_weights(trainer) -> None:
    """Put a bf16 trainer back on what `--amp` did before the working copies: the step runs on the float32
    weights under autocast (a cast of each weight at each use) and torch's Adam updates them."""
    for optimizer in trainer.optimizers.values():
        optimizer.working, optimizer.native = [], False
    trainer.g_weights = trainer.d_weights = trainer.loss_weights = None


def _build(model: str, variant: str, device: torch.device, compiled: bool, kernels: str):
    torch.manual_seed(0)
    config = TrainConfig(model=model, batch_size=BATCH[model], kernels=kernels).resolved()
    trainer = TRAINERS[model](config, device, torch.bfloat16)
    trainer.tune_kernels(BATCH[model], torch.bfloat16)  # as training does before it compiles (a GPU only)
    if variant != VARIANTS[0]:
        autocast_over_float32_weights(trainer)
    low = -1.0 if model == "gan" else 0.0
    batch = torch.rand(BATCH[model], 784, device=device) * (1 - low) + low
    step = build_step(trainer.step, device, compiled, compiled, print)
    for _ in range(4):  # compilation, CUDA-graph warm-up and capture
        step(batch)
    return lambda: step(batch)


def _kernels_per_step(run, steps: int = 5) -> dict:
    """GPU kernels launched per step and their GPU time (CUDA only)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as profile:
        for _ in range(steps):
            run()
        torch.cuda.synchronize()
    kernels = [e for e in profile.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    return {"kernels": len(kernels) / steps, "gpu_us": sum(e.time_range.elapsed_us() for e in kernels) / steps}


def measure(model: str, device: torch.device, rounds: int, compiled: bool, kernels: str = "auto") -> dict:
    runs = {variant: _build(model, variant, device, compiled, kernels) for variant in VARIANTS}
    times = {variant: [] for variant in VARIANTS}
    for _ in range(rounds):
        for variant, run in runs.items():
            times[variant].append(us_per_call(run, STEPS, device) / 1e3)  # ms per step
    ratios = [before / after for after, before in zip(times[VARIANTS[0]], times[VARIANTS[1]])]
    result = {"model": model, "batch": BATCH[model], "ms": times, "speedup": statistics.median(ratios), "ratios": ratios}
    if device.type == "cuda":
        result["profile"] = {variant: _kernels_per_step(run) for variant, run in runs.items()}
    return result


def _table(results: list[dict], device: str, path: str) -> str:
    lines = [
        f"`--amp` step, bf16 working copies against autocast over float32 weights, {device} ({path}; "
        f"`python -m bench.amp_step`); ms per step, median over rounds of {STEPS} steps, ratios within each round.",
        "",
        "| model | batch | working copies, ms | autocast over float32 weights, ms | speed-up (per round) "
        "| kernels per step | GPU us per step |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        after, before = (statistics.median(r["ms"][v]) for v in VARIANTS)
        spread = f"{r['speedup']:.2f}x ({min(r['ratios']):.2f}-{max(r['ratios']):.2f}x)"
        profile = r.get("profile")
        kernels = " / ".join(f"{profile[v]['kernels']:.0f}" for v in VARIANTS) if profile else "n/a"
        gpu_us = " / ".join(f"{profile[v]['gpu_us']:.0f}" for v in VARIANTS) if profile else "n/a"
        lines.append(f"| {r['model']} | {r['batch']} | {after:.3f} | {before:.3f} | {spread} | {kernels} | {gpu_us} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", choices=tuple(BATCH), default=list(BATCH))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--eager", action="store_true", help="neither compiled nor graphed")
    parser.add_argument("--out", help="folder for amp-step.json and amp-step.md (default bench/results/<device>/)")
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    # The training path: Triton on CUDA; on the CPU the native kernels (where they build) and the process settings.
    on_native = device.type == "cpu" and native.load()
    if device.type == "cpu":
        tune_for_cpu_training()
    name, date = device_name(device), time.strftime("%Y-%m-%d", time.gmtime())
    with cpu_backend("native") if on_native else contextlib.nullcontext():
        kernels = "native" if on_native else "auto"
        results = [measure(model, device, args.rounds, not args.eager, kernels) for model in args.models]
    path = "eager" if args.eager else "compiled and CUDA-graphed" if device.type == "cuda" else "compiled"
    record = {"device": name, "date": date, "compiled": not args.eager, "results": results}
    write_result(args.out, "amp-step", record, _table(results, f"{name}, {date}", path))
    return results


if __name__ == "__main__":
    main()
