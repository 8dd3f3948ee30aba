"""Training-step variants timed in turn, each in a fresh process, so that a shared machine's changes of
pace land on every variant alike:

    python -m bench.interleaved --model gan [--amp] [--repeats 3] [--variants eager "native compiled"]
    python -m bench.interleaved --model gan --amp --variants "native compiled" --against ../before   # before/after

`--against CHECKOUT` also runs every variant from another checkout of fastgen (a worktree of an earlier
commit, say), in its own process in the same repeat: the ratio of the two is a change's speed-up.

pytest-benchmark times one variant after the other. On this project's shared 2-core CPUs the same step
has been seen to run at 11 ms for minutes and then at 19-21 ms for minutes, so a ratio of two variants
measured a minute apart can be off by 1.8x. Here every repeat runs each variant once, in order, in its own
process (no compiled code, thread pool or allocator state carried over); a ratio is taken within one
repeat only, and the spread of the ratios over repeats says whether the machine held still.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time

ROUNDS = 5
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _checkout_of(module: str, file: str) -> str:
    """The folder a module was imported from: fastgen.ops.x in CHECKOUT/fastgen/ops/x.py -> CHECKOUT."""
    parts = os.path.abspath(file).split(os.sep)
    return os.sep.join(parts[: -(module.count(".") + (2 if parts[-1] == "__init__.py" else 1))])


def timing_device():
    """The device a timing child runs on (a CPU set up as training sets it up) and a sync for its clock."""
    import torch

    from fastgen.training.cpu_tuning import tune_for_cpu_training

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu":
        tune_for_cpu_training()
    return device, torch.cuda.synchronize if device.type == "cuda" else (lambda: None)


def variant_kernels(variant: str):
    """The context a variant's steps run in: the native CPU kernels where it names them."""
    from bench.test_steps import VARIANTS
    from fastgen.ops import cpu_backend

    return cpu_backend("native") if VARIANTS[variant][2] == "native" else contextlib.nullcontext()


def step_and_batches(model: str, variant: str, device, amp_dtype, notices: list, replicas: int = 1):
    """The variant's step of `model` (a group of `replicas` > 1) built as training builds it, from torch's generator
    seeded 0, and STEPS batches of random images for it."""
    import torch

    from bench.test_steps import STEPS, VARIANTS, batch_size, make_trainer
    from fastgen.training.compiled_step import build_step

    compile, graphs, _ = VARIANTS[variant]
    batch, low = batch_size(model, device), -1.0 if model == "gan" else 0.0
    torch.manual_seed(0)
    trainer = make_trainer(model, variant, batch, device, amp_dtype, replicas)
    lead = (replicas,) if replicas > 1 else ()  # a group steps on (S, B, 784) batches
    batches = torch.rand(STEPS, *lead, batch, 784, device=device) * (1 - low) + low
    return build_step(trainer.step, device, compile, graphs, notices.append), batches


def _child(model: str, variant: str, amp: bool) -> None:
    """One variant: a warm-up round (compilation), then ROUNDS rounds of STEPS steps; prints ms per step.

    fastgen is imported first, from wherever the path finds it (another checkout under --against); then this
    checkout's bench/ goes first on the path, for the variants' definitions."""
    import torch

    import fastgen  # noqa: F401  (every fastgen module the step needs, from the path's fastgen)

    sys.path.insert(0, REPO)
    from bench.test_steps import STEPS

    device, sync = timing_device()
    notices = []
    step, batches = step_and_batches(model, variant, device, torch.bfloat16 if amp else None, notices)
    rounds = []
    with variant_kernels(variant):
        for r in range(ROUNDS + 1):
            start = time.perf_counter()
            for i in range(STEPS):
                step(batches[i])
            sync()
            if r:  # round 0 compiles, captures and warms up
                rounds.append((time.perf_counter() - start) / STEPS * 1e3)
    roots = {
        _checkout_of(n, m.__file__)
        for n, m in sys.modules.items()
        if n.split(".")[0] == "fastgen" and getattr(m, "__file__", None)
    }
    print(json.dumps({"ms_per_step": rounds, "notices": notices, "fastgen": sorted(roots)}))


