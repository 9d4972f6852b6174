"""Statistics of Table 2 against scipy/statsmodels and independent computations."""

import math

import numpy as np
import pytest
from scipy import stats as ss
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import TTestIndPower
from statsmodels.stats.weightstats import ttost_ind

from medattn.analysis import stats
from medattn.errors import ConfigError


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


@pytest.mark.slow
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


@pytest.mark.parametrize("seed", range(6))
def test_holm_equals_statsmodels_with_ties_and_ones(seed):
    rng = np.random.default_rng(seed)
    p = np.round(rng.uniform(0, 0.3, 3 + 2 * seed), 2)  # rounding makes ties
    p[0] = 1.0
    np.testing.assert_allclose(stats.adjust_pvalues(p, "holm"),
                               multipletests(p, method="holm")[1], rtol=0, atol=1e-15)


@pytest.mark.parametrize("method", ["bonferroni", "holm-sidak", "fdr_bh", "fdr_by"])
@pytest.mark.parametrize("seed", range(4))
def test_every_other_correction_equals_statsmodels(method, seed):
    rng = np.random.default_rng(seed)
    p = np.round(rng.uniform(0, 0.3, 4 + 3 * seed), 2)  # ties
    p[0], p[-1] = 1.0, 1e-12  # a one, and a tiny p where 1 - (1 - p)^k loses digits naively
    np.testing.assert_allclose(stats.adjust_pvalues(p, method),
                               multipletests(p, method=method)[1], rtol=1e-12, atol=1e-15)
    with_nan = np.insert(p, 2, np.nan)
    got = stats.adjust_pvalues(with_nan, method)
    assert np.isnan(got[2]) and np.allclose(np.delete(got, 2), multipletests(p, method=method)[1])


def test_unknown_correction_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown p-value adjustment 'sidak'"):
        stats.adjust_pvalues([0.1, 0.2], "sidak")


def test_adjust_pvalues_holm_matches_statsmodels_and_keeps_nan():
    p = np.array([0.01, 0.04, np.nan, 0.03, 0.2])
    ours = stats.adjust_pvalues(p, "holm")
    ref = multipletests(p[~np.isnan(p)], method="holm")[1]
    assert np.isnan(ours[2])
    np.testing.assert_allclose(ours[~np.isnan(p)], ref)
    np.testing.assert_array_equal(stats.adjust_pvalues(p, "none")[[0, 1, 3]], p[[0, 1, 3]])
    assert (ours[~np.isnan(p)] >= p[~np.isnan(p)]).all()


# ----------------------------------------------------------------------------------------------
# Paired, corrected and Bayesian tests (docs/statistics.md; DESIGN "Statistics (binding)")
# ----------------------------------------------------------------------------------------------

try:
    import baycomp
except ImportError:  # in the [test] extra; the tests below that need it say so
    baycomp = None
needs_baycomp = pytest.mark.skipif(baycomp is None, reason="baycomp not installed (pip install "
                                   "'medattn[test]'); it is the independent reference here")


@pytest.mark.parametrize("seed", range(4))
def test_corrected_ttest_with_r0_is_scipys_one_sample_t_test(seed):
    d = np.random.default_rng(seed).normal(0.8, 1.5, 6 + seed)
    ref = ss.ttest_1samp(d, 0.0)
    c = stats.corrected_ttest(d, 0.0)
    assert (c.t, c.p, c.df) == pytest.approx((ref.statistic, ref.pvalue, ref.df), rel=1e-10)
    lo, hi = ref.confidence_interval(0.95)
    assert (c.ci_low, c.ci_high) == pytest.approx((lo, hi), rel=1e-10)
    assert stats.paired_ttest(d) == c


