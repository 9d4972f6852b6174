"""Repeated grouped, class-stratified k-fold splits: a pure function of (data, seed, k, fold).

One repetition (one ``seed``) partitions the pool into ``folds`` test folds; run ``fold`` tests on
fold ``fold`` and trains on the other k - 1, from which a validation part (about
``val_fraction`` of the pool, for model selection) is set aside. Whole groups (lesion, patient,
slide) move together, so no group is on two sides of train / val / test.

Why hand-written rather than scikit-learn's ``StratifiedGroupKFold``: that class's folds depend
on the table's row order and it draws no validation part. Here groups are taken in a canonical
order (sorted ids), each group is given the class that most of its images have, and within each
class the groups are dealt to the folds largest first, in a seeded random order among equals, in
a "snake" (0, 1, ..., k-1, k-1, ..., 0, ...) so that fold sizes and class shares come out even.
Everything is vectorised over groups (a pool of thousands of groups splits in milliseconds; the
calibration benchmark uses the same code).
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

from medattn.errors import ConfigError, DataError

__all__ = ["check_kfold", "kfold_assign", "kfold_split"]


def _rng(*parts: object) -> np.random.Generator:
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return np.random.default_rng([int.from_bytes(digest[i:i + 4], "little")
                                  for i in range(0, 16, 4)])


def check_kfold(folds: int, val_fraction: float) -> None:
    """Raise :class:`ConfigError` unless ``folds`` >= 3 and ``val_fraction`` in [0, 1 - 1/k)."""
    if int(folds) != folds or folds < 3:
        raise ConfigError(f"k-fold splits need `final.folds` >= 3 (an integer), got {folds!r}.")
    if not 0 <= val_fraction < 1 - 1 / folds:
        raise ConfigError(f"the validation share {val_fraction:g} (`train.fractions`, the middle "
                          f"value) must lie in [0, {1 - 1 / folds:.3g}) for {folds}-fold splits.")


def kfold_assign(codes: np.ndarray, labels: np.ndarray, seed: int, folds: int,
                 val_fraction: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Fold and validation membership of groups, on integer arrays.

    Args:
        codes: (n_images,) int group index per image, 0 .. n_groups - 1, in a canonical order
            (e.g. sorted group ids): the result is a function of the codes, not of the row order.
        labels: (n_images,) int class per image.
        seed: repetition seed; folds: k >= 3; val_fraction: target share of the pool (images)
            held out for validation from the k - 1 training folds of each fold.

    Returns:
        ``(test_fold, val)``: (n_groups,) int fold whose test part holds each group, and
        (folds, n_groups) bool, ``val[i, g]`` when group g is in the validation part of fold i
        (never for a group of fold i itself).
    """
    check_kfold(folds, val_fraction)
    codes, labels = np.asarray(codes, np.int64), np.asarray(labels, np.int64)
    n_groups = int(codes.max()) + 1
    counts = np.zeros((n_groups, int(labels.max()) + 1), np.int64)
    np.add.at(counts, (codes, labels), 1)
    if n_groups < folds:
        raise DataError(f"only {n_groups} group(s) (lesions/patients/slides): too few for "
                        f"{folds} folds without leakage; use fewer `final.folds`.")
    sizes, stratum = counts.sum(1), counts.argmax(1)
    rng = _rng("kfold", int(seed), int(folds))
    # class, then size (largest first), then a seeded random order among equals
    order = np.lexsort((rng.random(n_groups), -sizes, stratum))
    first = np.r_[0, np.flatnonzero(np.diff(stratum[order])) + 1]
    rank = np.arange(n_groups) - np.repeat(first, np.diff(np.r_[first, n_groups]))
    lap, pos = np.divmod(rank, folds)
    snake = np.where(lap % 2 == 0, pos, folds - 1 - pos)
    shift = rng.integers(folds, size=int(counts.shape[1]))  # which fold gets a class's largest
    test_fold = np.empty(n_groups, np.int64)
    test_fold[order] = (snake + shift[stratum[order]]) % folds

    val = np.zeros((folds, n_groups), bool)
    if val_fraction > 0:
        for i in range(folds):
            key = _rng("kfold-val", int(seed), int(folds), i).random(n_groups)
            free = test_fold != i
            idx = np.flatnonzero(free)
            o = idx[np.lexsort((key[idx], stratum[idx]))]
            # per class, groups in random order until the class's val target is reached
            # (a group is taken while the images before it fall short by more than half of it)
            target = val_fraction * np.bincount(stratum, weights=sizes,
                                                minlength=counts.shape[1])
            s = stratum[o]
            cum = np.cumsum(sizes[o])
            start = np.r_[0, np.flatnonzero(np.diff(s)) + 1]
            before = cum - sizes[o] - np.repeat(np.r_[0, cum[start[1:] - 1]],
                                                np.diff(np.r_[start, len(o)]))
            take = before + sizes[o] / 2 < target[s]
            if not take.any():  # a tiny pool: still one group, so model selection has data
                take[0] = True
            val[i, o[take]] = True
            if not (free & ~val[i]).any():
                raise DataError(f"fold {i} of {folds}: no group left to train on; the pool is "
                                "too small for this many folds and validation share.")
    return test_fold, val


def kfold_split(table: pd.DataFrame, seed: int, folds: int, fold: int,
                val_fraction: float = 0.1) -> dict[str, np.ndarray]:
    """Train / val / test row positions of fold ``fold`` of repetition ``seed``.

    Args:
        table: sample table with ``label`` and ``group`` columns.
        seed: repetition seed (equal seeds, equal folds, whatever the table's row order).
        folds: k >= 3; fold: 0 .. k - 1; val_fraction: share of the pool for validation.

    Returns:
        ``{"train", "val", "test"}``: sorted int64 row positions, disjoint, covering every row,
        no ``group`` in two parts. The k test parts of one seed partition the table.
    """
    if not 0 <= int(fold) < int(folds):
        raise ConfigError(f"fold {fold} is out of range for {folds} folds (0 .. {folds - 1}).")
    if len(table) == 0:
        raise DataError("cannot split an empty sample table")
    codes, _ = pd.factorize(table["group"].astype(str), sort=True)
    test_fold, val = kfold_assign(codes, table["label"].to_numpy(np.int64), seed, folds,
                                  val_fraction)
    part = np.where(test_fold == fold, 2, np.where(val[fold], 1, 0))[codes]
    return {name: np.flatnonzero(part == k).astype(np.int64)
            for k, name in enumerate(("train", "val", "test"))}
