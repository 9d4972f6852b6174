"""Plan a study's final phase from a pilot: which design can decide, at what cost
(``medattn plan``; docs/statistics.md, "Planning a study that can decide").

Per comparison (a variant against its reference on one test set) a pilot gives the within-study
sd of the paired differences, s_d (pp), from J0 pairs; its 80 % one-sided upper bound is
``s_d sqrt((J0 - 1) / chi2_(0.2, J0-1))`` (normal differences). The sd is modelled as
``s_d^2 = b + a / n_test``: ``a`` (pp^2 x images) the test-sampling variance of the difference in
balanced accuracy of two fixed models, from the per-image predictions of the pilot
(``a = 10^4 / K^2 sum_k v_k / p_k``, v_k the variance of ``correct_A - correct_B`` among class-k
test images, p_k the class's share), ``b`` the rest (training and split noise, floored at 0),
which more test images cannot remove. A design (:data:`medattn.analysis.design.DESIGNS`) on a pool
of N images tests ``n_test = share x N`` images per split; its corrected-test power and the
probability that the Bayesian test decides in the right direction come from
:mod:`medattn.analysis.design`. An OOD set is the same in every run: more OOD images shrink its
``a / n_ood`` and leave the training pool (and cost) as it is.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from medattn.analysis import compare
from medattn.analysis import design as D
from medattn.analysis.labels import comparison_label
from medattn.analysis.settings import CompareSettings, PlanSettings
from medattn.analysis.shared_test import read_pair_predictions
from medattn.analysis.stats import MIN_DECISION_PAIRS
from medattn.analysis.summary import read_summary
from medattn.errors import ArgumentError, DataError
from medattn.runs import store
from medattn.runs.atomic import write_json
from medattn.runs.hint import check_runs_dir

__all__ = ["PLAN_FILE", "Pilot", "Plan", "load_plan", "plan_runs", "plan_summary",
           "sd_upper", "test_sampling_a"]

PLAN_FILE = store.PLAN_FILE
UPPER_LEVEL = 0.8  # the one-sided confidence of the sd bound the cautious plan uses
GRID = np.geomspace(1.0, 1000.0, 161)  # data multipliers searched for "about N images would"


def sd_upper(sd: float, n_pairs: int, level: float = UPPER_LEVEL) -> float:
    """One-sided ``level`` upper confidence bound of a normal sd from ``n_pairs`` values (pp)."""
    if n_pairs < 2 or not np.isfinite(sd):
        return math.nan
    return float(sd * math.sqrt((n_pairs - 1) / stats.chi2.ppf(1 - level, n_pairs - 1)))


@dataclass
class Pilot:
    """What a pilot says about one comparison (pp, images). ``n_test``: images per test set
    (the OOD set's size for an OOD set); ``pool``: images in the pool (train + val + test);
    ``a``: test-sampling variance constant (pp^2 x images; NaN when unknown)."""

    label: str
    set: str
    n_pairs: int
    sd_diff: float
    n_test: float
    pool: float
    test_share: float
    val_share: float
    a: float = math.nan
    a_source: str = ""

    @property
    def ood(self) -> bool:
        return self.set != "id"

    @property
    def sd_upper(self) -> float:
        return sd_upper(self.sd_diff, self.n_pairs)

    def ab(self, sd: float) -> tuple[float, float]:
        """``(a, b)`` of ``s_d^2 = b + a / n_test`` at the sd planned on (unknown a: b = 0)."""
        if not np.isfinite(self.a):
            return sd**2 * self.n_test, 0.0
        return self.a, max(0.0, sd**2 - self.a / self.n_test)


@dataclass
class Plan:
    """A plan: ``settings`` (:class:`~medattn.analysis.settings.PlanSettings` as a dict, plus
    the source, seconds per run, models and hours unit), one ``pilots`` entry and one design
    table (``tables``) and recommendation per comparison, notes, and ``paths``: the files
    written (``plan``: ``RUNS_DIR/plan.json`` where saved)."""

    settings: dict
    pilots: list[Pilot]
    tables: list[pd.DataFrame]
    recommendations: list[dict]
    notes: list[str] = field(default_factory=list)
    paths: dict[str, Path] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"settings": self.settings, "pilots": [asdict(p) for p in self.pilots],
                "tables": [t.to_dict(orient="records") for t in self.tables],
                "recommendations": self.recommendations, "notes": self.notes}

    @classmethod
    def from_dict(cls, raw: dict) -> Plan:
        nan = lambda v: math.nan if v is None else v  # noqa: E731  (JSON null was NaN/inf)
        pilots = [Pilot(**{k: nan(v) for k, v in p.items()}) for p in raw["pilots"]]
        return cls(raw["settings"], pilots, [pd.DataFrame(t) for t in raw["tables"]],
                   raw["recommendations"], raw.get("notes", []))


# ---------------------------------------------------------------------------------------------
# The pilot
# ---------------------------------------------------------------------------------------------


def test_sampling_a(labels, correct_a, correct_b) -> float:
    """``a`` (pp^2 x images) of one split from the two models' predictions on its test images
    (``labels``: true classes; ``correct_a`` / ``correct_b``: whether each model got an image
    right; 1-D, equal length): n_test x Var(difference of balanced accuracies) over test sets
    drawn with the same class shares (module docstring)."""
    diff = pd.Series(np.asarray(correct_a, float) - np.asarray(correct_b, float))
    groups = diff.groupby(np.asarray(labels))
    k, n = groups.ngroups, len(diff)
    total = sum(g.var(ddof=1) / (len(g) / n) for _, g in groups if len(g) > 1)
    return 1e4 * float(total) / k**2


def _pilot_a(runs_dir, pairs: pd.DataFrame, set_file: str, cache: dict) -> tuple[float, float]:
    """Mean ``a`` and mean test-set size over the pairs with usable predictions (both models
    on the same images; NaNs when none), read as ``compare`` reads them."""
    splits = [s for s in read_pair_predictions(runs_dir, pairs, set_file, cache).splits
              if len(s.labels) > 1]
    if not splits:
        return math.nan, math.nan
    return (float(np.mean([test_sampling_a(s.labels, s.correct_a, s.correct_b) for s in splits])),
            float(np.mean([len(s.labels) for s in splits])))


def _split_sizes(records) -> tuple[float, float, float]:
    """Mean ``(n_train, n_val, n_test)`` over the final runs' recorded splits (NaN if none)."""
    rows = []
    for r in records:
        s = r.get("split") if isinstance(r.get("split"), dict) else {}
        z = r.get("split_sizes") if isinstance(r.get("split_sizes"), dict) else {}
        got = [s.get(f"n_{k}", z.get(k)) for k in ("train", "val", "test")]
        if all(isinstance(v, (int, float)) for v in got):
            rows.append(got)
    return tuple(np.mean(rows, axis=0)) if rows else (math.nan,) * 3


def _timing(finals) -> tuple[float, str, list[str]]:
    """Mean seconds per finished final run, the hours' unit, notes."""
    done = finals.done()
    secs = pd.to_numeric(done.get("seconds", pd.Series(dtype=float)), errors="coerce").dropna()
    devices = {str((r.get("config") or {}).get("device", "")) for r in finals.records.values()}
    unit = "GPU hours" if any(d.startswith("cuda") for d in devices) else "hours"
    if secs.empty:
        return math.nan, unit, ["the runs record no training time: hours are not estimated"]
    return float(secs.mean()), unit, [f"time per run: {secs.mean():.0f} s measured (mean of "
                                      f"{len(secs)} finished final runs; {unit})"]


def pilots_from_runs(runs_dir, margin: float) -> tuple[list[Pilot], dict, list[str]]:
    """The pilots of every comparison of a runs folder (paired as ``medattn compare`` pairs),
    plus ``{seconds, unit, models}`` and notes."""
    res = compare.compare_runs(runs_dir, settings=CompareSettings(margin=margin, bootstrap=0))
    finals = store.final_runs(runs_dir)
    n_train, n_val, n_test = _split_sizes(finals.done().pipe(
        lambda f: [finals.records[i] for i in f["run_id"]]))
    pool = n_train + n_val + n_test
    seconds, unit, notes = _timing(finals)
    if not np.isfinite(pool):
        notes.append("the runs record no split sizes: the pool is taken as 1000 images with "
                     "70/10/20 splits")
        n_train, n_val, n_test, pool = 700.0, 100.0, 200.0, 1000.0
    pilots, cache = [], {}
    keys = ["dataset", "backbone", "model", "set", "reference"]
    for key, g in res.pairs.groupby(keys, sort=False):
        k = dict(zip(keys, key))
        label = comparison_label(k)
        diffs = g["diff"].to_numpy(float)
        if len(diffs) < 2 or not np.std(diffs) > 0:
            notes.append(f"{label}: {len(diffs)} pair(s) without spread; cannot be planned")
            continue
        set_file = "test" if k["set"] == "id" else k["set"]
        a, size = _pilot_a(runs_dir, g, set_file, cache)
        source = "per-image predictions" if np.isfinite(a) else (
            "no per-image predictions: b = 0 assumed (all of s_d^2 from test sampling)")
        size = size if np.isfinite(size) else n_test
        pilots.append(Pilot(label, k["set"], len(diffs), float(np.std(diffs, ddof=1)),
                            n_test if k["set"] == "id" else size, pool, n_test / pool,
                            n_val / pool, a, source))
    done = finals.done()  # every (data set, model) trains once per split
    n_models = len(done[["dataset", "model"]].drop_duplicates()) if len(done) else 2
    return pilots, {"seconds_per_run": seconds, "hours_unit": unit, "models": n_models}, notes


# ---------------------------------------------------------------------------------------------
# Designs evaluated
# ---------------------------------------------------------------------------------------------


def _design_arrays(p: Pilot, sd: float, settings: dict, designs, grid: np.ndarray) -> dict:
    """Power and P(right) of every design at every data multiplier of ``grid`` (designs x
    grid; the first multiplier is the pilot's data, 1)."""
    a, b = p.ab(sd)
    shares = np.array([d.shares(p.test_share, p.val_share) for d in designs])
    ratio = shares[:, 0] / shares[:, 1]
    j = np.array([d.n_pairs for d in designs], float)
    f = np.array([d.factor(d.n_pairs, r) for d, r in zip(designs, ratio)], float)[:, None]
    n_test = (np.full(len(designs), p.n_test) if p.ood else shares[:, 0] * p.pool)[:, None] * grid
    seeds = np.array([d.seeds for d in designs], float)[:, None]
    var = b + a / n_test
    best = b / seeds + a / n_test  # all of b from training seeds: the most seeds can remove
    args = dict(delta=settings["delta"], n_pairs=j[:, None], test_train_ratio=ratio[:, None],
                rope=settings["margin"], threshold=settings["threshold"], variance_factor=f)
    # Table 2 reports no Bayesian decision below MIN_DECISION_PAIRS pairs: such a design never
    # decides, whatever the formula would give its posterior
    can = (j >= MIN_DECISION_PAIRS).astype(float)
    return {"p_right": D.decided_right(np.sqrt(var), **args) * can[:, None],
            "p_best": D.decided_right(np.sqrt(best), **args) * can[:, None],
            "power": D.power(np.sqrt(var[:, 0]), settings["delta"], j, ratio,
                             settings["alpha"], variance_factor=f[:, 0], nodes=64),
            "floor": D.decided_right(max(np.sqrt(b), 1e-9), **{**args, "n_pairs": j,
                                     "test_train_ratio": ratio, "variance_factor": f[:, 0]})
            * can,
            "train_share": shares[:, 1]}


def _images(p: Pilot, arr: dict, target: float, grid: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Images needed (pool, or OOD set) for P(right) >= target per design, and why not."""
    size = p.n_test if p.ood else p.pool
    out, why = [], []
    for i, row in enumerate(arr["p_right"]):
        hit = np.flatnonzero(row >= target)
        if hit.size:
            n = size * grid[hit[0]]
            step = 10.0 ** (math.floor(math.log10(n)) - 1)
            out.append(math.ceil(n / step) * step)  # 2 significant digits, rounded up
            why.append("")
        else:
            out.append(math.inf)
            why.append("training-noise floor" if arr["floor"][i] < target else
                       f"over {grid[-1]:g}x the data")
    return np.array(out), why


def design_table(p: Pilot, settings: dict, designs=D.DESIGNS, grid: np.ndarray = GRID
                 ) -> pd.DataFrame:
    """One row per design: runs per model, hours, power and P(right) on the sd estimate and on
    its upper bound, and the images that would reach the target (pool, or the OOD set; searched
    over the data multipliers ``grid``, ``[1.0]`` to skip)."""
    target, sec = settings["power"], settings["seconds_per_run"]
    rows = {"design": [d.name for d in designs], "calibrated": [d.calibrated for d in designs],
            "n_pairs": [d.n_pairs for d in designs], "runs_per_model": [d.runs for d in designs]}
    n_train0 = (1 - p.test_share - p.val_share) * p.pool
    for tag, sd in (("", p.sd_diff), ("_upper", p.sd_upper)):
        arr = _design_arrays(p, sd, settings, designs, grid)
        images, why = _images(p, arr, target, grid)
        scale = arr["train_share"] * p.pool / n_train0  # run time grows with the training set
        hours = np.array([d.runs for d in designs]) * settings["models"] * sec / 3600 * scale
        more = hours if p.ood else hours * images / p.pool
        rows.update({f"power{tag}": arr["power"], f"p_right{tag}": arr["p_right"][:, 0],
                     f"p_right_seeds{tag}": np.where([d.seeds > 1 for d in designs],
                                                     arr["p_best"][:, 0], np.nan),
                     f"images{tag}": images, f"images_why{tag}": why,
                     f"hours_at_images{tag}": np.where(np.isfinite(images), more, np.nan)})
        rows["hours"] = hours
    return pd.DataFrame(rows)


def design_row(p: Pilot, settings: dict, design: D.Design) -> dict:
    """One design's row of :func:`design_table` on the pilot's own data (no search over data
    sizes): e.g. what the study as configured can decide (``D.design_for``)."""
    return design_table(p, settings, designs=(design,), grid=np.array([1.0])).iloc[0].to_dict()


def recommend(table: pd.DataFrame, settings: dict, tag: str) -> dict:
    """The cheapest calibrated design reaching the target on this pool (within the budget), or
    with more data; ``tag`` ``""`` (estimate) or ``"_upper"`` (bound)."""
    cal = table[table["calibrated"]]
    # a budget applies where hours are known (no timings: designs ranked by runs instead)
    budget = settings.get("budget") if np.isfinite(settings["seconds_per_run"]) else None
    cost = cal["hours"].fillna(cal["runs_per_model"])
    ok = cal[(cal[f"p_right{tag}"] >= settings["power"])
             & ((cost <= budget) if budget else True)]
    if len(ok):
        r = ok.loc[cost[ok.index].idxmin()]
        return {"design": r["design"], "more_data": False, "hours": r["hours"],
                "p_right": r[f"p_right{tag}"], "images": None}
    more = cal[np.isfinite(cal[f"images{tag}"].astype(float))]
    if budget:
        more = more[more[f"hours_at_images{tag}"] <= budget]
    if not len(more):
        return {"design": None, "more_data": True, "hours": math.nan, "p_right": math.nan,
                "images": math.inf}
    c = more[f"hours_at_images{tag}"].fillna(more["runs_per_model"] * more[f"images{tag}"])
    r = more.loc[c.idxmin()]
    return {"design": r["design"], "more_data": True, "hours": r[f"hours_at_images{tag}"],
            "p_right": settings["power"], "images": r[f"images{tag}"]}


def _plan(pilots, settings, notes) -> Plan:
    tables = [design_table(p, settings) for p in pilots]
    recs = [{"estimate": recommend(t, settings, ""), "upper": recommend(t, settings, "_upper")}
            for t in tables]
    return Plan(settings, pilots, tables, recs, notes)


def plan_runs(runs_dir: str | os.PathLike, *, settings: PlanSettings = PlanSettings(),
              save: bool = True) -> Plan:
    """Plan from a pilot's (or a finished study's) final runs.

    Args:
        runs_dir: the pilot's study folder.
        settings: delta, margin, target power, threshold, alpha and budget
            (:class:`~medattn.analysis.settings.PlanSettings`).
        save: write ``RUNS_DIR/plan.json`` (``plan.paths["plan"]``).

    Returns:
        Per comparison the pilot's numbers, the table of candidate designs and the
        recommendation.
    """
    check_runs_dir(runs_dir)
    pilots, timing, notes = pilots_from_runs(runs_dir, settings.margin)
    if not pilots:
        raise DataError(f"{runs_dir}: no comparison has 2 or more pairs with spread; a pilot "
                        "needs at least 2 (better 3) final splits of every model.")
    plan = _plan(pilots, {**settings.as_dict(), "source": str(runs_dir), **timing}, notes)
    if save:
        plan.paths["plan"] = write_json(Path(runs_dir) / PLAN_FILE, plan.to_dict())
    return plan


def plan_summary(path: str | os.PathLike, *, sd_diff: float | None = None,
                 test_train_ratio: float = 0.2 / 0.7, n_test: float | None = None,
                 seconds_per_run: float | None = None,
                 settings: PlanSettings = PlanSettings()) -> Plan:
    """Plan from published numbers (a summary CSV, ``medattn compare --summary``'s format).

    Without runs there is no pairing: the sd of the paired differences is ``sd_diff`` if given,
    else ``sqrt(sd^2 + sd_ref^2)`` (the two models' accuracies uncorrelated across splits; with
    positively correlated models, the usual case, this overstates it). J0 = the smaller n; no
    per-image predictions: all of s_d^2 counts as test sampling (b = 0), so the images needed
    are a lower bound. ``test_train_ratio``: n_test / n_train of the splits; ``n_test``: test
    images per split (default: unknown, no image counts).
    """
    for name, value in (("sd_diff", sd_diff), ("test_train_ratio", test_train_ratio),
                        ("n_test", n_test), ("seconds_per_run", seconds_per_run)):
        if value is not None and not (isinstance(value, (int, float)) and value > 0):
            raise ArgumentError(f"{{{name}}} must be a number > 0, got {value!r}.", name)
    path = str(compare.PAPER_TABLE2) if str(path) == "paper" else str(path)
    summary = read_summary(path)
    table = compare.compare_summary(summary, settings=CompareSettings(margin=settings.margin))
    table = table[table["reference"].notna()]
    test_share = 0.9 * test_train_ratio / (1 + test_train_ratio)  # a 10 % validation share
    size = float(n_test) if n_test else 1000.0 * test_share
    notes = [("sd of the paired differences: as given" if sd_diff else
              "no pairing in a summary: sd of the differences = sqrt(sd^2 + sd_ref^2), the two "
              "models taken as uncorrelated across splits (usually an overstatement)"),
             "no per-image predictions: b = 0 assumed (all of s_d^2 from test sampling), so the "
             "images needed are a lower bound"]
    if not n_test:
        notes.append("test images unknown (give n_test; CLI: --n-test N): image counts are "
                     "relative to a "
                     f"test set of {size:.0f}")
    pilots = []
    for r in table.itertuples():
        sd = sd_diff or math.hypot(r.sd, r.ref_sd)
        pilots.append(Pilot(comparison_label(r), r.set, int(min(r.n, r.ref_n)),
                            float(sd), size, size / test_share, test_share, 0.1, math.nan,
                            "summary"))
    recorded = {**settings.as_dict(), "source": path,
                "seconds_per_run": seconds_per_run or math.nan, "hours_unit": "hours",
                "models": len(summary[["dataset", "backbone", "model"]].drop_duplicates())}
    return _plan(pilots, recorded, notes)


def load_plan(runs_dir: str | os.PathLike) -> Plan | None:
    """The plan saved in ``runs_dir`` (None when there is none or it is unreadable)."""
    p = Path(runs_dir) / PLAN_FILE
    if not p.is_file():
        return None
    try:
        return Plan.from_dict(json.loads(p.read_text(encoding="utf-8")))
    except (ValueError, KeyError, TypeError):
        return None
