"""The files a run leaves behind: config, metrics, sample grids, loss curves, weights, summary."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch

from fastgen.errors import FastgenError
from fastgen.files import atomic_write_text
from fastgen.models.weights import WEIGHTS_FILE, save_weights
from fastgen.plotting import pyplot


def default_out(model: str) -> Path:
    return Path("runs") / f"{model}-{time.strftime('%Y%m%d-%H%M%S')}"


def prepare_out(out: Path, overwrite: bool, samples: bool = True) -> Path:
    """Create the run folder (with samples/ unless it is a group's folder); refuse one that already holds a run
    or a group of seeds unless overwriting."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FastgenError(f"--out {out} exists and is not a folder")
    if ((out / "config.json").exists() or (out / "group.json").exists()) and not overwrite:
        raise FastgenError(f"--out {out} already holds a run; choose another folder or pass --overwrite")
    try:
        (out / "samples" if samples else out).mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"  # per process: torchrun ranks probe at once
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise FastgenError(f"cannot write to --out {out}: {exc.strerror or exc}") from None
    if overwrite:
        (out / "metrics.jsonl").unlink(missing_ok=True)
    return out


class RunWriter:
    """Writes a run's files; `enabled=False` (torchrun ranks other than 0) keeps the metrics and writes nothing."""

    def __init__(self, out: Path, enabled: bool = True):
        self.out = Path(out)
        self.enabled = enabled
        self.metrics: list[dict] = []

    def write_json(self, name: str, data: dict) -> Path:
        path = self.out / name
        if self.enabled:
            atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")
        return path

    def append_metrics(self, row: dict) -> None:
        self.metrics.append(row)
        if self.enabled:
            with open(self.out / "metrics.jsonl", "a") as handle:
                handle.write(json.dumps(row) + "\n")

    def save_grid(self, images: torch.Tensor, name: str) -> Path:
        """images in [0, 1], (64, 1, 28, 28) -> an 8x8 PNG under samples/."""
        from torchvision.utils import save_image

        path = self.out / "samples" / name
        if self.enabled:
            save_image(images.float().clamp(0, 1).cpu(), str(path), nrow=8, padding=2)
        return path

    def save_weights(self, modules: dict, model: str, config: dict, ema: dict | None = None) -> None:
        if self.enabled:
            save_weights(self.out / WEIGHTS_FILE, modules, model, config, ema)

    def plot_losses(self, names) -> Path | None:
        if not self.enabled:
            return None
        plt = pyplot()
        fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
        epochs = [row["epoch"] for row in self.metrics]
        for name in names:
            ax.plot(epochs, [row[name] for row in self.metrics], marker="o", label=name)
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss" if len(names) > 1 else names[0])
        ax.legend()
        ax.grid(alpha=0.3)
        fig.tight_layout()
        path = self.out / "losses.png"
        fig.savefig(path)
        plt.close(fig)
        return path
