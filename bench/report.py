"""Turn pytest-benchmark results into a markdown table of speed ratios against each group's yardstick, and
rebuild the documents' speed sections from the committed results folders.

    python bench/report.py RESULTS.json [MORE.json ...] > results.md
    python -m bench.report --docs        # README.md's glance, docs/performance.md's tables, docs/figures/speed.png
    python -m bench.report --check       # exit 1 if the committed documents differ from what --docs would write

In every group, the row named by its `extra_info["role"] == "reference"` is 1.00x; the others show
median time, throughput where recorded, and speed-up (reference median / row median).
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict


def table(benchmarks: list[dict]) -> str:
    groups = defaultdict(list)
    for bench in benchmarks:
        groups[bench.get("group") or bench["name"]].append(bench)
    lines = ["| group | variant | median | samples/s | speed-up | peak MiB |", "|---|---|---|---|---|---|"]
    for group in sorted(groups):
        rows = groups[group]
        reference = next((r for r in rows if r["extra_info"].get("role") == "reference"), None)
        for row in sorted(rows, key=lambda r: r["stats"]["median"], reverse=True):
            median = row["stats"]["median"]
            info = row["extra_info"]
            speedup = f"{reference['stats']['median'] / median:.2f}x" if reference else "-"
            rate = info.get("samples_per_s")
            peak = info.get("peak_mib")
            lines.append(
                f"| {group} | {info.get('variant', row['name'])} | {_time(median)} | "
                f"{f'{rate:,.0f}' if rate else '-'} | {speedup} | {f'{peak:.1f}' if peak else '-'} |"
            )
    return "\n".join(lines)


def _time(seconds: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def header(machine_info: dict, benchmarks: list[dict]) -> str:
    info = benchmarks[0]["extra_info"] if benchmarks else {}
    return (
        f"Device: {info.get('device_name', '?')} | torch {info.get('torch', '?')} | triton {info.get('triton', '?')} | "
        f"fastgen {info.get('fastgen', '?')} | CPU {machine_info.get('cpu', {}).get('brand_raw', '?')}"
    )


def docs(check: bool) -> int:
    from bench import generated_docs

    if not check:
        for path in generated_docs.write():
            print(f"wrote {path}")
        return 0
    stale = [str(p) for p, text in generated_docs.rendered().items() if (generated_docs.REPO / p).read_text() != text]
    if stale:
        print(f"out of date with bench/results/: {', '.join(stale)}; run python -m bench.report --docs", file=sys.stderr)
    return 1 if stale else 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv in (["--docs"], ["--check"]):
        return docs(check=argv == ["--check"])
    if not argv or argv[0].startswith("-"):
        print("usage: python bench/report.py RESULTS.json [MORE.json ...] | --docs | --check", file=sys.stderr)
        return 2
    files = []
    for name in argv:
        with open(name) as handle:
            files.append(json.load(handle))
    benchmarks = [b for data in files for b in data["benchmarks"]]
    print(header(files[0].get("machine_info", {}), benchmarks))
    print()
    print(table(benchmarks))
    return 0


if __name__ == "__main__":
    sys.exit(main())
