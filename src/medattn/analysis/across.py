"""One variant against its reference across D data sets: the hierarchical Bayesian model of Corani
et al. (2017) on every data set's per-split differences, and the Bayesian signed-rank test
(Benavoli et al. 2014) with the Wilcoxon signed-rank test on the data sets' mean differences
(docs/statistics.md, "Across data sets").

Differences are variant - reference in percentage points (pp). Verdicts: ``better`` / ``worse`` /
``equivalent`` when that posterior probability exceeds the threshold, else ``undecided``. When K
variants are judged at once the threshold is ``1 - (1 - level) / K`` (Bonferroni on the
posterior error probabilities: each verdict is wrong with posterior probability below
(1 - level) / K, so together below 1 - level).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats as sps

from medattn.analysis import stats
from medattn.analysis.across_sampler import Draws, Priors, gibbs
from medattn.errors import ArgumentError, DataError

__all__ = ["HierarchicalResult", "Priors", "SignedRankResult", "adjusted_threshold", "decide",
           "hierarchical", "new_dataset_probs", "signed_rank", "wilcoxon_needed"]

OUTCOMES = ("worse", "equivalent", "better")


def adjusted_threshold(level: float = 0.95, n_variants: int = 1) -> float:
    """Posterior probability a verdict needs when ``n_variants`` are judged together."""
    return 1.0 - (1.0 - level) / max(1, int(n_variants))


def decide(probs: Sequence[float], threshold: float) -> str:
    """``worse`` / ``equivalent`` / ``better`` if its probability exceeds ``threshold``, else
    ``undecided``."""
    return stats.bayes_decision(tuple(float(p) for p in probs), threshold)


def new_dataset_probs(delta0: np.ndarray, sigma0: np.ndarray, nu: np.ndarray, rope: float
                      ) -> np.ndarray:
    """P(worse / equivalent / better) of the effect on a new data set, delta_new ~ t(nu, delta0,
    sigma0), averaged over the draws (last axis); shape ``(..., 3)``. Each draw contributes its
    exact t probabilities (Rao-Blackwellised: less Monte Carlo error than drawing delta_new)."""
    worse = sps.t.cdf((-rope - delta0) / sigma0, nu).mean(axis=-1)
    better = sps.t.sf((rope - delta0) / sigma0, nu).mean(axis=-1)
    return np.stack([worse, np.clip(1 - worse - better, 0, 1), better], axis=-1)


def _region_probs(x: np.ndarray, rope: float) -> np.ndarray:
    """Fractions of draws ``x`` (last axis) below -rope, within, above +rope."""
    worse, better = (x < -rope).mean(axis=-1), (x > rope).mean(axis=-1)
    return np.stack([worse, 1 - worse - better, better], axis=-1)


@dataclass
class HierarchicalResult:
    """The hierarchical model's answer (pp). ``p_new``: P(worse, equivalent, better) on a new data
    set (the verdict); ``p_mean``: the same for the common effect delta_0. ``delta0``, ``sigma0``,
    ``new``: (posterior mean, interval low, high); ``per_dataset``: one row per data set with
    ``dataset, n, mean, sd, ci_low, ci_high`` (the corrected interval of that data set alone) and
    ``shrunk, shrunk_low, shrunk_high`` (its posterior under the model). ``rhat``: the largest
    split R-hat of delta_0 and sigma_0 over the chains (near 1 when they agree)."""

    p_new: tuple[float, float, float]
    p_mean: tuple[float, float, float]
    verdict: str
    verdict_mean: str
    threshold: float
    rope: float
    delta0: tuple[float, float, float]
    sigma0: tuple[float, float, float]
    new: tuple[float, float, float]
    per_dataset: pd.DataFrame
    rhat: float
    notes: list[str] = field(default_factory=list)
    draws: Draws | None = None


def _check_diffs(diffs, ratios, test_var, names) -> tuple[list[np.ndarray], np.ndarray,
                                                           np.ndarray, list[str]]:
    ds = [np.asarray(d, float).ravel() for d in diffs]
    names = list(names) if names is not None else [f"data set {i + 1}" for i in range(len(ds))]
    if len(ds) < 2:
        raise DataError(f"the model across data sets needs at least 2 data sets; got {len(ds)}. "
                        "Give the final runs of a study over several data sets.")
    for i, d in enumerate(ds):
        if d.size < 2 or not np.isfinite(d).all():
            raise DataError(f"{names[i]}: needs >= 2 finite per-split differences (got "
                            f"{d.size}, finite {int(np.isfinite(d).sum())}); train more splits.")
    r = np.broadcast_to(np.asarray(ratios, float), (len(ds),)).copy()
    v = np.zeros(len(ds)) if test_var is None else np.broadcast_to(
        np.asarray(test_var, float), (len(ds),)).copy()
    if not ((r >= 0).all() and (v >= 0).all()):
        raise DataError(f"test_train_ratios and test_var must be >= 0 (got {r}, {v}).")
    return ds, r, v, names


def _rhat(x: np.ndarray) -> float:
    """Split R-hat (Gelman et al.) of draws ``x`` with shape (chains, draws)."""
    n = x.shape[1] // 2
    s = np.concatenate([x[:, :n], x[:, n:2 * n]])
    w = s.var(axis=1, ddof=1).mean()
    b = n * s.mean(axis=1).var(ddof=1)
    return float(np.sqrt(((n - 1) / n * w + b / n) / w)) if w > 0 else math.nan


def _summary(x: np.ndarray, level: float) -> tuple[float, float, float]:
    q = np.quantile(x, [(1 - level) / 2, (1 + level) / 2])
    return float(x.mean()), float(q[0]), float(q[1])


def hierarchical(diffs: Sequence[np.ndarray], test_train_ratios, rope: float, *,
                 test_var=None, names: Sequence[str] | None = None, n_variants: int = 1,
                 level: float = 0.95, priors: Priors = Priors(), n_chains: int = 4,
                 n_iter: int = 2000, n_warmup: int = 500, seed: int = 0,
                 keep_draws: bool = False) -> HierarchicalResult:
    """Corani et al.'s hierarchical model on D data sets' per-split differences.

    ``diffs``: D 1-D arrays (pp), variant - reference on each split of data set i;
    ``test_train_ratios``: r_i = n_test / n_train per data set (scalar or (D,)); ``rope``: the
    region of practical equivalence +-rope (pp); ``test_var``: optional (D,) extra variance (pp^2)
    of a data set's mean difference from its shared test images (0 = the splits resample the test
    set). ``n_variants``: how many variants are judged together (sets the threshold,
    :func:`adjusted_threshold`). Priors are fixed in pp (:class:`Priors`). ``n_chains`` chains
    of ``n_iter`` sweeps after ``n_warmup``.
    """
    if not rope > 0:
        raise ArgumentError(f"{{rope}} must be > 0 pp (the comparison's margin), got {rope}.",
                            "rope")
    ds, r, v, names = _check_diffs(diffs, test_train_ratios, test_var, names)
    D = len(ds)
    J = np.array([d.size for d in ds], float)
    m = np.array([d.mean() for d in ds])
    W = np.array([((d - d.mean()) ** 2).sum() for d in ds])
    c = 1.0 / J + r
    draws = gibbs(np.repeat(m[None], n_chains, 0), W, J, c, v, priors=priors, n_iter=n_iter,
                  n_warmup=n_warmup, rng=np.random.default_rng(seed))
    d0, s0, nu = (x.ravel() for x in (draws.delta0, draws.sigma0, draws.nu))
    rng = np.random.default_rng(seed + 1)
    new_draws = d0 + s0 * rng.standard_t(nu)
    p_new = tuple(float(p) for p in new_dataset_probs(d0, s0, nu, rope))
    p_mean = tuple(float(p) for p in _region_probs(d0, rope))
    thr = adjusted_threshold(level, n_variants)
    delta = draws.delta.reshape(-1, D)
    rows = []
    for i, d in enumerate(ds):
        sd = float(d.std(ddof=1))
        se = math.sqrt(sd**2 * c[i] + v[i])
        half = float(sps.t.ppf((1 + level) / 2, d.size - 1)) * se
        lo_hi = np.quantile(delta[:, i], [(1 - level) / 2, (1 + level) / 2])
        rows.append({"dataset": names[i], "n": d.size, "mean": m[i], "sd": sd,
                     "test_train_ratio": r[i], "test_var": v[i], "ci_low": m[i] - half,
                     "ci_high": m[i] + half, "shrunk": float(delta[:, i].mean()),
                     "shrunk_low": float(lo_hi[0]), "shrunk_high": float(lo_hi[1])})
    rhat = max(_rhat(draws.delta0), _rhat(draws.sigma0))
    notes = []
    if not rhat < 1.05:
        notes.append(f"the sampler's chains disagree (R-hat {rhat:.3f} >= 1.05): rerun with "
                     "more iterations before trusting the probabilities")
    return HierarchicalResult(
        p_new=p_new, p_mean=p_mean, verdict=decide(p_new, thr), verdict_mean=decide(p_mean, thr),
        threshold=thr, rope=float(rope), delta0=_summary(d0, level), sigma0=_summary(s0, level),
        new=_summary(new_draws, level), per_dataset=pd.DataFrame(rows), rhat=rhat, notes=notes,
        draws=draws if keep_draws else None)


def wilcoxon_needed(alpha: float = 0.05) -> int:
    """The fewest data sets at which the exact two-sided Wilcoxon signed-rank test can give
    p < alpha at all (every data set favouring one model gives p = 2 / 2^D)."""
    d = 1
    while 2.0 * 0.5**d >= alpha:
        d += 1
    return d


@dataclass
class SignedRankResult:
    """``probs``: P(worse, equivalent, better) of the Bayesian signed-rank test (the share of
    posterior draws in which that region is the most probable, as baycomp reports);
    ``theta``: the posterior mean of the three regions' probabilities; ``verdict``;
    ``wilcoxon_p``: two-sided p of the Wilcoxon signed-rank test (NaN where undefined);
    ``note``: what D the Wilcoxon test needs when there are too few data sets."""

    probs: tuple[float, float, float]
    theta: tuple[float, float, float]
    verdict: str
    threshold: float
    wilcoxon_p: float
    d_needed: int
    note: str


def _dirichlet_regions(z: np.ndarray, rope: float, prior: float, n_samples: int, seed: int
                       ) -> np.ndarray:
    """(n_samples, 3) draws of the probabilities that the sum of two observations from the
    Dirichlet-process posterior lies below -2 rope, within, above +2 rope."""
    z = np.concatenate([[0.0], z])  # the prior's pseudo-observation at 0
    sums = z[:, None] + z[None, :]
    # ties count half, as in the signed-rank statistic
    above = (sums > 2 * rope) + 0.5 * (sums == 2 * rope)
    below = (sums < -2 * rope) + 0.5 * (sums == -2 * rope)
    alpha = np.ones(z.size)
    alpha[0] = prior
    rng = np.random.default_rng(seed)
    out = np.empty((n_samples, 3))
    for start in range(0, n_samples, 20_000):
        w = rng.dirichlet(alpha, min(20_000, n_samples - start))
        sl = slice(start, start + len(w))
        out[sl, 0] = np.einsum("nj,jk,nk->n", w, below, w)
        out[sl, 2] = np.einsum("nj,jk,nk->n", w, above, w)
    out[:, 1] = 1 - out[:, 0] - out[:, 2]
    return out


def signed_rank(mean_diffs, rope: float, *, prior: float = 0.5, n_samples: int = 50_000,
                seed: int = 0, level: float = 0.95, n_variants: int = 1, alpha: float = 0.05
                ) -> SignedRankResult:
    """Bayesian signed-rank test (Benavoli et al. 2014) on D data sets' mean differences
    ``mean_diffs`` (pp) with ROPE ``+-rope``, and the Wilcoxon signed-rank test beside it.

    The Dirichlet-process prior has strength ``prior`` on a pseudo-observation at 0 (the
    baycomp default). Returns :class:`SignedRankResult`; ``n_variants`` adjusts the verdict's
    threshold (:func:`adjusted_threshold`).
    """
    z = np.asarray(mean_diffs, float).ravel()
    if z.size < 1 or not np.isfinite(z).all():
        raise DataError(f"signed_rank needs >= 1 finite mean difference, got {z.tolist()}.")
    if not rope >= 0:
        raise ArgumentError(f"{{rope}} must be >= 0 pp (the comparison's margin), got {rope}.",
                            "rope")
    draws = _dirichlet_regions(z, rope, prior, n_samples, seed)
    winner = draws.argmax(axis=1)
    probs = tuple(float(p) for p in np.bincount(winner, minlength=3) / len(winner))
    thr = adjusted_threshold(level, n_variants)
    try:
        wp = float(sps.wilcoxon(z).pvalue) if np.any(z != 0) else math.nan
    except ValueError:
        wp = math.nan
    need = wilcoxon_needed(alpha)
    note = ""
    if z.size < need:
        note = (f"with D = {z.size} data sets the Wilcoxon signed-rank test cannot reach p < "
                f"{alpha:g} even if every data set favours one model (its smallest p is "
                f"2/2^D = {2 * 0.5 ** z.size:.3g}); it needs D >= {need}")
    return SignedRankResult(probs=probs, theta=tuple(float(x) for x in draws.mean(axis=0)),
                            verdict=decide(probs, thr), threshold=thr, wilcoxon_p=wp,
                            d_needed=need, note=note)
