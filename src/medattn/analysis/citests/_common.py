"""Shared pieces of the conditional-independence tests: input checks, the conditioning label,
random Fourier features and permutation p-values.

Conventions (all three tests):

- ``x``, ``y``: arrays of shape (n,) or (n, d), any real dtype (booleans allowed).
- ``z``: the conditioning variable. A 1-D integer, boolean or string array (or (n, 1) of those) is a
  *discrete label*: the tests then work within the strata ``z == c``. A float array is treated as
  continuous unless ``z_discrete=True`` is passed (so that e.g. an age in whole years is not mistaken
  for a label).
- Randomness comes only from ``numpy.random.default_rng(seed)``; the global RNG is never touched.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medattn.errors import ConfigError, DataError


def as_2d(a, name: str) -> np.ndarray:
    """Return ``a`` as a float64 array of shape (n, d); reject NaN/inf and more than 2 dims."""
    arr = np.asarray(a)
    if arr.dtype == bool:
        arr = arr.astype(np.float64)
    try:
        arr = arr.astype(np.float64, copy=False)
    except (TypeError, ValueError) as err:
        raise DataError(f"citests: {name} must be numeric, got dtype {arr.dtype}") from err
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise DataError(f"citests: {name} must have shape (n,) or (n, d), got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        bad = int(np.flatnonzero(~np.all(np.isfinite(arr), axis=1))[0])
        raise DataError(f"citests: {name} has NaN or inf (first at row {bad}); drop those rows first")
    return arr


@dataclass
class Conditioning:
    """The conditioning variable, either as strata (discrete) or as a continuous matrix."""

    codes: np.ndarray | None  # (n,) int codes 0..k-1 for a discrete label, else None
    values: np.ndarray | None  # (n, d) float for a continuous z, else None

    @property
    def discrete(self) -> bool:
        return self.codes is not None

    def strata(self) -> list[np.ndarray]:
        """Row indices of each stratum (one stratum of all rows for a continuous z)."""
        if self.codes is None:
            return [np.arange(len(self.values))]
        order = np.argsort(self.codes, kind="stable")
        bounds = np.flatnonzero(np.diff(self.codes[order])) + 1
        return np.split(order, bounds)


def conditioning(z, n: int, z_discrete: bool | None = None) -> Conditioning:
    """Interpret ``z`` (see module docstring); ``z=None`` means unconditional (one stratum)."""
    if z is None:
        return Conditioning(codes=np.zeros(n, dtype=np.int64), values=None)
    arr = np.asarray(z)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if len(arr) != n:
        raise DataError(f"citests: z has {len(arr)} rows but x and y have {n}")
    is_label_dtype = arr.dtype.kind in "biuUSO"
    if z_discrete is None:
        z_discrete = arr.ndim == 1 and is_label_dtype
    if z_discrete:
        if arr.ndim != 1:
            raise DataError(f"citests: a discrete z must be 1-D labels, got shape {arr.shape}")
        if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
            raise DataError("citests: z has NaN; drop those rows first")
        _, codes = np.unique(arr, return_inverse=True)
        return Conditioning(codes=codes.astype(np.int64), values=None)
    return Conditioning(codes=None, values=as_2d(arr, "z"))


def check_xyz(x, y, z, z_discrete: bool | None = None):
    """Validate and convert the three inputs; returns (x (n, dx), y (n, dy), Conditioning)."""
    x2, y2 = as_2d(x, "x"), as_2d(y, "y")
    if len(x2) != len(y2):
        raise DataError(f"citests: x has {len(x2)} rows but y has {len(y2)}")
    if len(x2) < 8:
        raise DataError(f"citests: need at least 8 samples, got {len(x2)}")
    return x2, y2, conditioning(z, len(x2), z_discrete)


def check_positive_int(value, name: str, minimum: int = 1) -> int:
    if int(value) != value or value < minimum:
        raise ConfigError(f"citests: option {name}={value!r} must be an integer >= {minimum}")
    return int(value)


def standardize(a: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance per column; constant columns become zeros."""
    sd = a.std(axis=0)
    return (a - a.mean(axis=0)) / np.where(sd > 0, sd, 1.0)


