"""cHSIC: kernel conditional dependence (Fukumizu et al. 2007) with a permutation null.

Statistic. With Gaussian kernels on x and y, approximated by random Fourier features
phi(x) (n, Dx) and psi(y) (n, Dy), the conditional cross-covariance operator given z is estimated by
the cross-covariance of the features after their regression on z is removed:

- discrete z (class labels): the conditioning kernel is the delta kernel, for which the regularised
  conditional operator of Fukumizu et al. tends (regularisation -> 0) to the within-class
  covariance. We therefore centre the features within each class (the exact residual of a
  regression on the one-hot label) and use
  ``T = sum_c ||A_c^T B_c||_F^2 / n_c``, i.e. the class-size-weighted HSIC of x and y in each class;
- continuous z: the features are residualised on random Fourier features of z by ridge regression
  (``ridge``), and ``T = ||R_x^T R_y||_F^2 / n``.

Null. For a discrete z, y is permuted *within classes*: under H0 (x independent of y given z) the
joint law is invariant under such permutations, so the test is exact at any n. For a continuous z
the residual rows of y are permuted (an approximation that is good when the regression on z is).
p = (1 + #{T_b >= T}) / (1 + B), so p >= 1 / (B + 1).
"""

from __future__ import annotations

import numpy as np

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


def chsic(x, y, z, *, seed: int | None = None, num_features: int = 25, num_features_z: int = 100,
          permutations: int = 1000, ridge: float = 1e-3, z_discrete: bool | None = None,
          chunk: int = 100, full: bool = False) -> float | CIResult:
    """p-value of H0: x independent of y given z, with the conditional HSIC.

    Args:
        x, y: (n,) or (n, d) arrays. z: (n,) class labels (integer/bool/str) or (n, d) floats.
        seed: seeds the random features and permutations (numpy Generator).
        num_features: random Fourier features per variable for x and y (Gaussian kernel, median
            bandwidth after standardising each column).
        num_features_z: Fourier features of a continuous z (unused for a discrete z).
        permutations: number B of null permutations (>= 1000 for decisions at p < 0.01).
        ridge: ridge penalty (relative to n) of the regression on a continuous z.
        z_discrete: force (True) or forbid (False) treating z as class labels; default by dtype.
        chunk: permutations evaluated per matrix product (memory vs. speed).
        full: return a :class:`CIResult` (p-value, T, the effect = T standardised by its
            permutation null, (T - mean) / sd, and counts) instead of the p-value.
    Returns:
        the permutation p-value in [1 / (B + 1), 1] (or the CIResult).
    """
    x, y, cond = check_xyz(x, y, z, z_discrete)
    num_features = check_positive_int(num_features, "num_features")
    permutations = check_positive_int(permutations, "permutations")
    chunk = check_positive_int(chunk, "chunk")
    rng = np.random.default_rng(seed)
    n = len(x)
    a = fourier_features(standardize(x), num_features, rng)
    b = fourier_features(standardize(y), num_features, rng)

    left_out = 0
    if cond.discrete:  # a class of one sample has nothing to compare: left out, counted
        strata, left_out = left_out_of(cond.strata(), 2)
        a, b = center_within(a, strata), center_within(b, strata)
        # Scaling rows by 1/sqrt(n_c) turns sum_c ||A_c^T B_c||^2 / n_c into per-class Frobenius norms.
        for idx in strata:
            a[idx] /= np.sqrt(len(idx))
    else:
        feats = fourier_features(standardize(cond.values), num_features_z, rng)
        feats = feats - feats.mean(axis=0)
        gram = feats.T @ feats + ridge * n * np.eye(feats.shape[1])
        coef = np.linalg.solve(gram, feats.T @ np.hstack([a - a.mean(0), b - b.mean(0)]))
        resid = np.hstack([a - a.mean(0), b - b.mean(0)]) - feats @ coef
        a, b = resid[:, :num_features] / np.sqrt(n), resid[:, num_features:]
        strata = [np.arange(n)]

    def statistic(rows: np.ndarray) -> np.ndarray:
        """T for each row permutation of b (P, n) -> (P,)."""
        total = np.zeros(len(rows))
        for idx in strata:
            bp = b[rows[:, idx]]  # (P, n_c, Dy)
            prod = a[idx].T @ bp.transpose(1, 0, 2).reshape(len(idx), -1)  # (Dx, P * Dy)
            total += (prod.reshape(a.shape[1], len(rows), b.shape[1]) ** 2).sum(axis=(0, 2))
        return total

    observed = statistic(np.arange(n)[None, :])[0]
    null = np.concatenate([
        statistic(within_permutations(strata, n, min(chunk, permutations - start), rng))
        for start in range(0, permutations, chunk)
    ])
    p_value = permutation_pvalue(observed, null)
    return null_result(p_value, observed, null, n - left_out, left_out) if full else p_value
