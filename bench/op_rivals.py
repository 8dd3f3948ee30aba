"""Each fused op and layer called as a user's loop calls it, against the plain PyTorch a user would otherwise
write, forward+backward, rounds interleaved in one process:

    python -m bench.op_rivals [--batches 64 512 4096] [--dtypes fp32 bf16] [--rounds 5] [--calls 50] [--out DIR]

The rivals: `LinearLeakyReLUDropout` (training, p = 0.3) against `nn.Sequential(nn.Linear, nn.LeakyReLU,
nn.Dropout)`; the `Reparameterize` layer against `mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)`;
`bce_kl_loss` against `binary_cross_entropy_with_logits` summed per image + the KL, mean over images. Per round
each variant runs --calls calls back to back, timed between two CUDA events with no synchronisation between calls
(on the CPU, by the wall clock); the speed-up is plain's time over fastgen's within each round, reported as the
median over rounds and the worst round. On a GPU fastgen runs its Triton kernels (the eager fast path, the fused
linear's implementation measured on its first call), on the CPU its native kernels. Writes op-rivals.json and
op-rivals.md into --out (default bench/results/<device>/).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

import fastgen
from bench.telemetry import us_per_call, write_result
from fastgen.environment import device_name
from fastgen.models.layers import Reparameterize
from fastgen.ops import bce_kl_loss, cpu_backend, native
from fastgen.ops.reference import kl_to_standard_normal

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
IN_FEATURES, OUT_FEATURES, LATENT, P, SLOPE = 784, 1024, 16, 0.3, 0.2
VARIANTS = ("fastgen", "plain")


def _layer(batch: int, dtype: torch.dtype, device: torch.device, kernels: str):
    torch.manual_seed(0)
    fused = fastgen.LinearLeakyReLUDropout(IN_FEATURES, OUT_FEATURES, SLOPE, P, kernels=kernels).to(device, dtype)
    plain = nn.Sequential(nn.Linear(IN_FEATURES, OUT_FEATURES), nn.LeakyReLU(SLOPE), nn.Dropout(P)).to(device, dtype)
    plain[0].load_state_dict({"weight": fused.weight.detach(), "bias": fused.bias.detach()})
    x = torch.randn(batch, IN_FEATURES, device=device, dtype=dtype, requires_grad=True)
    grad = torch.ones(batch, OUT_FEATURES, device=device, dtype=dtype)
    return {"fastgen": lambda: fused(x).backward(grad), "plain": lambda: plain(x).backward(grad)}


def _reparameterize(batch: int, dtype: torch.dtype, device: torch.device, kernels: str):
    layer = Reparameterize(kernels=kernels).to(device)
    mu, logvar = (torch.randn(batch, LATENT, device=device, dtype=dtype, requires_grad=True) for _ in range(2))
    grad = torch.ones(batch, LATENT, device=device, dtype=dtype)

    def plain():
        (mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)).backward(grad)

    return {"fastgen": lambda: layer(mu, logvar).backward(grad), "plain": plain}


def _bce_kl_loss(batch: int, dtype: torch.dtype, device: torch.device, kernels: str):
    logits = torch.randn(batch, IN_FEATURES, device=device, dtype=dtype, requires_grad=True)
    target = torch.rand(batch, IN_FEATURES, device=device, dtype=dtype)
    mu, logvar = (torch.randn(batch, LATENT, device=device, dtype=dtype, requires_grad=True) for _ in range(2))

    def plain():
        bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none").sum(1)
        (bce + kl_to_standard_normal(mu, logvar)).mean().backward()

    return {"fastgen": lambda: bce_kl_loss(logits, target, mu, logvar, kernels=kernels).backward(), "plain": plain}


CASES = {"LinearLeakyReLUDropout layer": _layer, "reparameterize": _reparameterize, "bce_kl_loss": _bce_kl_loss}


def measure(op: str, batch: int, dtype: str, device: torch.device, rounds: int, calls: int, kernels: str) -> dict:
    variants = CASES[op](batch, DTYPES[dtype], device, kernels)
    for call in variants.values():  # first calls: kernel builds, the fused linear's measured choice
        for _ in range(3):
            call()
    us = {name: [] for name in VARIANTS}
    for _ in range(rounds):
        for name in VARIANTS:
            us[name].append(us_per_call(variants[name], calls, device))
    ratios = [plain / fused for fused, plain in zip(us["fastgen"], us["plain"])]
    return {"op": op, "batch": batch, "dtype": dtype, "us": us, "ratios": ratios, "speedup": statistics.median(ratios)}


def table(results: list[dict], header: str) -> str:
    lines = [
        header,
        "",
        "| op | batch | dtype | fastgen, us per call | plain, us per call | speed-up: median (worst round) |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        fused, plain = (statistics.median(r["us"][v]) for v in VARIANTS)
        speedup = f"{r['speedup']:.2f}x ({min(r['ratios']):.2f}x)"
        lines.append(f"| {r['op']} | {r['batch']} | {r['dtype']} | {fused:.1f} | {plain:.1f} | {speedup} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", nargs="+", type=int, default=[64, 512, 4096])
    parser.add_argument("--dtypes", nargs="+", choices=tuple(DTYPES), default=list(DTYPES))
    parser.add_argument("--ops", nargs="+", choices=tuple(CASES), default=list(CASES))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--out", help="folder for op-rivals.json and op-rivals.md (default bench/results/<device>/)")
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    on_native = device.type == "cpu" and native.load()
    kernels = "native" if on_native else "auto"
    name, date = device_name(device), time.strftime("%Y-%m-%d", time.gmtime())
    with cpu_backend("native") if on_native else contextlib.nullcontext():
        results = [
            measure(op, batch, dtype, device, args.rounds, args.calls, kernels)
            for op in args.ops
            for batch in args.batches
            for dtype in args.dtypes
        ]
    record = {"device": name, "cuda": device.type == "cuda", "date": date, "calls": args.calls, "results": results}
    header = (
        f"Each op forward+backward against the plain PyTorch it replaces, {name}, {date} (`python -m bench.op_rivals`): "
        f"{args.calls} calls back to back per round, {args.rounds} rounds interleaved; fastgen on its "
        f"{'Triton' if device.type == 'cuda' else 'native CPU' if on_native else 'eager'} kernels."
    )
    write_result(args.out, "op-rivals", record, table(results, header))
    return results


if __name__ == "__main__":
    main()
