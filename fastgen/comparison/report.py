"""report.md and its figures from a GAN-vs-VAE comparison's results: a pure function of the results dict and
the sample images `runs` drew; it trains, loads and samples nothing itself.

Every number is over the training seeds in results["seeds"]: scores per model, weights kind ("raw", "ema"),
epoch and seed; the statistics come from `fastgen.comparison.stats`, the figures from `fastgen.comparison.figures`."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch

from fastgen.comparison.figures import grid_figure, loss_figure, metrics_figure
from fastgen.comparison.results import KINDS, LABELS, seed_values, seeds_text
from fastgen.comparison.stats import ALPHA, ema_effect, summary, winner
from fastgen.config import MODELS
from fastgen.evaluation.scoring import HIGHER_IS_BETTER, SCORE_NAMES
from fastgen.files import atomic_write_text
from fastgen.version import __version__


def _fmt(value: float) -> str:
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"


def _p(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.2g}"


def _headline(results: dict, model: str, epoch: int, key: str) -> list[float]:
    return seed_values(results, model, results["weights"][model], epoch, key)


def _pm(values: list[float], fmt=_fmt) -> str:
    """mean ± sample sd over seeds; the value alone for one seed."""
    s = summary(values)
    return fmt(s["mean"]) if s["sd"] is None else f"{fmt(s['mean'])} ± {fmt(s['sd'])}"


def _has_ema(results: dict) -> bool:
    return all(set(KINDS) <= set(results["models"][m]["scores"]) for m in MODELS)


def _score_table(results: dict, epochs: list[int]) -> list[str]:
    head = "| | weights | " + " | ".join(LABELS[n] for n in SCORE_NAMES) + " | test loss | IWAE NLL |"
    rows = [head, "|---" * (len(SCORE_NAMES) + 4) + "|"]
    for epoch in epochs:
        for model in MODELS:
            cells = [_pm(_headline(results, model, epoch, n)) for n in SCORE_NAMES]
            has = results["models"][model]["scores"][results["weights"][model]][epoch][results["seeds"][0]]
            cells += [
                _pm(_headline(results, model, epoch, k), "{:.2f}".format) if k in has else "" for k in ("test_loss", "iwae_nll")
            ]
            rows.append(f"| {model.upper()} epoch {epoch} | {KINDS[results['weights'][model]]} | " + " | ".join(cells) + " |")
    for name, scores in results["reference"].items():
        rows.append(f"| *{name.replace('_', ' ')}* | | " + " | ".join(_fmt(scores[n]) for n in SCORE_NAMES) + " | | |")
    return rows


def _spreads(results: dict, model: str, epoch: int, name: str) -> tuple[float | None, float | None]:
    """(sd over training seeds, sampling sd at n) of the headline weights' `name` at `epoch`."""
    kind = results["weights"][model]
    return summary(_headline(results, model, epoch, name))["sd"], results["models"][model]["sampling"][kind][epoch].get(name)


def _sampling_table(results: dict, epochs: list[int]) -> list[str]:
    rows = ["| | " + " | ".join(LABELS[n] for n in SCORE_NAMES) + " |", "|---" * (len(SCORE_NAMES) + 1) + "|"]
    for epoch in epochs:
        for model in MODELS:
            cells = [" / ".join("n/a" if v is None else _fmt(v) for v in _spreads(results, model, epoch, n)) for n in SCORE_NAMES]
            rows.append(f"| {model.upper()} epoch {epoch} | " + " | ".join(cells) + " |")
    return rows


def _dominance(results: dict, model: str, epochs: list[int]) -> str:
    """Which of the spread over seeds and the sampling error is larger, counted over the metric-epochs."""
    pairs = [_spreads(results, model, e, n) for e in epochs for n in SCORE_NAMES]
    pairs = [(seeds, sampling) for seeds, sampling in pairs if seeds is not None and sampling is not None]
    if not pairs:
        n_seeds = seeds_text(len(results["seeds"]))
        return f"- {model.upper()}: with {n_seeds} there is no spread over seeds to set against the sampling error."
    larger = sum(seeds > sampling for seeds, sampling in pairs)
    if 2 * larger > len(pairs):
        verdict = "the spread over training seeds dominates: another seed moves the scores more than re-drawing the samples does"
    elif 2 * larger < len(pairs):
        verdict = "the sampling error at n dominates: the seeds differ by no more than re-drawing the samples alone does"
    else:
        verdict = "neither dominates consistently"
    return f"- {model.upper()}: the sd over seeds is the larger on {larger} of {len(pairs)} metric-epochs; {verdict}."


def _verdict_cell(verdict: tuple[str | None, float | None], n_seeds: int) -> str:
    won, p = verdict
    if won is not None:
        return f"**{won.upper()}** ({_p(p)})"
    return f"not distinguishable with {seeds_text(n_seeds)}" + ("" if p is None else f" ({_p(p)})")


