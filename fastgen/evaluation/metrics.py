"""Sample-quality metrics on classifier outputs: pure functions of feature and probability tensors.

All work in float64. Features are the evaluator's penultimate activations; probabilities its softmax.
"""

from __future__ import annotations

import math

import torch


def mean_and_covariance(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = features.double()
    mu = x.mean(0)
    centred = x - mu
    return mu, centred.T @ centred / (x.shape[0] - 1)


def _psd_sqrt(matrix: torch.Tensor) -> torch.Tensor:
    values, vectors = torch.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * values.clamp(min=0).sqrt()) @ vectors.T


def frechet_distance(mu1: torch.Tensor, cov1: torch.Tensor, mu2: torch.Tensor, cov2: torch.Tensor) -> float:
    """Squared Fréchet (2-Wasserstein) distance between N(mu1, cov1) and N(mu2, cov2).

    tr(sqrt(cov1 cov2)) is computed as tr(sqrt(s cov2 s)) with s = sqrt(cov1): the same eigenvalues,
    but a symmetric PSD matrix, so eigh is exact and stable where a general sqrtm is not.
    """
    s = _psd_sqrt(cov1.double())
    cross = torch.linalg.eigvalsh(s @ cov2.double() @ s).clamp(min=0).sqrt().sum()
    diff = mu1.double() - mu2.double()
    value = diff @ diff + torch.trace(cov1.double()) + torch.trace(cov2.double()) - 2 * cross
    return max(float(value), 0.0)


def feature_frechet_distance(features1: torch.Tensor, features2: torch.Tensor) -> float:
    return frechet_distance(*mean_and_covariance(features1), *mean_and_covariance(features2))


def _kl_rows(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """KL(p_i || q) per row, with 0 log 0 = 0."""
    p = p.double()
    ratio = torch.where(p > 0, p / q.double().clamp(min=1e-300), torch.ones_like(p))
    return (p * ratio.log()).sum(-1)


def inception_style_score(probs: torch.Tensor) -> float:
    """exp(E_x KL(p(y|x) || p(y))): 1 for a generator the classifier cannot tell apart, up to the
    number of classes for confident predictions spread evenly over the classes."""
    marginal = probs.double().mean(0)
    return math.exp(float(_kl_rows(probs, marginal).mean()))


def class_histogram(probs: torch.Tensor) -> torch.Tensor:
    """The fraction of samples the classifier assigns to each class (argmax)."""
    counts = torch.bincount(probs.argmax(1), minlength=probs.shape[1]).double()
    return counts / counts.sum()


def kl_to_uniform(histogram: torch.Tensor) -> float:
    """KL(histogram || uniform): 0 for perfect class coverage, log(classes) when one class takes all."""
    uniform = torch.full_like(histogram.double(), 1.0 / histogram.numel())
    return float(_kl_rows(histogram, uniform))


def _kth_neighbour_radii(features: torch.Tensor, k: int, chunk: int) -> torch.Tensor:
    """Distance from each point to its k-th nearest other point in the same set."""
    radii = []
    for start in range(0, features.shape[0], chunk):
        d = torch.cdist(features[start : start + chunk], features)
        # k + 1 smallest: the point itself (distance 0) comes first.
        radii.append(d.topk(k + 1, dim=1, largest=False).values[:, k])
    return torch.cat(radii)


def _fraction_inside(points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor, chunk: int) -> float:
    """The fraction of `points` inside at least one ball (centre, radius)."""
    inside = 0
    for start in range(0, points.shape[0], chunk):
        d = torch.cdist(points[start : start + chunk], centres)
        inside += int((d <= radii.unsqueeze(0)).any(dim=1).sum())
    return inside / points.shape[0]


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = 3, chunk: int = 2000) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al., 2019) with k-NN radii in feature space.

    precision: the fraction of generated samples inside the real manifold (balls around real points);
    recall: the fraction of real samples inside the generated manifold.
    """
    if min(real.shape[0], fake.shape[0]) <= k:
        raise ValueError(f"precision/recall with k={k} needs more than {k} samples in each set")
    real, fake = real.double(), fake.double()
    precision = _fraction_inside(fake, real, _kth_neighbour_radii(real, k, chunk), chunk)
    recall = _fraction_inside(real, fake, _kth_neighbour_radii(fake, k, chunk), chunk)
    return precision, recall
