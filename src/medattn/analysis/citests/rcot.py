"""RCoT: randomized conditional correlation test (Strobl, Zhang and Visweswaran 2019).

Statistic. x and y are standardised and mapped to random Fourier features of a Gaussian kernel
(``num_features`` each, median bandwidth, each feature column standardised as in the reference
implementation). The features are residualised on z:

- discrete z (class labels): exactly, by centring within each class (least squares on the one-hot
  label, i.e. the delta kernel on z without regularisation);
- continuous z: by ridge regression on ``num_features_z`` Fourier features of z.

``S = n * ||C||_F^2`` with ``C = R_x^T R_y / n`` the residual cross-covariance.

Null. Under H0, S is asymptotically a weighted sum of independent chi-square(1) variables whose
weights are the eigenvalues of the covariance of the products ``R_x[:, i] * R_y[:, j]``. Its
distribution function is approximated by the Lindsay-Pilla-Basak method (a mixture of ``p = 4``
gamma laws matched to the first 2p moments; Lindsay, Pilla and Basak 2000), as the reference
implementation does. Fallback: when the moment problem has no valid solution (fewer than four
non-zero weights, e.g. binary x *and* binary y, no sign change of the determinant, negative mixing
weights or support points) the p-value comes from ``permutations`` within-class permutations of
R_y (exact for a discrete z). ``null="permutation"`` uses permutations always and
``null="hbe"`` the Hall-Buckley-Eagleson three-moment approximation. The chi-square approximation
of some implementations is deliberately not offered (about 6% false positives at alpha = 0.01).

Small strata. Centring within a class of m samples leaves residuals that are correlated
(-1/(m - 1)) within the class; the weights above are estimated as if the products were
independent, which understates the null variance by the factor (m - 1) / m (a third at m = 3) and
makes the moment nulls reject too often. So for a discrete z with a class smaller than
``asymptotic_min`` (50) samples, the p-value comes from within-class permutations, which are
exact at any class size (Table 3 conditions on fine diagnoses, some of them rare).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import optimize, stats

from medattn.analysis.citests._common import (
    CIResult,
    center_within,
    check_positive_int,
    check_xyz,
    fourier_features,
    left_out_of,
    null_result,
    permutation_pvalue,
    standardize,
    within_permutations,
)
from medattn.errors import ConfigError

NULLS = ("lpb4", "permutation", "hbe")


def _moments(weights: np.ndarray, count: int) -> np.ndarray:
    """Raw moments m_0..m_count of sum_i w_i chi2_1, from its cumulants 2^(r-1) (r-1)! sum w^r."""
    kappa = np.array([2.0 ** (r - 1) * math.factorial(r - 1) * np.sum(weights ** r)
                      for r in range(1, count + 1)])
    m = np.zeros(count + 1)
    m[0] = 1.0
    for r in range(1, count + 1):
        m[r] = sum(math.comb(r - 1, j - 1) * kappa[j - 1] * m[r - j] for j in range(1, r + 1))
    return m


def _delta_matrix(lam: float, m: np.ndarray, size: int) -> np.ndarray:
    """Hankel matrix of the moments of the gamma-mixing distribution for shape 1/lam, (size+1)^2.

    The r-th moment of Gamma(shape 1/lam, scale mu * lam) is mu^r prod_{t<r}(1 + t lam), so dividing
    the raw moments by that product leaves the moments of the mixing distribution of mu.
    """
    idx = np.add.outer(np.arange(size + 1), np.arange(size + 1))
    denom = np.array([np.prod(1.0 + lam * np.arange(r)) for r in range(2 * size + 1)])
    return (m[: 2 * size + 1] / denom)[idx]


def lpb4_sf(weights: np.ndarray, statistic: float, p: int = 4) -> float | None:
    """P(sum_i w_i chi2_1 > statistic) by the Lindsay-Pilla-Basak approximation, or None when it
    has no valid solution (the caller then falls back)."""
    weights = np.asarray(weights, dtype=np.float64)
    weights = weights[weights > 0]
    if len(weights) < p:
        return None
    scale = weights.sum()  # normalise to mean 1 for numerical range
    weights, statistic = weights / scale, statistic / scale
    m = _moments(weights, 2 * p)
    lam = m[2] / m[1] ** 2 - 1.0
    for size in range(2, p + 1):
        f = lambda t, s=size: np.linalg.det(_delta_matrix(t, m, s))  # noqa: E731
        lo, hi = 1e-12, lam
        if not (np.isfinite(f(lo)) and np.isfinite(f(hi))) or f(lo) * f(hi) > 0:
            return None
        lam = optimize.brentq(f, lo, hi, xtol=1e-12)
    mat = _delta_matrix(lam, m, p)
    # Support points: roots of det([M rows 0..p-1; 1, mu, ..., mu^p]) (cofactors of the last row).
    coeffs = np.array([(-1) ** (p + i) * np.linalg.det(np.delete(mat[:-1], i, axis=1))
                       for i in range(p + 1)])
    mu = np.roots(coeffs[::-1])
    if np.any(np.abs(mu.imag) > 1e-8 * np.abs(mu).max()):
        return None
    mu = mu.real
    if np.any(mu <= 0):
        return None
    pi = np.linalg.solve(np.vander(mu, p, increasing=True).T, mat[0, :p])
    if np.any(pi < -1e-8) or not np.isfinite(pi).all():
        return None
    sf = float(np.dot(pi, stats.gamma.sf(statistic, a=1.0 / lam, scale=mu * lam)))
    return min(max(sf, 0.0), 1.0) if np.isfinite(sf) else None


def hbe_sf(weights: np.ndarray, statistic: float) -> float:
    """Hall-Buckley-Eagleson: a scaled chi-square matched to the first three cumulants."""
    k1, k2, k3 = weights.sum(), 2 * np.sum(weights ** 2), 8 * np.sum(weights ** 3)
    nu = 8 * k2 ** 3 / k3 ** 2
    return float(stats.chi2.sf((statistic - k1) / np.sqrt(k2) * np.sqrt(2 * nu) + nu, nu))


def rcot(x, y, z, *, seed: int | None = None, num_features: int = 5, num_features_z: int = 100,
         null: str = "lpb4", permutations: int = 1000, ridge: float = 1e-10,
         z_discrete: bool | None = None, asymptotic_min: int = 50,
         full: bool = False) -> float | CIResult:
    """p-value of H0: x independent of y given z with RCoT.

    Args:
        x, y: (n,) or (n, d) arrays. z: (n,) class labels (integer/bool/str) or (n, d) floats.
        seed: seeds the random features and any permutations.
        num_features: Fourier features for x and for y (5 in Strobl et al.).
        num_features_z: Fourier features of a continuous z (100 in Strobl et al.).
        null: ``"lpb4"`` (default, with the permutation fallback), ``"permutation"`` or ``"hbe"``.
        permutations: permutations of the permutation null / fallback.
        ridge: ridge penalty (relative to n) of the regression on a continuous z.
        z_discrete: force (True) or forbid (False) treating z as class labels; default by dtype.
        asymptotic_min: smallest class (of a discrete z, classes of one sample left out) for
            the moment nulls; below it the permutation null is used (module docstring).
        full: return a :class:`CIResult` (p-value, S, the effect = S standardised by its null,
            (S - mean) / sd, with the exact mean sum(w) and sd sqrt(2 sum(w^2)) of the weighted
            chi-square, or the permutation null's where that is used; counts).
    Returns:
        the p-value (or the CIResult).
    """
    if null not in NULLS:
        raise ConfigError(f"rcot: option null={null!r} is not one of {', '.join(NULLS)}")
    x, y, cond = check_xyz(x, y, z, z_discrete)
    num_features = check_positive_int(num_features, "num_features")
    permutations = check_positive_int(permutations, "permutations")
    asymptotic_min = check_positive_int(asymptotic_min, "asymptotic_min")
    rng = np.random.default_rng(seed)
    n = len(x)
    fx = standardize(fourier_features(standardize(x), num_features, rng))
    fy = standardize(fourier_features(standardize(y), num_features, rng))
    left_out = 0
    if cond.discrete:  # a class of one sample has nothing to compare: left out, counted
        strata, left_out = left_out_of(cond.strata(), 2)
        rx, ry = center_within(fx, strata), center_within(fy, strata)
    else:
        fz = standardize(fourier_features(standardize(cond.values), num_features_z, rng))
        gram = fz.T @ fz + ridge * n * np.eye(fz.shape[1])
        coef = np.linalg.solve(gram, fz.T @ np.hstack([fx, fy]))
        resid = np.hstack([fx, fy]) - fz @ coef
        rx, ry = resid[:, :num_features], resid[:, num_features:]
        strata = [np.arange(n)]
    statistic = float(np.sum((rx.T @ ry) ** 2) / n)

    used = n - left_out

    def moments_result(p_value: float, weights: np.ndarray) -> float | CIResult:
        if not full:
            return p_value
        mean, sd = float(weights.sum()), float(np.sqrt(2 * np.sum(weights ** 2)))
        effect = (statistic - mean) / sd if sd > 0 else float("nan")
        return CIResult(float(p_value), statistic, effect, mean, sd, used, left_out)

    small = cond.discrete and min((len(idx) for idx in strata), default=0) < asymptotic_min
    if null != "permutation" and not small:
        prods = (rx[:, :, None] * ry[:, None, :]).reshape(n, -1)
        eig = np.linalg.eigvalsh(prods.T @ prods / n)
        eig = eig[eig > 1e-10 * max(eig.max(), 1e-300)]
        if null == "hbe":
            return moments_result(hbe_sf(eig, statistic) if len(eig) else 1.0, eig)
        p_value = lpb4_sf(eig, statistic)
        if p_value is not None:
            return moments_result(p_value, eig)
    perms = within_permutations(strata, n, permutations, rng)
    null_stats = np.array([np.sum((rx.T @ ry[rows]) ** 2) / n for rows in perms])
    p_value = permutation_pvalue(statistic, null_stats)
    return null_result(p_value, statistic, null_stats, used, left_out) if full else p_value
