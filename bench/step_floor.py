"""How much of the GAN's CPU training step is torch's, not fastgen's: the step timed beside its own 30
matmuls and its two Adam updates replayed alone, round after round in one process (so a shared machine's
change of pace hits all three alike):

    python -m bench.step_floor [--rounds 6] [--eager]

What is left after the matmuls and Adam is all that fastgen's own kernels (bias, LeakyReLU, dropout,
the loss) and the rest of the step can win back.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from fastgen.config import TrainConfig
from fastgen.ops import cpu_backend
from fastgen.training.compiled_step import build_step
from fastgen.training.cpu_tuning import tune_for_cpu_training
from fastgen.training.trainers import GANTrainer

BATCH, STEPS = 32, 20
G_LAYERS = [(100, 256), (256, 512), (512, 1024), (1024, 784)]  # (in, out)
D_LAYERS = [(784, 1024), (1024, 512), (512, 256), (256, 1)]


def step_matmuls(batch: int = BATCH) -> list[tuple[int, int, int]]:
    """(m, k, n) of every matmul of one GAN step: G forward, D forward on real+fake and on fake; the D
    update's weight gradients and the input gradients of its upper layers; the G update's input gradients
    through D, G's weight gradients and the input gradients of G's upper layers."""
    forward = [(batch, i, o) for i, o in G_LAYERS] + [(2 * batch, i, o) for i, o in D_LAYERS]
    forward += [(batch, i, o) for i, o in D_LAYERS]
    d_update = [(o, 2 * batch, i) for i, o in D_LAYERS] + [(2 * batch, o, i) for i, o in D_LAYERS[1:]]
    g_update = [(batch, o, i) for i, o in D_LAYERS] + [(o, batch, i) for i, o in G_LAYERS]
    g_update += [(batch, o, i) for i, o in G_LAYERS[1:]]
    return forward + d_update + g_update


def _ms(work) -> float:
    start = time.perf_counter()
    for _ in range(STEPS):
        work()
    return (time.perf_counter() - start) / STEPS * 1e3


def main(argv=None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--eager", action="store_true", help="time the eager step instead of the compiled one")
    args = parser.parse_args(argv)
    tune_for_cpu_training()
    torch.manual_seed(0)
    trainer = GANTrainer(TrainConfig(model="gan", batch_size=BATCH, kernels="native").resolved(), torch.device("cpu"), None)
    step = build_step(trainer.step, torch.device("cpu"), not args.eager, False, print)
    batches = torch.rand(STEPS, BATCH, 784) * 2 - 1
    shapes = step_matmuls()
    operands = [(torch.randn(m, k), torch.randn(k, n)) for m, k, n in shapes]
    grads = [[torch.randn_like(p) * 1e-3 for p in params] for params in (trainer.d_params, trainer.g_params)]
    batch_index = iter(range(10**9))

    def one_step():
        step(batches[next(batch_index) % STEPS])

    def matmuls():
        for a, b in operands:
            torch.mm(a, b)

    def adam_and_matmuls():
        trainer.opt_d.step(grads[0])
        trainer.opt_g.step(grads[1])
        matmuls()

    times = {"step": [], "matmuls": [], "adam": []}
    with cpu_backend("native"):
        _ms(one_step)  # compiles
        for _ in range(args.rounds):
            times["step"].append(_ms(one_step))
            times["matmuls"].append(_ms(matmuls))
            times["adam"].append(_ms(adam_and_matmuls) - times["matmuls"][-1])  # Adam as in the step: after matmuls
    result = {name: statistics.median(values) for name, values in times.items()}
    result["rest"] = result["step"] - result["matmuls"] - result["adam"]
    gflop = sum(2 * m * k * n for m, k, n in shapes) / 1e9
    print(
        f"GAN step, batch {BATCH}, fp32, native {'eager' if args.eager else 'compiled'}, median of {args.rounds} rounds "
        f"of {STEPS}: {result['step']:.2f} ms = {len(shapes)} matmuls {result['matmuls']:.2f} ms ({gflop:.2f} GFLOP, "
        f"{gflop / result['matmuls'] * 1e3:.0f} GFLOP/s) + two Adam updates {result['adam']:.2f} ms "
        f"+ the rest {result['rest']:.2f} ms"
    )
    return result


if __name__ == "__main__":
    main()
