"""CMIknn: conditional mutual information from k nearest neighbours with a shuffle test
(Runge 2018), stratified for a discrete conditioning label.

Estimator. Frenzel and Pompe (2007): for each sample, eps_i is the max-norm distance to its k-th
nearest neighbour in the joint (x, y, z) space, and
``I(X;Y|Z) = psi(k) - mean_i[psi(n_xz,i) - psi(n_z,i) + psi(n_yz,i)]`` with the counts (self
included) of samples strictly closer than eps_i in the (x, z), (y, z) and z sub-spaces.

Discrete z. The distance in z is 0 within a class and infinite between classes, so the estimator
splits into the Kraskov (KSG-1) estimate of I(X;Y) within each class, weighted by the class share:
``I = sum_c n_c / n * I_c``, with ``n_z = n_c``. Runge's local shuffle (permuting x among samples
with nearby z) becomes a permutation of x *within each class*, which is exact under H0.

Preparation. Columns are standardised; a Gaussian jitter of ``jitter`` standard deviations is added
once (and moves with its sample under the shuffles, so the test stays exact) to break the ties of
binary or discrete variables. No rank transform: it would turn a binary variable into noise.

Neighbours. ``k`` is a count, or a fraction of each class (the default 0.1; Runge 2018 uses
0.1-0.2 of n): CMIknn with k = 10 was the least powerful of the three tests (docs/features.md). A
class with at most k + 1 samples has no k-th neighbour: it is left out and counted.

Speed. Within a class one variable is shuffled and the other keeps its sub-space, so everything
about the fixed one is computed once; shuffling y by the inverse permutation gives the same pairs as
shuffling x, so the cheaper role is chosen per class. With numba installed (``pip install
'medattn[fast]'``; the default ``backend="auto"`` uses it when it is there), a compiled loop
(:mod:`._cmi_kernel`) finds each joint k-th neighbour distance among the sample's listed neighbours
in the fixed variable: one branch-free pass over those closer than a guessed radius (fitted on the
first shuffles; a wrong guess costs time, never exactness). Without numba (``backend="scipy"``) the
fixed variable's sorted values (1-D) or sorted distance rows (classes up to 2500 samples) give its
counts by binary search and, per shuffle, the joint distances come from a k-d tree (scipy's
cKDTree, built unbalanced, which is faster to build here). Both backends compute the same distances
and counts, so they give the same p-values (tested); benchmarks/bench_citests.py times them.

Continuous z (not used by Table 3) runs the unstratified Frenzel-Pompe estimator with Runge's local
permutation (x permuted among the ``shuffle_neighbors`` nearest neighbours in z), with k-d trees in
every sub-space. It is much slower (a Python loop per shuffle).

p = (1 + #{I_b >= I}) / (1 + B).
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy.spatial import cKDTree
from scipy.special import digamma

from medattn.analysis.citests import _cmi_kernel
from medattn.analysis.citests._common import (
    CIResult,
    check_positive_int,
    check_xyz,
    null_result,
    permutation_pvalue,
    standardize,
)
from medattn.errors import ArgumentError, ConfigError
from medattn.progress import warn_once

_FULL_ROWS_LIMIT = 2500  # largest class whose full sorted distance rows are kept (n_c^2 floats)
_LIST_WIDTH = 512  # fewest v-neighbours listed per sample for the compiled scan (beyond: full scan)
_LIST_PER_K = 8  # listed neighbours per neighbour of the estimator
_LIST_MEMORY = 10_000_000  # most listed neighbours per class (16 bytes each)
_SHRINK = 1.0 - 1e-9
_GUESS_QUANTILE = 0.9  # share of samples whose first radius guess suffices (calibrated per class)
_CALIBRATION = 8  # shuffles of the first fit of the radius guesses (before it: a cruder guess)
_FIT_SHUFFLES = 40  # shuffles the guesses are refitted on
_FLOOR_QUANTILE = 0.05  # share of samples whose floor guess is too high (then scanned again)
BACKENDS = ("auto", "numba", "scipy")
DEFAULT_K = 0.1  # neighbours: a fraction of each class (Runge 2018: 0.1-0.2); docs/features.md
SLOW_NOTICE = ("cmiknn: numba is not installed, so the slower scipy k-d tree path is used (same "
               "p-values); pip install 'medattn[fast]' makes CMIknn 4-6x faster")


def warn_if_slow() -> None:
    """Warn, once per process tree, that CMIknn will run on its slower scipy path (numba is
    missing). Long analyses call it before their progress bar and workers start."""
    if not _cmi_kernel.available():
        warn_once(SLOW_NOTICE, RuntimeWarning, stacklevel=3)


class _Counter:
    """Counts, for query points of a fixed point set, the points strictly closer than eps (max-norm,
    the query point itself included)."""

    def __init__(self, pts: np.ndarray):
        self.pts = pts
        if pts.shape[1] == 1:
            self.sorted = np.sort(pts[:, 0])
            self.mode = "1d"
        elif len(pts) <= _FULL_ROWS_LIMIT:
            rows = np.sort(np.abs(pts[:, None, :] - pts[None, :, :]).max(-1), axis=1)
            self.stride = float(rows[:, -1].max()) * 2 + 1.0
            self.offsets = np.arange(len(pts)) * self.stride
            self.flat = (rows + self.offsets[:, None]).ravel()
            self.mode = "rows"
        else:
            self.tree = cKDTree(pts)
            self.mode = "tree"

    def count(self, owner: np.ndarray, eps: np.ndarray) -> np.ndarray:
        """#{j: |pts_j - pts_owner_i|_inf < eps_i} for each i, (n,) ints."""
        if self.mode == "1d":
            q = self.pts[owner, 0]
            return (np.searchsorted(self.sorted, q + eps, side="left")
                    - np.searchsorted(self.sorted, q - eps, side="right"))
        if self.mode == "rows":
            # eps beyond the farthest point counts the whole row; clipping keeps it inside its row.
            eps = np.minimum(eps, 0.5 * self.stride)
            pos = np.searchsorted(self.flat, eps + self.offsets[owner], side="left")
            return pos - owner * len(self.pts)
        return self.tree.query_ball_point(self.pts[owner], np.nextafter(eps, 0), p=np.inf,
                                          return_length=True)


