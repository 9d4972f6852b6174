"""The tests of a feature-usage plan: each run's rows resumed from ``pvalues.csv`` or its
predictions prepared (:func:`prepare_run`) and tested feature by feature, in this process or in
worker processes (:func:`run_tests`), ``pvalues.csv`` saved after each run so that an interrupted
analysis resumes there."""

from __future__ import annotations

import hashlib
import multiprocessing
import re
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from medattn.analysis.citests.cmiknn import warn_if_slow
from medattn.analysis.features.conditioning import finer_than_label, normalise_diagnosis
from medattn.analysis.features.decisions import (
    derive_seed,
    one_image_per_group,
    prediction_matrix,
    tests_job,
)
from medattn.analysis.features.extract import extract_features
from medattn.analysis.features.settings import UsageSettings
from medattn.analysis.features.table3 import TABLE3_FEATURES
from medattn.analysis.features.usage_plan import UsagePlan
from medattn.errors import DataError
from medattn.progress import progress_bar
from medattn.runs.atomic import atomic_write
from medattn.runs.store import read_predictions


@dataclass
class Data:
    """A data set's per-image features, leakage groups and diagnoses (loaded once)."""

    features: pd.DataFrame
    groups: pd.Series | None
    diagnosis: pd.Series | None  # image_id -> normalised diagnosis, None where unusable
    truth: dict | None  # the planted truth of a synthetic set
    note: str | None = None  # why the diagnosis cannot be used


@dataclass
class RunInputs:
    """One run's tested images: the model output Y, the label, the diagnosis and the features."""

    y: np.ndarray  # (n, d) prediction_matrix
    label: np.ndarray  # (n,) int
    diagnosis: np.ndarray | None  # (n,) normalised diagnoses, None: condition on the label only
    features: pd.DataFrame  # (n, feature columns), in the order of y


@dataclass
class TestedRuns:
    """What :func:`run_tests` gives: the p-value rows of the plan's runs (resumed ones included)
    and the data sets it loaded (by spec)."""

    rows: list[dict]
    data: dict[str, Data]
    notes: list[str]


def write_csv(path: Path, frame: pd.DataFrame) -> None:
    """``frame`` to ``path`` as CSV without the index, atomically."""
    atomic_write(path, lambda tmp: frame.to_csv(tmp, index=False))


def load_data(spec: str, out_dir: Path, patches: str, progress: bool) -> Data:
    """The data set ``spec``: its features (cached in ``out_dir``), groups and diagnoses."""
    # start-up time: medattn.data imports torch (its package imports the datasets), which
    # `medattn features` resumed from its saved files does not need
    from medattn.data import load_dataset
    from medattn.data.synthetic.derm import read_truth

    table = load_dataset(spec)
    # missing groups stay NA: each such image is then its own group
    groups = table.set_index("image_id")["group"].astype(object) if "group" in table else None
    features = extract_features(table, cache=out_dir / f"features_{_slug(spec)}.csv",
                                patches=patches, progress=progress)
    diagnosis, note = None, None
    if "diagnosis" not in table:
        note = f"{spec}: no diagnosis column, so the tests condition on the label"
    else:
        dx = normalise_diagnosis(table["diagnosis"].to_numpy(dtype=object))
        if not finer_than_label(table["label"].to_numpy(), dx):
            note = (f"{spec}: the diagnoses do not split any class, so conditioning on them is "
                    "conditioning on the label; the tests condition on the label")
        else:
            diagnosis = pd.Series(dx, index=table["image_id"].to_numpy())
    folder = spec.split(":", 1)[1] if ":" in spec else spec
    return Data(features, groups, diagnosis, read_truth(Path(folder).expanduser()), note)


def _slug(spec: str) -> str:
    name = re.sub(r"[^A-Za-z0-9]+", "-", spec.split(":", 1)[0]).strip("-")
    return f"{name}-{hashlib.sha1(spec.encode()).hexdigest()[:8]}"


def prepare_run(runs_dir: Path, rec, data: Data, settings: UsageSettings) -> RunInputs:
    """The tested images of run ``rec``: its ``settings.set_name`` predictions, one image per
    leakage group (unless ``one_per_group`` is off), with their features and diagnoses."""
    preds = read_predictions(runs_dir, rec.run_id, settings.set_name)
    classes = [c[len("prob_"):] for c in preds.columns if c.startswith("prob_")]
    missing = ~preds["image_id"].isin(data.features.index)
    if missing.any():
        raise DataError(f"run {rec.run_id}: {int(missing.sum())} predicted images "
                        f"(e.g. {preds['image_id'][missing].iloc[0]}) are not in "
                        f"{rec.data}; was the data set changed after training?")
    if settings.one_per_group and data.groups is not None:
        preds = one_image_per_group(preds, data.groups, settings.seed)
    dx = (data.diagnosis.reindex(preds["image_id"]).to_numpy(dtype=object)
          if data.diagnosis is not None else None)
    return RunInputs(prediction_matrix(preds, classes, settings.prediction),
                     preds["label"].to_numpy(dtype=int), dx, data.features.loc[preds["image_id"]])


