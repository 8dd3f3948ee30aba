"""Statistics over training seeds for the GAN-vs-VAE comparison: pure functions of lists of scores, the
tests themselves from scipy.

Shared rules:
- A test needs at least 2 values per sample, all finite; otherwise there is no p-value (None).
- Samples with no spread at all (every value equal within each sample, so the test statistic is x/0):
  a difference between them is certain (p = 0.0); no difference is none (p = 1.0, the p-value of any
  t-test between two identical samples). scipy would answer NaN for both.
"""

from __future__ import annotations

import math
import statistics

import scipy.stats

ALPHA = 0.05
VERDICTS = ("helps", "hurts", "no detectable effect")


def summary(values) -> dict:
    """mean, sd (sample standard deviation, ddof=1; None for a single value), min, max and n of `values`."""
    values = [float(v) for v in values]
    if not values:
        raise ValueError("summary() needs at least one value")
    return {
        "mean": statistics.fmean(values),
        "sd": statistics.stdev(values) if len(values) > 1 else None,
        "min": min(values),
        "max": max(values),
        "n": len(values),
    }


def _testable(*samples: list[float]) -> bool:
    return all(len(s) >= 2 and all(math.isfinite(v) for v in s) for s in samples)


def _constant(values: list[float]) -> bool:
    return all(v == values[0] for v in values)


def _better(difference: float, higher_is_better: bool) -> bool:
    """Whether `difference` = a - b means that a is better than b."""
    return difference > 0 if higher_is_better else difference < 0


def winner(gan_values, vae_values, higher_is_better: bool, alpha: float = ALPHA) -> tuple[str | None, float | None]:
    """Which model scores better over its training seeds, by Welch's two-sided t-test at level `alpha`.

    ("gan" or "vae", p) when p < alpha, the winner being the model with the better mean in the metric's
    direction; (None, p) when not significant; (None, None) when either model has fewer than 2 seeds or a
    non-finite score. Both samples without spread (each model's seeds all scored the same): different
    values -> that model wins with p = 0.0; equal values -> (None, 1.0).
    """
    gan, vae = [float(v) for v in gan_values], [float(v) for v in vae_values]
    if not _testable(gan, vae):
        return None, None
    if _constant(gan) and _constant(vae):
        difference, p = gan[0] - vae[0], 0.0 if gan[0] != vae[0] else 1.0
    else:
        difference = statistics.fmean(gan) - statistics.fmean(vae)
        p = float(scipy.stats.ttest_ind(gan, vae, equal_var=False).pvalue)
    if not p < alpha:
        return None, p
    return ("gan" if _better(difference, higher_is_better) else "vae"), p


def ema_effect(raw_values, ema_values, higher_is_better: bool, alpha: float = ALPHA) -> dict:
    """The effect of the weights' EMA on one metric, paired by training seed (same order in both lists).

    Returns mean_difference (mean of ema - raw), p (two-sided paired t-test, scipy's ttest_rel), n (pairs)
    and verdict: "helps" (p < alpha, difference in the metric's better direction), "hurts" (p < alpha, the
    other direction), "no detectable effect" (p >= alpha), or "not testable with 1 seed" (fewer than 2
    pairs; p None) / "not testable: a score is not finite". Every pair differing by the same amount:
    p = 0.0 when that amount is not zero, 1.0 when it is.
    """
    raw, ema = [float(v) for v in raw_values], [float(v) for v in ema_values]
    if len(raw) != len(ema) or not raw:
        raise ValueError(f"ema_effect() needs the same number (>= 1) of raw and EMA scores, got {len(raw)} and {len(ema)}")
    differences = [e - r for r, e in zip(raw, ema)]
    result = {"mean_difference": statistics.fmean(differences), "p": None, "n": len(raw)}
    if len(raw) < 2:
        return {**result, "verdict": "not testable with 1 seed"}
    if not _testable(raw, ema):
        return {**result, "verdict": "not testable: a score is not finite"}
    if _constant(differences):
        p = 0.0 if differences[0] != 0 else 1.0
    else:
        p = float(scipy.stats.ttest_rel(ema, raw).pvalue)
    if not p < alpha:
        verdict = "no detectable effect"
    else:
        verdict = "helps" if _better(result["mean_difference"], higher_is_better) else "hurts"
    return {**result, "p": p, "verdict": verdict}
