"""Check the project's performance targets against a results folder written by bench/run_all.sh.

    python bench/check_targets.py bench/results/<device>

Prints a markdown table: target, measured value, pass / FAIL, or "not measured" where the folder
has no such number (GPU targets in a CPU folder, say).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _benchmarks(folder: Path) -> list[dict]:
    """Every benchmark of the folder's bench-*.json files (one per run_all.sh bench stage; bench.json before)."""
    return [b for path in sorted(folder.glob("bench*.json")) for b in json.loads(path.read_text())["benchmarks"]]


def _median(benchmarks, group: str, variant: str):
    """The variant's median in the group: the variant named exactly, else the first whose name starts so."""
    in_group = [b for b in benchmarks if b.get("group") == group]
    for match in (lambda name: name == variant, lambda name: name.startswith(variant)):
        for b in in_group:
            if match(b["extra_info"].get("variant", "")):
                return b["stats"]["median"], b["extra_info"]
    return None, None


def _ratio(benchmarks, group, faster, slower):
    a, _ = _median(benchmarks, group, faster)
    b, _ = _median(benchmarks, group, slower)
    return b / a if a and b else None


def _ratio_to_reference(benchmarks, group, faster):
    a, _ = _median(benchmarks, group, faster)
    b = next(
        (x["stats"]["median"] for x in benchmarks if x.get("group") == group and x["extra_info"].get("role") == "reference"), None
    )
    return b / a if a and b else None


def _op_rivals(folder: Path) -> list[dict]:
    """bench/op_rivals.py's cells, from a GPU run only (its CPU runs time the native kernels' host path)."""
    path = folder / "op-rivals.json"
    record = json.loads(path.read_text()) if path.exists() else {}
    return record.get("results", []) if record.get("cuda") else []


def _summary(folder: Path, run: str) -> dict | None:
    path = folder / "runs" / run / "summary.json"
    return json.loads(path.read_text()) if path.exists() else None


def checks(folder: Path) -> list[tuple[str, str, float | None, bool | None]]:
    bench = _benchmarks(folder)
    rows = []

    def add(name, value, unit, ok):
        rows.append(
            (name, f"{value:.3g}{unit}" if value is not None else "not measured", value, None if value is None else ok(value))
        )

    for model, batch in (("gan", 32), ("vae", 100)):
        r = _ratio_to_reference(bench, f"end-to-end {model} batch {batch}", "fastgen")  # the plain baseline
        add(f"{model.upper()} end-to-end vs plain baseline >= 1.5x (foundation)", r, "x", lambda v: v >= 1.5)
        add(f"{model.upper()} end-to-end vs plain baseline >= 2.5x (compiled step, CPU)", r, "x", lambda v: v >= 2.5)
    # Each fused op against the plain PyTorch it replaces, forward+backward, in every measured cell (GPU: batch 64,
    # 512, 4096, fp32 and bf16; bench/op_rivals.py, rounds interleaved): the worst cell's median over rounds, and
    # no round under 0.95x.
    rivals = _op_rivals(folder)
    for op, label in (
        ("LinearLeakyReLUDropout layer", "drop-in layer"),
        ("reparameterize", "reparameterize"),
        ("bce_kl_loss", "bce_kl_loss"),
    ):
        cells = [r for r in rivals if r["op"] == op]
        add(
            f"{label} fwd+bwd vs plain modules >= 1.0x, no round under 0.95x, every batch and dtype (GPU, worst cell)",
            min(r["speedup"] for r in cells) if cells else None,
            "x",
            lambda v, cells=cells: v >= 1.0 and min(min(r["ratios"]) for r in cells) >= 0.95,
        )
    _, fused = _median(bench, "linear_leaky_relu_dropout forward+backward batch 4096 bf16", "fastgen")
    _, eager = _median(bench, "linear_leaky_relu_dropout forward+backward batch 4096 bf16", "eager")
    saved = fused["saved_mib"] / eager["saved_mib"] if fused and eager and eager.get("saved_mib") else None
    add("fused layer saved memory <= 0.5x eager", saved, "x", lambda v: v <= 0.5)
    # The graphed step against the same step with plain modules under the same compile and CUDA graph.
    for model, batch, dtype, floor in (
        ("gan", 64, "fp32", 1.0),
        ("gan", 64, "bf16", 1.0),
        ("vae", 100, "fp32", 1.2),
        ("vae", 100, "bf16", 1.0),
    ):
        ratio = _ratio(bench, f"step {model} batch {batch} {dtype}", "graphed", "plain modules graphed")
        add(
            f"graphed {model.upper()} step (batch {batch}, {dtype}) vs plain modules graphed >= {floor}x",
            ratio,
            "x",
            lambda v, floor=floor: v >= floor,
        )
    for model, batch, limit in (("gan", 32, 0.5), ("vae", 100, 0.12)):
        median, info = _median(bench, f"end-to-end {model} batch {batch}", "fastgen")
        epoch = median if info and info.get("steps") == 60_000 // batch else None  # a round is a whole epoch on a GPU
        add(
            f"{model.upper()} fp32 epoch at batch {batch} <= {limit} s (GPU, end to end)",
            epoch,
            " s",
            lambda v, limit=limit: v <= limit,
        )
    # The CPU: one eager forward+backward call costs the host no more than the plain modules' (bench/test_host_time.py).
    for op in ("linear_leaky_relu_dropout layer", "reparameterize", "bce_kl_loss"):
        ratio = _ratio(bench, f"host time {op} forward+backward", "fastgen", "plain")
        add(f"{op} host time per eager call vs plain >= 1.0x (CPU)", ratio, "x", lambda v: v >= 1.0)
    gan = _summary(folder, "gan-10-epochs-b64")
    epoch_s = None
    if gan:
        lines = (folder / "runs" / "gan-10-epochs-b64" / "metrics.jsonl").read_text().splitlines()
        rows_ = [json.loads(line) for line in lines]
        epoch_s = sorted(r["epoch_s"] for r in rows_[1:])[len(rows_[1:]) // 2] if len(rows_) > 1 else None
    add("paper-GAN epoch at batch 64 < 0.5 s (median after the first)", epoch_s, " s", lambda v: v < 0.5)
    vae = _summary(folder, "vae-200-epochs")
    add("200 VAE epochs incl. compilation < 30 s", vae["wall_s"] if vae else None, " s", lambda v: v < 30)
    vae10 = _summary(folder, "vae-10-epochs")
    add("VAE test loss after 10 epochs <= 110", vae10["final"]["test_loss"] if vae10 else None, "", lambda v: v <= 110)
    return rows


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or not Path(argv[0]).is_dir():
        print("usage: python bench/check_targets.py RESULTS_DIR", file=sys.stderr)
        return 2
    print("| target | measured | verdict |\n|---|---|---|")
    for name, shown, _, ok in checks(Path(argv[0])):
        print(f"| {name} | {shown} | {'-' if ok is None else ('pass' if ok else 'FAIL')} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
