"""A group of seeds against its seeds trained one after another: samples per second, interleaved rounds.

    python -m bench.seed_group [--models gan vae] [--seeds 3] [--repeats 3] [--variant "native compiled"] [--out DIR]

Every repeat is a fresh process that builds one run's step and the step of a group of S seeds, both on the
variant's path (on the CPU the default training path, "native compiled"; on CUDA the graphed step), warms both
up, then times them in alternating rounds (single, group, group, single, ...), so that a shared machine's change
of pace lands on both alike (on this project's 2-core CPUs the same single step took 10.5 ms and 18 ms in
processes a minute apart). S single runs one after another train S * B images in S single steps, the group in
one group step, so the group's throughput over the singles' is S * t(single) / t(group) for each pair of
neighbouring rounds; the result is the median over all pairs of all repeats. On a GPU the same run says how
much more a group's step costs than one replica's: t(group) / t(single). Writes seed-group.json and
seed-group.md into --out (default bench/results/<device>/).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

from bench.interleaved import child_result, step_and_batches, timing_device, variant_kernels

# Targets (issue "Several seeds trained as one group"): on the CPU a 3-replica group trains at >= 1.0x the
# samples per second of its 3 single runs one after another; on a GPU a 5-replica group's graphed step costs
# <= 1.5x one replica's.
CPU_MIN_SPEEDUP = 1.0
GPU_MAX_STEP_RATIO = 1.5
ROUNDS = 6  # per repeat and step, alternating


def _child(model: str, seeds: int, variant: str) -> None:
    """One repeat: one run's step and a group's, warmed up, then ROUNDS rounds of each in alternation; prints ms per
    step of every round of both."""
    from bench.test_steps import STEPS

    device, sync = timing_device()
    notices = []
    with variant_kernels(variant):
        steps = {replicas: step_and_batches(model, variant, device, None, notices, replicas) for replicas in (1, seeds)}

        def round_ms(replicas: int) -> float:
            step, batches = steps[replicas]
            start = time.perf_counter()
            for i in range(STEPS):
                out = step(batches[i])
            sync()
            if out.shape[:-1] != (() if replicas == 1 else (replicas,)):  # each step ran its own compiled graph
                raise SystemExit(f"a step of {replicas} replica(s) returned metrics of shape {tuple(out.shape)}")
            return (time.perf_counter() - start) / STEPS * 1e3

        for replicas in (1, seeds, 1, seeds):  # compile, capture, warm up; then each once more after the other
            round_ms(replicas)
        rounds = {1: [], seeds: []}
        for r in range(ROUNDS):
            for replicas in (1, seeds) if r % 2 == 0 else (seeds, 1):
                rounds[replicas].append(round_ms(replicas))
    print(json.dumps({"single_ms": rounds[1], "group_ms": rounds[seeds], "notices": notices}))


def _run_child(model: str, seeds: int, variant: str) -> dict:
    command = [sys.executable, "-m", "bench.seed_group", "--child", "--models", model, "--seeds", str(seeds)]
    return child_result(command + ["--variant", variant], model)


def measure(model: str, seeds: int, repeats: int, variant: str) -> dict:
    rows, speedups, step_ratios = [], [], []
    for repeat in range(repeats):
        result = _run_child(model, seeds, variant)
        pairs = list(zip(result["single_ms"], result["group_ms"]))  # neighbouring rounds
        speedups += [seeds * single / group for single, group in pairs]
        step_ratios += [group / single for single, group in pairs]
        single, group = statistics.median(result["single_ms"]), statistics.median(result["group_ms"])
        rows.append({"single_ms": single, "group_ms": group, "speedup": seeds * single / group, "step_ratio": group / single})
        print(
            f"{model} repeat {repeat + 1}: one run {single:.2f} ms/step, group of {seeds} {group:.2f} ms/step, "
            f"throughput {rows[-1]['speedup']:.2f}x the singles'",
            file=sys.stderr,
        )
    return {
        "model": model,
        "seeds": seeds,
        "variant": variant,
        "repeats": rows,
        "speedup": statistics.median(speedups),
        "step_ratio": statistics.median(step_ratios),
        "pairs": len(speedups),
    }


def table(results: list[dict], device: str, on_gpu: bool, date: str) -> str:
    lines = [
        f"Group of seeds against its seeds one after another, {device}, {date} (`python -m bench.seed_group`): ms per "
        "step, the median of each repeat's rounds (one process per repeat, single and group rounds alternating); "
        "the ratios are medians over every pair of neighbouring rounds of all repeats.",
        "",
        "| model | variant | seeds | one run, ms | group, ms | group step / one run's | group throughput / singles' | "
        "per repeat | target |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        singles = " / ".join(f"{x['single_ms']:.2f}" for x in r["repeats"])
        groups = " / ".join(f"{x['group_ms']:.2f}" for x in r["repeats"])
        per_repeat = " / ".join(f"{x['step_ratio' if on_gpu else 'speedup']:.2f}" for x in r["repeats"])
        if on_gpu:
            verdict = "PASS" if r["step_ratio"] <= GPU_MAX_STEP_RATIO else "FAIL"
            target = f"step <= {GPU_MAX_STEP_RATIO}x: {verdict}"
        else:
            target = f"throughput >= {CPU_MIN_SPEEDUP}x: {'PASS' if r['speedup'] >= CPU_MIN_SPEEDUP else 'FAIL'}"
        lines.append(
            f"| {r['model']} | {r['variant']} | {r['seeds']} | {singles} | {groups} | {r['step_ratio']:.2f}x | "
            f"{r['speedup']:.2f}x | {per_repeat} | {target} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    import torch

    from bench.telemetry import write_result
    from fastgen.environment import device_name

    on_gpu = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", choices=["gan", "vae"], default=["gan", "vae"])
    parser.add_argument("--seeds", type=int, default=5 if on_gpu else 3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--variant", default="graphed" if on_gpu else "native compiled")
    parser.add_argument("--out", help="folder for seed-group.json and .md (default bench/results/<device>/)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return _child(args.models[0], args.seeds, args.variant)
    device = device_name(torch.device("cuda" if on_gpu else "cpu"))
    date = time.strftime("%Y-%m-%d", time.gmtime())
    results = [measure(model, args.seeds, args.repeats, args.variant) for model in args.models]
    record = {"device": device, "date": date, "on_gpu": on_gpu, "results": results}
    write_result(args.out, "seed-group", record, table(results, device, on_gpu, date))


if __name__ == "__main__":
    main()