def run_tests(plan: UsagePlan, settings: UsageSettings, *, jobs: int = 1,
              progress: bool = True) -> TestedRuns:
    """Every feature of every planned run under each conditioning, resumed where ``pvalues.csv``
    covers the run, else tested (``jobs`` worker processes; the p-values do not depend on it)."""
    plan.out_dir.mkdir(parents=True, exist_ok=True)
    if "cmiknn" in settings.tests:
        warn_if_slow()  # before the bar and the workers, which then stay silent
    tested = TestedRuns([], {}, [])
    bar = progress_bar(total=len(plan.chosen) * len(TABLE3_FEATURES), desc="feature tests",
                       disable=not progress)
    pool = _open_pool(jobs)
    pending = []  # per run: (record, resumed rows, [(feature, n_left_out, future rows)])
    try:
        with threadpool_limits(1):
            for rec in plan.chosen.itertuples(index=False):
                pending.append(_run_or_resume(rec, plan, settings, tested, pool, bar, progress))
                if jobs == 1:  # done already: save this run now
                    _collect(pending, tested.rows, plan, settings)
            _collect(pending, tested.rows, plan, settings)
    finally:
        pool.shutdown(cancel_futures=True)
    bar.close()
    return tested


def _run_or_resume(rec, plan: UsagePlan, settings: UsageSettings, tested: TestedRuns, pool,
                   bar, progress: bool) -> tuple:
    """One run's entry of the pending list: its saved rows where they cover every feature and
    condition it is tested under, else its tests submitted to ``pool``."""
    done = plan.resumed(rec.run_id)
    if _covers(done, settings.conditions):  # resumed as they were, without loading the data
        bar.update(len(TABLE3_FEATURES))
        return rec, _rows_of(done, settings.conditions), []
    if rec.data not in tested.data:
        tested.data[rec.data] = load_data(rec.data, plan.out_dir, settings.patches, progress)
        note = tested.data[rec.data].note
        if note and "diagnosis" in settings.conditions:
            tested.notes.append(note)
    data = tested.data[rec.data]
    conditions = settings.conditions if data.diagnosis is not None else ("label",)
    if _covers(done, conditions):
        bar.update(len(TABLE3_FEATURES))
        return rec, _rows_of(done, conditions), []
    inputs = prepare_run(plan.runs_dir, rec, data, settings)
    tasks = []
    for f_i, (feature, cols) in enumerate(TABLE3_FEATURES.items()):
        x = inputs.features[list(cols)].to_numpy(dtype=float)
        seeds = [derive_seed(settings.seed, rec.run_id, f_i, t_i)
                 for t_i in range(len(settings.tests))]
        future = pool.submit(tests_job, x, inputs.y, inputs.label, inputs.diagnosis, conditions,
                             settings.tests, seeds, settings.test_options,
                             settings.min_per_diagnosis)
        future.add_done_callback(lambda _: bar.update())
        tasks.append((feature, int(np.isnan(x).any(axis=1).sum()), future))
    return rec, [], tasks


def _rows_of(done: pd.DataFrame, conditions) -> list[dict]:
    return done[done["condition"].isin(conditions)].to_dict("records")


def _covers(done: pd.DataFrame | None, conditions) -> bool:
    """Whether resumed rows hold every feature under every condition."""
    if done is None or done.empty:
        return False
    have = set(zip(done["feature"], done["condition"]))
    return all((f, c) in have for f in TABLE3_FEATURES for c in conditions)


class _InlinePool:
    """Runs each job at once in this process (``jobs=1``), with the worker pool's interface."""

    def submit(self, fn, *args) -> Future:
        future: Future = Future()
        future.set_result(fn(*args))
        return future

    def shutdown(self, cancel_futures: bool = False) -> None:
        pass


def _open_pool(jobs: int):
    if jobs == 1:
        return _InlinePool()
    # spawn: workers never inherit torch's threads from this process
    return ProcessPoolExecutor(int(jobs), mp_context=multiprocessing.get_context("spawn"))


def _collect(pending: list, rows: list[dict], plan: UsagePlan, settings: UsageSettings) -> None:
    """Turn the runs of ``pending`` into p-value rows, in run and feature order, and save them
    after each run (an interrupted analysis resumes from there)."""
    while pending:
        rec, resumed, tasks = pending.pop(0)
        rows.extend(resumed)
        for feature, n_left_out, future in tasks:
            for r in future.result():
                rows.append({"dataset": rec.dataset, "model": rec.model, "run_id": rec.run_id,
                             "split_seed": rec.split_seed, "feature": feature, **r,
                             "n_left_out": n_left_out, "alpha": settings.alpha,
                             "prediction": settings.prediction, "set": settings.set_name,
                             "key": plan.key})
        write_csv(plan.pvalues_path, merge_saved(plan.pvalues_path, rows, plan.key))


def merge_saved(path: Path, rows: list[dict], key: str) -> pd.DataFrame:
    """Rows already in pvalues.csv are kept unless ours replace them (same settings key, run,
    condition, feature and test): other settings, other runs and other conditions stay."""
    ours = pd.DataFrame(rows)
    if path.exists() and len(ours):
        old = pd.read_csv(path, dtype={"run_id": str, "key": str})
        ids = ["run_id", "condition", "feature", "test"]
        if "key" in old and set(ids) <= set(old):
            mine = pd.MultiIndex.from_frame(ours[ids].astype(str))
            replaced = (old["key"] == key) & pd.MultiIndex.from_frame(
                old[ids].astype(str)).isin(mine)
            return pd.concat([old[~replaced], ours], ignore_index=True)
    return ours
