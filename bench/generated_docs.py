"""The generated sections of README.md and docs/performance.md, and docs/figures/speed.png: the speed tables
and figure from the committed results folders (bench/results/<device>/, one per device kind, each the newest
run there), and the comparison's headline from docs/comparison/results.json.

Each generated section sits between two markers in its document; `python -m bench.report --docs` rewrites
them, and tests/test_docs.py checks that the committed documents equal what it would write.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
FIGURE = Path("docs/figures/speed.png")
FIGURE_DATA = Path("docs/figures/speed.json")
COMMAND = "python -m bench.report --docs"

PLAIN = "plain baseline (DataLoader + nn.Sequential), own process"
GLANCE_COLUMNS = {  # variant recorded by bench/test_end_to_end.py -> column of the glance table
    PLAIN: "plain PyTorch",
    "plain modules + torch.compile, same data path": "plain + torch.compile",
    "fastgen": "fastgen",
    "fastgen --amp": "fastgen --amp",
}
MODELS = {"gan": ("GAN", 32), "vae": ("VAE", 100)}
VERSIONS = (("torch", "torch"), ("Triton", "triton"), ("fastgen", "fastgen"))  # caption name, extra_info key


def _benchmarks(folder: Path) -> tuple[list[dict], list[str]]:
    """Every benchmark with timings in the folder's bench*.json files, and the files' dates."""
    benchmarks, dates = [], []
    for path in sorted(folder.glob("bench*.json")):
        data = json.loads(path.read_text())
        dates.append(data.get("datetime", ""))
        benchmarks += [b for b in data["benchmarks"] if b.get("stats")]
    return benchmarks, dates


def device_runs(root: Path = RESULTS) -> list[dict]:
    """One entry per results folder that holds benchmarks: CPUs first, then GPUs, each by name."""
    runs = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        benchmarks, dates = _benchmarks(folder)
        if not benchmarks:
            continue
        info = benchmarks[0]["extra_info"]
        on_cpu = info.get("device") == "cpu"
        variants = {b["extra_info"].get("variant") for b in benchmarks}
        name = re.sub(r"\((R|TM)\)", "", info.get("device_name", folder.name)).replace("  ", " ")
        if on_cpu:
            name += ", AVX512-BF16" if "fastgen --amp" in variants else ", no bf16"
        runs.append(
            {
                "folder": folder.name,
                "name": name,
                "cpu": on_cpu,
                "date": max(dates)[:10],
                "versions": ", ".join(f"{name} {info.get(key, '?')}" for name, key in VERSIONS),
                "benchmarks": benchmarks,
            }
        )
    return sorted(runs, key=lambda r: (not r["cpu"], r["name"]))


def end_to_end(run: dict) -> dict[str, dict[str, float]]:
    """model -> glance column -> samples/s (median round), from the end-to-end benchmarks."""
    cells: dict[str, dict[str, float]] = {}
    for model, (_, batch) in MODELS.items():
        for b in run["benchmarks"]:
            info = b["extra_info"]
            if b.get("group") == f"end-to-end {model} batch {batch}" and info.get("variant") in GLANCE_COLUMNS:
                cells.setdefault(model, {})[GLANCE_COLUMNS[info["variant"]]] = info["samples_per_s"]
    return cells


def _rate_cell(rates: dict[str, float], column: str, run: dict) -> str:
    rate = rates.get(column)
    if rate is None and column == "fastgen --amp" and run["name"].endswith("no bf16"):
        return "no bf16: as fastgen"
    if rate is None:
        return "not measured" + (" (a CPU baseline)" if column == "plain PyTorch" and not run["cpu"] else "")
    plain = rates.get("plain PyTorch")
    speedup = f" ({rate / plain:.2f}x)" if plain and column != "plain PyTorch" else ""
    return f"{rate:,.0f}{speedup}"


def glance_table(run: dict) -> list[str]:
    """The README's table for one device: training samples/s end to end, speed-up over plain PyTorch."""
    cells = end_to_end(run)
    lines = [
        f"**{run['name']}**, {run['date']} ({run['versions']}; `bench/results/{run['folder']}/`):",
        "",
        "| training samples/s, end to end | " + " | ".join(GLANCE_COLUMNS.values()) + " |",
        "|---" * (len(GLANCE_COLUMNS) + 1) + "|",
    ]
    for model, (label, batch) in MODELS.items():
        rates = cells.get(model, {})
        lines.append(
            f"| {label}, batch {batch} | " + " | ".join(_rate_cell(rates, c, run) for c in GLANCE_COLUMNS.values()) + " |"
        )
    return lines


