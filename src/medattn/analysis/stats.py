"""Two-sample statistics for comparing a model variant with its reference (Table 2 and beyond).

Everything works from summary statistics (mean, standard deviation with ddof=1, n), so the same
code serves run records and published tables. Units are those of the inputs (percentage points
throughout medattn). Differences are ``variant - reference``: positive means the variant is better.

Distributions and tests come from scipy and statsmodels; this module is the glue:

- Welch's t-test: :func:`scipy.stats.ttest_ind_from_stats` (``equal_var=False``).
- Difference CI: Welch-Satterthwaite degrees of freedom, quantile from :data:`scipy.stats.t`.
- Hedges' g with the exact noncentral-t confidence interval (:data:`scipy.stats.nct`).
- TOST equivalence: two one-sided Welch tests (agrees with ``statsmodels.stats.weightstats.ttost_ind``).
- Detectable difference: noncentral-t power of the two-sided Welch test solved for the difference.
- Multiple comparisons: :func:`statsmodels.stats.multitest.multipletests`.

Paired statistics of J per-split differences ``d_1..d_J`` (same split seeds for both models):

- :func:`corrected_ttest`: Nadeau & Bengio's corrected resampled t-test, se = s_d sqrt(1/J + r)
  with r = n_test / n_train; r = 0 is the naive paired t-test (:func:`paired_ttest`).
- :func:`bayes_correlated`: the Bayesian correlated t-test (Corani & Benavoli 2015) with a region
  of practical equivalence; the posterior is Student-t(J - 1, mean(d), se) with the same se.
- :func:`clopper_pearson`: exact binomial CI of a rate (divergence) from
  :func:`scipy.stats.binomtest`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import optimize, special, stats

__all__ = [
    "Comparison",
    "PairedTest",
    "WelchResult",
    "adjust_pvalues",
    "bayes_correlated",
    "bayes_decision",
    "bayes_from_t",
    "clopper_pearson",
    "corrected_ttest",
    "corrected_welch",
    "compare_two",
    "detectable_difference",
    "detectable_from_se",
    "describe",
    "hedges_g",
    "paired_ttest",
    "tost",
    "tost_from_se",
    "welch",
]


@dataclass(frozen=True)
class WelchResult:
    """Welch's unequal-variance t-test of ``mean1 - mean2``."""

    diff: float
    se: float
    df: float
    t: float
    p: float
    ci_low: float
    ci_high: float


@dataclass(frozen=True)
class Comparison:
    """Every statistic of one variant-vs-reference comparison (units of the inputs)."""

    diff: float
    diff_ci_low: float
    diff_ci_high: float
    se: float
    t: float
    df: float
    p: float
    hedges_g: float
    hedges_g_ci_low: float
    hedges_g_ci_high: float
    tost_p: float
    detectable_diff: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def describe(values) -> tuple[float, float, int]:
    """Return ``(mean, sd, n)`` of a 1-D sample, sd with ddof=1 (NaN when n < 2); NaNs dropped."""
    x = np.asarray(values, dtype=float).ravel()
    x = x[~np.isnan(x)]
    n = int(x.size)
    mean = float(x.mean()) if n else math.nan
    sd = float(x.std(ddof=1)) if n > 1 else math.nan
    return mean, sd, n


def _welch_se_df(sd1: float, n1: int, sd2: float, n2: int) -> tuple[float, float]:
    v1, v2 = sd1**2 / n1, sd2**2 / n2
    se = math.sqrt(v1 + v2)
    # Welch-Satterthwaite; undefined when both variances are zero.
    df = (v1 + v2) ** 2 / (v1**2 / (n1 - 1) + v2**2 / (n2 - 1)) if se > 0 else math.nan
    return se, df


def _valid(sd1: float, n1: int, sd2: float, n2: int) -> bool:
    return (n1 >= 2 and n2 >= 2 and np.isfinite(sd1) and np.isfinite(sd2) and (sd1 > 0 or sd2 > 0))


def welch(mean1: float, sd1: float, n1: int, mean2: float, sd2: float, n2: int,
          confidence: float = 0.95) -> WelchResult:
    """Welch's t-test and the ``confidence`` CI of ``mean1 - mean2`` (Welch-Satterthwaite df).

    Returns NaNs when a group has n < 2 or both standard deviations are zero.
    """
    diff = float(mean1 - mean2)
    if not _valid(sd1, n1, sd2, n2):
        return WelchResult(diff, math.nan, math.nan, math.nan, math.nan, math.nan, math.nan)
    se, df = _welch_se_df(sd1, n1, sd2, n2)
    res = stats.ttest_ind_from_stats(mean1, sd1, n1, mean2, sd2, n2, equal_var=False)
    half = stats.t.ppf(0.5 + confidence / 2, df) * se
    return WelchResult(diff, se, df, float(res.statistic), float(res.pvalue), float(diff - half),
                       float(diff + half))


