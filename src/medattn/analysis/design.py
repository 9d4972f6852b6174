"""Study designs and what they can decide: power of the corrected t-test and the decision
probabilities of the Bayesian correlated t-test, before the runs are trained (docs/statistics.md).

Data model (the corrected test's own, Nadeau & Bengio 2003). A design gives J paired differences
``d_1..d_J`` (pp) of two models, equicorrelated with rho = r / (1 + r), r = n_test / n_train:
``d_j = delta + u + e_j`` with ``u ~ N(0, sigma^2 r)`` shared by the study and ``e_j ~ N(0,
sigma^2)`` independent. ``sigma`` (``sd_diff``) is the *within-study* sd of the differences, what a
pilot's sample sd estimates. Then, exactly,

- ``mean(d) ~ N(delta, sigma^2 f)`` with the variance factor ``f = 1/J + r``, and
- ``s_d^2 ~ sigma^2 chi2_(J-1) / (J-1)``, independent of ``mean(d)``.

Both tests use ``se = s_d sqrt(f)`` and ``df = J - 1``. A design whose calibrated correction is not
``1/J + r`` (repeated k-fold, see :data:`DESIGNS`) passes its own ``variance_factor`` f; the model
then reads ``Var(mean) = sigma^2 f``, i.e. the factor is assumed to hold (what its calibration
checks). Writing ``nc = delta / (sigma sqrt(f))`` and ``q = s_d / sigma = sqrt(W / (J-1))`` with
``W ~ chi2_(J-1)``, ``mean(d) / (sigma sqrt f) = nc + Z`` with Z standard normal, and

- corrected test rejects iff ``|nc + Z| > t_c q``, ``t_c = t_(1-alpha/2, J-1)``:
  ``power = E_W[ Phi(nc - t_c q) + Phi(-nc - t_c q) ]``, the noncentral t(J-1, nc) tail
  probabilities ``P(T > t_c) + P(T < -t_c)`` (equal to :data:`scipy.stats.nct`; tested);
- Bayesian test (posterior Student-t(J-1, mean, se), ROPE +-``rope``, decision when a posterior
  probability exceeds ``threshold``, :func:`medattn.analysis.stats.bayes_correlated`) says
  "better" iff ``mean > rope + t_thr se``, ``t_thr = t_(threshold, J-1)``, "worse" iff
  ``mean < -rope - t_thr se``, "equivalent" iff ``|mean| < c(se)`` where ``c`` solves
  ``F((rope - c)/se) - F((-rope - c)/se) = threshold`` (F the t(J-1) cdf; no such c when
  ``2 F(rope/se) - 1 <= threshold``). Given W each is a normal probability in ``nc + Z``.

The expectation over W is a 1-D Gauss-Legendre quadrature in the chi2 quantile (exact to about
1e-6 with the default nodes). Functions broadcast over their array arguments (numpy rules).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import special, stats

from medattn.analysis.variance import kfold_multiplier
from medattn.kfold_designs import KFOLD_DESIGNS

__all__ = ["DESIGNS", "Design", "bouckaert_frank_factor", "decided_right",
           "decision_probability", "design_for", "nadeau_bengio_factor", "power"]

OUTCOMES = ("worse", "equivalent", "better")


# ---------------------------------------------------------------------------------------------
# Designs: the one table of candidates and their variance factors (edit here)
# ---------------------------------------------------------------------------------------------


def nadeau_bengio_factor(n_pairs, test_train_ratio):
    """``f = 1/J + r`` of J random train/test splits (Nadeau & Bengio 2003)."""
    return 1.0 / np.asarray(n_pairs, float) + np.asarray(test_train_ratio, float)


def bouckaert_frank_factor(n_pairs, test_train_ratio):
    """``f = 1/(r k) + n_test/n_train`` of r repetitions of k-fold CV, J = r k pairs (Bouckaert &
    Frank 2004). The same formula as :func:`nadeau_bengio_factor`. Shown to hold its level only
    for the designs of :data:`medattn.kfold_designs.KFOLD_DESIGNS` (with their calibrated
    multiplier, today 1); other k-fold designs use it uncalibrated and are never recommended
    (one simulation rejected a near-null in 0.09 of studies at 5 x 10-fold, alpha 0.05)."""
    return nadeau_bengio_factor(n_pairs, test_train_ratio)


@dataclass(frozen=True)
class Design:
    """One candidate design of a study's final phase.

    ``scheme``: ``random`` (J random splits, the study's fractions) or ``kfold`` (``repeats``
    repetitions of ``folds``-fold grouped CV, J = folds x repeats, test share 1/folds, the
    validation share taken from the training folds); ``seeds``: training seeds per split (their
    differences are averaged per split before the test). ``factor(J, r)``: the variance factor
    of the design's test. ``calibrated``: whether a calibration benchmark has shown that test to
    hold its level; the planner lists uncalibrated designs but never recommends them.
    """

    name: str
    scheme: str
    splits: int
    folds: int | None = None
    repeats: int | None = None
    seeds: int = 1
    calibrated: bool = True
    factor: Callable = nadeau_bengio_factor

    @property
    def n_pairs(self) -> int:
        """J, the number of paired differences the test sees."""
        return self.splits

    @property
    def runs(self) -> int:
        """Training runs per model."""
        return self.splits * self.seeds

    def shares(self, test_share: float, val_share: float) -> tuple[float, float]:
        """``(n_test / N, n_train / N)`` of a pool of N images; for ``random`` the study's
        ``test_share`` and ``val_share``, for ``kfold`` 1/k and 1 - 1/k - ``val_share``."""
        if self.scheme == "kfold":
            return 1.0 / self.folds, 1.0 - 1.0 / self.folds - val_share
        return test_share, 1.0 - test_share - val_share


def _kfold(k: int, rep: int) -> Design:
    """A k-fold candidate: calibrated, with its own factor, where
    :data:`medattn.kfold_designs.KFOLD_DESIGNS` lists it (the one place k-fold designs are
    offered); otherwise listed with Bouckaert & Frank's factor and never recommended."""
    if (k, rep) in KFOLD_DESIGNS:
        return Design(f"{k}-fold x {rep}", "kfold", k * rep, folds=k, repeats=rep,
                      factor=functools.partial(_kfold_factor, k, rep))
    return Design(f"{k}-fold x {rep}", "kfold", k * rep, folds=k, repeats=rep, calibrated=False,
                  factor=bouckaert_frank_factor)


