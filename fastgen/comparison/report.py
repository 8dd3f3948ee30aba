"""report.md and its figures from a GAN-vs-VAE comparison's results: a pure function of the results dict and
the sample images `runs` drew; it trains, loads and samples nothing itself."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch

from fastgen.config import MODELS
from fastgen.evaluation.scoring import HIGHER_IS_BETTER, SCORE_NAMES
from fastgen.files import atomic_write_text
from fastgen.plotting import pyplot
from fastgen.version import __version__

LABELS = {
    "frechet_distance": "Fréchet distance",
    "inception_style_score": "IS-style score",
    "class_kl_to_uniform": "class KL to uniform",
    "precision": "precision",
    "recall": "recall",
}


def _grid_figure(out: Path, samples: dict[str, torch.Tensor], epoch: int) -> str:
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


def _loss_figure(out: Path, results: dict) -> str:
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), dpi=100)
    for ax, model, names in zip(axes, MODELS, (("d_loss", "g_loss"), ("loss", "test_loss"))):
        rows = results["models"][model]["metrics"]
        for name in names:
            ax.plot([r["epoch"] for r in rows], [r[name] for r in rows], label=name)
        ax.set_title(model.upper())
        ax.set_xlabel("epoch")
        ax.set_ylabel("nats per image" if model == "vae" else "BCE")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(out / "figures/losses.png")
    plt.close(fig)
    return "figures/losses.png"


def _metrics_figure(out: Path, results: dict, epochs) -> str:
    plt = pyplot()
    fig, axes = plt.subplots(1, len(SCORE_NAMES), figsize=(3.2 * len(SCORE_NAMES), 3.2), dpi=100)
    for ax, name in zip(axes, SCORE_NAMES):
        for model in MODELS:
            scores = results["models"][model]["scores"]
            ax.plot(epochs, [scores[e][name] for e in epochs], marker="o", label=model.upper())
        ax.axhline(results["reference"]["train_split"][name], color="gray", linestyle="--", label="training split")
        if name == "frechet_distance":
            ax.set_yscale("log")
        ax.set_xscale("log")
        ax.set_xticks(epochs, [str(e) for e in epochs])
        ax.minorticks_off()
        ax.set_title(LABELS[name] + (" (higher better)" if HIGHER_IS_BETTER[name] else " (lower better)"), fontsize=9)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "figures/metrics.png")
    plt.close(fig)
    return "figures/metrics.png"


def winners(results: dict, epoch: int) -> dict[str, str]:
    """metric -> 'gan', 'vae' or 'tie' at `epoch`, from the scores."""
    won = {}
    for name in SCORE_NAMES:
        gan, vae = (results["models"][m]["scores"][epoch][name] for m in MODELS)
        if gan == vae:
            won[name] = "tie"
        else:
            won[name] = "gan" if (gan > vae) == HIGHER_IS_BETTER[name] else "vae"
    return won


def _fmt(value: float) -> str:
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"


def _conclusion(results: dict, epochs) -> list[str]:
    last = epochs[-1]
    won_at = {e: winners(results, e) for e in epochs}
    won = won_at[last]
    lines = []
    for model in MODELS:
        names = [LABELS[n] for n in SCORE_NAMES if won[n] == model]
        lines.append(f"- At epoch {last} the **{model.upper()}** is better on {', '.join(names) if names else 'no metric'}.")
    changed = [f"{LABELS[n]} ({e}: {won_at[e][n].upper()})" for e in epochs[:-1] for n in SCORE_NAMES if won_at[e][n] != won[n]]
    if changed:
        lines.append(f"- Earlier checkpoints differ on: {'; '.join(changed)}.")
    else:
        lines.append("- The same model leads on each metric at every checkpoint.")
    for model in MODELS:
        scores = results["models"][model]["scores"]
        first, final = scores[epochs[0]]["frechet_distance"], scores[last]["frechet_distance"]
        lines.append(
            f"- {model.upper()} Fréchet distance from epoch {epochs[0]} to {last}: "
            f"{_fmt(first)} -> {_fmt(final)} (training split vs test split: "
            f"{_fmt(results['reference']['train_split']['frechet_distance'])})."
        )
    real, noise = results["reference"]["train_split"], results["reference"]["uniform_noise"]
    gan_first = results["models"]["gan"]["scores"][epochs[0]]["frechet_distance"]
    lines.append(
        f"- The training split is {gan_first / max(real['frechet_distance'], 1e-12):,.0f}x closer to the test "
        f"split (Fréchet distance) than the GAN at epoch {epochs[0]}."
    )
    all_scores = [s for m in MODELS for s in results["models"][m]["scores"].values()]
    beaten = all(noise["frechet_distance"] > s["frechet_distance"] for s in all_scores)
    lines.append(
        f"- Uniform noise (Fréchet distance {_fmt(noise['frechet_distance'])}) is "
        f"{'farther than every' if beaten else 'NOT farther than every'} checkpoint of both models."
    )
    vae = results["models"]["vae"]["scores"][last]
    lines.append(
        f"- VAE at epoch {last}: test loss {vae['test_loss']:.2f} nats per image, "
        f"IWAE NLL (k={vae['iwae_k']}) {vae['iwae_nll']:.2f}."
    )
    return lines


def _timing_rows(results: dict) -> list[str]:
    rows = [
        "| model | epochs | median s/epoch | first epoch s | training s (sum of epochs) | median images/s |",
        "|---|---|---|---|---|---|",
    ]
    for model in MODELS:
        metrics = results["models"][model]["metrics"]
        times = [r["epoch_s"] for r in metrics]
        rows.append(
            f"| {model.upper()} | {len(metrics)} | {statistics.median(times):.2f} | {times[0]:.2f} | "
            f"{sum(times):,.0f} | {statistics.median(r['samples_per_s'] for r in metrics):,.0f} |"
        )
    return rows


def _score_table(results: dict, epochs) -> list[str]:
    head = "| | " + " | ".join(LABELS[n] for n in SCORE_NAMES) + " | test loss | IWAE NLL |"
    rows = [head, "|---" * (len(SCORE_NAMES) + 3) + "|"]
    for epoch in epochs:
        for model in MODELS:
            s = results["models"][model]["scores"][epoch]
            extra = [f"{s[k]:.2f}" if k in s else "" for k in ("test_loss", "iwae_nll")]
            rows.append(
                f"| {model.upper()} epoch {epoch} | "
                + " | ".join(_fmt(s[n]) for n in SCORE_NAMES)
                + " | "
                + " | ".join(extra)
                + " |"
            )
    for name, scores in results["reference"].items():
        rows.append(f"| *{name.replace('_', ' ')}* | " + " | ".join(_fmt(scores[n]) for n in SCORE_NAMES) + " | | |")
    return rows


def write_report(out: Path, results: dict, samples: dict[int, dict[str, torch.Tensor]]) -> Path:
    """OUT/report.md and OUT/figures/ from `results` (results.json's contents) and `samples`: per epoch,
    per model, images in [0, 1] drawn from the same latents at every epoch."""
    out = Path(out)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    config = results["config"]
    epochs = list(config["epochs"])
    grids = [_grid_figure(out, samples[e], e) for e in epochs]
    lines = [
        "# GAN vs VAE on " + config["dataset"].upper(),
        "",
        f"Produced by `python -m fastgen.compare{' --quick' if config['quick'] else ''}` (fastgen {__version__}) on "
        f"{results['device']}, {time.strftime('%Y-%m-%d')}. Checkpoints at epochs {', '.join(map(str, epochs))}; "
        f"{config['n']:,} generated samples scored per checkpoint against the {config['dataset']} test split; "
        f"training images: {config['train_images'] or 'all'}; seed {config['seed']}.",
    ]
    if config["quick"]:
        lines += [
            "",
            "**This is a `--quick` smoke run** (a slice of the training split, few samples): it checks the "
            "pipeline end to end; do not quote its numbers.",
        ]
    lines += [
        "",
        "## Scores",
        "",
        "Fréchet distance, precision and recall are computed in the 128-d penultimate features of fastgen's own "
        f"MNIST classifier (test accuracy {results['evaluator']['test_accuracy']:.2%}), not Inception-v3: the scale "
        "is not Inception-FID's, so compare these numbers only with other fastgen numbers. The IS-style score is "
        "exp E[KL(p(y|x) || p(y))] from the same classifier (1 to 10). Class KL to uniform is 0 when every digit is "
        "generated equally often and log 10 = 2.30 when one digit takes all (mode collapse). Precision/recall use "
        "k=3 nearest-neighbour radii (Kynkäänniemi et al., 2019). The italic rows set the scale: training-split "
        "images scored as if generated (about the best possible) and uniform noise.",
        "",
        *_score_table(results, epochs),
        "",
        "![metrics over epochs](figures/metrics.png)",
        "",
        "## Conclusion (from the numbers above)",
        "",
        *_conclusion(results, epochs),
        "",
        "## Samples (same latent draws at every epoch)",
        "",
        *[f"![samples at epoch {e}]({g})" for e, g in zip(epochs, grids)],
        "",
        "## Loss curves",
        "",
        f"![loss curves]({_loss_figure(out, results)})",
        "",
        "## Training time",
        "",
        *_timing_rows(results),
        "",
        f"Epoch times are from each run's `metrics.jsonl` (the first epoch includes compilation). "
        f"This command took {results['compare_s'] / 60:.1f} min, including any training it had to do.",
        "",
    ]
    _metrics_figure(out, results, epochs)
    path = out / "report.md"
    atomic_write_text(path, "\n".join(lines))
    return path
