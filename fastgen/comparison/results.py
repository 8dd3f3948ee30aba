"""How report.md and its figures read a comparison's results dict (its layout: runs.py), and the names they
give what is in it."""

from __future__ import annotations

import json
from pathlib import Path

LABELS = {
    "frechet_distance": "Fréchet distance",
    "inception_style_score": "IS-style score",
    "class_kl_to_uniform": "class KL to uniform",
    "precision": "precision",
    "recall": "recall",
}
KINDS = {"raw": "raw", "ema": "EMA"}  # weights kind -> how the report names it


def seeds_text(n: int) -> str:
    return f"{n} seed" if n == 1 else f"{n} seeds"


def seed_values(results: dict, model: str, kind: str, epoch: int, key: str) -> list[float]:
    """`key` of `model`'s `kind` weights at `epoch`, one value per training seed, in results["seeds"] order."""
    by_seed = results["models"][model]["scores"][kind][epoch]
    return [by_seed[seed][key] for seed in results["seeds"]]


def read_results(path) -> dict:
    """A comparison's results.json as `compare` held it: epochs and seeds as int keys again (JSON made them strings)."""

    def ints(value):
        if isinstance(value, dict):
            return {int(k) if k.isdigit() else k: ints(v) for k, v in value.items()}
        return [ints(v) for v in value] if isinstance(value, list) else value

    return ints(json.loads(Path(path).read_text()))