def headline(results: dict) -> list[str]:
    """The short table the README shows: each model's default weights, mean ± sd over seeds at each epoch, the
    winner by Welch's test, and the training split for scale."""
    epochs, names = list(results["config"]["epochs"]), SCORE_NAMES
    lines = [
        "| | " + " | ".join(LABELS[n] for n in names) + " | VAE test loss / IWAE NLL |",
        "|---" * (len(names) + 2) + "|",
    ]
    for epoch in epochs:
        for model in MODELS:
            cells = [_pm(_headline(results, model, epoch, n)) for n in names]
            has = results["models"][model]["scores"][results["weights"][model]][epoch][results["seeds"][0]]
            nats = [_pm(_headline(results, model, epoch, k), "{:.1f}".format) for k in ("test_loss", "iwae_nll") if k in has]
            lines.append(f"| {model.upper()}, epoch {epoch} | " + " | ".join(cells) + f" | {' / '.join(nats)} |")
        verdicts = [
            winner(_headline(results, "gan", epoch, n), _headline(results, "vae", epoch, n), HIGHER_IS_BETTER[n]) for n in names
        ]
        cells = [won.upper() if won else "not distinguishable" for won, _ in verdicts]
        lines.append(f"| winner at {epoch} (Welch, {ALPHA}) | " + " | ".join(cells) + " | |")
    train = results["reference"]["train_split"]
    lines.append("| training split (best possible) | " + " | ".join(_fmt(train[n]) for n in names) + " | |")
    return lines


def _conclusion(results: dict, epochs: list[int]) -> list[str]:
    n_seeds, last = len(results["seeds"]), epochs[-1]
    won_at = {
        e: {n: winner(_headline(results, "gan", e, n), _headline(results, "vae", e, n), HIGHER_IS_BETTER[n]) for n in SCORE_NAMES}
        for e in epochs
    }
    lines = ["| epoch | " + " | ".join(LABELS[n] for n in SCORE_NAMES) + " |", "|---" * (len(SCORE_NAMES) + 1) + "|"]
    lines += [f"| {e} | " + " | ".join(_verdict_cell(won_at[e][n], n_seeds) for n in SCORE_NAMES) + " |" for e in epochs]
    lines.append("")
    for model in MODELS:
        names = [LABELS[n] for n in SCORE_NAMES if won_at[last][n][0] == model]
        lines.append(f"- At epoch {last} the **{model.upper()}** is better on {', '.join(names) if names else 'no metric'}.")
    tied = [LABELS[n] for n in SCORE_NAMES if won_at[last][n][0] is None]
    if tied:
        lines.append(f"- At epoch {last}, not distinguishable with {seeds_text(n_seeds)}: {', '.join(tied)}.")
    changed = [
        f"{LABELS[n]} ({e}: {won_at[e][n][0].upper() if won_at[e][n][0] else 'not distinguishable'})"
        for e in epochs[:-1]
        for n in SCORE_NAMES
        if won_at[e][n][0] != won_at[last][n][0]
    ]
    if len(epochs) > 1 and changed:
        lines.append(f"- Earlier checkpoints differ on: {'; '.join(changed)}.")
    elif len(epochs) > 1:
        lines.append("- Every checkpoint gives the same verdicts.")
    return lines + _facts(results, epochs)


def _facts(results: dict, epochs: list[int]) -> list[str]:
    """The factual lines under the verdicts, from means over seeds of the headline weights."""
    first, last = epochs[0], epochs[-1]
    real, noise = results["reference"]["train_split"], results["reference"]["uniform_noise"]
    mean = {(m, e): summary(_headline(results, m, e, "frechet_distance"))["mean"] for m in MODELS for e in epochs}
    lines = [
        f"- {m.upper()} Fréchet distance (mean over seeds) from epoch {first} to {last}: {_fmt(mean[m, first])} -> "
        f"{_fmt(mean[m, last])} (training split vs test split: {_fmt(real['frechet_distance'])})."
        for m in MODELS
        if first != last
    ]
    lines.append(
        f"- The training split is {mean['gan', first] / max(real['frechet_distance'], 1e-12):,.0f}x closer to the test "
        f"split (Fréchet distance) than the GAN at epoch {first} (mean over seeds)."
    )
    every = [v for m in MODELS for e in epochs for v in _headline(results, m, e, "frechet_distance")]
    beaten = all(noise["frechet_distance"] > v for v in every)
    lines.append(
        f"- Uniform noise (Fréchet distance {_fmt(noise['frechet_distance'])}) is "
        f"{'farther than every' if beaten else 'NOT farther than every'} checkpoint and seed of both models."
    )
    loss, nll = (summary(_headline(results, "vae", last, k))["mean"] for k in ("test_loss", "iwae_nll"))
    k = results["models"]["vae"]["scores"][results["weights"]["vae"]][last][results["seeds"][0]]["iwae_k"]
    lines.append(f"- VAE at epoch {last} (means over seeds): test loss {loss:.2f} nats per image, IWAE NLL (k={k}) {nll:.2f}.")
    return lines


