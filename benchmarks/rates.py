"""The rate formatter every calibration script prints its tables with (run the scripts from the
repository root as ``python benchmarks/<script>.py``: this folder is then on ``sys.path``)."""

from __future__ import annotations

import numpy as np

from medattn.analysis import stats


def rate(k, n: int | None = None) -> str:
    """``"0.048 [0.036, 0.063]"``: a rate with its exact (Clopper-Pearson) 95% CI, from ``k`` hits
    of ``n`` or, with ``n`` left out, from an array of 0/1 hits."""
    if n is None:
        k, n = int(np.sum(k)), int(np.size(k))
    r, lo, hi = stats.clopper_pearson(int(k), int(n))
    return f"{r:.3f} [{lo:.3f}, {hi:.3f}]"