def child_result(command: list[str], label: str, checkout: str | None = None) -> dict:
    """Run a timing child (`command`, Triton's interpreter off: time kernels, not the interpreter; from `checkout`'s
    fastgen if given) and return the JSON it printed last, refusing a failed child or one whose step fell back."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    if checkout:  # the child's code from this file, with the other checkout's fastgen ahead of an installed one
        env["PYTHONPATH"] = checkout
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=checkout)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode or not lines:
        raise SystemExit(f"{label}: the child failed:\n{done.stderr[-2000:]}")
    result = json.loads(lines[-1])
    if result["notices"]:  # a silent fallback would mislabel the numbers
        raise SystemExit(f"{label}: {result['notices']}")
    return result


def _run_child(model: str, variant: str, amp: bool, checkout: str | None = None) -> list[float]:
    """ms per step of each round of one variant, in a fresh process; from `checkout`'s fastgen if given."""
    module = [os.path.abspath(__file__)] if checkout else ["-m", "bench.interleaved"]
    command = [sys.executable, *module, "--child", "--model", model, "--variants", variant] + (["--amp"] if amp else [])
    result = child_result(command, variant, checkout)
    if checkout and result["fastgen"] != [checkout]:  # every fastgen module from the checkout asked for
        raise SystemExit(f"{variant}: ran fastgen from {result['fastgen']}, not from {checkout}")
    return result["ms_per_step"]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=["gan", "vae"], default="gan")
    parser.add_argument("--amp", action="store_true", help="bf16 autocast")
    parser.add_argument("--variants", nargs="+", default=None, help="names from bench/test_steps.py; the first is the reference")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--against", metavar="CHECKOUT", help="also run each variant from this checkout of fastgen")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return _child(args.model, args.variants[0], args.amp)
    import torch

    from bench.test_steps import STEPS, VARIANTS, batch_size

    on_cpu = not torch.cuda.is_available()
    unknown = [v for v in args.variants or [] if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {unknown}; choose from {list(VARIANTS)}")
    chosen = args.variants or [v for v in VARIANTS if ("graphed" if on_cpu else "native") not in v]
    runs = [(v, None) for v in chosen]  # (variant, checkout): the other checkout's first, as the reference
    if args.against:
        label = os.path.basename(os.path.abspath(args.against))
        runs = [(f"{v} @ {label}", os.path.abspath(args.against)) for v in chosen] + runs
    variants = [name for name, _ in runs]
    times = {v: [] for v in variants}  # per repeat: the round times
    for repeat in range(args.repeats):
        for variant, checkout in runs:
            times[variant].append(_run_child(args.model, variant.split(" @ ")[0], args.amp, checkout))
            print(f"repeat {repeat + 1}, {variant}: " + " ".join(f"{t:.2f}" for t in times[variant][-1]), file=sys.stderr)
    reference = variants[0]
    print(
        f"{args.model}, batch {batch_size(args.model, torch.device('cpu' if on_cpu else 'cuda'))}, "
        f"{'bf16' if args.amp else 'fp32'}; ms per step, median of {ROUNDS} rounds of {STEPS} steps per repeat"
    )
    print(f"| variant | {' | '.join(f'repeat {r + 1}' for r in range(args.repeats))} | speed-up over {reference} per repeat |")
    print("|---" * (args.repeats + 2) + "|")
    for variant in variants:
        medians = [statistics.median(rounds) for rounds in times[variant]]
        ratios = [statistics.median(ref) / m for ref, m in zip(times[reference], medians)]
        cells = " | ".join(f"{m:.2f}" for m in medians)
        print(f"| {variant} | {cells} | {min(ratios):.2f}x - {max(ratios):.2f}x |")


if __name__ == "__main__":
    main()