def median_distance(a: np.ndarray, rng: np.random.Generator, max_points: int = 500) -> float:
    """Median Euclidean distance between distinct rows (on a random subset), the usual kernel
    bandwidth; falls back to the mean distance, then 1, when most pairs coincide (binary data)."""
    if len(a) > max_points:
        a = a[rng.choice(len(a), max_points, replace=False)]
    d = np.sqrt(((a[:, None, :] - a[None, :, :]) ** 2).sum(-1))[np.triu_indices(len(a), 1)]
    for stat in (np.median(d), d.mean()):
        if stat > 0:
            return float(stat)
    return 1.0


def fourier_features(a: np.ndarray, num: int, rng: np.random.Generator,
                     bandwidth: float | None = None) -> np.ndarray:
    """Random Fourier features of the Gaussian kernel exp(-|a - a'|^2 / (2 sigma^2)), (n, num).

    sigma is the median distance (Rahimi and Recht 2007); <phi(a), phi(a')> approximates the kernel.
    """
    sigma = median_distance(a, rng) if bandwidth is None else float(bandwidth)
    w = rng.standard_normal((a.shape[1], num)) / sigma
    b = rng.uniform(0.0, 2.0 * np.pi, num)
    return np.sqrt(2.0 / num) * np.cos(a @ w + b)


def center_within(a: np.ndarray, strata: list[np.ndarray]) -> np.ndarray:
    """Subtract each stratum's column means: the exact residual of a least-squares regression on
    the one-hot label."""
    out = np.empty_like(a)
    for idx in strata:
        out[idx] = a[idx] - a[idx].mean(axis=0)
    return out


@dataclass(frozen=True)
class CIResult:
    """What a conditional-independence test found (``full=True``); ``float(result)`` is the
    p-value, so a result can stand where a p-value is expected."""

    p_value: float
    statistic: float  # CMIknn: the CMI estimate in nats; cHSIC: T; RCoT: S
    effect: float  # CMIknn: statistic minus its shuffle mean (nats); cHSIC, RCoT: (T - mean) / sd
    null_mean: float  # mean and sd of the statistic under H0 (shuffles, or RCoT's moments)
    null_sd: float
    n: int  # samples in the statistic
    n_left_out: int  # samples in classes too small for the test (counted, not silently dropped)

    def __float__(self) -> float:
        return float(self.p_value)


def null_result(p_value: float, statistic: float, null: np.ndarray, n: int, n_left_out: int,
                scale_effect: bool = True) -> CIResult:
    """A CIResult from a permutation null: effect = (T - mean) / sd (``scale_effect``), or
    T - mean (CMIknn, whose statistic has a unit, nats)."""
    mean, sd = float(np.mean(null)), float(np.std(null, ddof=1)) if len(null) > 1 else float("nan")
    if scale_effect:
        effect = (statistic - mean) / sd if sd > 0 else float("nan")
    else:
        effect = statistic - mean
    return CIResult(float(p_value), float(statistic), float(effect), mean, sd, int(n),
                    int(n_left_out))


def left_out_of(strata: list[np.ndarray], minimum: int) -> tuple[list[np.ndarray], int]:
    """The strata with at least ``minimum`` rows, and the number of rows in the others."""
    kept = [idx for idx in strata if len(idx) >= minimum]
    return kept, int(sum(len(idx) for idx in strata if len(idx) < minimum))


def permutation_pvalue(observed: float, null: np.ndarray) -> float:
    """(1 + #{null >= observed}) / (1 + B): a valid p-value, never below 1 / (B + 1)."""
    # A relative tolerance keeps exact ties (e.g. the identity permutation) counted as ties.
    tol = 1e-12 * max(1.0, abs(observed))
    return float((1 + np.count_nonzero(null >= observed - tol)) / (1 + len(null)))


def within_permutations(strata: list[np.ndarray], n: int, count: int,
                        rng: np.random.Generator) -> np.ndarray:
    """``count`` permutations of range(n) that only move rows within their stratum, (count, n)."""
    perms = np.tile(np.arange(n, dtype=np.int64), (count, 1))
    for idx in strata:
        perms[:, idx] = rng.permuted(np.broadcast_to(idx, (count, len(idx))), axis=1)
    return perms