def _nct_cdf(x: float, df: float, ncp: float) -> float:
    # scipy's nct.cdf returns NaN far in the tails; there the true value is 0 or 1.
    v = stats.nct.cdf(x, df, ncp)
    if np.isnan(v):
        v = 0.0 if ncp > x else 1.0
    return float(v)


def _hedges_j(df: float) -> float:
    # Exact small-sample correction J(df) = Gamma(df/2) / (sqrt(df/2) Gamma((df-1)/2)).
    return float(np.exp(special.gammaln(df / 2) - special.gammaln((df - 1) / 2)) / math.sqrt(df / 2))


def hedges_g(mean1: float, sd1: float, n1: int, mean2: float, sd2: float, n2: int,
             confidence: float = 0.95) -> tuple[float, float, float]:
    """Hedges' g of ``mean1 - mean2`` (pooled SD) and a ``confidence`` CI; returns ``(g, low, high)``.

    The CI is the exact noncentral-t interval for the population standardised difference delta
    (Steiger & Fouladi 1997; the method of R's ``MBESS::ci.smd``): with ``t = d / sqrt(1/n1 + 1/n2)``
    and ``df = n1 + n2 - 2``, the bounds are the noncentrality parameters for which the observed t
    is the upper / lower ``(1 - confidence) / 2`` quantile, rescaled by ``sqrt(1/n1 + 1/n2)``.
    It assumes equal population variances, like every pooled-SD effect size.
    """
    if not _valid(sd1, n1, sd2, n2):
        return math.nan, math.nan, math.nan
    df = n1 + n2 - 2
    sp = math.sqrt(((n1 - 1) * sd1**2 + (n2 - 1) * sd2**2) / df)
    d = (mean1 - mean2) / sp
    scale = math.sqrt(1 / n1 + 1 / n2)
    t_obs = d / scale
    alpha = 1 - confidence

    def bound(q: float) -> float:
        # nct.cdf(t_obs; ncp) falls monotonically in ncp; widen the bracket until it holds the root.
        f = lambda ncp: _nct_cdf(t_obs, df, ncp) - q  # noqa: E731
        width = 10.0 + abs(t_obs)
        lo, hi = t_obs - width, t_obs + width
        while f(lo) < 0:
            lo -= width
        while f(hi) > 0:
            hi += width
        return optimize.brentq(f, lo, hi, xtol=1e-12)

    low, high = bound(1 - alpha / 2) * scale, bound(alpha / 2) * scale
    return _hedges_j(df) * d, low, high


def tost(mean1: float, sd1: float, n1: int, mean2: float, sd2: float, n2: int,
         margin: float) -> float:
    """P-value of the two one-sided Welch tests that ``|mu1 - mu2| < margin`` (equivalence).

    ``p = max(p_lower, p_upper)`` with H0_lower: diff <= -margin and H0_upper: diff >= +margin.
    Equivalence at level alpha <=> the ``1 - 2 alpha`` Welch CI of the difference lies in
    ``(-margin, margin)``.
    """
    if not _valid(sd1, n1, sd2, n2):
        return math.nan
    se, df = _welch_se_df(sd1, n1, sd2, n2)
    return tost_from_se(mean1 - mean2, se, df, margin)


def tost_from_se(diff: float, se: float, df: float, margin: float) -> float:
    """TOST p-value of ``|delta| < margin`` for an estimate ``diff`` with a t-distributed error
    (standard error ``se``, ``df`` degrees of freedom); NaN when ``se`` is not positive."""
    if not (se > 0 and df > 0 and margin > 0):
        return math.nan
    p_lower = stats.t.sf((diff + margin) / se, df)
    p_upper = stats.t.cdf((diff - margin) / se, df)
    return float(max(p_lower, p_upper))


def detectable_difference(sd1: float, n1: int, sd2: float, n2: int, alpha: float = 0.05,
                          power: float = 0.8) -> float:
    """Smallest true difference the two-sided Welch test detects with probability ``power``.

    Takes the sample SDs as the true ones and the Welch-Satterthwaite df; the test statistic then
    follows a noncentral t with noncentrality ``delta / se``, and we solve
    ``P(|T| > t_crit) = power`` for ``delta`` (units of the inputs).
    """
    if not _valid(sd1, n1, sd2, n2):
        return math.nan
    return detectable_from_se(*_welch_se_df(sd1, n1, sd2, n2), alpha=alpha, power=power)


