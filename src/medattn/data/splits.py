"""Grouped, class-stratified train/val/test splits that are a pure function of the data and seed.

Why hand-written: scikit-learn's ``StratifiedGroupKFold`` makes k equal folds, not arbitrary
fractions such as 0.7/0.1/0.2, and its result depends on row order. Here whole groups (lesion,
patient or slide) are assigned greedily, largest first in a seeded random order, to the subset whose
per-class targets they fill best, so no group is on two sides, classes are as balanced as the
groups allow, and reordering the table's rows does not change which images land where.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import pandas as pd

from medattn.errors import ConfigError, DataError

SUBSETS = ("train", "val", "test")


def make_split(table: pd.DataFrame, seed: int,
               fractions: Sequence[float] = (0.7, 0.1, 0.2)) -> dict[str, np.ndarray]:
    """Split a sample table into ``train``, ``val`` and ``test`` row positions.

    Args:
        table: sample table with ``image_id``, ``label`` and ``group`` columns.
        seed: any int; equal seeds give equal splits of equal tables (row order does not matter).
        fractions: target share of images for train, val, test; non-negative, summing to 1.
            A fraction of 0 yields an empty subset.

    Returns:
        ``{"train": idx, "val": idx, "test": idx}``: sorted int64 row positions into ``table``,
        disjoint, covering every row, with no ``group`` value in two subsets.
    """
    fr = np.asarray(fractions, dtype=float)
    if fr.shape != (3,) or (fr < 0).any() or abs(fr.sum() - 1) > 1e-6:
        raise ConfigError(f"split fractions {tuple(fractions)}: give three non-negative numbers "
                          "(train, val, test) that sum to 1, e.g. 0.7 0.1 0.2")
    if len(table) == 0:
        raise DataError("cannot split an empty sample table")
    labels = table["label"].to_numpy(np.int64)
    n_classes = int(labels.max()) + 1
    # Groups in a canonical order (sorted ids), so the result depends on content, not row order.
    codes, groups = pd.factorize(table["group"].astype(str), sort=True)
    n_groups = len(groups)
    if n_groups < int((fr > 0).sum()):
        raise DataError(f"only {n_groups} group(s) (lesions/patients/slides): too few to fill "
                        f"{int((fr > 0).sum())} subsets without leakage")
    counts = np.zeros((n_groups, n_classes), dtype=np.int64)
    np.add.at(counts, (codes, labels), 1)
    sizes = counts.sum(1)

    rng = np.random.default_rng(_seed_key(seed, fr))
    order = rng.permutation(n_groups)
    order = order[np.argsort(-sizes[order], kind="stable")]  # large groups first, random among equals

    target = fr[:, None] * counts.sum(0)[None, :]           # subsets x classes
    have = np.zeros_like(target)
    assign = np.empty(n_groups, dtype=np.int64)
    active = fr > 0
    # Every subset asked for gets at least one group before any gets a second helping.
    need_first = [s for s in range(3) if active[s]]
    for g in order:
        c = counts[g]
        if need_first:
            # the still-empty subset whose targets this group fills best
            gain = [(_fill(target[s], have[s], c), s) for s in need_first]
            s = max(gain)[1]
            need_first.remove(s)
        else:
            # largest relative shortfall in the classes this group carries; ties go to random order
            short = (target - have) / np.maximum(target, 1e-9)
            score = (short * c[None, :]).sum(1) / max(c.sum(), 1)
            score[~active] = -np.inf
            best = np.flatnonzero(score == score.max())
            s = int(best[0] if len(best) == 1 else rng.choice(best))
        assign[g] = s
        have[s] += c
    row_subset = assign[codes]
    return {name: np.flatnonzero(row_subset == k).astype(np.int64) for k, name in enumerate(SUBSETS)}


def official_split(table: pd.DataFrame) -> dict[str, np.ndarray]:
    """The data set's own train/val/test partition (the ``subset`` column, e.g. MedMNIST's).

    Returns the same ``{"train", "val", "test"}`` row positions as :func:`make_split`. A fixed
    partition means runs differ only by their training seed.

    Raises:
        DataError: the table has no official partition, or one without all three parts.
    """
    spec = table.attrs.get("spec", "the data set")
    subset = table["subset"] if "subset" in table.columns else pd.Series(pd.NA, index=table.index)
    values = sorted(subset.dropna().astype(str).unique())
    if subset.isna().any() or set(values) != set(SUBSETS):
        have = ", ".join(values) if values else "none"
        raise DataError(f"{spec}: no official train/val/test partition to use (subset values: "
                        f"{have}{', some rows without one' if subset.isna().any() and values else ''}"
                        "); set `train.split: random` to draw grouped random splits instead")
    part = subset.astype(str).to_numpy()
    return {name: np.flatnonzero(part == name).astype(np.int64) for name in SUBSETS}


def split_groups_disjoint(table: pd.DataFrame, split: dict[str, np.ndarray]) -> bool:
    """True when no ``group`` value occurs in two subsets of ``split``."""
    seen: dict[str, str] = {}
    for name, idx in split.items():
        for g in set(table["group"].iloc[idx].astype(str)):
            if seen.setdefault(g, name) != name:
                return False
    return True


def _fill(target: np.ndarray, have: np.ndarray, c: np.ndarray) -> float:
    return float((np.minimum(have + c, target) - np.minimum(have, target)).sum() - 1e-3 * c.sum())


def _seed_key(seed: int, fr: np.ndarray) -> list[int]:
    digest = hashlib.sha256(f"{int(seed)}|{fr.round(9).tolist()}".encode()).digest()
    return [int.from_bytes(digest[i:i + 4], "little") for i in range(0, 16, 4)]