def test_corrected_ttest_follows_the_binding_formula():
    # se = s_d sqrt(1/J + r), t = mean / se, df = J - 1, CI = mean +- t_(0.975, J-1) se.
    d = np.array([-1.2, 0.4, -2.1, -0.3, -1.9, 0.8, -1.1, -0.6, -2.4, 0.1])
    r = 0.2 / 0.7
    j, m, s = len(d), d.mean(), d.std(ddof=1)
    se = s * math.sqrt(1 / j + r)
    c = stats.corrected_ttest(d, r, alpha=0.05)
    assert (c.diff, c.sd, c.se, c.df) == pytest.approx((m, s, se, j - 1))
    assert c.t == pytest.approx(m / se)
    assert c.p == pytest.approx(2 * ss.t.sf(abs(m / se), j - 1))
    half = ss.t.ppf(0.975, j - 1) * se
    assert (c.ci_low, c.ci_high) == pytest.approx((m - half, m + half))
    # The correction only shrinks t, by sqrt(1 + J r), never moves the estimate.
    naive = stats.paired_ttest(d)
    assert c.t == pytest.approx(naive.t / math.sqrt(1 + j * r)) and c.p > naive.p
    with pytest.raises(ValueError, match="test_train_ratio"):
        stats.corrected_ttest(d, -0.1)


def test_corrected_ttest_degenerate_inputs_give_nan():
    for d in ([1.0], [], [0.5, 0.5, 0.5]):
        c = stats.corrected_ttest(d, 0.3)
        assert math.isnan(c.p) and math.isnan(c.ci_low)
    assert all(math.isnan(p) for p in stats.bayes_correlated([1.0], 0.3, 1.0))


def test_corrected_test_holds_its_level_where_the_correction_is_exact():
    # Equicorrelated normal differences with rho = r / (1 + r): there the corrected statistic is
    # exactly t(J - 1) (Nadeau & Bengio 2003), while the naive paired test rejects far too often.
    rng = np.random.default_rng(3)
    j, r, reps = 10, 0.2 / 0.7, 4000
    rho = r / (1 + r)
    shared = rng.normal(0, math.sqrt(rho), (reps, 1))
    d = shared + rng.normal(0, math.sqrt(1 - rho), (reps, j))
    corrected = np.mean([stats.corrected_ttest(x, r).p < 0.05 for x in d])
    naive = np.mean(ss.ttest_1samp(d, 0.0, axis=1).pvalue < 0.05)
    assert abs(corrected - 0.05) < 0.012  # binomial sd 0.0034
    assert naive > 0.2  # about 0.28 here


@needs_baycomp
@pytest.mark.parametrize("runs, folds", [(1, 10), (2, 5), (5, 2), (1, 5)])
def test_bayes_correlated_equals_baycomp(runs, folds):
    # baycomp's correction for `runs` x `folds`-fold CV is r = 1 / (folds - 1) = n_test / n_train.
    rng = np.random.default_rng(runs * 10 + folds)
    n = runs * folds
    x = rng.normal(72.0, 1.5, n)
    y = x + rng.normal(-0.6, 1.2, n)
    r = 1 / (folds - 1)
    for rope in (0.5, 1.0, 2.0):
        ref = baycomp.CorrelatedTTest.probs(x, y, rope=rope, runs=runs)  # diff = y - x
        ours = stats.bayes_correlated(y - x, r, rope)
        assert ours == pytest.approx(ref, abs=1e-12)
    mean, var, df = baycomp.CorrelatedTTest.compute_statistics(x, y, runs)
    c = stats.corrected_ttest(y - x, r)
    assert (c.diff, c.se**2, c.df) == pytest.approx((mean, var, df), rel=1e-12)


@needs_baycomp
def test_bayes_at_a_random_split_ratio_equals_baycomps_posterior():
    # r = 0.2 / 0.7 is no k-fold ratio, so baycomp's CorrelatedTTest cannot take it; its
    # Posterior takes any variance, which checks the probabilities at our ratio.
    from baycomp.single import Posterior

    d = np.random.default_rng(5).normal(-1.0, 1.3, 10)
    r = 0.2 / 0.7
    c = stats.corrected_ttest(d, r)
    for rope in (0.5, 1.0):
        ref = Posterior(c.diff, c.se**2, c.df, rope).probs()
        assert stats.bayes_correlated(d, r, rope) == pytest.approx(ref, abs=1e-12)


