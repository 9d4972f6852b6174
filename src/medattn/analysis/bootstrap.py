"""Paired bootstrap of a balanced-accuracy difference over splits *and* test images.

The across-run statistics of Table 2 see only the split-to-split spread; they leave out that the
test images are themselves a sample. Out-of-distribution sets make this stark: every run is tested
on the same images, so the across-run sd contains no test-set sampling at all. This bootstrap
resamples both sources at once.

Scheme (a "pigeonhole" bootstrap for a crossed design; Owen 2007, Ann. Appl. Stat. 1(1)): splits
and images are crossed, not nested: an OOD image is in every split's test set, and in-distribution
test sets of random splits of one pool overlap. Each resample draws

- the splits: J of the J splits with replacement, and
- the images: a multinomial weight for every distinct test image of the comparison (all images
  of all splits' test sets, identified by ``image_id``), N draws with replacement from the N
  images;

and every split's balanced accuracy is recomputed for both models with the *same* image weights
(so an image that appears in several test sets keeps one weight, and both models are scored on
the same resampled images). The statistic is the mean over the drawn splits of
``bacc(variant) - bacc(reference)``; the CI is the percentile interval. Resampling both factors
is mildly conservative (Owen 2007); the splits are treated as exchangeable draws, like the naive
paired test, i.e. without the overlap correction of the training sets.

Computation: balanced accuracy only needs per-class counts, so each image is reduced to a row of
indicators (for every split and class: in the test set, correct by the variant, correct by the
reference); images with identical rows are merged (their count becomes a multinomial category),
and one matrix product of the resampled weights with these rows gives all counts of all splits
for a block of resamples. 10 000 resamples of 10 splits x 2 000 images take about a second
(docs/benchmarks.md). For very large test sets (Camelyon17: tens of thousands of patches per
split) the summed counts are drawn from their multivariate normal approximation instead.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["BootstrapResult", "SplitPredictions", "balanced_accuracy_weighted", "image_sampling_variance",
           "paired_bootstrap", "same_images"]

# Block size in (resamples x images): bounds memory (~8 MB of int32 draws per block).
_BLOCK_CELLS = 2_000_000
# Above this many image draws (resamples x images), "auto" uses the normal approximation.
_EXACT_DRAWS = 2e8


@dataclass(frozen=True)
class SplitPredictions:
    """One split's test predictions of both models, on the same images.

    ``images``: int ids (``0..N-1``, shared across the splits of one comparison, so an image in
    several test sets has one id), ``labels``: true class (0..K-1), ``correct_a`` / ``correct_b``:
    whether the variant / the reference predicted it right; all 1-D of equal length.
    """

    images: np.ndarray
    labels: np.ndarray
    correct_a: np.ndarray
    correct_b: np.ndarray


@dataclass(frozen=True)
class BootstrapResult:
    """``diff``: observed mean over splits of bacc(variant) - bacc(reference) (percentage points);
    ``ci_low``/``ci_high``: percentile CI; ``se``: sd of the resampled statistic; ``n_splits``,
    ``n_images`` (distinct test images), ``n_resamples``, ``seed``, ``method`` (``exact`` or
    ``normal``, see :func:`paired_bootstrap`)."""

    diff: float
    ci_low: float
    ci_high: float
    se: float
    n_splits: int
    n_images: int
    n_resamples: int
    seed: int
    method: str = "exact"


def balanced_accuracy_weighted(labels, correct, weights, n_classes: int) -> np.ndarray:
    """Balanced accuracy for each row of image ``weights`` (shape (B, n)); returns shape (B,).

    The mean over classes of the weighted recall, over the classes with positive weight (as
    scikit-learn's ``balanced_accuracy_score`` with ``sample_weight``, over the classes present).
    ``labels``: (n,) ints in ``0..n_classes-1``; ``correct``: (n,) bools. Fraction in [0, 1].
    """
    labels = np.asarray(labels, dtype=np.intp)
    onehot = np.zeros((labels.size, n_classes))
    onehot[np.arange(labels.size), labels] = 1.0
    w = np.atleast_2d(np.asarray(weights, dtype=float))
    total = w @ onehot
    hits = w @ (onehot * np.asarray(correct, dtype=float)[:, None])
    return _bacc(total, hits)


def _bacc(total: np.ndarray, hits: np.ndarray) -> np.ndarray:
    present = total > 0
    recall = np.divide(hits, total, out=np.zeros_like(hits), where=present)
    return recall.sum(-1) / np.maximum(present.sum(-1), 1)


def _indicator_rows(splits: Sequence[SplitPredictions], n_classes: int) -> tuple[np.ndarray,
                                                                                  np.ndarray]:
    """Per distinct image: for each split and class, (in test set, correct a, correct b)."""
    n_images = 1 + max(int(s.images.max()) for s in splits if len(s.images))
    rows = np.zeros((n_images, len(splits), 3, n_classes), dtype=bool)
    for j, s in enumerate(splits):
        img, lab = np.asarray(s.images, np.intp), np.asarray(s.labels, np.intp)
        rows[img, j, 0, lab] = True
        rows[img, j, 1, lab] = np.asarray(s.correct_a, bool)
        rows[img, j, 2, lab] = np.asarray(s.correct_b, bool)
    rows = rows.reshape(n_images, -1)
    rows = rows[rows.any(axis=1)]  # ids that are in no test set do not count as images
    # Merge identical rows: sorting their packed bits is much faster than np.unique(axis=0).
    packed = np.ascontiguousarray(np.packbits(rows, axis=1))
    keys = packed.view(np.dtype((np.void, packed.shape[1]))).ravel()
    _, first, counts = np.unique(keys, return_index=True, return_counts=True)
    return rows[first].astype(float), counts


def _split_diffs(counts: np.ndarray, n_splits: int, n_classes: int) -> np.ndarray:
    """(B, J*3*K) summed indicators -> (B, J) bacc(a) - bacc(b) per split, in pp."""
    c = counts.reshape(len(counts), n_splits, 3, n_classes)
    total = c[:, :, 0]
    return 100.0 * (_bacc(total, c[:, :, 1]) - _bacc(total, c[:, :, 2]))


def paired_bootstrap(splits: Sequence[SplitPredictions], n_classes: int, *,
                     n_resamples: int = 10_000, confidence: float = 0.95, seed: int = 0,
                     method: str = "auto") -> BootstrapResult:
    """Paired bootstrap CI of mean bacc(variant) - bacc(reference) over splits and images (pp).

    ``splits``: one :class:`SplitPredictions` per split (both models on the same test images);
    resampling as in the module docstring; seeded by ``seed`` (same inputs and seed, same CI).
    ``method``: ``exact`` draws the multinomial image weights; ``normal`` draws the summed
    per-class counts from their normal approximation (mean and covariance of the multinomial:
    cost independent of the number of images, for test sets of tens of thousands of images);
    ``auto`` uses ``exact`` unless that would draw more than 2e8 images (resamples x distinct
    images) and every class of every split has at least 100 test images.
    """
    if not splits or not all(len(s.images) for s in splits):
        raise ValueError("paired_bootstrap needs at least one split, each with test images")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    if method not in ("auto", "exact", "normal"):
        raise ValueError(f"method must be 'auto', 'exact' or 'normal', got {method!r}")
    j = len(splits)
    rows, mult = _indicator_rows(splits, n_classes)
    n = int(mult.sum())
    observed_counts = mult[None, :] @ rows
    observed = float(_split_diffs(observed_counts, j, n_classes).mean())
    if method == "auto":
        totals = observed_counts.reshape(j, 3, n_classes)[:, 0]
        large = totals[totals > 0].min() >= 100
        method = "normal" if large and n_resamples * n > _EXACT_DRAWS else "exact"
    rng = np.random.default_rng(seed)
    probs = mult / n
    if method == "normal":
        mean = n * (probs @ rows)
        cov = n * ((rows * probs[:, None]).T @ rows - np.outer(probs @ rows, probs @ rows))
        vals, vecs = np.linalg.eigh(cov)  # cov is singular where counts are tied (hits = total)
        factor = vecs * np.sqrt(np.clip(vals, 0.0, None))
        block = n_resamples
    else:
        # The row of each of the n images: n uniform draws mapped to rows and counted are one
        # multinomial draw of the row weights (several times faster than rng.multinomial).
        row_of = np.repeat(np.arange(len(rows), dtype=np.int32), mult)
        rows32 = rows.astype(np.float32)  # 0/1 and counts < 2**24: exact in float32
        block = max(1, _BLOCK_CELLS // max(n, j))
    stat = np.empty(n_resamples)
    for start in range(0, n_resamples, block):
        b = min(block, n_resamples - start)
        if method == "exact":
            drawn = row_of[rng.integers(0, n, (b, n), dtype=np.int32)]
            drawn += (np.arange(b, dtype=np.int32) * len(rows))[:, None]
            weights = np.bincount(drawn.ravel(), minlength=b * len(rows)).reshape(b, -1)
            counts = (weights.astype(np.float32) @ rows32).astype(float)
        else:
            counts = _clip_counts(mean + rng.standard_normal((b, len(mean))) @ factor.T,
                                  j, n_classes)
        per_split = _split_diffs(counts, j, n_classes)
        split_counts = rng.multinomial(j, np.full(j, 1.0 / j), size=b)
        stat[start:start + b] = (split_counts * per_split).sum(1) / j
    alpha = 1.0 - confidence
    lo, hi = np.quantile(stat, [alpha / 2, 1 - alpha / 2])
    return BootstrapResult(observed, float(lo), float(hi),
                           float(stat.std(ddof=1)) if n_resamples > 1 else math.nan,
                           j, n, int(n_resamples), int(seed), method)


def _clip_counts(counts: np.ndarray, n_splits: int, n_classes: int) -> np.ndarray:
    # Normal draws of counts can stray outside 0 <= hits <= total; counts cannot.
    c = counts.reshape(len(counts), n_splits, 3, n_classes)
    c[:, :, 0] = np.maximum(c[:, :, 0], 0.0)
    c[:, :, 1:] = np.clip(c[:, :, 1:], 0.0, c[:, :, :1])
    return c.reshape(len(counts), -1)


def image_sampling_variance(splits: Sequence[SplitPredictions], n_classes: int) -> tuple[float,
                                                                                         int]:
    """Variance (pp^2) of the mean over splits of bacc(variant) - bacc(reference) that comes
    from sampling the test images, and the number of distinct images N; delta method.

    Each distinct image (``images`` id) is one draw from the test population. On split j an image
    of class k moves that split's difference by its influence
    ``(1/K_j) ((a - recall_a,jk) - (b - recall_b,jk)) / n_jk`` (a, b: whether each model got it
    right; K_j classes present, n_jk their images); an image's influence on the mean is the
    average over the J splits (0 where it is not tested), and the variance is
    ``N / (N - 1) * sum_i influence_i^2``. Equals the variance of :func:`paired_bootstrap` over
    the images alone for large N (tested). Both models on the same images of a split; cost
    linear in the number of predictions (20 000 images x 10 splits: milliseconds).
    """
    if not splits or not all(len(s.images) for s in splits):
        raise ValueError("image_sampling_variance needs at least one split, each with images")
    img = np.concatenate([np.asarray(s.images, np.intp) for s in splits])
    lab = np.concatenate([np.asarray(s.labels, np.intp) for s in splits])
    j = np.repeat(np.arange(len(splits)), [len(s.images) for s in splits])
    diff = np.concatenate([np.asarray(s.correct_a, float) - np.asarray(s.correct_b, float)
                           for s in splits])
    cell = j * n_classes + lab  # (split, class)
    n_cell = np.bincount(cell, minlength=len(splits) * n_classes).astype(float)
    mean_cell = np.bincount(cell, diff, minlength=n_cell.size) / np.maximum(n_cell, 1)
    k_present = (n_cell.reshape(len(splits), n_classes) > 0).sum(1)
    infl = (diff - mean_cell[cell]) / (n_cell[cell] * k_present[j]) / len(splits)
    ids, per_image = np.unique(img, return_inverse=True)
    psi = np.bincount(per_image, infl, minlength=ids.size)
    n = int(ids.size)
    if n < 2:
        return math.nan, n
    return float(1e4 * n / (n - 1) * np.sum(psi**2)), n


def same_images(splits: Sequence[SplitPredictions]) -> bool:
    """Whether every split tests exactly the same set of images (a shared test set)."""
    sets = [np.unique(np.asarray(s.images)) for s in splits]
    return all(len(x) == len(sets[0]) and np.array_equal(x, sets[0]) for x in sets[1:])