def _kfold_factor(k: int, rep: int, n_pairs, test_train_ratio):
    c = kfold_multiplier(k, rep)  # 1/J + c r, vectorised like the other factors
    return 1.0 / np.asarray(n_pairs, float) + c * np.asarray(test_train_ratio, float)


# Random splits are the paper's design (calibrated: benchmarks/calibrate_compare.py); k-fold
# designs are calibrated by benchmarks/calibrate_designs.py and offered from one table,
# kfold_designs.KFOLD_DESIGNS. Seed designs average S training seeds per split.
def _random(j: int) -> Design:
    """J random splits (the paper's scheme), one training seed each."""
    return Design(f"random J={int(j)}", "random", int(j))


DESIGNS: tuple[Design, ...] = (
    _random(10), _random(20), _random(30),
    _kfold(5, 1), _kfold(5, 2), _kfold(5, 4), _kfold(10, 1),
    Design("random J=10 x 3 seeds", "random", 10, seeds=3),
)


def design_for(scheme: str, splits: int, folds: int | None = None) -> Design:
    """The design of a study's final phase (``final.scheme``, ``final.splits`` (random: J; k-fold:
    the repeats), ``final.folds``), e.g. to ask what a configured study can decide."""
    if scheme == "kfold":
        return _kfold(int(folds or 0), int(splits))
    return _random(splits)


# ---------------------------------------------------------------------------------------------
# Power and decision probabilities
# ---------------------------------------------------------------------------------------------


