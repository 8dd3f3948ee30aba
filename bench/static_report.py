"""Every fastgen Triton kernel built ahead of time for sm_80 and sm_90, no GPU needed, and the step's physical limits.

    python -m bench.static_report [OUT_DIR]      # default bench/results/static/

writes report.md / report.json (per kernel, config, constexpr variant, dtype and architecture:
registers, spills, shared memory, tensor-core instructions in the PTX) and limits.md / limits.json
(FLOPs, bytes and kernel launches of a GAN and a VAE step, and what they mean as a floor on an
H100 SXM and an H200). tests/test_gpu_builds.py runs the same builds and fails on any problem.

The builds and their report are bench/aot_builds.py's, the step's limits bench/step_limits.py's;
this is the command that writes both.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bench.aot_builds import PROFILES, REPO, write_build_report
from bench.step_limits import DEVICES, EAGER_LAUNCH_US, GRAPH_NODE_US, limits, limits_markdown

DEFAULT_OUT = REPO / "bench" / "results" / "static"


def write_report(out_dir: Path, profile: str = "full", workers: int | None = None) -> dict:
    out_dir = Path(out_dir)
    summary = write_build_report(out_dir, profile, workers)
    step_rows = limits()
    (out_dir / "limits.json").write_text(
        json.dumps(
            {"devices": DEVICES, "eager_launch_us": EAGER_LAUNCH_US, "graph_node_us": GRAPH_NODE_US, "steps": step_rows}, indent=1
        )
        + "\n"
    )
    (out_dir / "limits.md").write_text(limits_markdown(step_rows))
    return summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.static_report", description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", nargs="?", default=str(DEFAULT_OUT))
    parser.add_argument("--profile", choices=PROFILES, default="full")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--limits-only", action="store_true", help="write limits.md / limits.json only (no builds)")
    args = parser.parse_args(argv)
    if args.limits_only:
        out = Path(args.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        step_rows = limits()
        (out / "limits.json").write_text(json.dumps({"devices": DEVICES, "steps": step_rows}, indent=1) + "\n")
        (out / "limits.md").write_text(limits_markdown(step_rows))
        return 0
    summary = write_report(Path(args.out_dir), args.profile, args.workers)
    print(f"{summary['builds']} builds, {summary['problems']} with problems, {summary['seconds']:.0f} s -> {args.out_dir}")
    return 1 if summary["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
