"""Compiled inner loops of the stratified CMIknn shuffle test (numba, optional).

:func:`stratum_sums` returns, for one class and a batch of shuffles, the sums of the Kraskov terms
``psi(k) + psi(n) - psi(n_u) - psi(n_v)`` that :mod:`medattn.analysis.citests.cmiknn` also computes
with scipy k-d trees. Both use the same floating-point distances and counts, so they agree.

How. u is shuffled, v stays put (the caller picks which of x, y is which), so each sample's
v-neighbours sorted by v-distance are listed once (:func:`neighbour_lists`). Under a shuffle the
joint max-norm distance to the m-th listed neighbour is ``max(|u_a - u_b|_inf, dist[i, m])``. For
a radius ``r``, every sample closer than ``r`` in the joint space is among the listed neighbours
with ``dist < r``, so one branch-free pass over that prefix collects them; if there are at least
k + 1, the (k + 1)-th smallest of them (the sample itself included) is the exact k-th neighbour
distance. ``r`` is a guess (``factor * v_radius[i] * u_radius[a]``, fitted by
:class:`medattn.analysis.citests.cmiknn._Stratum`); a guess that was too small is enlarged towards
k + 1 samples, then the whole list and, where it runs out, every sample is scanned. The guess only
decides how much is scanned, never the result. Distances below a second, mostly too small guess
(``floor``) are only counted; the k-th is selected among the rest by counting them in bins
(:func:`_binned_kth`), which has no unpredictable branches, unlike a quickselect. The counts are
binary searches: in the sorted u values (1-D u) or sorted u-distance rows, and in the sample's
sorted v-distances. Samples are visited once per batch of shuffles, so a sample's list is read
from memory once per batch.

numba is optional (``pip install 'medattn[fast]'``); without it :func:`available` is False and
CMIknn uses the scipy path.
"""

from __future__ import annotations

import numpy as np

try:
    import numba
except ImportError:  # optional dependency
    numba = None

_GROWTH = 1.5  # factor by which a guess with no sample inside is enlarged
_TRIES = 3  # guesses before the whole list is scanned
_BINS = 64  # bins of the distances within the guessed radius, to select the k-th by counting
_LEVELS = 3  # binning levels before a quickselect
_FEW = 12  # values few enough for the selection by counting (its cost grows like count^2)


def available() -> bool:
    """True when numba is importable (the compiled path can be used)."""
    return numba is not None


def _jit(fn):
    # cache=True: compiled once per machine (in __pycache__, or numba's user cache directory
    # when the package directory is read-only), not once per process.
    return numba.njit(cache=True, nogil=True, error_model="numpy")(fn) if numba is not None else None


def _max_dist(v, i, j):
    d = 0.0
    for c in range(v.shape[1]):
        e = abs(v[i, c] - v[j, c])
        if e > d:
            d = e
    return d


def _lower_bound(a, x, stop):
    """#{a[:stop] < x} for sorted a (side="left"), without data-dependent branches."""
    base, size = 0, stop
    while size > 1:
        half = size // 2
        if a[base + half - 1] < x:  # compiles to a select: the same steps whatever x is
            base += half
        size -= half
    if size == 1 and a[base] < x:
        base += 1
    return base


def _upper_bound(a, x, stop):
    """#{a[:stop] <= x} for sorted a (side="right")."""
    base, size = 0, stop
    while size > 1:
        half = size // 2
        if a[base + half - 1] <= x:
            base += half
        size -= half
    if size == 1 and a[base] <= x:
        base += 1
    return base


def _kth_smallest(vals, count, k):
    """The (k + 1)-th smallest of vals[:count] (count > k). Small counts: the least x with at
    least k + 1 values <= x, found by counting (no unpredictable branches); larger ones: an
    in-place quickselect (reorders vals[:count]; no allocation, unlike np.partition)."""
    if count > 32:
        return _quickselect(vals, count, k)
    best = np.inf
    for j in range(count):
        x = vals[j]
        rank = 0
        for t in range(count):
            rank += vals[t] <= x
        if rank > k and x < best:
            best = x
    return best


def _binned_kth(vals, count, k, hist, scale, few):
    """The (k + 1)-th smallest of vals[:count] (count > k, all >= 0): count them in the bins
    ``int(v * scale)`` (into ``hist``), keep the values of the bin holding it (in ``few``), and
    repeat within that bin's range until few are left for a selection by counting. Binning is
    monotone, so ranks carry over. Much cheaper than a quickselect over all of them, whose
    branches mispredict; ties (a feature with many equal values) need the finer levels."""
    src = vals
    low = 0.0
    for _ in range(_LEVELS):
        hist[:] = 0
        for t in range(count):
            hist[int(min((src[t] - low) * scale, _BINS))] += 1
        b = 0
        while hist[b] <= k:
            k -= hist[b]
            b += 1
        kept = 0
        for t in range(count):  # branch-free and in place: store, keep if in bin b
            x = src[t]
            few[kept] = x
            kept += int(min((x - low) * scale, _BINS)) == b
        count = kept
        src = few
        if count <= _FEW:
            return _kth_smallest(few, count, k)
        low += b / scale
        scale *= _BINS
    return _quickselect(few, count, k)


