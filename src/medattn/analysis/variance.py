"""The variance factor of the corrected t-test, per study design: one place for every design.

The corrected test (Nadeau & Bengio 2003) estimates the variance of the mean of J per-run
differences as ``s_d^2 * factor``. For J random train/test splits Bouckaert & Frank (2004) use
``factor = 1/J + n_test/n_train``. Repeated k-fold cross-validation (``r`` repetitions of ``k``
folds, J = r k) has another correlation structure between its J differences (within a repetition
the test folds are disjoint, across repetitions they are not), and the same factor is not
guaranteed to hold the test's level. Each k-fold design the tool offers therefore carries a
multiplier ``c`` calibrated by simulation (``benchmarks/calibrate_designs.py``; table and method in
``docs/statistics.md``; the table is :mod:`medattn.kfold_designs`, which the study config
reads too): ``factor = 1/J + c * n_test/n_train``, with ``c >= 1`` (never less
conservative than Bouckaert & Frank). A design without a calibrated ``c`` is refused.
"""

from __future__ import annotations

from medattn.kfold_designs import KFOLD_DESIGNS, check_kfold_design

__all__ = ["SCHEMES", "kfold_multiplier", "variance_factor"]

SCHEMES = ("random", "kfold")


def kfold_multiplier(folds: int, repeats: int) -> float:
    """The calibrated ``c`` of a k-fold design (:data:`KFOLD_DESIGNS`)."""
    check_kfold_design(folds, repeats)
    return KFOLD_DESIGNS[int(folds), int(repeats)]


def variance_factor(scheme: str, n_pairs: int, test_train_ratio: float, *,
                    folds: int | None = None, repeats: int | None = None) -> float:
    """Factor f with Var(mean difference) estimated as ``s_d^2 * f`` (dimensionless).

    ``scheme``: ``random`` (J random splits: ``1/J + r``, Bouckaert & Frank) or ``kfold``
    (``1/J + c r`` with the design's calibrated ``c``; ``folds`` and ``repeats`` name the design;
    ``repeats`` defaults to ``n_pairs / folds``) or ``official`` (one fixed split, runs differ
    by seed only: ``1/J``). ``n_pairs``: J, the number of paired differences;
    ``test_train_ratio``: r = n_test / n_train of the splits.
    """
    j = int(n_pairs)
    if j < 1:
        raise ValueError(f"n_pairs must be >= 1, got {n_pairs}")
    r = float(test_train_ratio)
    if scheme == "official":
        return 1.0 / j
    if scheme == "random":
        return 1.0 / j + r
    if scheme == "kfold":
        if folds is None:
            raise ValueError("a k-fold design needs `folds`")
        reps = repeats if repeats is not None else max(1, round(j / folds))
        return 1.0 / j + kfold_multiplier(folds, reps) * r
    raise ValueError(f"unknown scheme {scheme!r}; one of random, kfold, official")