def figure_data(runs: list[dict]) -> dict:
    """What the speed figure plots: per device, per model, samples/s of each glance column measured."""
    return {"devices": [{"name": r["name"], "date": r["date"], "end_to_end": end_to_end(r)} for r in runs]}


def draw_figure(data: dict, path: Path) -> None:
    """Bars of training samples/s (log scale) per device, one panel per model; speed-ups over plain PyTorch on top."""
    from fastgen.plotting import pyplot

    plt = pyplot()
    columns = list(GLANCE_COLUMNS.values())
    colors = {
        "plain PyTorch": "tab:gray",
        "plain + torch.compile": "tab:olive",
        "fastgen": "tab:blue",
        "fastgen --amp": "tab:green",
    }
    devices = data["devices"]
    fig, axes = plt.subplots(1, len(MODELS), figsize=(10, 3.6))
    for ax, (model, (label, batch)) in zip(axes, MODELS.items()):
        width = 0.8 / len(columns)
        for i, column in enumerate(columns):
            for d, device in enumerate(devices):
                rates = device["end_to_end"].get(model, {})
                if column not in rates:
                    continue
                x = d + (i - (len(columns) - 1) / 2) * width
                ax.bar(x, rates[column], width, color=colors[column], label=column)
                plain = rates.get("plain PyTorch")
                if plain and column != "plain PyTorch":
                    ax.annotate(f"{rates[column] / plain:.1f}x", (x, rates[column]), ha="center", va="bottom", fontsize=7)
        ax.set_yscale("log")
        lowest = min((r for d in devices for r in d["end_to_end"].get(model, {}).values()), default=1.0)
        ax.set_ylim(bottom=10 ** math.floor(math.log10(lowest)))
        ax.set_xticks(range(len(devices)), [f"{d['name'].split(',')[0]}\n{d['date']}" for d in devices], fontsize=7)
        ax.set_title(f"{label}, batch {batch}: training samples/s", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    handles = {}
    for ax in axes:
        for handle, name in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(name, handle)
    fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=len(columns), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)


def limits_section(root: Path = RESULTS) -> list[str]:
    """The limits table of bench/results/static/limits.md (written by `python -m bench.static_report`), without its title."""
    text = (root / "static" / "limits.md").read_text().rstrip("\n").split("\n")
    return [line for line in text if not line.startswith("# ")]


def device_sections(runs: list[dict]) -> list[str]:
    """docs/performance.md: every device's whole ratio table (bench/report.py's), dated once."""
    from bench.report import table

    lines = []
    for run in runs:
        lines += [
            f"### {run['name']} ({run['date']})",
            "",
            f"{run['versions']}; raw results in `bench/results/{run['folder']}/`. Speed-up: the group's reference "
            "median over the row's median, within this one run.",
            "",
            table(run["benchmarks"]),
            "",
        ]
    return lines[:-1]


def results_tables(root: Path, name: str, none_yet: str) -> list[str]:
    """Every results folder's `name` (a table a bench module writes), under its folder's name; else `none_yet`."""
    lines = []
    for path in sorted(root.glob(f"*/{name}")):
        lines += [f"### `bench/results/{path.parent.name}/`", "", *path.read_text().rstrip("\n").split("\n"), ""]
    return lines[:-1] or [none_yet]