def _chi_nodes(df: np.ndarray, nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """``q = sqrt(W / df)`` at Gauss-Legendre nodes of the chi2(df) quantile and the weights;
    shapes ``df.shape + (nodes,)`` and ``(nodes,)``."""
    # leggauss and chi2.ppf are the slow parts: cached per distinct df (a planner has few)
    values, where = np.unique(df, return_inverse=True)
    q = np.stack([_q_nodes(float(v), nodes) for v in values])
    return q[where.reshape(df.shape)], _legendre(nodes)[1] / 2


@functools.lru_cache(maxsize=64)
def _legendre(nodes: int) -> tuple[np.ndarray, np.ndarray]:
    return np.polynomial.legendre.leggauss(nodes)


@functools.lru_cache(maxsize=1024)
def _q_nodes(df: float, nodes: int) -> np.ndarray:
    u = (_legendre(nodes)[0] + 1) / 2
    return np.sqrt(stats.chi2.ppf(u, df) / df)


def _setup(sd_diff, delta, n_pairs, test_train_ratio, variance_factor):
    sd, d, n, r = np.broadcast_arrays(*(np.asarray(v, float) for v in (sd_diff, delta, n_pairs,
                                                                        test_train_ratio)))
    if np.any(n < 2) or np.any(n != np.round(n)):
        raise ValueError("n_pairs must be whole numbers >= 2")
    if np.any(~(sd > 0)):
        raise ValueError("sd_diff must be > 0 (pp)")
    f = nadeau_bengio_factor(n, r) if variance_factor is None else np.asarray(variance_factor,
                                                                                float)
    if np.any(~(f > 0)):
        raise ValueError("the variance factor must be > 0 (test_train_ratio >= 0)")
    tau = sd * np.sqrt(f)  # sd of mean(d)
    tau, d, n = np.broadcast_arrays(tau, d, n)
    return tau, d, n - 1.0


def power(sd_diff, delta, n_pairs, test_train_ratio, alpha: float = 0.05,
          variance_factor=None, nodes: int = 256) -> np.ndarray:
    """Power of the two-sided corrected t-test at a true difference ``delta`` (pp).

    ``sd_diff``: within-study sd of the paired differences (pp); ``n_pairs``: J;
    ``test_train_ratio``: r = n_test / n_train; ``variance_factor``: f of the design's test
    (default ``1/J + r``). Power = P(T > t_c) + P(T < -t_c), T ~ noncentral t(J - 1,
    delta / (sd_diff sqrt(f))), t_c = t_(1 - alpha/2, J - 1), by quadrature (module docstring).
    Returns an array of the broadcast shape of the arguments.
    """
    tau, d, df = _setup(sd_diff, delta, n_pairs, test_train_ratio, variance_factor)
    q, w = _chi_nodes(df, nodes)
    nc = (d / tau)[..., None]
    tc = stats.t.ppf(1 - alpha / 2, df)[..., None]
    p = special.ndtr(nc - tc * q) + special.ndtr(-nc - tc * q)
    return p @ w


def _equivalence_bound(a: np.ndarray, df: np.ndarray, threshold: float) -> np.ndarray:
    """``x >= 0`` with ``F(a - x) - F(-a - x) = threshold`` (F the t(df) cdf), 0 where
    ``F(a) - F(-a) <= threshold`` (no mean is declared equivalent). Vectorised bisection."""
    lo, hi = np.zeros_like(a), a.copy()  # F(0) - F(-2a) < 1/2 < threshold at x = a
    for _ in range(32):  # 2^-32 of a: far below the quadrature's error
        mid = (lo + hi) / 2
        inside = special.stdtr(df, a - mid) - special.stdtr(df, -a - mid) > threshold
        lo = np.where(inside, mid, lo)
        hi = np.where(inside, hi, mid)
    possible = special.stdtr(df, a) - special.stdtr(df, -a) > threshold
    return np.where(possible, (lo + hi) / 2, 0.0)


def decision_probability(sd_diff, delta, n_pairs, test_train_ratio, rope, threshold: float = 0.95,
                         variance_factor=None, nodes: int = 256) -> np.ndarray:
    """Probabilities that the Bayesian correlated t-test ends "worse", "equivalent", "better".

    Same arguments as :func:`power`; ``rope``: half-width of the region of practical
    equivalence (pp, compare's ``--margin``); ``threshold``: the posterior probability a decision
    needs (> 0.5). Exact under the data model (module docstring) up to the quadrature: given W,
    P(better) = Phi(nc - rho - t_thr q), P(worse) = Phi(-nc - rho - t_thr q) and P(equivalent) =
    Phi(q g - nc) - Phi(-q g - nc), with rho = rope / (sd_diff sqrt f) and g = c / se.
    Returns an array of shape ``broadcast shape + (3,)``, last axis (worse, equivalent, better);
    the rest to 1 is "undecided".
    """
    if not 0.5 < threshold < 1:
        raise ValueError(f"threshold must lie in (0.5, 1), got {threshold}")
    tau, d, df = _setup(sd_diff, delta, n_pairs, test_train_ratio, variance_factor)
    rope = np.broadcast_to(np.asarray(rope, float), tau.shape)
    if np.any(rope < 0):
        raise ValueError("rope must be >= 0 (pp)")
    q, w = _chi_nodes(df, nodes)
    nc, rho = (d / tau)[..., None], (rope / tau)[..., None]
    tt = stats.t.ppf(threshold, df)[..., None]
    better = special.ndtr(nc - rho - tt * q)
    worse = special.ndtr(-nc - rho - tt * q)
    dfn = np.broadcast_to(df[..., None], q.shape)
    g = _equivalence_bound(np.broadcast_to(rho / q, q.shape).copy(), dfn, threshold)
    equivalent = np.where(g > 0, special.ndtr(q * g - nc) - special.ndtr(-q * g - nc), 0.0)
    return np.stack([worse @ w, equivalent @ w, better @ w], axis=-1)


def decided_right(sd_diff, delta, n_pairs, test_train_ratio, rope, threshold: float = 0.95,
                  variance_factor=None, nodes: int = 64) -> np.ndarray:
    """Probability that the Bayesian test decides in the direction of ``delta``: P("better")
    for delta > 0, P("worse") for delta < 0 (the "better" entry of
    :func:`decision_probability` at ``|delta|``, by symmetry), without the equivalence
    root-finding, so a planner can evaluate many designs at once. Arguments as there."""
    tau, d, df = _setup(sd_diff, np.abs(delta), n_pairs, test_train_ratio, variance_factor)
    rope = np.broadcast_to(np.asarray(rope, float), tau.shape)
    q, w = _chi_nodes(df, nodes)
    tt = stats.t.ppf(threshold, df)[..., None]
    return special.ndtr((d / tau)[..., None] - (rope / tau)[..., None] - tt * q) @ w
