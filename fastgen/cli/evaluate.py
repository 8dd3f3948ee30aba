"""`python -m fastgen.evaluate RUN_DIR [--n 10000]`: score a trained GAN or VAE; writes RUN_DIR/eval.json."""

from __future__ import annotations

import json
import sys

from fastgen.cli.common import Parser, add_data_flags, add_device_flag, add_weights_flag, non_negative_int, positive_int, run


def build_parser() -> Parser:
    parser = Parser(prog="python -m fastgen.evaluate", description=__doc__)
    parser.add_argument("run", help="a run folder, or a fastgen .safetensors weights file")
    parser.add_argument("--n", type=positive_int, default=10_000, help="generated samples to score (default 10000)")
    parser.add_argument(
        "--iwae-k",
        type=positive_int,
        default=100,
        help="VAE only: importance samples per test image for the NLL estimate (1-5000, default 100)",
    )
    parser.add_argument("--seed", type=non_negative_int, default=0)
    add_device_flag(parser)
    add_weights_flag(parser)
    parser.add_argument("--no-reference", action="store_true", help="skip the reference rows (training split and uniform noise)")
    add_data_flags(parser)
    return parser


def _main(argv) -> None:
    args = build_parser().parse_args(argv)
    from fastgen.evaluation.scoring import eval_path, evaluate, format_table
    from fastgen.files import atomic_write_text

    result = evaluate(
        args.run,
        args.n,
        iwae_k=args.iwae_k,
        seed=args.seed,
        device=args.device,
        data_dir=args.data_dir,
        download=not args.no_download,
        reference=not args.no_reference,
        weights=args.weights,
    )
    path = eval_path(args.run)
    atomic_write_text(path, json.dumps(result, indent=2, sort_keys=True) + "\n")  # a refused write: one line
    print(format_table(result))
    print(f"scores: {path}")


def main(argv=None) -> int:
    return run("fastgen.evaluate", _main, argv)


if __name__ == "__main__":
    sys.exit(main())
