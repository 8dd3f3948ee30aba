"""`evaluate(run)`: sample-quality scores of a trained generator against the test split (and, for the
VAE, its test loss and importance-weighted likelihood), with reference rows that set the scale:
the training split scored as if it were a generator (about the best possible) and uniform noise.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from fastgen.data import load_split
from fastgen.environment import resolve_device
from fastgen.errors import FastgenError
from fastgen.evaluation import likelihood, metrics
from fastgen.evaluation.classifier import Evaluator, load_evaluator, to_unit
from fastgen.models.networks import VAE
from fastgen.models.weights import load, read_weights

DEFAULT_N = 10_000
PR_NEIGHBOURS = 3  # k of the k-NN radii, as in Kynkäänniemi et al. (2019)
SCORE_NAMES = ("frechet_distance", "inception_style_score", "class_kl_to_uniform", "precision", "recall")
HIGHER_IS_BETTER = {
    "frechet_distance": False,
    "inception_style_score": True,
    "class_kl_to_uniform": False,
    "precision": True,
    "recall": True,
}

_test_features: dict[tuple, tuple] = {}  # (evaluator checksum, dataset, data_dir) -> test split and its features


def _test_split(evaluator: Evaluator, data_dir, download: bool):
    key = (evaluator.sha256, evaluator.dataset, str(data_dir))
    if key not in _test_features:
        images, _ = load_split(evaluator.dataset, "test", data_dir, download)
        features, probs = evaluator.features_and_probs(to_unit(images))
        _test_features[key] = (images, features, probs)
    return _test_features[key]


def score_images(images: torch.Tensor, evaluator: Evaluator, data_dir=None, download: bool = True) -> dict:
    """Scores of images in [0, 1], shape (N, 1, 28, 28), against the evaluator dataset's test split."""
    _, real_features, _ = _test_split(evaluator, data_dir, download)
    features, probs = evaluator.features_and_probs(images)
    histogram = metrics.class_histogram(probs)
    precision, recall = metrics.precision_recall(real_features, features, k=PR_NEIGHBOURS)
    return {
        "frechet_distance": metrics.feature_frechet_distance(real_features, features),
        "inception_style_score": metrics.inception_style_score(probs),
        "class_kl_to_uniform": metrics.kl_to_uniform(histogram),
        "class_histogram": [round(float(v), 6) for v in histogram],
        "precision": precision,
        "recall": recall,
    }


def reference_scores(evaluator: Evaluator, n: int = DEFAULT_N, seed: int = 0, data_dir=None, download: bool = True) -> dict:
    """The scale to read scores on: n training images (near the best possible) and n uniform-noise images."""
    train_images, _ = load_split(evaluator.dataset, "train", data_dir, download)
    pick = torch.randperm(len(train_images), generator=torch.Generator().manual_seed(seed))[:n]
    noise = torch.rand((n, 1, 28, 28), generator=torch.Generator().manual_seed(seed))
    return {
        "train_split": score_images(to_unit(train_images[pick]), evaluator, data_dir, download),
        "uniform_noise": score_images(noise, evaluator, data_dir, download),
    }


def _model_and_data(model_or_path, device: torch.device, dataset: str | None, data_dir, weights: str):
    """The model in eval mode, its dataset, and where to read that dataset: `data_dir` if given, else the
    folder the run was trained from (recorded in its weights) while it still exists, else the search order."""
    if isinstance(model_or_path, torch.nn.Module):
        if weights != "auto":
            raise FastgenError("weights= chooses among a weights file's raw and averaged weights; a module holds one set")
        return model_or_path.to(device).eval(), dataset or "mnist", data_dir
    _, metadata = read_weights(model_or_path)
    config = json.loads(metadata.get("config", "{}"))
    recorded = config.get("data_dir")
    if data_dir is None and recorded and Path(recorded).is_dir():
        data_dir = recorded
    return load(model_or_path, device=device, weights=weights), dataset or config.get("dataset", "mnist"), data_dir


def evaluate(
    model_or_path,
    n: int = DEFAULT_N,
    *,
    iwae_k: int = 100,
    seed: int = 0,
    device: str = "auto",
    dataset: str | None = None,
    data_dir=None,
    download: bool = True,
    evaluator: Evaluator | None = None,
    reference: bool = True,
    weights: str = "auto",
) -> dict:
    """Scores of a trained generator: a run folder, a fastgen .safetensors file, or a Generator/VAE module.

    n samples (seeded) are scored against the test split; a VAE also gets its test loss and an
    importance-weighted NLL estimate with `iwae_k` samples. `reference=True` adds the training split's
    and uniform noise's scores for scale. `weights` (raw, ema, auto) as in `fastgen.load`; the result
    says which were scored.
    """
    if n <= PR_NEIGHBOURS:
        raise FastgenError(f"--n must be larger than {PR_NEIGHBOURS}, got {n}")
    if not 1 <= iwae_k <= likelihood.MAX_IWAE_K:
        raise FastgenError(f"--iwae-k must be in [1, {likelihood.MAX_IWAE_K}], got {iwae_k}")
    device = resolve_device(device) if isinstance(device, str) else torch.device(device)
    model, dataset, data_dir = _model_and_data(model_or_path, device, dataset, data_dir, weights)
    if evaluator is None:
        evaluator = load_evaluator(dataset, data_dir=data_dir, download=download)
    elif evaluator.dataset != dataset:
        raise FastgenError(f"the evaluator was trained on {evaluator.dataset}, the model on {dataset}")
    evaluator.to(device)
    is_vae = isinstance(model, VAE)
    result = {
        "model": "vae" if is_vae else "gan",
        "dataset": dataset,
        "n": n,
        "seed": seed,
        "weights": getattr(model, "weights_used", "as given"),
        "evaluator": {"test_accuracy": evaluator.accuracy, "sha256": evaluator.sha256},
        **score_images(model.sample(n, seed=seed), evaluator, data_dir, download),
    }
    if is_vae:
        test_images = _test_split(evaluator, data_dir, download)[0].to(device)
        result["test_loss"] = likelihood.loss_per_image(model, test_images, seed)
        result["iwae_nll"] = likelihood.iwae_nll(model, test_images, k=iwae_k, seed=seed)
        result["iwae_k"] = iwae_k
    if reference:
        result["reference"] = reference_scores(evaluator, n, seed, data_dir, download)
    return result


def eval_path(model_path) -> Path:
    """Where the scores of a run folder (RUN/eval.json) or a weights file (NAME.eval.json) are written."""
    path = Path(model_path)
    return path / "eval.json" if path.is_dir() else path.with_suffix(".eval.json")


def format_table(result: dict) -> str:
    """The scores as an aligned text table; reference columns when present."""
    columns = [(f"model ({result.get('weights', '?')} weights)", result)]
    columns += [(name.replace("_", " "), scores) for name, scores in result.get("reference", {}).items()]
    rows = [("metric", *[name for name, _ in columns])]
    for name in SCORE_NAMES:
        better = "higher" if HIGHER_IS_BETTER[name] else "lower"
        rows.append((f"{name.replace('_', ' ')} ({better} is better)", *[f"{s[name]:.4g}" for _, s in columns]))
    for name in ("test_loss", "iwae_nll"):
        if name in result:
            label = "test loss (nats/image)" if name == "test_loss" else f"IWAE NLL, k={result['iwae_k']} (nats/image)"
            rows.append((label, f"{result[name]:.2f}", *["" for _ in columns[1:]]))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
