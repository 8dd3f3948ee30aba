"""How much of a CPU training step is torch's, not fastgen's: the step timed beside its own matmuls and its
Adam updates replayed alone, round after round in one process (so a shared machine's change of pace hits
all three alike):

    python -m bench.step_floor [--model gan|vae] [--amp] [--rounds 6] [--eager] [--torch-adam]

The matmuls are the ones the step runs (shapes and dtype read off one profiled step); with `--amp` they run in
bf16, as the step's do. Adam is torch's fused update of the float32 parameters alone. What is left after the
matmuls and Adam is all that fastgen's own kernels (bias, LeakyReLU, dropout, the loss, autocast's casts, the
moving average, under `--amp` the bf16 weight copies) and the rest of the step can win back.

`--torch-adam` also times, in the same rounds, the same step built with torch's update (its fused Adam, then the
moving average's own pass, and under `--amp` a copy of the weights) in place of fastgen's native one: what the
native update saves in the step.
"""

from __future__ import annotations

import argparse
import statistics
import time
import types

import torch

from fastgen.config import TrainConfig
from fastgen.environment import cpu_has_fast_bf16
from fastgen.ops import cpu_backend
from fastgen.training.compiled_step import build_step
from fastgen.training.cpu_tuning import tune_for_cpu_training
from fastgen.training.optim import StepAdam
from fastgen.training.trainers import TRAINERS

BATCH = {"gan": 32, "vae": 100}
STEPS = 20
G_LAYERS = [(100, 256), (256, 512), (512, 1024), (1024, 784)]  # (in, out)
D_LAYERS = [(784, 1024), (1024, 512), (512, 256), (256, 1)]


def step_matmuls(batch: int = BATCH["gan"]) -> list[tuple[int, int, int]]:
    """(m, k, n) of every matmul of one GAN step, derived by hand: G forward, D forward on real+fake and on
    fake; the D update's weight gradients and the input gradients of its upper layers; the G update's input
    gradients through D, G's weight gradients and the input gradients of G's upper layers. (The test holds
    the profiled list against this one.)"""
    forward = [(batch, i, o) for i, o in G_LAYERS] + [(2 * batch, i, o) for i, o in D_LAYERS]
    forward += [(batch, i, o) for i, o in D_LAYERS]
    d_update = [(o, 2 * batch, i) for i, o in D_LAYERS] + [(2 * batch, o, i) for i, o in D_LAYERS[1:]]
    g_update = [(batch, o, i) for i, o in D_LAYERS] + [(o, batch, i) for i, o in G_LAYERS]
    g_update += [(batch, o, i) for i, o in G_LAYERS[1:]]
    return forward + d_update + g_update


def profiled_matmuls(trainer, batch: torch.Tensor) -> list[tuple[int, int, int, torch.dtype]]:
    """(m, k, n, dtype) of every matmul one eager step of `trainer` runs (aten::mm and aten::addmm)."""
    dtypes = {"float": torch.float32, "c10::BFloat16": torch.bfloat16, "c10::Half": torch.float16}
    with torch.profiler.profile(record_shapes=True) as prof:
        trainer.step(batch)
    found = []
    for event in prof.events():
        first = {"aten::mm": 0, "aten::addmm": 1}.get(event.name)
        if first is not None:
            (m, k), (_, n) = event.input_shapes[first : first + 2]
            found.append((m, k, n, dtypes[event.input_dtypes[first]]))
    return found


def _ms(work) -> float:
    start = time.perf_counter()
    for _ in range(STEPS):
        work()
    return (time.perf_counter() - start) / STEPS * 1e3


def _separate_copy(step):
    """`step` under a code object of its own: torch.compile keeps its compiled graphs per code object, so this
    one compiles its own graph instead of sharing (and guarding against) the original's."""
    code = step.__code__.replace(co_name=f"{step.__name__}_again")
    return types.FunctionType(code, step.__globals__, code.co_name, step.__defaults__, step.__closure__)


def _with_torch_update(step, optimizers):
    """`step` run with torch's update in place of the native one (read as an eager step runs, or as it compiles)."""

    def run(x):
        native = [opt.native for opt in optimizers]
        for opt in optimizers:
            opt.native = False
        try:
            return step(x)
        finally:
            for opt, was in zip(optimizers, native):
                opt.native = was

    return run