def test_bayes_probabilities_against_the_t_posterior_and_the_corrected_test():
    d = np.array([0.9, 1.4, -0.2, 2.1, 0.6, 1.0, 1.7, 0.3])
    r = 0.25
    c = stats.corrected_ttest(d, r)
    worse, equiv, better = stats.bayes_correlated(d, r, 0.5)
    post = ss.t(c.df, loc=c.diff, scale=c.se)
    assert (worse, equiv, better) == pytest.approx(
        (post.cdf(-0.5), post.cdf(0.5) - post.cdf(-0.5), post.sf(0.5)))
    assert worse + equiv + better == pytest.approx(1.0)
    # With no ROPE the flat-prior posterior mirrors the test: 2 min(P(worse), P(better)) = p.
    w0, e0, b0 = stats.bayes_correlated(d, r, 0.0)
    assert e0 == 0 and 2 * min(w0, b0) == pytest.approx(c.p)
    # A wider ROPE moves probability into "equivalent".
    assert stats.bayes_correlated(d, r, 2.0)[1] > equiv


def test_bayes_decision():
    assert stats.bayes_decision((0.96, 0.04, 0.0)) == "worse"
    assert stats.bayes_decision((0.0, 0.951, 0.049)) == "equivalent"
    assert stats.bayes_decision((0.01, 0.03, 0.96)) == "better"
    assert stats.bayes_decision((0.5, 0.4, 0.1)) == "undecided"
    assert stats.bayes_decision((0.0, 0.95, 0.05)) == "undecided"  # must *exceed* 0.95
    assert stats.bayes_decision((math.nan,) * 3) == ""


def test_corrected_welch_reproduces_the_issue_figures_for_the_paper():
    # ISIC ResNet18 in distribution, base 73.9 +- 1.74 (n = 10): +GA, +LA, +GA+LA, +ELA go from
    # Welch p = 0.018/0.012/0.0014/0.039 to about 0.20/0.17/0.07/0.27 at r = 0.2/0.7.
    base = (73.9, 1.74, 10)
    variants = {"ga": (72.1, 1.31, 0.20), "la": (70.8, 2.96, 0.17), "ga+la": (71.2, 1.44, 0.07),
                "ela": (72.3, 1.45, 0.27)}
    for m, sd, p in variants.values():
        c = stats.corrected_welch(m, sd, 10, *base, 0.2 / 0.7)
        assert c.p == pytest.approx(p, abs=0.006)
        # The variance is Welch's with each term multiplied by (1 + n r).
        assert c.se**2 == pytest.approx((sd**2 + 1.74**2) * (1 / 10 + 0.2 / 0.7))
        assert stats.welch(m, sd, 10, *base).p < 0.05 < c.p
    w = stats.welch(72.1, 1.31, 10, *base)
    assert stats.corrected_welch(72.1, 1.31, 10, *base, 0.0) == w


def test_tost_and_detectable_from_se_generalise_the_welch_versions():
    args = (72.1, 1.31, 10, 73.9, 1.74, 9)
    w = stats.welch(*args)
    assert stats.tost_from_se(w.diff, w.se, w.df, 1.0) == pytest.approx(stats.tost(*args, 1.0))
    assert stats.detectable_from_se(w.se, w.df) == pytest.approx(
        stats.detectable_difference(1.31, 10, 1.74, 9))
    assert math.isnan(stats.tost_from_se(0.1, 0.0, 9, 1.0))


@pytest.mark.parametrize("k, n", [(0, 10), (2, 10), (10, 10), (1, 3), (7, 40)])
def test_clopper_pearson_matches_statsmodels(k, n):
    from statsmodels.stats.proportion import proportion_confint

    rate, lo, hi = stats.clopper_pearson(k, n)
    ref = proportion_confint(k, n, alpha=0.05, method="beta")
    assert rate == k / n
    assert (lo, hi) == pytest.approx(ref, abs=1e-12)
    assert all(math.isnan(v) for v in stats.clopper_pearson(0, 0))


# ---------------------------------------------------------------------------------------------
# Shared test sets, zero variance, few pairs, Hedges' g's CI, the ratio's range (issue 24, 21)
# ---------------------------------------------------------------------------------------------


