"""The figures of report.md, drawn from a GAN-vs-VAE comparison's results: sample grids, loss curves and
the scores over epochs. Each writes one PNG under OUT/figures/ and returns its path relative to OUT."""

from __future__ import annotations

from pathlib import Path

import torch

from fastgen.comparison.results import KINDS, LABELS, seed_values, seeds_text
from fastgen.comparison.stats import summary
from fastgen.config import MODELS
from fastgen.evaluation.scoring import HIGHER_IS_BETTER, SCORE_NAMES
from fastgen.plotting import pyplot

COLORS = {"gan": "tab:blue", "vae": "tab:orange"}
LOSSES = {"gan": ("d_loss", "g_loss"), "vae": ("loss", "test_loss")}


def grid_figure(out: Path, samples: dict[str, torch.Tensor], epoch: int) -> str:
    from torchvision.utils import make_grid

    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(8, 4.3), dpi=100)
    for ax, model in zip(axes, MODELS):
        ax.imshow(make_grid(samples[model].cpu(), nrow=8, padding=2, pad_value=1.0)[0].numpy(), cmap="gray", vmin=0, vmax=1)
        ax.set_title(f"{model.upper()}, epoch {epoch}")
        ax.axis("off")
    fig.tight_layout()
    name = f"figures/samples_epoch_{epoch:04d}.png"
    fig.savefig(out / name)
    plt.close(fig)
    return name


def _loss_curve(results: dict, model: str, name: str) -> tuple[list[int], list[dict]]:
    """Epochs and, per epoch, the summary over the seeds whose metrics.jsonl has `name` there."""
    by_epoch: dict[int, list[float]] = {}
    for seed in results["seeds"]:
        for row in results["models"][model]["runs"][seed]["metrics"]:
            if row.get(name) is not None:
                by_epoch.setdefault(row["epoch"], []).append(row[name])
    epochs = sorted(by_epoch)
    return epochs, [summary(by_epoch[e]) for e in epochs]


def loss_figure(out: Path, results: dict) -> str:
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), dpi=100)
    for ax, model in zip(axes, MODELS):
        for name in LOSSES[model]:
            epochs, stats = _loss_curve(results, model, name)
            (line,) = ax.plot(epochs, [s["mean"] for s in stats], label=name)
            ax.fill_between(epochs, [s["min"] for s in stats], [s["max"] for s in stats], color=line.get_color(), alpha=0.2)
        ax.set_title(f"{model.upper()} ({seeds_text(len(results['seeds']))}: mean, min-max band)")
        ax.set_xlabel("epoch")
        ax.set_ylabel("nats per image" if model == "vae" else "BCE")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(out / "figures/losses.png")
    plt.close(fig)
    return "figures/losses.png"


def _plot_metric(ax, results: dict, name: str, epochs: list[int]) -> None:
    """Per model: mean over seeds, solid with a min-max band for the headline weights, dashed for the other."""
    for model in MODELS:
        default = results["weights"][model]
        for kind in sorted(results["models"][model]["scores"], key=lambda k: k != default):
            stats = [summary(seed_values(results, model, kind, e, name)) for e in epochs]
            solid = kind == default
            ax.plot(
                epochs,
                [s["mean"] for s in stats],
                color=COLORS[model],
                linestyle="-" if solid else "--",
                marker="o" if solid else "x",
                fillstyle="full" if solid else "none",
                label=f"{model.upper()} {KINDS[kind]}",
            )
            if solid:
                low, high = [s["min"] for s in stats], [s["max"] for s in stats]
                ax.fill_between(epochs, low, high, color=COLORS[model], alpha=0.2)
                # The band as bars too: a band over a single checkpoint has no width.
                means = [s["mean"] for s in stats]
                yerr = [[m - lo for m, lo in zip(means, low)], [hi - m for m, hi in zip(means, high)]]
                ax.errorbar(epochs, means, yerr=yerr, color=COLORS[model], linestyle="none", capsize=4)
    ax.axhline(results["reference"]["train_split"][name], color="gray", linestyle=":", label="training split")


def metrics_figure(out: Path, results: dict, epochs: list[int]) -> str:
    plt = pyplot()
    fig, axes = plt.subplots(1, len(SCORE_NAMES), figsize=(3.2 * len(SCORE_NAMES), 3.4), dpi=100)
    for ax, name in zip(axes, SCORE_NAMES):
        _plot_metric(ax, results, name, epochs)
        if name == "frechet_distance":
            ax.set_yscale("log")
        ax.set_xscale("log")
        ax.set_xticks(epochs, [str(e) for e in epochs])
        ax.minorticks_off()
        ax.set_title(LABELS[name] + (" (higher better)" if HIGHER_IS_BETTER[name] else " (lower better)"), fontsize=9)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "figures/metrics.png")
    plt.close(fig)
    return "figures/metrics.png"