def main(argv=None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=tuple(BATCH), default="gan")
    parser.add_argument("--amp", action="store_true", help="bf16 autocast, as `fastgen.train --amp` (needs AVX512-BF16 or AMX)")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--eager", action="store_true", help="time the eager step instead of the compiled one")
    parser.add_argument("--torch-adam", action="store_true", help="also time the step on torch's update")
    args = parser.parse_args(argv)
    if args.amp and not cpu_has_fast_bf16():
        parser.error("--amp: this CPU has no fast bf16 (no AVX512-BF16 or AMX), so fastgen trains in float32 here")
    tune_for_cpu_training()
    torch.manual_seed(0)
    batch, device = BATCH[args.model], torch.device("cpu")
    config = TrainConfig(model=args.model, batch_size=batch, kernels="native").resolved()
    trainer = TRAINERS[args.model](config, device, torch.bfloat16 if args.amp else None)
    low = -1.0 if args.model == "gan" else 0.0
    batches = torch.rand(STEPS, batch, 784) * (1 - low) + low
    with cpu_backend("native"):
        shapes = profiled_matmuls(trainer, batches[0])
        step = build_step(trainer.step, device, not args.eager, False, print)
        if args.torch_adam:
            optimizers = list(trainer.optimizers.values())
            if not any(opt.native for opt in optimizers):
                parser.error("--torch-adam: this step does not use the native update (no native kernels here)")
            again = _separate_copy(trainer.step.__func__).__get__(trainer)
            torch_adam_step = _with_torch_update(build_step(again, device, not args.eager, False, print), optimizers)
    operands = [(torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)) for m, k, n, dtype in shapes]
    # Adam alone as torch runs it: its fused update of the float32 parameters from float32 gradients. The step's own
    # update (the moving average out; under --amp also bf16 gradients in and bf16 copies out) counts in the rest.
    optimizers = [StepAdam(opt.params, config.lr, config.betas, device) for opt in trainer.optimizers.values()]
    grads = [[torch.randn_like(p) * 1e-3 for p in opt.params] for opt in optimizers]
    batch_index = iter(range(10**9))

    def one_step():
        step(batches[next(batch_index) % STEPS])

    def one_torch_adam_step():
        torch_adam_step(batches[next(batch_index) % STEPS])

    def matmuls():
        for a, b in operands:
            torch.mm(a, b)

    def adam_and_matmuls():
        for opt, g in zip(optimizers, grads):
            opt.step(g)
        matmuls()

    times = {"step": [], "matmuls": [], "adam": []} | ({"torch_adam_step": []} if args.torch_adam else {})
    with cpu_backend("native"):
        _ms(one_step)  # compiles
        if args.torch_adam:
            _ms(one_torch_adam_step)
        for _ in range(args.rounds):
            times["step"].append(_ms(one_step))
            if args.torch_adam:
                times["torch_adam_step"].append(_ms(one_torch_adam_step))
            times["matmuls"].append(_ms(matmuls))
            times["adam"].append(_ms(adam_and_matmuls) - times["matmuls"][-1])  # Adam as in the step: after matmuls
    result = {name: statistics.median(values) for name, values in times.items()}
    result["rest"] = result["step"] - result["matmuls"] - result["adam"]
    result["over_floor"] = result["step"] / (result["matmuls"] + result["adam"])
    gflop = sum(2 * m * k * n for m, k, n, _ in shapes) / 1e9
    params = sum(p.numel() for opt in optimizers for p in opt.params)
    print(
        f"{args.model.upper()} step, batch {batch}, {'bf16' if args.amp else 'fp32'}, native "
        f"{'eager' if args.eager else 'compiled'}, median of {args.rounds} rounds of {STEPS}: {result['step']:.2f} ms = "
        f"{len(shapes)} matmuls {result['matmuls']:.2f} ms ({gflop:.2f} GFLOP, {gflop / result['matmuls'] * 1e3:.0f} "
        f"GFLOP/s) + {len(optimizers)} Adam update(s) {result['adam']:.2f} ms ({params / 1e6:.2f} M parameters) "
        f"+ the rest {result['rest']:.2f} ms: {result['over_floor']:.2f}x its matmuls + Adam"
    )
    if args.torch_adam:
        ratios = [t / s for s, t in zip(times["step"], times["torch_adam_step"])]
        result["native_update_speedup"] = statistics.median(ratios)
        print(
            f"The same step with torch's update: {result['torch_adam_step']:.2f} ms; the native update's step "
            f"{result['native_update_speedup']:.2f}x faster (median of the rounds' ratios, {min(ratios):.2f}x-{max(ratios):.2f}x)"
        )
    return result


if __name__ == "__main__":
    main()