class _Stratum:
    """One class: the shuffled variable u, the fixed variable v and what is precomputed about v."""

    def __init__(self, u: np.ndarray, v: np.ndarray, k: int, compiled: bool):
        self.u, self.v, self.k, self.n = u, v, k, len(u)
        self.const = digamma(k) + digamma(self.n)
        self.compiled = compiled
        if compiled:
            self.order, self.dist = _cmi_kernel.neighbour_lists(v, self.list_width())
            self.sorted_u, self.u_dist = np.empty(0), np.empty((0, 0))
            if u.shape[1] == 1:
                self.sorted_u = np.sort(u[:, 0])
            else:
                self.u_dist = _cmi_kernel.neighbour_lists(u, self.list_width())[1]
            self.psi = digamma(np.arange(self.n + 1, dtype=np.float64))  # counts are 1..n
            self._guess_radii()
        else:
            self.u_count, self.v_count = _Counter(u), _Counter(v)

    def list_width(self) -> int:
        """Neighbours listed per sample: _LIST_PER_K k (a k-th neighbour in the joint space
        lies among the first few k in either sub-space), at least _LIST_WIDTH, and at most
        what _LIST_MEMORY entries allow."""
        wanted = max(_LIST_WIDTH, _LIST_PER_K * self.k)
        return int(min(self.n, wanted, max(_LIST_WIDTH, _LIST_MEMORY // self.n)))

    def _guess_radii(self) -> None:
        """Per-sample factors whose product guesses the joint k-th neighbour distance. Let U be
        the distance from u_a to its m_u-th nearest u and V the distance from v_i to its m_v-th
        nearest v, with m_u = n (k / n)^(d_u / D), m_v = n (k / n)^(d_v / D), D = d_u + d_v. If
        the shares of nearby samples grow like (r / U)^(d_u) and (r / V)^(d_v), a cube of
        half-side r = U^(d_u / D) V^(d_v / D) holds about m_u m_v / n = k samples. The common
        factor is then calibrated on shuffles (:meth:`cmi_sums`)."""
        n, k = self.n, self.k
        du, dv = self.u.shape[1], self.v.shape[1]
        share, dim = k / n, du + dv
        m_v = min(self.dist.shape[1] - 1, max(1, round(n * share ** (dv / dim))))
        m_u = min(n - 1, max(1, round(n * share ** (du / dim))))
        self.v_radius = np.ascontiguousarray(self.dist[:, m_v]) ** (dv / dim)
        if du > 1:
            near = self.u_dist[:, min(m_u, self.u_dist.shape[1] - 1)]
        else:
            # distance from each sorted value to its m_u-th nearest: among m_u values on each side
            su = self.sorted_u
            pad = np.concatenate([np.full(m_u, np.inf), su, np.full(m_u, np.inf)])
            windows = np.lib.stride_tricks.sliding_window_view(pad, 2 * m_u + 1)
            near_sorted = np.partition(np.abs(windows - su[:, None]), m_u, axis=1)[:, m_u]
            near = np.empty(n)
            near[np.argsort(self.u[:, 0], kind="stable")] = near_sorted
        self.u_radius = near ** (du / dim)
        self.factor = 1.0
        self.floor = 0.0  # no floor before the calibration
        self.calibrated = False
        self.fitted = 0  # shuffles the guesses were fitted on
        self._fit_perms: list[np.ndarray] = []
        self._fit_eps: list[np.ndarray] = []

    def _calibrate(self, perms: np.ndarray, eps: np.ndarray) -> None:
        """Refit the guess on the k-th neighbour distances ``eps`` (P, n) of the first shuffles
        (all recorded so far, up to _FIT_SHUFFLES; a few give a first fit that makes the next
        batch cheap, and that batch a better one):
        log eps[p, i] = a_i + b_(perms[p, i]) + residual, a_i for the sample (its fixed v) and b_a
        for the u value it holds, by alternating least squares; the factor is the residuals'
        ``_GUESS_QUANTILE``. Unlike the density model this follows discrete or tied columns (D's
        structure count), whose nearest distances say little about how many samples lie near."""
        self._fit_perms.append(perms)
        self._fit_eps.append(eps)
        perms, eps = np.concatenate(self._fit_perms), np.concatenate(self._fit_eps)
        self.fitted = len(perms)
        positive = eps > 0
        if positive.any():
            log_eps = np.log(np.maximum(eps, eps[positive].min()))
            flat, per_u = perms.ravel(), len(perms)  # each u value appears once per shuffle
            a = log_eps.mean(axis=0)
            for _ in range(3):
                b = np.bincount(flat, weights=(log_eps - a).ravel(), minlength=self.n) / per_u
                a = (log_eps - b[perms]).mean(axis=0)
            resid = log_eps - a - b[perms]
            self.v_radius, self.u_radius = np.exp(a), np.exp(b)
            self.factor = float(np.exp(np.quantile(resid, _GUESS_QUANTILE)))
            self.floor = float(np.exp(np.quantile(resid, _FLOOR_QUANTILE)))
        self.calibrated = True

    def cmi_sums(self, perms: np.ndarray) -> np.ndarray:
        """Sums over the stratum's samples of the KSG terms, u permuted by each row of ``perms``
        (P, n_c) local indices -> (P,)."""
        perms = np.ascontiguousarray(perms, dtype=np.int64)
        if self.compiled:
            eps = np.empty((0, 0))
            if self.fitted < _FIT_SHUFFLES and len(perms) > 1:  # the first shuffles calibrate
                eps = np.empty(perms.shape)
            sums = _cmi_kernel.stratum_sums(perms, self.u, self.v, self.order, self.dist,
                                            self.sorted_u, self.u_dist, self.v_radius,
                                            self.u_radius, self.factor, self.floor, self.k,
                                            _SHRINK, self.const, self.psi, eps)
            if eps.size:
                self._calibrate(perms, eps)
            return sums
        out = np.empty(len(perms))
        rows = np.arange(self.n)
        for b, perm in enumerate(perms):
            pts = np.hstack([self.u[perm], self.v])
            tree = cKDTree(pts, balanced_tree=False, compact_nodes=False)
            eps = tree.query(pts, k=[self.k + 1], p=np.inf)[0][:, 0]
            # Strictly closer than eps: shrinking by far less than the jitter keeps the k-th
            # neighbour itself out of the sub-space counts despite rounding in |a - b| < eps.
            eps *= _SHRINK
            n_u = self.u_count.count(perm, eps)
            n_v = self.v_count.count(rows, eps)
            out[b] = np.sum(self.const - digamma(n_u) - digamma(n_v))
        return out


def neighbours(k: float, n: int) -> int:
    """The neighbour count for a sample of n: k itself (a whole number >= 1), or the fraction
    k in (0, 1) of n, rounded, at least 1."""
    return int(k) if k >= 1 else max(1, int(round(k * n)))


def _local_permutation(neighbors: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Runge's restricted shuffle: each sample takes the x of a not yet used z-neighbour."""
    n = len(neighbors)
    order = rng.permutation(n)
    choices = rng.permuted(neighbors, axis=1)
    used = np.zeros(n, dtype=bool)
    perm = np.empty(n, dtype=np.int64)
    for i in order:
        row = choices[i]
        free = row[~used[row]]
        j = free[0] if len(free) else row[0]
        perm[i] = j
        used[j] = True
    return perm


def _fp_cmi(x: np.ndarray, y: np.ndarray, z: np.ndarray, k: int) -> float:
    """Unstratified Frenzel-Pompe CMI estimate for a continuous z (k-d trees everywhere)."""
    xyz = np.hstack([x, y, z])
    eps = cKDTree(xyz).query(xyz, k=[k + 1], p=np.inf)[0][:, 0]
    r = np.nextafter(eps, 0)
    counts = [cKDTree(a).query_ball_point(a, r, p=np.inf, return_length=True)
              for a in (np.hstack([x, z]), np.hstack([y, z]), z)]
    return float(digamma(k) - np.mean(digamma(counts[0]) + digamma(counts[1]) - digamma(counts[2])))


def _shuffle_x(x: np.ndarray, y: np.ndarray, k: int, pairs: int = 20_000) -> bool:
    """Whether to shuffle x (True) or y within this class: the same statistic either way, but the
    compiled scan visits about k / P(d < eps) listed neighbours of the fixed variable, d being the
    shuffled variable's distance, so the variable more often near at the joint k-th neighbour
    distance eps is shuffled. Estimated on a fixed set of pairs (no randomness)."""
    n = len(x)
    shifts = np.arange(1, min(n - 1, max(1, pairs // n)) + 1)
    i = np.tile(np.arange(n), len(shifts))
    j = (i + np.repeat(shifts, n)) % n
    dx = np.abs(x[i] - x[j]).max(axis=1)
    dy = np.abs(y[i] - y[j]).max(axis=1)
    eps = np.quantile(np.maximum(dx, dy), min(1.0, k / n))
    return bool(np.mean(dx <= eps) >= np.mean(dy <= eps))


def _inverse(perms: np.ndarray) -> np.ndarray:
    """Row-wise inverse permutations: shuffling y by them pairs the same (x, y) as shuffling x."""
    inv = np.empty_like(perms)
    np.put_along_axis(inv, perms, np.broadcast_to(np.arange(perms.shape[1]), perms.shape), axis=1)
    return inv


def cmiknn(x, y, z, *, seed: int | None = None, k: float = DEFAULT_K, permutations: int = 1000,
           jitter: float = 1e-6, shuffle_neighbors: int = 5,
           z_discrete: bool | None = None, chunk: int = 32, backend: str = "auto",
           full: bool = False) -> float | CIResult:
    """p-value of H0: x independent of y given z with the kNN CMI shuffle test.

    Args:
        x, y: (n,) or (n, d) arrays. z: (n,) class labels (integer/bool/str) or (n, d) floats.
        seed: seeds the jitter and the shuffles (numpy Generator).
        k: nearest neighbours of the estimator: a whole number >= 1, or a fraction in (0, 1) of
            the samples (of each class for a discrete z; Runge 2018 recommends 0.1-0.2). A class
            with at most k + 1 samples cannot be estimated: it is left out and counted
            (``n_left_out``, and a warning unless ``full``).
        permutations: number B of shuffles (>= 1000 for decisions at p < 0.01).
        jitter: tie-breaking noise in standard deviations.
        shuffle_neighbors: z-neighbours of the local shuffle for a continuous z.
        z_discrete: force (True) or forbid (False) treating z as class labels; default by dtype.
        chunk: shuffles evaluated together (memory vs. speed).
        backend: "numba" (compiled neighbour scan; needs ``pip install 'medattn[fast]'``),
            "scipy" (k-d trees) or "auto" (numba when installed). Same p-values either way.
        full: return a :class:`CIResult` (p-value, the CMI estimate in nats, the effect = the
            estimate minus its mean under the shuffles, counts) instead of the p-value.
    Returns:
        the shuffle-test p-value in [1 / (B + 1), 1] (or the CIResult).
    """
    x, y, cond = check_xyz(x, y, z, z_discrete)
    if not (isinstance(k, (int, float, np.integer, np.floating)) and (
            (k >= 1 and int(k) == k) or 0 < k < 1)):
        raise ConfigError(f"cmiknn: option k={k!r} must be a whole number >= 1 or a fraction "
                          "in (0, 1) of the samples")
    permutations = check_positive_int(permutations, "permutations")
    chunk = check_positive_int(chunk, "chunk")
    if jitter < 0:
        raise ConfigError(f"cmiknn: option jitter={jitter!r} must be >= 0")
    if backend not in BACKENDS:
        raise ConfigError(f"cmiknn: option backend={backend!r} must be one of {', '.join(BACKENDS)}")
    if backend == "numba" and not _cmi_kernel.available():
        raise ConfigError("cmiknn: backend='numba' needs numba: pip install 'medattn[fast]' "
                          "(or use backend='scipy')")
    compiled = backend != "scipy" and _cmi_kernel.available()
    if backend == "auto" and not compiled:
        warn_if_slow()
    rng = np.random.default_rng(seed)
    n = len(x)
    x = standardize(x) + jitter * rng.standard_normal(x.shape)
    y = standardize(y) + jitter * rng.standard_normal(y.shape)

    if not cond.discrete:
        zc = standardize(cond.values) + jitter * rng.standard_normal(cond.values.shape)
        kp = min(check_positive_int(shuffle_neighbors, "shuffle_neighbors"), n)
        kn = min(neighbours(k, n), n - 1)
        neighbors = cKDTree(zc).query(zc, k=kp, p=np.inf)[1].reshape(n, kp)
        observed = _fp_cmi(x, y, zc, kn)
        null = np.array([_fp_cmi(x[_local_permutation(neighbors, rng)], y, zc, kn)
                         for _ in range(permutations)])
        p_value = permutation_pvalue(observed, null)
        return null_result(p_value, observed, null, n, 0, scale_effect=False) if full else p_value

    strata, swapped, left_out = [], [], 0
    for idx in cond.strata():
        kc = neighbours(k, len(idx))
        if len(idx) <= kc + 1:
            left_out += len(idx)
            continue
        xs, ys = np.ascontiguousarray(x[idx]), np.ascontiguousarray(y[idx])
        swap = not _shuffle_x(xs, ys, kc)
        strata.append(_Stratum(ys, xs, kc, compiled) if swap else _Stratum(xs, ys, kc, compiled))
        swapped.append(swap)
    if left_out and not full:
        warnings.warn(f"cmiknn: {left_out} of {n} samples are in classes with at most k + 1 "
                      f"samples (k={k}) and were left out of the estimate; merge small classes "
                      "or lower k", RuntimeWarning, stacklevel=2)
    used = n - left_out
    if not strata:  # no class has enough samples to estimate anything
        largest = max(len(idx) for idx in cond.strata())
        if k >= 1:  # a count that no class can hold: the option, not the data, is at fault
            raise ArgumentError(
                f"cmiknn: option {{k}}={k!r} leaves every class out: a class needs "
                f"more than k + 1 samples and the largest has {largest}; give a count from 1 "
                f"to {max(1, largest - 2)} or a fraction in (0, 1) of each class", "k")
        # too few samples in every class for any neighbour: the test cannot run (NaN, not p = 1)
        result = CIResult(float("nan"), float("nan"), float("nan"), float("nan"), float("nan"),
                          0, n)
        return result if full else float("nan")
    observed = sum(s.cmi_sums(np.arange(s.n)[None, :])[0] for s in strata)
    null = np.zeros(permutations)
    # The first few shuffles fit the radius guesses (their scans are long), then full chunks.
    starts = [0, *range(min(_CALIBRATION, chunk), permutations, chunk)]
    for start, stop in zip(starts, [*starts[1:], permutations]):
        size = stop - start
        if size <= 0:
            continue
        for s, swap in zip(strata, swapped):
            perms = rng.permuted(np.broadcast_to(np.arange(s.n), (size, s.n)), axis=1)
            null[start:start + size] += s.cmi_sums(_inverse(perms) if swap else perms)
    p_value = permutation_pvalue(observed, null)
    if not full:
        return p_value
    # The sums are over samples: divided by the samples used they are the CMI estimate in nats.
    return null_result(p_value, observed / used, null / used, used, left_out, scale_effect=False)
