"""Confidence intervals for a mean score and p-values for the difference between two paired runs."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
from scipy import stats

_BLOCK_CELLS = 4_000_000  # resampled values held in memory at once (~32 MB of float64)


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a proportion; (0, 0) when there is no data."""
    if n <= 0:
        return 0.0, 0.0
    z = float(stats.norm.ppf(1 - (1 - confidence) / 2))
    p = successes / n
    center = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, center - half), min(1.0, center + half)


def _resampled_means(values: np.ndarray, resamples: int, seed: int) -> Iterator[np.ndarray]:
    """Means of ``resamples`` bootstrap resamples, in blocks so memory stays bounded for large n."""
    rng = np.random.default_rng(seed)
    n = len(values)
    block = max(1, _BLOCK_CELLS // n)
    for start in range(0, resamples, block):
        idx = rng.integers(0, n, size=(min(block, resamples - start), n))
        yield values[idx].mean(axis=1)


def bootstrap_interval(values: Sequence[float], confidence: float = 0.95, resamples: int = 2000,
                       seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval for the mean; (0, 0) when empty, (v, v) when constant."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return 0.0, 0.0
    if np.all(x == x[0]):
        return float(x[0]), float(x[0])
    means = np.concatenate(list(_resampled_means(x, resamples, seed)))
    alpha = 1 - confidence
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def _paired(a: Sequence[float], b: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"paired scores differ in length: {x.size} vs {y.size}")
    return x, y


def mcnemar_p(a: Sequence[float], b: Sequence[float]) -> float:
    """Exact McNemar test on 0/1 scores: two-sided binomial test on the discordant pairs."""
    x, y = _paired(a, b)
    x_only = int(np.sum((x > 0.5) & (y <= 0.5)))
    y_only = int(np.sum((x <= 0.5) & (y > 0.5)))
    if x_only + y_only == 0:
        return 1.0
    return float(stats.binomtest(x_only, x_only + y_only, 0.5).pvalue)


def paired_bootstrap_p(a: Sequence[float], b: Sequence[float], resamples: int = 2000, seed: int = 0) -> float:
    """Two-sided p-value for mean(a) == mean(b) from a centered paired bootstrap of the differences."""
    x, y = _paired(a, b)
    d = x - y
    if d.size == 0 or np.all(d == 0):
        return 1.0
    observed = d.mean()
    # Resampled means shifted to mean zero approximate the null; count those at least as extreme.
    extreme = sum(int(np.sum(np.abs(m - observed) >= abs(observed))) for m in _resampled_means(d, resamples, seed))
    # +1 on both sides keeps the p-value above zero (Davison & Hinkley).
    return (extreme + 1) / (resamples + 1)


def score_interval(values: Sequence[float], binary: bool, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson interval for 0/1 scores, percentile bootstrap otherwise."""
    if binary:
        return wilson_interval(int(round(float(np.sum(values)))), len(values), confidence)
    return bootstrap_interval(values, confidence)


def paired_p(a: Sequence[float], b: Sequence[float], binary: bool) -> float:
    """McNemar for 0/1 scores, paired bootstrap otherwise."""
    return mcnemar_p(a, b) if binary else paired_bootstrap_p(a, b)
