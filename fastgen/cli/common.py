"""Command-line plumbing shared by fastgen's entry points: one-line errors, exit code 2, the common flags."""

from __future__ import annotations

import argparse
import math
import sys
import types

from fastgen.config import DEVICES
from fastgen.errors import FastgenError

EXIT_USAGE = 2


class Parser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one line instead of the usage block."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def run(prog: str, body, argv=None) -> int:
    """Run body(argv); turn user-facing errors into one line on stderr and exit code 2."""
    debug = "--debug" in (sys.argv[1:] if argv is None else argv)
    try:
        body(argv)
    except FastgenError as exc:
        if debug:
            raise
        print(f"{prog}: {'' if hasattr(exc, 'exit_code') else 'error: '}{exc}", file=sys.stderr)
        return getattr(exc, "exit_code", EXIT_USAGE)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    return 0


def add_data_flags(parser: argparse.ArgumentParser) -> None:
    """--data-dir, --no-download and --debug, the same on every entry point."""
    parser.add_argument("--data-dir", help="folder holding MNIST/raw/ (or FashionMNIST/raw/) IDX files")
    parser.add_argument("--no-download", action="store_true", help="never download; fail if the data is not found")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")


def add_device_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", choices=DEVICES, default="auto", help="auto: CUDA when available, else the CPU")


def add_weights_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--weights",
        choices=("auto", "raw", "ema"),
        default="auto",
        help="the optimizer's last weights (raw), their moving average (ema), or fastgen's default for the model (auto)",
    )


def config_arguments(parser: argparse.ArgumentParser, argv) -> dict:
    """The parsed flags as config keyword arguments: `download` instead of `no_download`, no `debug`."""
    args = vars(parser.parse_args(argv))
    args["download"] = not args.pop("no_download")
    args.pop("debug")
    return args


def int_at_least(minimum: int):
    """An argparse type: an integer >= minimum."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    return parse


positive_int = int_at_least(1)
non_negative_int = int_at_least(0)


def _float_above(minimum: float, inclusive: bool):
    """An argparse type: a finite number > minimum (>= with `inclusive`)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value) or not (value >= minimum if inclusive else value > minimum):
            raise argparse.ArgumentTypeError(f"must be {'>=' if inclusive else '>'} {minimum:g}, got {text}")
        return value

    return parse


positive_float = _float_above(0.0, inclusive=False)
non_negative_float = _float_above(0.0, inclusive=True)


class _CallableModule(types.ModuleType):
    def __call__(self, *args, **kwargs):
        return self.function(*args, **kwargs)


def make_module_callable(name: str, function) -> None:
    """`import fastgen.train` rebinds the attribute `fastgen.train` from the function to the module of the
    same name; calling that module calls the function, so `fastgen.train(config)` works either way."""
    if name != "__main__":
        module = sys.modules[name]
        module.__class__ = _CallableModule
        module.function = function