def _quickselect(a, count, k):
    """a[k] after sorting a[:count] (Hoare selection, median-of-three pivots), in place."""
    lo, hi = 0, count - 1
    while hi > lo:
        mid = (lo + hi) // 2
        x, y, w = a[lo], a[mid], a[hi]  # median of three as the pivot
        pivot = max(min(x, y), min(max(x, y), w))
        i, j = lo, hi
        while i <= j:
            while a[i] < pivot:
                i += 1
            while a[j] > pivot:
                j -= 1
            if i <= j:
                a[i], a[j] = a[j], a[i]
                i += 1
                j -= 1
        if k <= j:
            hi = j
        elif k >= i:
            lo = i
        else:
            return a[k]
    return a[k]


def _neighbour_lists(v, width):
    """(order (n, L) int64, dist (n, L) float64): each sample's L = min(n, width) nearest samples
    in v (max-norm), itself first, sorted by distance."""
    n = v.shape[0]
    width = min(n, width)
    order = np.empty((n, width), dtype=np.int32)  # half the memory traffic of int64
    dist = np.empty((n, width))
    row = np.empty(n)
    for i in range(n):
        for j in range(n):
            row[j] = _max_dist(v, i, j)
        row[i] = -1.0  # itself first, whatever the ties
        if width < n:
            cut = np.partition(row, width - 1)[width - 1]
            idx = np.empty(width + 1, dtype=np.int64)  # + 1: the branch-free store
            c = 0
            for j in range(n):  # strictly below the cut first (branch-free), then ties
                idx[c] = j
                c += row[j] < cut
            for j in range(n):
                if c < width and row[j] == cut:
                    idx[c] = j
                    c += 1
            idx = idx[:width]
        else:
            idx = np.arange(n)
        sel = row[idx]
        o = np.argsort(sel)
        for m in range(width):
            order[i, m] = idx[o[m]]
            dist[i, m] = sel[o[m]]
        dist[i, 0] = 0.0
    return order, dist


def _count_within(rows, owner, eps, points):
    """#{j: |points_j - points_owner|_inf < eps} (self included), from the owner's sorted distance
    row when it reaches eps, else by comparing with every point."""
    width = rows.shape[1]
    if width == points.shape[0] or rows[owner, width - 1] >= eps:
        return _lower_bound(rows[owner], eps, width)
    count = 0
    for j in range(points.shape[0]):
        count += _max_dist(points, owner, j) < eps
    return count


def _term(p, i, a, order, dist, up, up1, up2, sorted_u, u, u_dist, v, radius, floor, k, shrink,
          const, psi, near, hist, few, everyone, inv_dim, eps_out):
    """The Kraskov term ``const - psi[n_u] - psi[n_v]`` of sample i holding u[a] in shuffle p;
    writes the joint k-th neighbour distance to eps_out[p, i] unless eps_out is empty."""
    n, du = u.shape
    width = order.shape[1]
    row_o = order[i]
    row_d = dist[i]
    upp1, upp2, uppp = up1[p], up2[p], up[p]
    q, q2 = upp1[i], upp2[i]
    eps = -1.0
    scanned = 0
    for _ in range(_TRIES):
        # Distances below ``floor`` (a guess that is rarely too large) are only counted: the
        # k-th lies above it, so the selection needs only those in [floor, radius).
        count = 0
        below = 0
        m = 0
        while m < width and row_d[m] < radius:  # branch-free: store, count if closer
            j = row_o[m]
            if du == 1:  # loop-invariant: the compiler makes one loop per case
                d = abs(q - upp1[j])
            elif du == 2:  # both columns from one cache line
                d = max(abs(q - uppp[j, 0]), abs(q2 - uppp[j, 1]))
            else:
                d = _max_dist(up[p], i, j)
            dvm = row_d[m]
            if dvm > d:
                d = dvm
            near[count] = d
            below += d < floor
            count += (d < radius) & (d >= floor)
            m += 1
        scanned = m
        if below > k:  # the floor was too high: again, keeping everything
            floor = 0.0
            continue
        if below + count > k:
            rank = k - below
            eps = (_kth_smallest(near, count, rank) if count <= _FEW else
                   _binned_kth(near, count, rank, hist, _BINS / radius, few))
            break
        if scanned == width:
            break
        # The count grows about like radius^D: aim a little beyond k + 1 (a larger radius scans
        # more, and may run past the listed neighbours).
        radius *= _GROWTH if below + count == 0 else 1.02 * ((k + 1.5) / (below + count)) ** inv_dim
    if eps < 0.0:  # the guesses were too small: every listed neighbour
        for m in range(width):
            d = _max_dist(up[p], i, row_o[m])
            near[m] = max(d, row_d[m])
        eps = _kth_smallest(near, width, k) if width > k else np.inf
        scanned = width
    if scanned == width and width < n and eps > row_d[width - 1]:
        # unlisted samples (v-distance >= the last listed one) may be nearer: all samples
        for j in range(n):
            everyone[j] = max(_max_dist(up[p], i, j), _max_dist(v, i, j))
        eps = _kth_smallest(everyone, n, k)
        scanned = -1
    if eps_out.shape[0] > 0:
        eps_out[p, i] = eps
    eps *= shrink
    if scanned >= 0:  # every listed distance below eps lies in the scanned prefix
        n_v = _lower_bound(row_d, eps, scanned)
    else:
        n_v = _count_within(dist, i, eps, v)
    if du == 1:
        n_u = _lower_bound(sorted_u, q + eps, n) - _upper_bound(sorted_u, q - eps, n)
    else:
        n_u = _count_within(u_dist, a, eps, u)
    return const - psi[n_u] - psi[n_v]


