import numpy as np
import pytest
from scipy import stats as sps

from taskfit.stats import (
    bootstrap_interval,
    mcnemar_p,
    paired_bootstrap_p,
    paired_p,
    score_interval,
    wilson_interval,
)


def test_wilson_known_values():
    lo, hi = wilson_interval(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-4)
    assert hi == pytest.approx(0.9433, abs=1e-4)


@pytest.mark.parametrize("k,n", [(0, 5), (5, 5), (37, 120), (1, 1000)])
def test_wilson_matches_scipy(k, n):
    ci = sps.binomtest(k, n).proportion_ci(confidence_level=0.9, method="wilson")
    assert wilson_interval(k, n, confidence=0.9) == pytest.approx((ci.low, ci.high), abs=1e-9)


def test_wilson_empty():
    assert wilson_interval(0, 0) == (0.0, 0.0)


def test_bootstrap_contains_mean_and_narrows_with_n():
    rng = np.random.default_rng(1)
    small = rng.uniform(size=30)
    large = rng.uniform(size=3000)
    lo_s, hi_s = bootstrap_interval(small)
    lo_l, hi_l = bootstrap_interval(large)
    assert lo_s < small.mean() < hi_s
    assert lo_l < large.mean() < hi_l
    assert hi_l - lo_l < (hi_s - lo_s) / 4  # width shrinks like 1/sqrt(n): 10x here


def test_bootstrap_is_seeded_and_handles_edges():
    values = [0.1, 0.9, 0.5, 0.3]
    assert bootstrap_interval(values, seed=3) == bootstrap_interval(values, seed=3)
    assert bootstrap_interval([0.7] * 20) == (0.7, 0.7)
    assert bootstrap_interval([]) == (0.0, 0.0)


def test_mcnemar_matches_binomtest_on_discordant_pairs():
    a = [1] * 10 + [1] * 7 + [0] * 2 + [0] * 5
    b = [1] * 10 + [0] * 7 + [1] * 2 + [0] * 5
    assert mcnemar_p(a, b) == pytest.approx(sps.binomtest(7, 9, 0.5).pvalue)
    assert mcnemar_p(a, b) == pytest.approx(mcnemar_p(b, a))


def test_mcnemar_no_discordant_pairs():
    assert mcnemar_p([1, 0, 1], [1, 0, 1]) == 1.0


def test_paired_lengths_must_match():
    with pytest.raises(ValueError):
        mcnemar_p([1, 0], [1])


def test_paired_bootstrap_detects_a_real_difference():
    rng = np.random.default_rng(0)
    b = rng.uniform(0, 0.8, size=200)
    a = b + 0.1 + rng.normal(0, 0.05, size=200)
    assert paired_bootstrap_p(a, b) < 0.01


def test_paired_bootstrap_no_difference():
    rng = np.random.default_rng(0)
    b = rng.uniform(size=200)
    a = b + rng.normal(0, 0.05, size=200)
    a -= a.mean() - b.mean()  # means equal exactly
    assert paired_bootstrap_p(a, b) > 0.5
    assert paired_bootstrap_p([0.2, 0.4], [0.2, 0.4]) == 1.0


def test_dispatchers():
    binary = [1, 1, 0, 1, 0, 1, 1, 1, 1, 1]
    assert score_interval(binary, binary=True) == wilson_interval(8, 10)
    cont = [0.2, 0.5, 0.9, 0.4]
    assert score_interval(cont, binary=False) == bootstrap_interval(cont)
    a, b = [1, 1, 1, 0], [0, 0, 1, 0]
    assert paired_p(a, b, binary=True) == mcnemar_p(a, b)
    assert paired_p(a, b, binary=False) == paired_bootstrap_p(a, b)