def seed_group_section(root: Path = RESULTS) -> list[str]:
    """Every results folder's seed-group.md (written by `python -m bench.seed_group`)."""
    return results_tables(root, "seed-group.md", "No group of seeds has been measured yet.")


def comparison_section(folder: Path) -> list[str]:
    """The README's headline of the committed GAN-vs-VAE comparison, with the last epoch's sample grids."""
    from fastgen.comparison.report import headline
    from fastgen.comparison.results import KINDS, read_results

    results = read_results(folder / "results.json")
    epochs, seeds = results["config"]["epochs"], results["seeds"]
    weights = " and ".join(f"the {m.upper()}'s {KINDS[k]}" for m, k in results["weights"].items())
    return [
        f"{len(seeds)} training seeds per model, epochs {' and '.join(map(str, epochs))}, on {results['device']}; "
        f"mean ± standard deviation over the seeds, {results['config']['n']:,} samples per score, {weights} weights "
        "(fastgen's default). A winner is named only where Welch's t-test over the seeds says so.",
        "",
        *headline(results),
        "",
        f"![samples at epoch {epochs[-1]}, GAN and VAE](docs/comparison/figures/samples_epoch_{epochs[-1]:04d}.png)",
    ]


def glance(runs: list[dict], figure: str) -> list[str]:
    """The speed figure (linked as `figure` from the document) and one glance table per device."""
    lines = [f"![training samples/s per device]({figure})"]
    for run in runs:
        lines += ["", *glance_table(run)]
    return lines


def sections(repo: Path, runs: list[dict]) -> dict[str, dict[str, list[str]]]:
    """document -> section name -> generated lines."""
    return {
        "README.md": {"comparison": comparison_section(repo / "docs" / "comparison"), "speed": glance(runs, FIGURE.as_posix())},
        "docs/performance.md": {
            "glance": glance(runs, FIGURE.relative_to("docs").as_posix()),
            "devices": device_sections(runs),
            "limits": limits_section(repo / "bench" / "results"),
            "seed-groups": seed_group_section(repo / "bench" / "results"),
            "op-rivals": results_tables(repo / "bench" / "results", "op-rivals.md", "Not yet measured on a GPU."),
            "kernel-profiles": results_tables(repo / "bench" / "results", "kernel-profile.md", "Not yet measured on a GPU."),
        },
    }


def _markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}: generated by `{COMMAND}`; do not edit -->", f"<!-- end {name} -->"


def fill(text: str, generated: dict[str, list[str]], document: str) -> str:
    """`text` with each named section between its markers replaced; a missing marker is an error."""
    for name, lines in generated.items():
        begin, end = _markers(name)
        if begin not in text or end not in text:
            raise ValueError(f"{document} has no '{begin}' ... '{end}' section")
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        text = head + begin + "\n" + "\n".join(lines) + "\n" + end + tail
    return text


def rendered(repo: Path | None = None) -> dict[Path, str]:
    """Every generated text file as the command would write it: the documents and the figure's data."""
    repo = repo or REPO
    runs = device_runs(repo / "bench" / "results")
    out = {Path(doc): fill((repo / doc).read_text(), generated, doc) for doc, generated in sections(repo, runs).items()}
    out[FIGURE_DATA] = json.dumps(figure_data(runs), indent=1) + "\n"
    return out


def write(repo: Path | None = None) -> list[Path]:
    """Rewrite the documents, the figure and its data; return what was written."""
    repo = repo or REPO
    texts = rendered(repo)
    for path, text in texts.items():
        (repo / path).parent.mkdir(parents=True, exist_ok=True)
        (repo / path).write_text(text)
    draw_figure(json.loads(texts[FIGURE_DATA]), repo / FIGURE)
    return [*texts, FIGURE]
