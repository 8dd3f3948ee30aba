"""`python -m fastgen.compare [--epochs 10 50 200] [--seeds 5] [--quick]`: train the GAN and the VAE with
several seeds (each model's as one group), score them at the paper's checkpoints, and write OUT/report.md (means, spreads, and a
winner only where the seeds support one). Runs already in OUT are continued and reused."""

from __future__ import annotations

import sys

from fastgen.cli.common import (
    Parser,
    add_data_flags,
    add_device_flag,
    config_arguments,
    int_at_least,
    non_negative_int,
    positive_float,
    positive_int,
    run,
)
from fastgen.config import DATASETS, EMA_DECAY


def build_parser() -> Parser:
    parser = Parser(prog="python -m fastgen.compare", description=__doc__)
    parser.add_argument("--out", default="compare", help="output folder (default: compare)")
    parser.add_argument("--epochs", type=positive_int, nargs="+", help="checkpoint epochs (default 10 50 200; quick 10 50)")
    parser.add_argument("--quick", action="store_true", help="smoke test: 1024 training images, 1000 scored samples, IWAE k=10")
    parser.add_argument("--n", type=positive_int, help="generated samples scored per checkpoint (default 10000)")
    parser.add_argument("--iwae-k", type=positive_int, help="VAE importance samples per test image (default 100)")
    parser.add_argument("--train-images", type=positive_int, help="train on the first N training images only")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="the first training seed (default 0)")
    parser.add_argument(
        "--seeds",
        type=int_at_least(2),
        help="training seeds per model, trained as one group: SEED, SEED+1, ... (default 5; quick 2)",
    )
    parser.add_argument(
        "--draws", type=int_at_least(2), help="draws of n samples measuring each score's sampling error (default 5; quick 2)"
    )
    parser.add_argument(
        "--ema", type=positive_float, default=EMA_DECAY, help=f"the runs' weight-average decay (default {EMA_DECAY})"
    )
    parser.add_argument("--dataset", choices=tuple(DATASETS), default="mnist")
    add_device_flag(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    add_data_flags(parser)
    return parser


def _main(argv) -> None:
    from fastgen.comparison.runs import CompareConfig, compare

    args = config_arguments(build_parser(), argv)
    if args["epochs"] is not None:
        args["epochs"] = tuple(args["epochs"])
    print(compare(CompareConfig(**args)))


def main(argv=None) -> int:
    return run("fastgen.compare", _main, argv)


if __name__ == "__main__":
    sys.exit(main())
