"""The metric functions against cases whose answer is known by hand."""

import math

import pytest
import torch

from fastgen.evaluation import metrics


def _random_covariance(dim, seed):
    a = torch.randn(dim, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return a @ a.T / dim + 0.1 * torch.eye(dim, dtype=torch.float64)


def test_frechet_distance_of_identical_gaussians_is_zero():
    mu, cov = torch.randn(16, dtype=torch.float64), _random_covariance(16, 0)
    assert metrics.frechet_distance(mu, cov, mu, cov) == pytest.approx(0.0, abs=1e-9)


def test_frechet_distance_of_a_shifted_gaussian_is_the_squared_shift():
    mu, cov = torch.zeros(16, dtype=torch.float64), _random_covariance(16, 1)
    shift = torch.arange(16, dtype=torch.float64) / 10
    assert metrics.frechet_distance(mu, cov, mu + shift, cov) == pytest.approx(float(shift @ shift), rel=1e-9)


def test_frechet_distance_of_scaled_isotropic_gaussians():
    # N(0, a I) vs N(0, b I) in d dimensions: d (sqrt(a) - sqrt(b))^2
    d, a, b = 8, 4.0, 0.25
    eye = torch.eye(d, dtype=torch.float64)
    expected = d * (math.sqrt(a) - math.sqrt(b)) ** 2
    assert metrics.frechet_distance(torch.zeros(d), a * eye, torch.zeros(d), b * eye) == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_is_symmetric_for_non_commuting_covariances():
    c1, c2 = _random_covariance(12, 2), _random_covariance(12, 3)
    m = torch.zeros(12, dtype=torch.float64)
    assert metrics.frechet_distance(m, c1, m, c2) == pytest.approx(metrics.frechet_distance(m, c2, m, c1), rel=1e-8)
    assert metrics.frechet_distance(m, c1, m, c2) > 0.01


def test_feature_frechet_distance_of_two_samples_of_one_gaussian_is_small():
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(20_000, 4, generator=gen), torch.randn(20_000, 4, generator=gen)
    assert metrics.feature_frechet_distance(x, y) < 0.01
    assert metrics.feature_frechet_distance(x, y + 1.0) == pytest.approx(4.0, rel=0.02)


def test_one_class_generator_has_maximal_kl_to_uniform_and_score_one():
    probs = torch.zeros(500, 10)
    probs[:, 3] = 1.0
    histogram = metrics.class_histogram(probs)
    assert histogram.tolist() == [0, 0, 0, 1, 0, 0, 0, 0, 0, 0]
    assert metrics.kl_to_uniform(histogram) == pytest.approx(math.log(10))
    assert metrics.inception_style_score(probs) == pytest.approx(1.0)


def test_confident_balanced_predictions_score_the_number_of_classes():
    probs = torch.eye(10).repeat(30, 1)
    assert metrics.kl_to_uniform(metrics.class_histogram(probs)) == pytest.approx(0.0, abs=1e-12)
    assert metrics.inception_style_score(probs) == pytest.approx(10.0)
    # Unsure predictions (uniform softmax) say nothing: score 1 even though the classes are balanced.
    assert metrics.inception_style_score(torch.full((300, 10), 0.1)) == pytest.approx(1.0)


def test_two_classes_half_and_half():
    probs = torch.zeros(100, 10)
    probs[:50, 0] = probs[50:, 1] = 1.0
    assert metrics.inception_style_score(probs) == pytest.approx(2.0)
    assert metrics.kl_to_uniform(metrics.class_histogram(probs)) == pytest.approx(math.log(10) - math.log(2))


def test_precision_recall_identical_disjoint_and_collapsed_sets():
    gen = torch.Generator().manual_seed(0)
    real = torch.randn(600, 8, generator=gen)
    assert metrics.precision_recall(real, real.clone()) == (1.0, 1.0)
    assert metrics.precision_recall(real, real + 100.0) == (0.0, 0.0)
    # A generator that covers only one corner of the real set: precise, but recalls little.
    plane = torch.randn(4000, 2, generator=gen)
    corner = plane[plane[:, 0] > 1.0]  # about 16% of the mass
    precision, recall = metrics.precision_recall(plane, corner)
    assert precision == 1.0 and 0.1 < recall < 0.25


def test_precision_recall_needs_more_points_than_k():
    with pytest.raises(ValueError, match="k=3"):
        metrics.precision_recall(torch.randn(3, 2), torch.randn(10, 2))
