"""What a training step launches, kernel by kernel: fastgen's step and the same step with plain modules, each
built as training builds it (compiled; on a GPU also captured in a CUDA graph), profiled over a few steps:

    python -m bench.kernel_profile [--models gan vae] [--dtypes fp32 bf16] [--steps 10] [--out DIR]

On a GPU the rows are CUDA kernels (GPU time per step, launches per step, share of the step's kernel time: the
graph's nodes); on the CPU they are the operators the step calls (self CPU time). Writes kernel-profile.json and
kernel-profile.md into --out (default bench/results/<device>/): per model and dtype the totals of both steps, then
fastgen's kernels, largest first.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections import defaultdict

import torch

from bench.plain_step import plain_trainer
from bench.telemetry import write_result
from fastgen.config import TrainConfig
from fastgen.environment import device_name
from fastgen.ops import cpu_backend, native
from fastgen.training.compiled_step import build_step
from fastgen.training.trainers import TRAINERS

BATCH = {"gan": 64, "vae": 100}
DTYPES = {"fp32": None, "bf16": torch.bfloat16}
VARIANTS = ("fastgen", "plain modules")


def _step(model: str, variant: str, amp_dtype, device: torch.device, kernels: str):
    torch.manual_seed(0)
    config = TrainConfig(model=model, batch_size=BATCH[model], kernels=kernels).resolved()
    if variant == VARIANTS[0]:
        trainer = TRAINERS[model](config, device, amp_dtype)
        trainer.tune_kernels(BATCH[model], amp_dtype or torch.float32)  # as training does before it compiles
    else:
        trainer = plain_trainer(model, config, device, amp_dtype)
    low = -1.0 if model == "gan" else 0.0
    batch = torch.rand(BATCH[model], 784, device=device) * (1 - low) + low
    step = build_step(trainer.step, device, True, device.type == "cuda", print)
    for _ in range(4):  # compilation, CUDA-graph warm-up and capture
        step(batch)
    return lambda: step(batch)


def kernel_table(events, steps: int, on_gpu: bool) -> list[dict]:
    """Per kernel (GPU) or operator (CPU) name: launches per step, microseconds per step, share; largest first."""
    count, us = defaultdict(int), defaultdict(float)
    for e in events:
        if on_gpu and e.device_type == torch.autograd.DeviceType.CUDA:
            count[e.name] += 1
            us[e.name] += e.time_range.elapsed_us()
        elif not on_gpu and e.device_type == torch.autograd.DeviceType.CPU:
            count[e.name] += 1
            us[e.name] += e.self_cpu_time_total
    total = sum(us.values()) or 1.0
    rows = [{"name": n, "per_step": count[n] / steps, "us_per_step": us[n] / steps, "share": us[n] / total} for n in us]
    return sorted(rows, key=lambda r: -r["us_per_step"])


def profile(run, device: torch.device, steps: int) -> list[dict]:
    on_gpu = device.type == "cuda"
    activities = [torch.profiler.ProfilerActivity.CUDA if on_gpu else torch.profiler.ProfilerActivity.CPU]
    with torch.profiler.profile(activities=activities) as prof:
        for _ in range(steps):
            run()
        if on_gpu:
            torch.cuda.synchronize()
    return kernel_table(prof.events(), steps, on_gpu)


def _kernel_row(k: dict) -> str:
    return f"| `{k['name'][:90]}` | {k['per_step']:.0f} | {k['us_per_step']:.1f} | {k['share']:.0%} |"


def _markdown(results: list[dict], header: str, top: int = 15) -> str:
    lines = [header, ""]
    for r in results:
        totals = {v: (sum(k["per_step"] for k in r[v]), sum(k["us_per_step"] for k in r[v])) for v in VARIANTS}
        lines += [
            f"### {r['model'].upper()} batch {r['batch']} {r['dtype']}",
            "",
            "| step | kernels per step | us per step |",
            "|---|---|---|",
            *(f"| {v} | {n:.0f} | {t:.0f} |" for v, (n, t) in totals.items()),
            "",
            "| fastgen's kernel | per step | us per step | share |",
            "|---|---|---|---|",
            *(_kernel_row(k) for k in r[VARIANTS[0]][:top]),
            "",
        ]
    return "\n".join(lines)


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", choices=tuple(BATCH), default=list(BATCH))
    parser.add_argument("--dtypes", nargs="+", choices=tuple(DTYPES), default=list(DTYPES))
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--out", help="folder for kernel-profile.json and .md (default bench/results/<device>/)")
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    on_native = device.type == "cpu" and native.load()  # the CPU's training path, where the native kernels build
    results = []
    with cpu_backend("native") if on_native else contextlib.nullcontext():
        for model in args.models:
            for dtype in args.dtypes:
                row = {"model": model, "batch": BATCH[model], "dtype": dtype}
                for variant in VARIANTS:
                    run = _step(model, variant, DTYPES[dtype], device, "native" if on_native else "auto")
                    row[variant] = profile(run, device, args.steps)
                results.append(row)
    name, date = device_name(device), time.strftime("%Y-%m-%d", time.gmtime())
    record = {"device": name, "cuda": device.type == "cuda", "date": date, "steps": args.steps, "results": results}
    what = "CUDA kernels of the compiled, CUDA-graphed step" if device.type == "cuda" else "operators of the compiled step"
    header = f"Per-kernel profile, {what}, {name}, {date} (`python -m bench.kernel_profile`), {args.steps} steps."
    write_result(args.out, "kernel-profile", record, _markdown(results, header))
    return results


if __name__ == "__main__":
    main()