def test_shared_test_set_adds_image_variance_with_welch_satterthwaite_df():
    d = np.array([0.9, 1.4, -0.2, 2.1, 0.6, 1.0, 1.7, 0.3])
    r, v_img, n_img = 0.25, 0.4, 300
    c = stats.corrected_ttest(d, r, image_var=v_img, n_images=n_img)
    split_var = np.var(d, ddof=1) * (1 / 8 + r)
    assert c.se == pytest.approx(math.sqrt(split_var + v_img))
    df = (split_var + v_img) ** 2 / (split_var**2 / 7 + v_img**2 / (n_img - 1))
    assert c.df == pytest.approx(df) and 7 < c.df < n_img - 1
    assert c.p == pytest.approx(2 * ss.t.sf(abs(d.mean()) / c.se, df))
    assert c.image_var == v_img
    half = ss.t.ppf(0.975, df) * c.se
    assert (c.ci_low, c.ci_high) == pytest.approx((d.mean() - half, d.mean() + half))
    # No image term: the corrected test as before; all differences equal: the images alone.
    assert stats.corrected_ttest(d, r, image_var=0.0) == stats.corrected_ttest(d, r)
    flat = stats.corrected_ttest([1.0, 1.0, 1.0], r, image_var=0.25, n_images=101)
    assert (flat.se, flat.df) == pytest.approx((0.5, 100))
    # The Bayesian test widens the same way.
    post = ss.t(c.df, loc=c.diff, scale=c.se)
    assert stats.bayes_correlated(d, r, 0.5, image_var=v_img, n_images=n_img)[2] == \
        pytest.approx(post.sf(0.5))


@pytest.mark.parametrize("bad", [math.inf, math.nan, -0.1])
def test_ratio_must_be_finite_and_non_negative(bad):
    with pytest.raises(ValueError, match="finite number >= 0"):
        stats.corrected_ttest([1.0, 2.0, 0.5], bad)


@needs_baycomp
@pytest.mark.parametrize("value, expected", [(0.5, (0, 1, 0)), (1.0, (0, 1, 0)),
                                             (-1.0, (0, 1, 0)), (2.0, (0, 0, 1)),
                                             (-1.5, (1, 0, 0)), (0.0, (0, 1, 0))])
def test_bayes_on_equal_differences_is_baycomps_point_mass(value, expected):
    # All differences equal: zero variance. baycomp puts all mass at the mean (its ROPE edges
    # count as inside); this returned NaN before.
    x = np.zeros(10)
    y = np.full(10, value)
    ref = baycomp.CorrelatedTTest.probs(x, y, rope=1.0, runs=1)
    assert tuple(ref) == expected
    assert stats.bayes_correlated(y - x, 1 / 9, 1.0) == expected


def test_no_decision_from_fewer_than_three_pairs_or_no_variance():
    assert stats.decision_withheld(2, 0.7) == "undecided (n<3)"
    assert stats.decision_withheld(3, 0.0) == "no variance"
    assert stats.decision_withheld(3, 0.7) == ""
    assert stats.decision_withheld(math.nan, 0.7) == ""


def test_scaled_g_ci_follows_the_marking_tests_ci():
    # g's CI is the marking test's CI of the difference on g's scale: it excludes 0 exactly when
    # that CI does, unlike the independent-groups noncentral-t interval.
    g, _, _ = stats.hedges_g(75.0, 1.5, 10, 74.0, 1.3, 10)
    lo, hi = stats.scaled_g_ci(-0.2, 2.2, 1.5, 10, 1.3, 10)
    assert lo / -0.2 == pytest.approx(hi / 2.2) == pytest.approx(g / 1.0)
    assert lo < 0 < hi
    assert stats.scaled_g_ci(0.1, 2.2, 1.5, 10, 1.3, 10)[0] > 0
    assert all(math.isnan(v) for v in stats.scaled_g_ci(0.1, 2.2, 0.0, 10, 0.0, 10))


def test_equal_differences_with_rounding_noise_are_zero_variance_and_decide_nothing():
    # seven 2.3s: numpy's sd is 4.8e-16, not 0; before, the corrected se was 3e-16 and Table 2
    # reported "better" from differences that are all equal (issue 24 item 5)
    d = np.full(7, 2.3)
    assert d.std(ddof=1) > 0
    c = stats.corrected_ttest(d, 0.2857)
    assert c.sd == 0.0 and c.se == 0.0
    assert stats.decision_withheld(c.n, c.se) == "no variance"
    assert stats.bayes_correlated(d, 0.2857, 1.0) == (0, 0, 1)  # baycomp's point mass
