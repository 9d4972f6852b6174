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
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import optimize, special, stats

__all__ = [
    "Comparison",
    "WelchResult",
    "adjust_pvalues",
    "compare_two",
    "detectable_difference",
    "describe",
    "hedges_g",
    "tost",
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
    if not _valid(sd1, n1, sd2, n2) or not margin > 0:
        return math.nan
    se, df = _welch_se_df(sd1, n1, sd2, n2)
    diff = mean1 - mean2
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
    se, df = _welch_se_df(sd1, n1, sd2, n2)
    tc = stats.t.ppf(1 - alpha / 2, df)

    def gap(ncp: float) -> float:
        return (1 - _nct_cdf(tc, df, ncp)) + _nct_cdf(-tc, df, ncp) - power

    hi = tc + 10.0
    while gap(hi) < 0:
        hi *= 2
    return float(optimize.brentq(gap, 0.0, hi, xtol=1e-12) * se)


def adjust_pvalues(p, method: str = "holm", alpha: float = 0.05) -> np.ndarray:
    """Adjust a family of p-values with statsmodels' ``multipletests``; NaNs are left out.

    ``method="none"`` returns the raw p-values. Other names are those of ``multipletests``
    (``holm``, ``bonferroni``, ``fdr_bh``, ...).
    """
    p = np.asarray(p, dtype=float)
    if method == "none":
        return p.copy()
    from statsmodels.stats.multitest import multipletests

    out = np.full_like(p, np.nan)
    ok = ~np.isnan(p)
    if ok.any():
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
