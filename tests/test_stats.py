"""Statistics of Table 2 against scipy/statsmodels and independent computations."""

import math

import numpy as np
import pytest
from scipy import stats as ss
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import TTestIndPower
from statsmodels.stats.weightstats import ttost_ind

from medattn.analysis import stats


def _samples(seed, n1=10, n2=8, mu1=72.0, mu2=73.5, sd1=1.3, sd2=2.4):
    rng = np.random.default_rng(seed)
    return rng.normal(mu1, sd1, n1), rng.normal(mu2, sd2, n2)


@pytest.mark.parametrize("seed", range(5))
def test_welch_matches_scipy_ttest_ind(seed):
    a, b = _samples(seed, n1=6 + seed, n2=12 - seed)
    ref = ss.ttest_ind(a, b, equal_var=False)
    w = stats.welch(*stats.describe(a), *stats.describe(b))
    assert w.p == pytest.approx(ref.pvalue, rel=1e-10)
    assert w.df == pytest.approx(ref.df, rel=1e-10)
    assert w.t == pytest.approx(ref.statistic, rel=1e-10)
    lo, hi = ref.confidence_interval(0.95)
    assert (w.ci_low, w.ci_high) == pytest.approx((lo, hi), rel=1e-10)


def test_welch_ci_by_hand():
    # Welch-Satterthwaite df and t quantile written out independently of the module.
    m1, s1, n1, m2, s2, n2 = 72.1, 1.31, 10, 73.9, 1.74, 10
    v1, v2 = s1**2 / n1, s2**2 / n2
    df = (v1 + v2) ** 2 / (v1**2 / (n1 - 1) + v2**2 / (n2 - 1))
    half = ss.t.ppf(0.975, df) * math.sqrt(v1 + v2)
    w = stats.welch(m1, s1, n1, m2, s2, n2)
    assert w.df == pytest.approx(df)
    assert (w.ci_low, w.ci_high) == pytest.approx((-1.8 - half, -1.8 + half))
    assert w.ci_high < 0  # the paper's bold +GA: the CI excludes zero


def test_degenerate_inputs_give_nan_not_errors():
    assert math.isnan(stats.welch(70, 1, 1, 71, 1, 10).p)  # n < 2
    assert math.isnan(stats.welch(70, 0, 5, 71, 0, 5).p)  # no variance at all
    assert math.isnan(stats.tost(70, 0, 5, 70, 0, 5, 1.0))
    assert all(math.isnan(v) for v in stats.hedges_g(70, 1, 1, 71, 1, 10))
    assert stats.describe([1.0, np.nan, 3.0]) == (2.0, pytest.approx(math.sqrt(2)), 2)


@pytest.mark.parametrize("seed", range(4))
def test_tost_matches_statsmodels_ttost_ind(seed):
    a, b = _samples(seed, mu2=72.3)
    for margin in (0.5, 1.0, 3.0):
        ref = ttost_ind(a, b, -margin, margin, usevar="unequal")[0]
        ours = stats.tost(*stats.describe(a), *stats.describe(b), margin)
        assert ours == pytest.approx(ref, rel=1e-9)


def test_tost_equivalence_iff_90pct_ci_inside_margin():
    rng = np.random.default_rng(1)
    for _ in range(200):
        a, b = rng.normal(0, 1, 10), rng.normal(rng.uniform(-1, 1), rng.uniform(0.3, 2), 10)
        d1, d2 = stats.describe(a), stats.describe(b)
        m = rng.uniform(0.2, 2)
        w90 = stats.welch(*d1, *d2, confidence=0.90)
        inside = -m < w90.ci_low and w90.ci_high < m
        assert (stats.tost(*d1, *d2, m) < 0.05) == inside


def test_hedges_g_point_estimate():
    a, b = _samples(3, n1=10, n2=10)
    (m1, s1, n1), (m2, s2, n2) = stats.describe(a), stats.describe(b)
    sp = math.sqrt(((n1 - 1) * s1**2 + (n2 - 1) * s2**2) / (n1 + n2 - 2))
    j_approx = 1 - 3 / (4 * (n1 + n2) - 9)  # Hedges' usual approximation of the exact J
    g, lo, hi = stats.hedges_g(m1, s1, n1, m2, s2, n2)
    assert g == pytest.approx(j_approx * (m1 - m2) / sp, rel=1e-3)
    assert lo < (m1 - m2) / sp < hi


def test_hedges_g_ci_inverts_noncentral_t():
    # At the bounds the observed t is exactly the 97.5% / 2.5% quantile of the noncentral t.
    m1, s1, n1, m2, s2, n2 = 72.1, 1.31, 10, 73.9, 1.74, 10
    g, lo, hi = stats.hedges_g(m1, s1, n1, m2, s2, n2)
    scale = math.sqrt(1 / n1 + 1 / n2)
    sp = math.sqrt((s1**2 + s2**2) / 2)
    t_obs = (m1 - m2) / sp / scale
    assert ss.nct.cdf(t_obs, 18, lo / scale) == pytest.approx(0.975, abs=1e-9)
    assert ss.nct.cdf(t_obs, 18, hi / scale) == pytest.approx(0.025, abs=1e-9)


def test_hedges_g_ci_covers_true_effect_95_percent():
    # Monte Carlo coverage of the standardised difference delta = 0.8 (equal variances).
    rng = np.random.default_rng(7)
    n, delta, reps = 10, 0.8, 600
    hits = 0
    for _ in range(reps):
        a, b = rng.normal(delta, 1, n), rng.normal(0, 1, n)
        _, lo, hi = stats.hedges_g(*stats.describe(a), *stats.describe(b))
        hits += lo < delta < hi
    assert abs(hits / reps - 0.95) < 0.03  # binomial sd ~0.009


@pytest.mark.parametrize("n", [3, 5, 10, 30])
def test_detectable_difference_matches_statsmodels_power(n):
    # Equal n and sd: Welch df = 2n - 2, the pooled t-test's, so statsmodels' solver applies.
    sd = 1.7
    es = TTestIndPower().solve_power(nobs1=n, alpha=0.05, power=0.8, ratio=1.0)
    assert stats.detectable_difference(sd, n, sd, n) == pytest.approx(es * sd, rel=1e-5)


def test_detectable_difference_has_80_percent_power_by_simulation():
    rng = np.random.default_rng(11)
    n1, sd1, n2, sd2 = 10, 1.0, 10, 2.5
    delta = stats.detectable_difference(sd1, n1, sd2, n2)
    reps = 3000
    a = rng.normal(delta, sd1, (reps, n1))
    b = rng.normal(0, sd2, (reps, n2))
    power = np.mean(ss.ttest_ind(a, b, axis=1, equal_var=False).pvalue < 0.05)
    assert abs(power - 0.8) < 0.03
    # Smaller at larger n, larger at larger sd.
    assert stats.detectable_difference(sd1, 40, sd2, 40) < delta
    assert stats.detectable_difference(2 * sd1, n1, 2 * sd2, n2) == pytest.approx(2 * delta)


def test_adjust_pvalues_holm_matches_statsmodels_and_keeps_nan():
    p = np.array([0.01, 0.04, np.nan, 0.03, 0.2])
    ours = stats.adjust_pvalues(p, "holm")
    ref = multipletests(p[~np.isnan(p)], method="holm")[1]
    assert np.isnan(ours[2])
    np.testing.assert_allclose(ours[~np.isnan(p)], ref)
    np.testing.assert_array_equal(stats.adjust_pvalues(p, "none")[[0, 1, 3]], p[[0, 1, 3]])
    assert (ours[~np.isnan(p)] >= p[~np.isnan(p)]).all()