LIKELIHOODS = {"test_loss": "VAE test loss", "iwae_nll": "VAE IWAE NLL"}  # the VAE's own objective, lower is better


def _effects(results: dict, model: str, epoch: int) -> dict[str, dict]:
    """The EMA's effect on each score of `model` at `epoch` (the VAE's likelihoods too)."""
    names = SCORE_NAMES + (tuple(LIKELIHOODS) if model == "vae" else ())
    return {
        n: ema_effect(
            seed_values(results, model, "raw", epoch, n),
            seed_values(results, model, "ema", epoch, n),
            HIGHER_IS_BETTER.get(n, False),
        )
        for n in names
    }


def _effect_cell(effect: dict) -> str:
    signed = ("+" if effect["mean_difference"] > 0 else "") + _fmt(effect["mean_difference"])
    return f"{signed}, {effect['verdict']}" + ("" if effect["p"] is None else f" ({_p(effect['p'])})")


def _ema_section(results: dict, epochs: list[int]) -> list[str]:
    n_seeds = len(results["seeds"])
    lines = [
        "## EMA of the weights",
        "",
        f"Each cell: the mean over the {seeds_text(n_seeds)} (training seeds) of (EMA score - raw score), both from the "
        f"same training run, and the verdict of a two-sided paired t-test over seeds at α = {ALPHA}: *helps* when "
        "significant and in the metric's better direction, *hurts* when significant the other way, otherwise "
        "*no detectable effect*.",
        "",
        "| | " + " | ".join([LABELS[n] for n in SCORE_NAMES] + list(LIKELIHOODS.values())) + " |",
        "|---" * (len(SCORE_NAMES) + len(LIKELIHOODS) + 1) + "|",
    ]
    verdicts = {m: [] for m in MODELS}
    for epoch in epochs:
        for model in MODELS:
            effects = _effects(results, model, epoch)
            verdicts[model] += [e["verdict"] for e in effects.values()]
            cells = [_effect_cell(effects[n]) if n in effects else "" for n in SCORE_NAMES + tuple(LIKELIHOODS)]
            lines.append(f"| {model.upper()} epoch {epoch} | " + " | ".join(cells) + " |")
    lines.append("")
    for model in MODELS:
        helps, hurts, total = verdicts[model].count("helps"), verdicts[model].count("hurts"), len(verdicts[model])
        if n_seeds < 2:
            favour = f"with {seeds_text(n_seeds)} the paired test cannot run: no verdict on the EMA"
        else:
            favoured = "the EMA weights" if helps > hurts else "the raw weights" if hurts > helps else "neither"
            favour = f"the numbers favour {favoured}"
        lines.append(
            f"- {model.upper()}: EMA helps on {helps} of {total} score-epochs and hurts on {hurts}; {favour} "
            f"(the headline rows use the {KINDS[results['weights'][model]]} weights)."
        )
    return lines + [""]


def _stage_rows(results: dict) -> list[str]:
    """How long each stage of the comparison took (`stages` in results.json, [name, seconds] in the order they ran;
    older results have none)."""
    stages = results.get("stages")
    if not stages:
        return []
    rows = ["| stage | wall time |", "|---|---|", *[f"| {name} | {seconds:.1f} s |" for name, seconds in stages]]
    return [
        "Each stage's wall time (each model's seeds train as one group; a stage reused from an earlier run keeps the "
        "time it took then):",
        "",
        *rows,
        "",
    ]


def _timing_rows(results: dict) -> list[str]:
    rows = [
        "| model | seeds | epochs per seed | median s/epoch | first epoch s (median over seeds) "
        "| training s (sum over seeds) | median images/s |",
        "|---|---|---|---|---|---|---|",
    ]
    for model in MODELS:
        runs = [results["models"][model]["runs"][seed]["metrics"] for seed in results["seeds"]]
        times = [r["epoch_s"] for rows_ in runs for r in rows_]
        counts = sorted({len(rows_) for rows_ in runs})
        rows.append(
            f"| {model.upper()} | {len(runs)} | {'-'.join(map(str, counts))} | {statistics.median(times):.2f} | "
            f"{statistics.median(rows_[0]['epoch_s'] for rows_ in runs):.2f} | {sum(times):,.0f} | "
            f"{statistics.median(r['samples_per_s'] for rows_ in runs for r in rows_):,.0f} |"
        )
    return rows


