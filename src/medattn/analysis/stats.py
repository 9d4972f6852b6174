"""Two-sample statistics for comparing a model variant with its reference (Table 2 and beyond).

Everything works from summary statistics (mean, standard deviation with ddof=1, n), so the same
code serves run records and published tables. Units are those of the inputs (percentage points
throughout medattn). Differences are ``variant - reference``: positive means the variant is better.

Distributions and tests come from scipy; this module is the glue:

- Welch's t-test: :func:`scipy.stats.ttest_ind_from_stats` (``equal_var=False``).
- Difference CI: Welch-Satterthwaite degrees of freedom, quantile from :data:`scipy.stats.t`.
- Hedges' g with the exact noncentral-t confidence interval (:data:`scipy.stats.nct`).
- TOST equivalence: two one-sided Welch tests (agrees with ``statsmodels.stats.weightstats.ttost_ind``).
- Detectable difference: noncentral-t power of the two-sided Welch test solved for the difference.
- Multiple comparisons: :func:`adjust_pvalues` (statsmodels' ``multipletests`` methods, tested against it).

Paired statistics of J per-split differences ``d_1..d_J`` (same split seeds for both models):

- :func:`corrected_ttest`: Nadeau & Bengio's corrected resampled t-test, se = s_d sqrt(1/J + r)
  with r = n_test / n_train; r = 0 is the naive paired t-test (:func:`paired_ttest`). When every
  run is tested on the same images (an OOD set, a fixed official split), ``image_var`` adds the
  variance of the mean difference due to sampling those images (Welch-Satterthwaite df).
- :func:`bayes_correlated`: the Bayesian correlated t-test (Corani & Benavoli 2015) with a region
  of practical equivalence; the posterior is Student-t(J - 1, mean(d), se) with the same se.
- :func:`clopper_pearson`: exact binomial CI of a rate (divergence) from
  :func:`scipy.stats.binomtest`.

Over 400 lines because it is one job, the statistics of a comparison, each test a few lines of
glue around scipy under the docstring that says what it computes and what it is checked against.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import optimize, special, stats

from medattn.analysis.settings import CompareSettings
from medattn.errors import ConfigError

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
    "check_ratio",
    "compare_two",
    "decision_withheld",
    "detectable_difference",
    "detectable_from_se",
    "describe",
    "hedges_g",
    "paired_ttest",
    "scaled_g_ci",
    "shared_se_df",
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


def scaled_g_ci(ci_low: float, ci_high: float, sd1: float, n1: int, sd2: float,
                n2: int) -> tuple[float, float]:
    """A CI of Hedges' g consistent with the test that marks the table: that test's CI of the
    mean difference, ``(ci_low, ci_high)``, divided by the pooled sd and multiplied by Hedges'
    small-sample factor J(n1 + n2 - 2), the same scale as :func:`hedges_g`'s point estimate.

    It excludes 0 exactly when the marking test's CI does. Unlike :func:`hedges_g`'s exact
    noncentral-t interval it does not assume independent groups (Table 2's runs are paired and
    overlap); it treats the pooled sd as known, so it is slightly narrow for very few runs.
    NaNs when the pooled sd is undefined or zero.
    """
    if not _valid(sd1, n1, sd2, n2):
        return math.nan, math.nan
    df = n1 + n2 - 2
    sp = math.sqrt(((n1 - 1) * sd1**2 + (n2 - 1) * sd2**2) / df)
    k = _hedges_j(df) / sp
    return float(ci_low * k), float(ci_high * k)


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
    ``df = J - 1``; ``p`` two-sided; ``ci_low/high``: ``diff -+ t_(1-alpha/2, df) * se``.
    With a shared test set, ``image_var`` (pp^2) is the test-image sampling variance added to
    ``se^2`` and ``df`` is Welch-Satterthwaite's; 0 otherwise.
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
    image_var: float = 0.0


# Relative: equal differences (seven 2.3s) give numpy an sd of rounding noise (4.8e-16), not 0.
ZERO_SD = 1e-9


def _diffs(diffs) -> np.ndarray:
    d = np.asarray(diffs, dtype=float).ravel()
    return d[~np.isnan(d)]


def check_ratio(test_train_ratio: float) -> None:
    """Raise ``ValueError`` unless ``test_train_ratio`` (n_test / n_train) is finite and >= 0."""
    try:
        ok = math.isfinite(float(test_train_ratio)) and float(test_train_ratio) >= 0
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"test_train_ratio must be a finite number >= 0 (n_test / n_train), "
                         f"got {test_train_ratio}")


def shared_se_df(sd: float, n: int, test_train_ratio: float, image_var: float,
                 n_images: float) -> tuple[float, float]:
    """``(se, df)`` of a mean of ``n`` per-split differences whose runs share their test images.

    ``se^2 = sd^2 (1/n + r) + image_var``: the corrected split-to-split variance plus the
    variance of the mean difference due to sampling the ``n_images`` shared test images (both in
    the units of ``sd``, squared). df by Welch-Satterthwaite from ``n - 1`` and ``n_images - 1``.
    ``image_var = 0`` gives the corrected test's ``(se, n - 1)``.
    """
    split_var = sd**2 * (1 / n + test_train_ratio)
    total = split_var + image_var
    if not total > 0:
        return 0.0 if total == 0 else math.nan, math.nan
    if image_var <= 0:
        return math.sqrt(total), float(n - 1)
    denom = split_var**2 / (n - 1) + image_var**2 / max(n_images - 1, 1)
    return math.sqrt(total), float(total**2 / denom)


def corrected_ttest(diffs, test_train_ratio: float, alpha: float = 0.05, *,
                    image_var: float = 0.0, n_images: float = math.inf) -> PairedTest:
    """Nadeau & Bengio's corrected resampled t-test on per-split differences ``diffs`` (1-D, pp).

    The J splits are random train/test resamples of one pool, so their accuracies are correlated
    and the plain variance of the mean, s_d^2 / J, is too small; the correction uses
    ``se = s_d * sqrt(1/J + test_train_ratio)`` with ``test_train_ratio = n_test / n_train``
    (Nadeau & Bengio 2003; Bouckaert & Frank 2004), ``df = J - 1``. ``test_train_ratio = 0`` gives
    the naive paired t-test (``scipy.stats.ttest_1samp``).

    Shared test set (every run tested on the same ``n_images`` images): the splits' spread holds
    no test-image sampling, so ``image_var`` (pp^2; the variance of the mean difference due to
    sampling the images, :func:`medattn.analysis.bootstrap.image_sampling_variance`) is added,
    ``se^2 = s_d^2 (1/J + r) + image_var``, with Welch-Satterthwaite df (:func:`shared_se_df`).
    NaN statistics when J < 2 or the total variance is zero.
    """
    check_ratio(test_train_ratio)
    if not (math.isfinite(image_var) and image_var >= 0):
        raise ValueError(f"image_var must be a finite number >= 0, got {image_var}")
    d = _diffs(diffs)
    j = int(d.size)
    mean = float(d.mean()) if j else math.nan
    sd = float(d.std(ddof=1)) if j > 1 else math.nan
    if sd <= ZERO_SD * max(1.0, abs(mean)):  # equal differences: rounding noise, not spread
        sd = 0.0
    se, df = shared_se_df(sd, j, test_train_ratio, image_var, n_images) if j > 1 else (
        math.nan, math.nan)
    if not se > 0:
        return PairedTest(mean, sd, j, float(test_train_ratio), se, math.nan, math.nan, math.nan,
                          math.nan, math.nan, float(image_var))
    t = mean / se
    half = stats.t.ppf(1 - alpha / 2, df) * se
    return PairedTest(mean, sd, j, float(test_train_ratio), se, t, float(df),
                      float(2 * stats.t.sf(abs(t), df)), mean - half, mean + half,
                      float(image_var))


def paired_ttest(diffs, alpha: float = 0.05, *, image_var: float = 0.0,
                 n_images: float = math.inf) -> PairedTest:
    """The naive paired t-test on per-split differences (ignores the overlap of the splits);
    ``image_var``, ``n_images``: as in :func:`corrected_ttest`."""
    return corrected_ttest(diffs, 0.0, alpha, image_var=image_var, n_images=n_images)


def corrected_welch(mean1: float, sd1: float, n1: int, mean2: float, sd2: float, n2: int,
                    test_train_ratio: float, confidence: float = 0.95) -> WelchResult:
    """Welch's test with each variance term corrected like Nadeau & Bengio's: s_i^2 (1/n_i + r).

    For published summaries (no pairing information): an approximation of
    :func:`corrected_ttest` that treats the two models' split accuracies as uncorrelated; with
    positively correlated models (the usual case) it overstates the variance of the difference.
    df: Welch-Satterthwaite on the corrected terms. ``test_train_ratio = 0`` is Welch's test.
    """
    diff = float(mean1 - mean2)
    if not _valid(sd1, n1, sd2, n2) or not (math.isfinite(test_train_ratio)
                                             and test_train_ratio >= 0):
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


def bayes_correlated(diffs, test_train_ratio: float, rope: float, *, image_var: float = 0.0,
                     n_images: float = math.inf) -> tuple[float, float, float]:
    """Bayesian correlated t-test (Corani & Benavoli 2015) on per-split differences ``diffs``.

    The posterior of the mean difference is Student-t(J - 1, mean(d), s_d sqrt(1/J + r)), the
    corrected test's se, ``r = test_train_ratio``; returns ``(p_worse, p_equivalent, p_better)``:
    the posterior probabilities that the variant is worse by more than ``rope``, within
    ``+-rope``, better by more than ``rope`` (units of ``diffs``). Equals
    ``baycomp.CorrelatedTTest`` where baycomp's k-fold ratio applies (r = 1 / (k - 1)). All
    differences equal (zero variance): a point mass at their mean, as baycomp: ``(0, 1, 0)``
    inside the ROPE (its edges included), else all mass on that side. With a shared test set
    ``image_var`` and ``n_images`` widen the posterior like :func:`corrected_ttest`'s se and df.
    NaNs with fewer than 2 differences.
    """
    c = corrected_ttest(diffs, test_train_ratio, image_var=image_var, n_images=n_images)
    if c.n < 2 or not np.isfinite(c.sd):
        return math.nan, math.nan, math.nan
    if c.se == 0:
        return bayes_from_t(c.diff, 0.0, 1.0, rope)  # point mass; df plays no part
    return bayes_from_t(c.diff, c.se, c.df, rope)


MIN_DECISION_PAIRS = 3


def decision_withheld(n_pairs: float, se: float) -> str:
    """Why no Bayesian decision is reported, or ``""``: ``undecided (n<3)`` with fewer than 3
    pairs (the posterior's scale rests on 1 df), ``no variance`` when the total variance is
    zero (all differences equal, e.g. both models at chance)."""
    if np.isfinite(n_pairs) and n_pairs < MIN_DECISION_PAIRS:
        return f"undecided (n<{MIN_DECISION_PAIRS})"
    if se == 0:
        return "no variance"
    return ""


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
    """Adjust a family of p-values (one array; NaNs are left out and stay NaN).

    ``method``: ``holm`` (default), ``bonferroni``, ``holm-sidak``, ``fdr_bh``, ``fdr_by`` (the
    names and results of statsmodels' ``multipletests``, tested against it) or ``none`` (raw
    p-values). ``alpha`` does not change adjusted p-values; it is kept for the callers' signature.
    """
    p = np.asarray(p, dtype=float)
    if method == "none":
        return p.copy()
    out = np.full_like(p, np.nan)
    ok = ~np.isnan(p)
    if not ok.any():
        return out
    # Written out (scipy for the FDR methods): statsmodels, 70 MB installed, was needed for these
    # lines only, and its Holm ran gc.collect() on every call (docs/dependencies.md).
    x = p[ok]
    if method == "bonferroni":
        out[ok] = np.minimum(1.0, x * len(x))
        return out
    if method in ("fdr_bh", "fdr_by"):
        out[ok] = stats.false_discovery_control(x, method=method[4:])
        return out
    order = np.argsort(x, kind="stable")
    remaining = np.arange(len(x), 0, -1)  # step-down: m, m - 1, ..., 1 tests left
    if method == "holm":
        raw = x[order] * remaining
    elif method == "holm-sidak":
        with np.errstate(divide="ignore"):  # p = 1: log1p(-1) = -inf gives 1, as it should
            raw = -np.expm1(remaining * np.log1p(-x[order]))  # 1 - (1 - p)^k, exact for small p
    else:
        raise ConfigError(f"unknown p-value adjustment {method!r}; use holm, bonferroni, "
                          "holm-sidak, fdr_bh, fdr_by or none.")
    adjusted = np.empty_like(x)
    adjusted[order] = np.minimum(1.0, np.maximum.accumulate(raw))
    out[ok] = adjusted
    return out


def compare_two(mean: float, sd: float, n: int, ref_mean: float, ref_sd: float, ref_n: int, *,
                settings: CompareSettings = CompareSettings()) -> Comparison:
    """All statistics of a variant (``mean, sd, n``) against its reference (``ref_*``) at the
    settings' margin, power and alpha (CIs at 1 - alpha)."""
    margin, alpha, power, confidence = (settings.margin, settings.alpha, settings.power,
                                        1 - settings.alpha)
    w = welch(mean, sd, n, ref_mean, ref_sd, ref_n, confidence)
    g, g_lo, g_hi = hedges_g(mean, sd, n, ref_mean, ref_sd, ref_n, confidence)
    return Comparison(
        diff=w.diff, diff_ci_low=w.ci_low, diff_ci_high=w.ci_high, se=w.se, t=w.t, df=w.df, p=w.p,
        hedges_g=g, hedges_g_ci_low=g_lo, hedges_g_ci_high=g_hi,
        tost_p=tost(mean, sd, n, ref_mean, ref_sd, ref_n, margin),
        detectable_diff=detectable_difference(sd, n, ref_sd, ref_n, alpha, power),
    )