def detectable_from_se(se: float, df: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest true difference a two-sided t-test with standard error ``se`` and ``df`` degrees
    of freedom detects with probability ``power`` (units of ``se``; NaN when se is not positive)."""
    if not (se > 0 and df > 0):
        return math.nan
    tc = stats.t.ppf(1 - alpha / 2, df)

    def gap(ncp: float) -> float:
        return (1 - _nct_cdf(tc, df, ncp)) + _nct_cdf(-tc, df, ncp) - power

    hi = tc + 10.0
    while gap(hi) < 0:
        hi *= 2
    return float(optimize.brentq(gap, 0.0, hi, xtol=1e-12) * se)


@dataclass(frozen=True)
class PairedTest:
    """A (corrected) paired t-test of the mean of J per-split differences (units of the inputs).

    ``diff``: mean difference; ``sd``: their sd (ddof=1); ``n``: J; ``test_train_ratio``: the r
    of the correction (0 = naive paired test); ``se = sd * sqrt(1/J + r)``; ``t = diff / se``;
    ``df = J - 1``; ``p`` two-sided; ``ci_low/high``: ``diff -+ t_(1-alpha/2, J-1) * se``.
    """

    diff: float
    sd: float
    n: int
    test_train_ratio: float
    se: float
    t: float
    df: float
    p: float
    ci_low: float
    ci_high: float


def _diffs(diffs) -> np.ndarray:
    d = np.asarray(diffs, dtype=float).ravel()
    return d[~np.isnan(d)]


def corrected_ttest(diffs, test_train_ratio: float, alpha: float = 0.05) -> PairedTest:
    """Nadeau & Bengio's corrected resampled t-test on per-split differences ``diffs`` (1-D, pp).

    The J splits are random train/test resamples of one pool, so their accuracies are correlated
    and the plain variance of the mean, s_d^2 / J, is too small; the correction uses
    ``se = s_d * sqrt(1/J + test_train_ratio)`` with ``test_train_ratio = n_test / n_train``
    (Nadeau & Bengio 2003; Bouckaert & Frank 2004), ``df = J - 1``. ``test_train_ratio = 0`` gives
    the naive paired t-test (``scipy.stats.ttest_1samp``). NaN statistics when J < 2 or all
    differences are equal.
    """
    if not test_train_ratio >= 0:
        raise ValueError(f"test_train_ratio must be >= 0, got {test_train_ratio}")
    d = _diffs(diffs)
    j = int(d.size)
    mean = float(d.mean()) if j else math.nan
    sd = float(d.std(ddof=1)) if j > 1 else math.nan
    se = sd * math.sqrt(1 / j + test_train_ratio) if j > 1 else math.nan
    if not se > 0:
        return PairedTest(mean, sd, j, float(test_train_ratio), se, math.nan, math.nan, math.nan,
                          math.nan, math.nan)
    df = j - 1
    t = mean / se
    half = stats.t.ppf(1 - alpha / 2, df) * se
    return PairedTest(mean, sd, j, float(test_train_ratio), se, t, float(df),
                      float(2 * stats.t.sf(abs(t), df)), mean - half, mean + half)


def paired_ttest(diffs, alpha: float = 0.05) -> PairedTest:
    """The naive paired t-test on per-split differences (ignores the overlap of the splits)."""
    return corrected_ttest(diffs, 0.0, alpha)


def corrected_welch(mean1: float, sd1: float, n1: int, mean2: float, sd2: float, n2: int,
                    test_train_ratio: float, confidence: float = 0.95) -> WelchResult:
    """Welch's test with each variance term corrected like Nadeau & Bengio's: s_i^2 (1/n_i + r).

    For published summaries (no pairing information): an approximation of
    :func:`corrected_ttest` that treats the two models' split accuracies as uncorrelated; with
    positively correlated models (the usual case) it overstates the variance of the difference.
    df: Welch-Satterthwaite on the corrected terms. ``test_train_ratio = 0`` is Welch's test.
    """
    diff = float(mean1 - mean2)
    if not _valid(sd1, n1, sd2, n2) or not test_train_ratio >= 0:
        return WelchResult(diff, math.nan, math.nan, math.nan, math.nan, math.nan, math.nan)
    v1, v2 = sd1**2 * (1 / n1 + test_train_ratio), sd2**2 * (1 / n2 + test_train_ratio)
    se = math.sqrt(v1 + v2)
    df = (v1 + v2) ** 2 / (v1**2 / (n1 - 1) + v2**2 / (n2 - 1))
    t = diff / se
    half = stats.t.ppf(0.5 + confidence / 2, df) * se
    return WelchResult(diff, se, df, t, float(2 * stats.t.sf(abs(t), df)), diff - half, diff + half)


def bayes_from_t(diff: float, se: float, df: float, rope: float) -> tuple[float, float, float]:
    """``(P(worse), P(equivalent), P(better))`` under the posterior Student-t(df, diff, se).

    Worse / better: the true difference is below ``-rope`` / above ``+rope``; equivalent: within.
    A zero ``se`` is a point mass at ``diff`` (as baycomp does); NaNs when undefined.
    """
    if not (np.isfinite(diff) and np.isfinite(se) and se >= 0 and df > 0 and rope >= 0):
        return math.nan, math.nan, math.nan
    if se == 0:
        worse, better = float(diff < -rope), float(diff > rope)
    else:
        worse = float(stats.t.cdf(-rope, df, loc=diff, scale=se))
        better = float(stats.t.sf(rope, df, loc=diff, scale=se))
    return worse, max(0.0, 1.0 - worse - better), better


def bayes_correlated(diffs, test_train_ratio: float, rope: float) -> tuple[float, float, float]:
    """Bayesian correlated t-test (Corani & Benavoli 2015) on per-split differences ``diffs``.

    The posterior of the mean difference is Student-t(J - 1, mean(d), s_d sqrt(1/J + r)), the
    corrected test's se, ``r = test_train_ratio``; returns ``(p_worse, p_equivalent, p_better)``:
    the posterior probabilities that the variant is worse by more than ``rope``, within
    ``+-rope``, better by more than ``rope`` (units of ``diffs``). Equals
    ``baycomp.CorrelatedTTest`` where baycomp's k-fold ratio applies (r = 1 / (k - 1)).
    """
    c = corrected_ttest(diffs, test_train_ratio)
    if c.n < 2 or not np.isfinite(c.sd):
        return math.nan, math.nan, math.nan
    return bayes_from_t(c.diff, c.se, c.df, rope)


def bayes_decision(probs: tuple[float, float, float], threshold: float = 0.95) -> str:
    """``worse``, ``equivalent`` or ``better`` when that posterior probability exceeds
    ``threshold``; ``undecided`` when none does; ``""`` when the probabilities are undefined."""
    if any(not np.isfinite(p) for p in probs):
        return ""
    for name, p in zip(("worse", "equivalent", "better"), probs):
        if p > threshold:
            return name
    return "undecided"


def clopper_pearson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float, float]:
    """``(k / n, low, high)``: a rate and its exact (Clopper-Pearson) CI; NaNs when n = 0."""
    if n <= 0:
        return math.nan, math.nan, math.nan
    ci = stats.binomtest(int(k), int(n)).proportion_ci(confidence, method="exact")
    return k / n, float(ci.low), float(ci.high)


def adjust_pvalues(p, method: str = "holm", alpha: float = 0.05) -> np.ndarray:
    """Adjust a family of p-values with statsmodels' ``multipletests``; NaNs are left out.

    ``method="none"`` returns the raw p-values. Other names are those of ``multipletests``
    (``holm``, ``bonferroni``, ``fdr_bh``, ...).
    """
    p = np.asarray(p, dtype=float)
    if method == "none":
        return p.copy()
    out = np.full_like(p, np.nan)
    ok = ~np.isnan(p)
    if not ok.any():
        return out
    if method == "holm":
        # Written out: statsmodels' Holm runs gc.collect() on every call (about 0.1 s each,
        # half the time of `compare --summary paper`); equal to it (tested).
        x = p[ok]
        order = np.argsort(x, kind="stable")
        steps = np.maximum.accumulate(np.minimum(1.0, x[order] * np.arange(len(x), 0, -1)))
        adjusted = np.empty_like(x)
        adjusted[order] = steps
        out[ok] = adjusted
        return out
    from statsmodels.stats.multitest import multipletests

    out[ok] = multipletests(p[ok], alpha=alpha, method=method)[1]
    return out


def compare_two(mean: float, sd: float, n: int, ref_mean: float, ref_sd: float, ref_n: int, *,
                margin: float = 1.0, alpha: float = 0.05, power: float = 0.8,
                confidence: float = 0.95) -> Comparison:
    """All statistics of a variant (``mean, sd, n``) against its reference (``ref_*``)."""
    w = welch(mean, sd, n, ref_mean, ref_sd, ref_n, confidence)
    g, g_lo, g_hi = hedges_g(mean, sd, n, ref_mean, ref_sd, ref_n, confidence)
    return Comparison(
        diff=w.diff, diff_ci_low=w.ci_low, diff_ci_high=w.ci_high, se=w.se, t=w.t, df=w.df, p=w.p,
        hedges_g=g, hedges_g_ci_low=g_lo, hedges_g_ci_high=g_hi,
        tost_p=tost(mean, sd, n, ref_mean, ref_sd, ref_n, margin),
        detectable_diff=detectable_difference(sd, n, ref_sd, ref_n, alpha, power),
    )
