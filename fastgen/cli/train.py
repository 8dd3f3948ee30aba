"""`python -m fastgen.train`: train the paper's GAN or VAE and write a run folder."""

from __future__ import annotations

import argparse
import sys

from fastgen.cli.common import (
    Parser,
    add_data_flags,
    add_device_flag,
    config_arguments,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    run,
)
from fastgen.config import AMP_DTYPES, DATASETS, KERNELS, MODELS, TrainConfig


def build_parser() -> Parser:
    parser = Parser(prog="python -m fastgen.train", description=__doc__)
    parser.add_argument("--model", choices=MODELS, help="required unless --resume")
    parser.add_argument("--epochs", type=positive_int, help="default 50")
    parser.add_argument("--batch-size", type=positive_int, help="default: GAN 32, VAE 100")
    parser.add_argument("--lr", type=positive_float, help="default: GAN 2e-4 (betas 0.5, 0.999), VAE 1e-3")
    parser.add_argument("--seed", type=non_negative_int, default=0)
    parser.add_argument(
        "--seeds",
        type=positive_int,
        default=1,
        help="train seeds SEED, SEED+1, ... as one group in one step, each in OUT/seed_<seed>/ (default 1: one run)",
    )
    parser.add_argument("--dataset", choices=tuple(DATASETS), default="mnist")
    parser.add_argument("--out", help="run folder (default: runs/<model>-<timestamp>)")
    parser.add_argument("--overwrite", action="store_true", help="reuse an --out that already holds a run")
    add_device_flag(parser)
    parser.add_argument("--amp", action="store_true", help="mixed precision where the device has fast bf16 (or CUDA fp16)")
    parser.add_argument(
        "--amp-dtype",
        choices=AMP_DTYPES,
        default="bf16",
        help="CUDA only: bf16, or fp16 with dynamic loss scaling kept on the device",
    )
    parser.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="torch.compile the whole training step (default: on, on every device; --no-compile skips the "
        "tens of seconds it takes the first time)",
    )
    parser.add_argument(
        "--cuda-graphs",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="capture the step in a CUDA graph and replay it (default: on for CUDA)",
    )
    parser.add_argument(
        "--kernels",
        choices=KERNELS,
        default="auto",
        help="auto: fastgen's native kernels on the CPU (built once on first use; plain PyTorch ops where they "
        "cannot be built), Triton on CUDA; or insist on triton, native, or plain PyTorch ops (eager)",
    )
    parser.add_argument(
        "--ema",
        type=non_negative_float,
        metavar="DECAY",
        help="decay of the moving average of the weights kept on the device and saved beside them "
        "(default 0.999; 0: none); fastgen.load/sample/evaluate say which weights they use",
    )
    parser.add_argument("--max-steps", type=positive_int, help="stop after N optimizer steps")
    parser.add_argument(
        "--train-images", type=positive_int, help="train on the first N images of the training split only (quick experiments)"
    )
    parser.add_argument("--sample-every", type=positive_int, default=10, help="epochs between sample grids")
    parser.add_argument("--quiet", action="store_true", help="no progress bar, no per-epoch lines")
    parser.add_argument("--checkpoint-every", type=positive_int, help="also checkpoint every N steps within an epoch")
    parser.add_argument(
        "--save-interval",
        type=non_negative_float,
        metavar="SECONDS",
        help="write the weights and checkpoint at the end of an epoch once SECONDS have passed since the "
        "last write (default 30; 0: every epoch); the last epoch and a stop always write",
    )
    parser.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue a run from its checkpoint (its own settings; --epochs/--max-steps may extend it)",
    )
    add_data_flags(parser)
    return parser


def _main(argv) -> None:
    from fastgen.training.run import train

    args = config_arguments(build_parser(), argv)
    train(TrainConfig(**args))


def main(argv=None) -> int:
    return run("fastgen.train", _main, argv)


if __name__ == "__main__":
    sys.exit(main())
