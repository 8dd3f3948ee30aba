"""`python -m fastgen.sample RUN_DIR --n 64 --out grid.png`: a grid of samples from a trained run."""

from __future__ import annotations

import math
import sys

from fastgen.cli.common import Parser, add_device_flag, add_weights_flag, non_negative_int, positive_int, run


def _main(argv) -> None:
    parser = Parser(prog="python -m fastgen.sample", description=__doc__)
    parser.add_argument("run", help="a run folder or its model.safetensors")
    parser.add_argument("--n", type=positive_int, default=64)
    parser.add_argument("--seed", type=non_negative_int, default=None)
    parser.add_argument("--out", default="grid.png")
    add_device_flag(parser)
    add_weights_flag(parser)
    parser.add_argument("--debug", action="store_true")
    args = parser.parse_args(argv)

    from torchvision.utils import save_image

    from fastgen.environment import resolve_device
    from fastgen.errors import FastgenError
    from fastgen.models.weights import load

    model = load(args.run, device=resolve_device(args.device), weights=args.weights)
    images = model.sample(args.n, seed=args.seed)
    try:
        save_image(images.cpu(), args.out, nrow=max(1, int(math.sqrt(args.n))), padding=2)
    except (OSError, ValueError) as exc:
        raise FastgenError(f"cannot write {args.out}: {exc}") from None
    print(f"{args.out} ({model.weights_used} weights)")


def main(argv=None) -> int:
    return run("fastgen.sample", _main, argv)


if __name__ == "__main__":
    sys.exit(main())
