"""The settings of an analysis, declared once: their defaults, their checks and what they mean.

:class:`CompareSettings` holds everything Table 2 depends on (``medattn compare``, ``medattn
report``, :func:`medattn.analysis.compare.compare_runs`, ...); :class:`PlanSettings` what a plan
depends on (``medattn plan``); :class:`SequentialSettings` the stop-when-decided design (``medattn
study --until-decided``). All are frozen: an entry point takes one (``settings=``), the CLI
builds one from its flags, and the outputs record ``dataclasses.asdict(settings)``. A bad value
raises :class:`~medattn.errors.ArgumentError` naming the argument (the CLI shows its flag).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace

from medattn.errors import ArgumentError

__all__ = ["CORRECTIONS", "TESTS", "TEST_LABELS", "CompareSettings", "PlanSettings",
           "SequentialSettings", "recorded"]

CORRECTIONS = ("holm", "none", "bonferroni", "holm-sidak", "fdr_bh", "fdr_by")
TESTS = ("corrected", "paired", "welch")
TEST_LABELS = {"corrected": "corrected t-test", "paired": "paired t-test", "welch": "Welch's t-test"}


def _number(value, name: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ArgumentError(f"{{{name}}} must be a number, got {value!r}.", name) from None
    if not math.isfinite(v):
        raise ArgumentError(f"{{{name}}} must be a finite number, got {value!r}.", name)
    return v


def _within(value, name: str, low: float, high: float, what: str = "") -> None:
    if not low < _number(value, name) < high:
        raise ArgumentError(f"{{{name}}} must lie in ({low:g}, {high:g}){what}, got {value}.",
                            name)


def _whole(value, name: str, low: int, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ArgumentError(f"{{{name}}} must be a whole number >= {low} ({what}), got "
                            f"{value!r}.", name)


def _margin(value) -> None:
    if not _number(value, "margin") > 0:
        raise ArgumentError(f"{{margin}} must be > 0 pp (the equivalence margin and Bayesian "
                            f"ROPE), got {value}.", "margin")


@dataclass(frozen=True)
class CompareSettings:
    """What Table 2 depends on (docs/statistics.md).

    ``alpha``: significance level (CIs at 1 - alpha). ``margin``: TOST equivalence margin and
    Bayesian ROPE, pp. ``power``: for the detectable difference. ``correction``: multiple-
    comparison correction within each column (``holm``, ``none`` or a statsmodels
    ``multipletests`` method). ``test``: the test that marks the table, ``corrected``
    (Nadeau-Bengio), ``paired`` (naive) or ``welch`` (the paper's); ``None``: ``corrected`` for
    runs, ``welch`` for a summary (:meth:`for_source`). ``test_train_ratio``: n_test / n_train
    of the splits for the corrected and Bayesian tests (``None``: from the run records; a
    summary needs it for ``test="corrected"``). ``bootstrap``: resamples of the paired bootstrap
    (0 = none) and ``seed`` its seed. ``include_diverged``: diverged final runs enter Table 2.
    """

    alpha: float = 0.05
    margin: float = 1.0
    power: float = 0.8
    correction: str = "holm"
    test: str | None = None
    test_train_ratio: float | None = None
    bootstrap: int = 10_000
    seed: int = 0
    include_diverged: bool = False

    def __post_init__(self) -> None:
        _within(self.alpha, "alpha", 0, 1)
        _within(self.power, "power", 0, 1)
        _margin(self.margin)
        if self.correction not in CORRECTIONS:
            raise ArgumentError(f"{{correction}} {self.correction!r} is unknown; use one of "
                                f"{', '.join(CORRECTIONS)}.", "correction")
        if self.test is not None and self.test not in TESTS:
            raise ArgumentError(f"{{test}} {self.test!r} is unknown; use one of "
                                f"{', '.join(TESTS)}.", "test")
        r = self.test_train_ratio
        try:
            bad = r is not None and not (math.isfinite(float(r)) and float(r) > 0)
        except (TypeError, ValueError):
            bad = True
        if bad:
            raise ArgumentError(f"{{test_train_ratio}} must be a finite number > 0 (n_test / "
                                f"n_train of the splits, e.g. 0.2857 for 70/10/20 splits), got "
                                f"{r}; for no correction use {{test}} paired (runs) or welch.",
                                "test_train_ratio", "test")
        _whole(self.bootstrap, "bootstrap", 0, "resamples; 0 = no bootstrap")
        _whole(self.seed, "seed", 0, "the bootstrap's seed")

    def for_source(self, summary: bool) -> CompareSettings:
        """These settings with ``test`` resolved: ``welch`` for a summary, else ``corrected``."""
        if self.test is not None:
            return self
        return replace(self, test="welch" if summary else "corrected")

    @property
    def marking_test(self) -> str:
        """The test that marks the table, once resolved by :meth:`for_source`."""
        if self.test is None:
            raise ValueError("CompareSettings.test is not resolved yet: call for_source() first")
        return self.test

    def as_dict(self) -> dict:
        """The settings as the outputs record them."""
        return asdict(self)

    @classmethod
    def from_dict(cls, recorded: dict) -> CompareSettings:
        """The settings an output recorded (:meth:`as_dict`; other keys, such as ``design``,
        are left out)."""
        return cls(**{f.name: recorded[f.name] for f in fields(cls) if f.name in recorded})


def recorded(settings: dict | None) -> CompareSettings:
    """The settings a Table 2 recorded (``CompareResult.settings``), for its renderers: missing
    keys take the defaults, a missing test reads as ``welch`` (a table without settings is
    read as the paper's)."""
    return CompareSettings.from_dict(settings or {}).for_source(summary=True)


@dataclass(frozen=True)
class PlanSettings:
    """What a plan depends on (docs/statistics.md, "Planning a study that can decide").

    ``delta``: the true difference to detect, pp (must exceed ``margin``); ``margin``: the
    Bayesian ROPE, pp (as :class:`CompareSettings`); ``power``: the target probability of
    deciding right; ``threshold``: the posterior probability a decision needs; ``alpha``: the
    corrected test's level; ``budget``: recommend only designs within this many hours (None:
    any).
    """

    delta: float = 2.0
    margin: float = 1.0
    power: float = 0.8
    threshold: float = 0.95
    alpha: float = 0.05
    budget: float | None = None

    def __post_init__(self) -> None:
        _margin(self.margin)
        if not abs(_number(self.delta, "delta")) > self.margin:
            raise ArgumentError(f"{{delta}} {self.delta} pp does not exceed {{margin}} "
                                f"{self.margin} pp: a true difference inside the margin (the "
                                "ROPE) is one the Bayesian test should call 'equivalent', not "
                                "'better'; plan for a {delta} larger than {margin}.",
                                "delta", "margin")
        _within(self.power, "power", 0, 1)
        _within(self.threshold, "threshold", 0.5, 1)
        _within(self.alpha, "alpha", 0, 1)
        if self.budget is not None and not _number(self.budget, "budget") > 0:
            raise ArgumentError(f"{{budget}} must be > 0 hours, got {self.budget}.", "budget")

    def as_dict(self) -> dict:
        """The settings as the outputs record them (``delta`` as its size)."""
        return {**asdict(self), "delta": abs(self.delta)}


@dataclass(frozen=True)
class SequentialSettings:
    """The stop-when-decided design (docs/statistics.md, "Stopping when decided").

    ``batch``: final splits (replicates) added per batch; ``max_splits``: the most per model
    (None: the config's ``final.splits``); ``margin``: the Bayesian ROPE, pp (as
    :class:`CompareSettings`); ``alpha``: the bound on false decisions over all looks.
    """

    batch: int = 5
    max_splits: int | None = None
    margin: float = 1.0
    alpha: float = 0.05

    def __post_init__(self) -> None:
        _whole(self.batch, "batch", 1, "replicates per batch")
        if self.max_splits is not None:
            _whole(self.max_splits, "max_splits", 1, "final splits per model")
        _margin(self.margin)
        _within(self.alpha, "alpha", 0, 1)