def _header(results: dict, epochs: list[int]) -> list[str]:
    config, seeds = results["config"], results["seeds"]
    weights = " and ".join(f"the {m.upper()}'s {KINDS[results['weights'][m]]}" for m in MODELS)
    ema = f"EMA of the weights with decay {config['ema']}" if config.get("ema") else "no EMA of the weights"
    lines = [
        "# GAN vs VAE on " + config["dataset"].upper(),
        "",
        f"Produced by `python -m fastgen.compare{' --quick' if config['quick'] else ''}` (fastgen {__version__}) on "
        f"{results['device']}, {time.strftime('%Y-%m-%d')}. Checkpoints at epochs {', '.join(map(str, epochs))}; "
        f"{config['n']:,} generated samples scored per checkpoint against the {config['dataset']} test split; "
        f"training images: {config['train_images'] or 'all'}; seeds {', '.join(map(str, seeds))} "
        f"({len(seeds)} per model); {ema}. Headline rows and the conclusion use {weights} weights "
        "(fastgen's default per model).",
    ]
    if config["quick"]:
        lines += [
            "",
            "**This is a `--quick` smoke run** (a slice of the training split, few samples): it checks the "
            "pipeline end to end; do not quote its numbers.",
        ]
    return lines


def _scores_section(results: dict, epochs: list[int]) -> list[str]:
    n_seeds, draws = len(results["seeds"]), results["models"]["gan"]["sampling"][results["weights"]["gan"]][epochs[0]]["draws"]
    spread = (
        f"Each cell is the mean ± the sample standard deviation (ddof 1) over the {n_seeds} training seeds, each trained "
        "and scored on its own: the standard deviation rather than the standard error of the mean, because it is the "
        "spread a reader who retrains with a new seed should expect."
        if n_seeds > 1
        else "One training seed: each cell is that run's score, with no spread over seeds to show."
    )
    return [
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
        spread,
        "",
        *_score_table(results, epochs),
        "",
        "![metrics over epochs](figures/metrics.png)",
        "",
        "Lines: means over the training seeds; the shaded band spans the minimum to the maximum over seeds (headline "
        "weights only). Solid: the headline weights; dashed: the model's other weights; dotted: the training split.",
        "",
        "### Sampling error vs spread over seeds",
        "",
        f"Each cell (headline weights): sd over the training seeds / sampling sd at n = {results['config']['n']:,}, "
        f"the latter over {draws} independent re-draws of n samples from seed {results['seeds'][0]}'s snapshot (the "
        "metric's own measurement error). The spread over seeds includes that sampling error, since each seed is "
        "scored on its own samples.",
        "",
        *_sampling_table(results, epochs),
        "",
        *[_dominance(results, m, epochs) for m in MODELS],
    ]


def write_report(out: Path, results: dict, samples: dict[int, dict[str, torch.Tensor]]) -> Path:
    """OUT/report.md and OUT/figures/ from `results` (see runs.py for its layout) and `samples`: per epoch,
    per model, images in [0, 1] drawn from the same latents at every epoch."""
    out = Path(out)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    epochs = list(results["config"]["epochs"])
    grids = [grid_figure(out, samples[e], e) for e in epochs]
    metrics_figure(out, results, epochs)
    lines = [
        *_header(results, epochs),
        "",
        *_scores_section(results, epochs),
        "",
        "## Conclusion (from the numbers above)",
        "",
        f"A model wins a metric at an epoch only when Welch's two-sided t-test (unequal variances) over the training "
        f"seeds rejects equal means at α = {ALPHA}; otherwise the cell says *not distinguishable with "
        f"{seeds_text(len(results['seeds']))}*. Fewer than 2 seeds per model leave nothing to test. Each cell is its own "
        f"test, uncorrected for the others: if the models were equal on everything, about "
        f"{len(epochs) * len(SCORE_NAMES) * ALPHA:.2g} of these {len(epochs) * len(SCORE_NAMES)} cells would still name "
        "a winner by chance, so read a lone cell with p near the level as weak evidence.",
        "",
        *_conclusion(results, epochs),
        "",
        *(_ema_section(results, epochs) if _has_ema(results) else []),
        f"## Samples (same latent draws at every epoch; seed {results['seeds'][0]}, headline weights)",
        "",
        *[f"![samples at epoch {e}]({g})" for e, g in zip(epochs, grids)],
        "",
        "## Loss curves",
        "",
        f"![loss curves]({loss_figure(out, results)})",
        "",
        f"Means over the {seeds_text(len(results['seeds']))} (training seeds); the shaded band spans the minimum to the maximum "
        "over seeds.",
        "",
        "## Training time",
        "",
        *_timing_rows(results),
        "",
        "Epoch times are from each run's `metrics.jsonl` (the first epoch includes compilation). "
        f"This command took {results['compare_s'] / 60:.1f} min, including any training it had to do.",
        "",
        *_stage_rows(results),
    ]
    path = out / "report.md"
    atomic_write_text(path, "\n".join(lines))
    return path
