"""Classification metrics recorded per evaluated set: balanced accuracy, recalls, confusion."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def summarize(labels: np.ndarray, preds: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    """Metrics of one set.

    ``labels``/``preds``: int arrays of shape (N,). Balanced accuracy is the mean recall over the
    classes present in ``labels`` (scikit-learn's definition), a fraction in [0, 1]; a class absent
    from the set has recall ``None``. ``confusion_matrix[i][j]`` counts true class i predicted j.
    """
    k = len(classes)
    labels, preds = np.asarray(labels, dtype=np.int64), np.asarray(preds, dtype=np.int64)
    if labels.shape != preds.shape or labels.ndim != 1:
        raise ValueError(f"labels {labels.shape} and preds {preds.shape} must be equal 1-d shapes")
    if len(labels) and (min(labels.min(), preds.min()) < 0 or max(labels.max(), preds.max()) >= k):
        raise ValueError(f"labels and preds must be class indices 0..{k - 1}")
    # cm[i, j]: true class i predicted j (one bincount over the k * k cells)
    cm = np.bincount(labels * k + preds, minlength=k * k).reshape(k, k)
    support = cm.sum(axis=1)
    recall = [float(cm[i, i] / support[i]) if support[i] else None for i in range(k)]
    present = [r for r in recall if r is not None]
    return {
        "balanced_accuracy": float(np.mean(present)) if present else float("nan"),
        "per_class_recall": {c: r for c, r in zip(classes, recall)},
        "confusion_matrix": cm.astype(int).tolist(),
        "n": int(len(labels)),
    }


def balanced_accuracy(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> float:
    """Mean per-class recall over the classes present in ``labels`` (fraction in [0, 1])."""
    return summarize(labels, preds, [str(i) for i in range(num_classes)])["balanced_accuracy"]
