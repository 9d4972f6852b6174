"""Classification metrics recorded per evaluated set: balanced accuracy, recalls, confusion."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import confusion_matrix


def summarize(labels: np.ndarray, preds: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    """Metrics of one set.

    ``labels``/``preds``: int arrays of shape (N,). Balanced accuracy is the mean recall over the
    classes present in ``labels`` (scikit-learn's definition), a fraction in [0, 1]; a class absent
    from the set has recall ``None``. ``confusion_matrix[i][j]`` counts true class i predicted j.
    """
    k = len(classes)
    cm = confusion_matrix(labels, preds, labels=list(range(k))) if len(labels) else np.zeros((k, k))
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