def _stratum_sums(perms, u, v, order, dist, sorted_u, u_dist, v_radius, u_radius, factor,
                  floor_factor, k, shrink, const, psi, eps_out):
    """(P,) sums over the stratum of ``const - psi[n_u] - psi[n_v]``, u (n, d_u) shuffled by each
    row of ``perms`` (P, n). u-counts come from ``sorted_u`` (n,) when d_u = 1, else from the sorted
    u-distance rows ``u_dist`` (n, L_u). ``factor * v_radius[i] * u_radius[a]`` is the first guess
    of the k-th neighbour distance of sample i holding u[a] (mostly too large), ``floor_factor``
    times the same a guess mostly too small (0: none). Writes the distances to ``eps_out`` (P, n)
    unless it is empty (used to calibrate the factors)."""
    n_perm, n = perms.shape
    du = u.shape[1]
    width = order.shape[1]
    out = np.zeros(n_perm)
    near = np.empty(width)
    hist = np.zeros(_BINS + 1, dtype=np.int64)
    few = np.empty(width)
    everyone = np.empty(n)
    inv_dim = 1.0 / (du + v.shape[1])
    # Each shuffle's u in sample order; u's first two columns apart: tighter loops for d_u = 1, 2.
    up = np.empty((n_perm, n, du))
    up1 = np.empty((n_perm, n))
    up2 = np.empty((n_perm, n))
    holder = np.empty((n_perm, n), dtype=np.int64)  # holder[p, a]: the sample holding u[a]
    for p in range(n_perm):
        for i in range(n):
            a = perms[p, i]
            for c in range(du):
                up[p, i, c] = u[a, c]
            up1[p, i] = u[a, 0]
            up2[p, i] = u[a, du - 1]
            holder[p, a] = i
    # Each sample's lists are read once for all shuffles of the batch (they stay in cache) rather
    # than streamed from memory once per shuffle. With d_u > 1 the u-counts search sorted rows
    # u_dist[a]: then the loop runs over the u values a instead, keeping those rows in cache
    # (a binary search in a row from memory waits for every step; a scan prefetches).
    for outer in range(n):
        for p in range(n_perm):
            if du == 1:
                i, a = outer, perms[p, outer]
            else:
                i, a = holder[p, outer], outer
            guess = v_radius[i] * u_radius[a]
            out[p] += _term(p, i, a, order, dist, up, up1, up2, sorted_u, u, u_dist, v,
                            factor * guess, floor_factor * guess, k, shrink, const, psi, near,
                            hist, few, everyone, inv_dim, eps_out)
    return out


if numba is not None:
    _max_dist = _jit(_max_dist)
    _lower_bound = _jit(_lower_bound)
    _upper_bound = _jit(_upper_bound)
    _quickselect = _jit(_quickselect)
    _kth_smallest = _jit(_kth_smallest)
    _binned_kth = _jit(_binned_kth)
    _count_within = _jit(_count_within)
    _term = numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")(_term)
    neighbour_lists = _jit(_neighbour_lists)
    stratum_sums = _jit(_stratum_sums)
else:
    neighbour_lists = stratum_sums = None
