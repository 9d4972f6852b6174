"""The settings of one feature-usage analysis (:class:`UsageSettings`): their defaults and their
checks, declared once. The CLI builds one from its flags, :func:`~.usage.feature_usage` takes it,
and ``settings.json`` beside Table 3 records it (``dataclasses.asdict``).

Errors name the library argument (``alpha=0.5 must lie in (0, 1)``) and carry it
(:class:`medattn.errors.ArgumentError`), so the CLI can name its own flag instead.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import re
from dataclasses import dataclass, field

from medattn.analysis.features.conditioning import CONDITIONS, MIN_PER_DIAGNOSIS
from medattn.analysis.citests import TESTS
from medattn.analysis.features.decisions import DEFAULT_TESTS, PREDICTIONS
from medattn.analysis.features.table3 import TABLE3_FEATURES
from medattn.errors import ArgumentError

SELECT_BY = ("val", "test")
PATCHES = ("auto", "detector", "annotation")
FAMILY = len(TABLE3_FEATURES)  # the Holm family of each run and conditioning
CMIKNN_K = "test_options['cmiknn']['k']"  # the argument name of CMIknn's k in errors
# Options of the test functions that the analysis sets itself, never the caller.
_FIXED_OPTIONS = ("x", "y", "z", "seed", "full")
# Bump when the p-values of the same settings change (a new test version): old rows are not resumed.
RESUME_VERSION = 3


def argument_error(argument: str, message: str) -> ArgumentError:
    """The :class:`~medattn.errors.ArgumentError` of a feature-usage argument: ``message`` is
    written as in a call (``alpha=1.5 must ...``); each mention of ``argument`` becomes a
    placeholder the CLI fills with its flag (``--alpha 1.5 must ...``)."""
    pattern = rf"(?<![\w'\[-]){re.escape(argument)}(?![\w'\]])"
    template = re.sub(pattern, lambda _: "{" + argument + "}", message)
    return ArgumentError("features: " + template, argument)


@dataclass(frozen=True)
class UsageSettings:
    """What a feature-usage analysis tests and how (every field but ``best_only``,
    ``select_by`` and ``dataset`` changes the p-values, and so the resume key).

    Attributes:
        best_only: ``False`` (default): every finished final run (k/N, effect sizes over runs,
            paired differences between models); ``True``: one run per model, the paper's table,
            chosen by ``select_by``.
        select_by: with ``best_only``: the run with the highest balanced accuracy on ``"val"``
            (default; choosing on the test set would select on the data the table reports) or
            ``"test"``.
        dataset: the study's data set (config name) to analyse; needed when the final runs on
            skin data come from more than one (Table 3 describes one data set).
        conditions: what the tests condition on, the first one primary: ``"diagnosis"`` (each
            fine diagnosis its own stratum), ``"label"`` (the paper's 3-class label), or both
            (default). Data without usable diagnoses falls back to the label, with a note.
        min_per_diagnosis: 1 (default): no merging; > 1: diagnoses with fewer tested images are
            merged into their class's rest stratum (opt-in; it can bring the coarse-label
            confound back, docs/features.md).
        prediction: the model output tested as Y: ``"softmax"``, ``"logits"`` or ``"class"``.
        alpha: significance level of each test; used = a majority of the tests reject after
            Holm's adjustment over the 8 features.
        tests: names in ``medattn.analysis.citests.TESTS``.
        set_name: the predictions analysed (``test`` or ``ood-<name>``).
        seed: base seed of the tests (each run/feature/test gets its own derived seed).
        test_options: keyword options per test, e.g. ``{"cmiknn": {"k": 20, "permutations":
            1000}}`` (CMIknn's k: a count >= 1 or a fraction in (0, 1) of each class).
        patches: colourful-patch source of the feature extraction: ``auto`` (annotation where
            present), ``detector`` or ``annotation``.
        one_per_group: test one seeded random image per leakage group (patient, else lesion), as
            the tests assume independent samples; ``False`` tests every image.
    """

    best_only: bool = False
    select_by: str = "val"
    dataset: str | None = None
    conditions: tuple[str, ...] = CONDITIONS
    min_per_diagnosis: int = MIN_PER_DIAGNOSIS
    prediction: str = "softmax"
    alpha: float = 0.01
    tests: tuple[str, ...] = DEFAULT_TESTS
    set_name: str = "test"
    seed: int = 0
    test_options: dict[str, dict] = field(default_factory=dict)
    patches: str = "auto"
    one_per_group: bool = True

    def __post_init__(self):
        # normalised copies: a caller's later edits of its lists or dicts cannot change these
        conditions = (self.conditions,) if isinstance(self.conditions, str) else self.conditions
        tests = (self.tests,) if isinstance(self.tests, str) else self.tests
        object.__setattr__(self, "conditions", tuple(conditions))
        object.__setattr__(self, "tests", tuple(tests))
        _check_choices(self)
        _check_numbers(self)
        object.__setattr__(self, "test_options", _checked_options(self.test_options, self.tests))
        _check_resolution(self.tests, self.test_options, self.alpha)

    @property
    def which_runs(self) -> str:
        """``"best"`` or ``"all"``: how :func:`~.table3.table3` names the runs shown."""
        return "best" if self.best_only else "all"

    def resume_key(self) -> str:
        """The key of the p-values these settings give: rows of ``pvalues.csv`` with this key are
        resumed. The same dict as before the settings object, so earlier rows still match."""
        tested = {"version": RESUME_VERSION, "prediction": self.prediction, "set": self.set_name,
                  "seed": self.seed, "tests": list(self.tests), "options": self.test_options,
                  "patches": self.patches, "one_per_group": self.one_per_group,
                  "min_per_diagnosis": self.min_per_diagnosis}
        return hashlib.sha1(json.dumps(tested, sort_keys=True).encode()).hexdigest()[:12]


def _one_of(argument: str, value, choices) -> None:
    if value not in choices:
        raise argument_error(argument, f"{argument}={value!r} is not one of {', '.join(choices)}")


def _whole(argument: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value) \
            or value < minimum:
        raise argument_error(argument, f"{argument}={value!r} must be a whole number >= {minimum}")


def _check_choices(s: UsageSettings) -> None:
    for argument in ("best_only", "one_per_group"):
        if not isinstance(getattr(s, argument), bool):
            raise argument_error(argument, f"{argument}={getattr(s, argument)!r} must be True "
                                "or False")
    _one_of("select_by", s.select_by, SELECT_BY)
    _one_of("prediction", s.prediction, PREDICTIONS)
    _one_of("patches", s.patches, PATCHES)
    bad = [c for c in s.conditions if c not in CONDITIONS]
    if bad or not s.conditions or len(set(s.conditions)) != len(s.conditions):
        raise argument_error("conditions", f"conditions={' '.join(map(str, s.conditions))!r}: "
                            f"give one or both of {', '.join(CONDITIONS)}, each once")
    unknown = [t for t in s.tests if t not in TESTS]
    if unknown or not s.tests or len(set(s.tests)) != len(s.tests):
        raise argument_error("tests", f"tests={list(s.tests)!r}: give one or more of "
                            f"{', '.join(TESTS)}, each once")
    if s.dataset is not None and (not isinstance(s.dataset, str) or not s.dataset):
        raise argument_error("dataset", f"dataset={s.dataset!r} must be a data set's name or None")
    if not isinstance(s.set_name, str) or not s.set_name or "/" in s.set_name \
            or "\\" in s.set_name:
        raise argument_error("set_name", f"set_name={s.set_name!r} must name a prediction set "
                            "(test or ood-<name>)")


def _check_numbers(s: UsageSettings) -> None:
    if isinstance(s.alpha, bool) or not isinstance(s.alpha, int | float) or not 0 < s.alpha < 1:
        raise argument_error("alpha", f"alpha={s.alpha!r} must lie in (0, 1)")
    _whole("min_per_diagnosis", s.min_per_diagnosis, 1)
    _whole("seed", s.seed, 0)
    object.__setattr__(s, "min_per_diagnosis", int(s.min_per_diagnosis))
    object.__setattr__(s, "seed", int(s.seed))


def _checked_options(options, tests: tuple[str, ...]) -> dict[str, dict]:
    """``options`` as a fresh ``{test: {option: value}}`` (sorted, CMIknn's whole k an int),
    refusing tests and options that do not exist and counts that cannot work."""
    if options is None:
        return {}
    if not isinstance(options, dict) or not all(isinstance(v, dict) for v in options.values()):
        raise argument_error("test_options", f"test_options={options!r} must map test names to "
                            "dicts of options, e.g. {'cmiknn': {'k': 10}}")
    out = {}
    for name in sorted(options):
        if name not in TESTS:
            raise argument_error("test_options", f"test_options names the test {name!r}; tests "
                                f"are {', '.join(TESTS)}")
        known = set(inspect.signature(TESTS[name]).parameters) - set(_FIXED_OPTIONS)
        opts = dict(sorted(options[name].items()))
        for option in opts:
            if option not in known:
                raise argument_error("test_options", f"test_options[{name!r}] has no option "
                                    f"{option!r}; {name} takes {', '.join(sorted(known))}")
        if "permutations" in opts:
            _whole(f"test_options[{name!r}]['permutations']", opts["permutations"], 1)
            opts["permutations"] = int(opts["permutations"])
        if name == "cmiknn" and "k" in opts:
            opts["k"] = _cmiknn_k(opts["k"])
        out[name] = opts
    return out


def _cmiknn_k(k) -> float | int:
    """CMIknn's k: a whole count >= 1 (as an int, so 10.0 and 10 resume the same rows) or a
    fraction in (0, 1) of each class."""
    ok = not isinstance(k, bool) and isinstance(k, int | float) and (
        0 < k < 1 or (k >= 1 and k == int(k)))
    if not ok:
        raise argument_error(CMIKNN_K, f"{CMIKNN_K}={k!r} must be a whole number >= 1 (a count) "
                            "or a fraction in (0, 1) of each class")
    return int(k) if k >= 1 else float(k)


def _check_resolution(tests, test_options: dict, alpha: float) -> None:
    """Refuse permutation counts with which no feature could ever be called used: after Holm
    over the 8 features the smallest adjusted p is 8 / (B + 1), which must be below ``alpha``."""
    for name in tests:
        default = inspect.signature(TESTS[name]).parameters["permutations"].default
        b = test_options.get(name, {}).get("permutations", default)
        if FAMILY / (b + 1) >= alpha:
            raise argument_error(
                "alpha",
                f"{name} with permutations={b} cannot give p below alpha={alpha:g} after Holm's "
                f"adjustment over the {FAMILY} features (the smallest adjusted p is "
                f"{FAMILY}/(B + 1) = {FAMILY / (b + 1):.3g}); give at least "
                f"{math.ceil(FAMILY / alpha)} permutations or a larger alpha")
