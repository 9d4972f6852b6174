"""The repeated k-fold designs a study may use, each with the multiplier ``c`` of its corrected
t-test (:mod:`medattn.analysis.variance` has the method).

One table for two readers: the study config (:mod:`medattn.training.config`) refuses a design
not listed here when the config is read, hours before any test, and the analysis takes ``c`` from
it. It sits below both, importing nothing of medattn but its errors.
"""

from __future__ import annotations

from medattn.errors import ConfigError

__all__ = ["KFOLD_DESIGNS", "check_kfold_design"]

# (folds, repeats) -> c, the calibrated multiplier of n_test/n_train in the variance factor, from
# `benchmarks/calibrate_designs.py --calibrate 1500 --replicates 1000` (docs/statistics.md,
# "Designs: random splits or repeated k-fold"): the smallest c >= 1 (grid 0.05) whose null
# rejection rate at alpha 0.05 stayed <= 0.045 for both learners over 1 500 replicates. Every
# design below got c = 1 (Bouckaert & Frank's factor); on 1 000 fresh replicates their type-I
# error was 0.000-0.019 (upper 95 % bound <= 0.030). Designs not listed are not offered.
KFOLD_DESIGNS: dict[tuple[int, int], float] = {
    (5, 1): 1.0,
    (5, 2): 1.0,
    (5, 4): 1.0,
    (10, 1): 1.0,
}


def _offered() -> str:
    return ", ".join(f"{k}x{r}" for k, r in sorted(KFOLD_DESIGNS))


def check_kfold_design(folds: int, repeats: int, where: str = "final") -> None:
    """Raise :class:`ConfigError` unless ``folds`` x ``repeats`` is a calibrated k-fold design."""
    if (int(folds), int(repeats)) not in KFOLD_DESIGNS:
        raise ConfigError(
            f"`{where}.folds: {folds}` with `{where}.repeats: {repeats}` is not a k-fold design "
            f"whose corrected test has been calibrated; offered (folds x repeats): {_offered()}. "
            "Pick one of those, or use `scheme: random` with `splits: J`.")
