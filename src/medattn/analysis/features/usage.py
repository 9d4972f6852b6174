"""Table 3: which features the trained models use beyond what the diagnosis explains.

Feature F is *used* by a model when F is not independent of the model's prediction Y given the
ground truth Z (Reimers et al. 2020): each of cHSIC, RCoT and CMIknn tests ``F _||_ Y | Z`` on a
run's test-set predictions, and F counts as used when the majority of the tests reject at ``alpha``
after each test's p-values are Holm-adjusted over the features of the run.
Z is the fine diagnosis where the data has one (:mod:`.conditioning`), and the paper's 3-class
label beside it. Every final run is tested; :mod:`.summary` turns the runs into k of N, effect
sizes with CIs and paired differences between models.

Outputs in ``RUNS_DIR/analysis/features/``: ``features_<data>.csv`` (the per-image features, a
cache), ``pvalues.csv`` (one row per run, feature, condition and test; re-used on the next call
with the same settings, so an interrupted analysis resumes), ``decisions.csv`` (one row per run,
feature and condition), ``usage.csv`` (per model and feature over runs), ``differences.csv``
(variant vs base), ``table3.csv``, ``table3.md``, on a shared (OOD) test set ``jackknife.csv``
(the test-image term of the CMI CIs, :mod:`.shared_test_usage`) and, on synthetic data,
``truth.json``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from medattn.analysis.features.conditioning import (
    CONDITIONS,
    MIN_PER_DIAGNOSIS,
    check_conditions,
    finer_than_label,
    normalise_diagnosis,
)
from medattn.analysis.features.decisions import (  # noqa: F401 (feature_tests, ...: public API)
    DEFAULT_TESTS,
    PREDICTIONS,
    check_resolution,
    decide,
    derive_seed,
    feature_tests,
    one_image_per_group,
    prediction_matrix,
    tests_job,
)
from medattn.analysis.features.shared_usage_runs import image_terms
from medattn.analysis.features.summary import model_differences, usage_summary
from medattn.analysis.features.table3 import TABLE3_FEATURES, table3, table3_markdown
from medattn.runs.atomic import atomic_write, write_text
from medattn.errors import ConfigError, DataError

RUN_CHOICES = ("all", "best")
SELECT_CHOICES = ("val", "test")
SKIN_SOURCES = ("isic", "ham10000", "pad-ufes-20")


@dataclass
class UsageResult:
    """What ``feature_usage`` computed and where it wrote it."""

    pvalues: pd.DataFrame  # one row per (run, condition, feature, test)
    decisions: pd.DataFrame  # one row per (run, condition, feature): counts, p, effects, used
    table: pd.DataFrame  # Table 3: one row per (model, condition), one column per feature
    markdown: str
    summary: pd.DataFrame  # per (condition, model, feature): k/N, median p, effects with CIs
    differences: pd.DataFrame  # variant vs base: paired differences of the effects
    notes: list[str] = field(default_factory=list)  # e.g. a fallback from diagnosis to label
    paths: dict[str, Path] = field(default_factory=dict)


def select_runs(records: pd.DataFrame, runs: str = "all", select_by: str = "val",
                datasets: list[str] | None = None) -> pd.DataFrame:
    """Finished final runs on skin data (by their ``source``) of ``datasets`` (default all); for
    ``runs="best"`` the one per data set and model with the highest balanced accuracy on
    ``select_by`` (``val`` or ``test``; :func:`medattn.runs.records.best_runs`).

    ``records``: :func:`medattn.runs.store.final_runs` rows."""
    from medattn.runs.records import best_runs

    if runs not in RUN_CHOICES:
        raise ConfigError(f"features: --runs {runs!r} is not one of {', '.join(RUN_CHOICES)}")
    if select_by not in SELECT_CHOICES:
        raise ConfigError(f"features: --select {select_by!r} is not one of "
                          f"{', '.join(SELECT_CHOICES)}")
    if records.empty:
        return records
    rec = records[(records["status"] == "done") & (records["phase"] == "final")]
    rec = rec[rec["source"].isin(SKIN_SOURCES)]
    if datasets:
        unknown = sorted(set(datasets) - set(rec["dataset"]))
        if unknown:
            raise ConfigError(f"features: --dataset {', '.join(unknown)}: no finished final runs "
                              f"on skin data; available: {', '.join(sorted(set(rec['dataset'])))}")
        rec = rec[rec["dataset"].isin(datasets)]
    if runs == "all" or rec.empty:
        return rec.sort_values(["dataset", "model", "run_id"])
    if f"bacc_{select_by}" not in rec:
        raise ConfigError(f"features: no run has a balanced accuracy on {select_by!r}")
    return best_runs(rec, ("dataset", "model"), select_by)


def _one_dataset(chosen: pd.DataFrame) -> None:
    """Table 3 describes the runs of one data set: runs of two (say ISIC with two label sets, or
    ISIC and HAM10000) would be pooled as if they were more runs of each model."""
    names = list(dict.fromkeys(chosen["dataset"]))
    if len(names) > 1:
        raise ConfigError(f"features: the final runs come from {len(names)} data sets "
                          f"({', '.join(names)}); Table 3 describes one at a time: give "
                          f"--dataset NAME (one of {', '.join(names)}).")


def _slug(spec: str) -> str:
    name = re.sub(r"[^A-Za-z0-9]+", "-", spec.split(":", 1)[0]).strip("-")
    return f"{name}-{hashlib.sha1(spec.encode()).hexdigest()[:8]}"


def _write_csv(path: Path, frame: pd.DataFrame) -> None:
    atomic_write(path, lambda tmp: frame.to_csv(tmp, index=False))


@dataclass
class _Data:
    """A data set's per-image features, leakage groups and diagnoses (loaded once)."""

    features: pd.DataFrame
    groups: pd.Series | None
    diagnosis: pd.Series | None  # image_id -> normalised diagnosis, None where unusable
    truth: dict | None  # the planted truth of a synthetic set
    note: str | None = None  # why the diagnosis cannot be used


def _load_data(spec: str, out_dir: Path, patches: str, progress: bool) -> _Data:
    from medattn.analysis.features.extract import extract_features
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
    return _Data(features, groups, diagnosis, read_truth(Path(folder).expanduser()), note)


def _split_ratio(runs_dir: Path, run_ids) -> float:
    """n_test / n_train of the runs' splits for the corrected CIs (0 on a fixed official split),
    as Table 2's paired tests take it (:func:`medattn.analysis.paired.comparison_ratio`)."""
    from medattn.analysis.paired import comparison_ratio, run_info
    from medattn.runs.store import iter_records

    wanted = set(run_ids)
    info = run_info([r for r in iter_records(runs_dir) if r.get("run_id") in wanted])
    return comparison_ratio(info, None)[0]


def feature_usage(runs_dir: str | os.PathLike, *, runs: str = "all", select: str = "val",
                  condition=CONDITIONS, min_per_diagnosis: int = MIN_PER_DIAGNOSIS,
                  prediction: str = "softmax", alpha: float = 0.01,
                  tests: tuple[str, ...] = DEFAULT_TESTS, set_name: str = "test", seed: int = 0,
                  test_options: dict | None = None, patches: str = "auto",
                  one_per_group: bool = True, jobs: int = 1, progress: bool = True,
                  dataset: str | None = None) -> UsageResult:
    """Run the feature-usage analysis over a study directory and write Table 3.

    Args:
        runs_dir: a study directory (``runs/<id>/record.json`` + predictions).
        runs: ``"all"`` (every finished final run: Table 3 shows k/N, effect sizes over runs and
            paired differences between models) or ``"best"`` (one run per model, the paper's
            table, chosen by ``select``).
        select: for ``runs="best"``: the run with the highest balanced accuracy on ``"val"``
            (default; choosing on the test set would select on the data the table reports) or
            ``"test"`` (the paper's wording allows either).
        condition: ``"diagnosis"`` (the fine diagnosis, each its own stratum), ``"label"``
            (the paper's 3-class label), or both (default; the first is the primary one). A data
            set without usable diagnoses falls back to the label, with a note.
        min_per_diagnosis: 1 (default): no merging; > 1: diagnoses with fewer tested images are
            merged into their class's rest stratum (opt-in; it can bring the coarse-label
            confound back, docs/features.md).
        prediction: which output is Y: ``"softmax"`` (default), ``"logits"`` or ``"class"``.
        alpha: significance level of each test; used = a majority of the tests reject.
        tests: names in ``medattn.analysis.citests.TESTS``.
        set_name: the predictions analysed (``test`` or ``ood-<name>``).
        seed: base seed of the tests (each run/feature/test gets its own derived seed).
        test_options: per-test keyword options, e.g. ``{"cmiknn": {"k": 20}}``.
        patches: colourful-patch source of the feature extraction: ``auto``, ``detector`` or
            ``annotation``.
        one_per_group: test one randomly chosen (seeded) image per leakage group (patient, else
            lesion). The tests assume independent samples; several images of one patient share
            patient- and lesion-level features *and* similar predictions, which looks like
            dependence and inflates false positives. ``False`` tests every image.
        jobs: worker processes for the tests (one feature of one run each); the p-values do not
            depend on it (every test has its own seed).
        dataset: the study's data set (config name) to analyse; needed when the final runs on
            skin data come from more than one (Table 3 describes one data set).
    """
    from threadpoolctl import threadpool_limits
    from medattn.progress import progress_bar

    from medattn.analysis.citests import TESTS
    from medattn.runs.store import final_runs, read_predictions

    if not 0 < alpha < 1:
        raise ConfigError(f"features: --alpha {alpha} must lie in (0, 1)")
    if int(jobs) != jobs or jobs < 1:
        raise ConfigError(f"features: --jobs {jobs!r} must be a whole number >= 1")
    unknown = [t for t in tests if t not in TESTS]
    if unknown or not tests:
        raise ConfigError(f"features: unknown test(s) {unknown}; choose from {', '.join(TESTS)}")
    if prediction not in PREDICTIONS:
        raise ConfigError(f"features: --prediction {prediction!r} is not one of "
                          f"{', '.join(PREDICTIONS)}")
    check_resolution(tests, test_options, alpha, len(TABLE3_FEATURES))
    conditions = check_conditions(condition)
    if int(min_per_diagnosis) != min_per_diagnosis or min_per_diagnosis < 1:
        raise ConfigError(f"features: --min-per-diagnosis {min_per_diagnosis!r} must be a whole "
                          "number >= 1")
    runs_dir = Path(runs_dir)
    if not (runs_dir / "runs").is_dir():
        raise DataError(f"{runs_dir}: not a study directory (no runs/ inside); give the RUNS_DIR "
                        f"of `medattn study` (its --out) or `medattn train` (its --runs)")
    finals = final_runs(runs_dir)  # of the current hyper-parameter selection
    chosen = select_runs(finals.current, runs, select, [dataset] if dataset else None)
    _one_dataset(chosen)
    if chosen.empty:
        cur = finals.current
        div = cur[(cur["status"] == "diverged") & (cur["phase"] == "final")] if len(cur) else cur
        if len(div) and not (cur["status"] == "done").any():  # say why rather than "none"
            raise DataError(
                f"{runs_dir}: every final run diverged ({len(div)}: "
                f"{', '.join(div['run_id'].astype(str).head(3))}"
                f"{', ...' if len(div) > 3 else ''}); feature usage needs runs that finished. "
                f"Their records say why (`medattn report {runs_dir}` lists them); train again "
                f"with a smaller learning rate.")
        raise DataError(f"{runs_dir}: no finished final runs on skin-lesion data "
                        f"({', '.join(SKIN_SOURCES)}); feature usage needs them")
    out_dir = runs_dir / "analysis" / "features"
    out_dir.mkdir(parents=True, exist_ok=True)
    settings = {"version": 3, "prediction": prediction, "set": set_name, "seed": seed,
                "tests": list(tests), "options": test_options or {}, "patches": patches,
                "one_per_group": one_per_group, "min_per_diagnosis": int(min_per_diagnosis)}
    key = hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    pv_path = out_dir / "pvalues.csv"
    previous = pd.read_csv(pv_path, dtype={"run_id": str, "key": str}) if pv_path.exists() else None
    if previous is not None and {"key", "condition"} <= set(previous):
        previous = previous[previous["key"] == key]
    else:
        previous = None

    data: dict[str, _Data] = {}
    notes: list[str] = list(finals.warnings)
    if len(finals.superseded):
        notes.append(f"{len(finals.superseded)} final run(s) trained under an earlier "
                     "hyper-parameter selection are left out (superseded)")
    rows: list[dict] = []
    if "cmiknn" in tests:
        from medattn.analysis.citests.cmiknn import warn_if_slow
        warn_if_slow()  # before the bar and the workers, which then stay silent
    bar = progress_bar(total=len(chosen) * len(TABLE3_FEATURES), desc="feature tests",
                       disable=not progress)
    pool = _InlinePool()
    if jobs > 1:  # spawn: workers never inherit torch's threads from this process
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        pool = ProcessPoolExecutor(int(jobs), mp_context=multiprocessing.get_context("spawn"))
    pending = []  # per run: (record, resumed rows, [(feature, n_left_out, future rows)])
    try:
        with threadpool_limits(1):
            for rec in chosen.itertuples(index=False):
                done = previous[previous["run_id"] == rec.run_id] if previous is not None else None
                if _covers(done, conditions):  # resumed as they were
                    pending.append((rec, _rows_of(done, conditions), []))
                    bar.update(len(TABLE3_FEATURES))
                    continue
                if rec.data not in data:
                    data[rec.data] = _load_data(rec.data, out_dir, patches, progress)
                    if data[rec.data].note and "diagnosis" in conditions:
                        notes.append(data[rec.data].note)
                d = data[rec.data]
                run_conditions = (conditions if d.diagnosis is not None else ("label",))
                if _covers(done, run_conditions):
                    pending.append((rec, _rows_of(done, run_conditions), []))
                    bar.update(len(TABLE3_FEATURES))
                    continue
                preds = read_predictions(runs_dir, rec.run_id, set_name)
                classes = [c[len("prob_"):] for c in preds.columns if c.startswith("prob_")]
                missing_ids = ~preds["image_id"].isin(d.features.index)
                if missing_ids.any():
                    raise DataError(f"run {rec.run_id}: {int(missing_ids.sum())} predicted images "
                                    f"(e.g. {preds['image_id'][missing_ids].iloc[0]}) are not in "
                                    f"{rec.data}; was the data set changed after training?")
                if one_per_group and d.groups is not None:
                    preds = one_image_per_group(preds, d.groups, seed)
                y = prediction_matrix(preds, classes, prediction)
                label = preds["label"].to_numpy(dtype=int)
                dx = (d.diagnosis.reindex(preds["image_id"]).to_numpy(dtype=object)
                      if d.diagnosis is not None else None)
                fx = d.features.loc[preds["image_id"]]
                tasks = []
                for f_i, (feature, cols) in enumerate(TABLE3_FEATURES.items()):
                    x = fx[list(cols)].to_numpy(dtype=float)
                    n_left_out = int(np.isnan(x).any(axis=1).sum())
                    seeds = [derive_seed(seed, rec.run_id, f_i, t_i) for t_i in range(len(tests))]
                    future = pool.submit(tests_job, x, y, label, dx, run_conditions, tests, seeds,
                                         test_options, int(min_per_diagnosis))
                    future.add_done_callback(lambda _: bar.update())
                    tasks.append((feature, n_left_out, future))
                pending.append((rec, [], tasks))
                if jobs == 1:  # done already: save this run now
                    _collect(pending, rows, alpha, prediction, set_name, key, pv_path)
            _collect(pending, rows, alpha, prediction, set_name, key, pv_path)
    finally:
        pool.shutdown(cancel_futures=True)
    bar.close()
    pvalues = pd.DataFrame(rows)
    pvalues["alpha"] = alpha
    _write_csv(pv_path, _merge_previous(pv_path, pvalues.to_dict("records"), key))
    decisions = decide(pvalues, tests)
    ratio = _split_ratio(runs_dir, chosen["run_id"])
    # --- shared (OOD) test set: the CMI CIs add test-image sampling (None in-distribution) ---
    image = image_terms(runs_dir, chosen, decisions, set_name, key=key, prediction=prediction,
                        seed=seed, one_per_group=one_per_group, test_options=test_options,
                        min_per_diagnosis=int(min_per_diagnosis), out_dir=out_dir,
                        load=lambda spec: data[spec] if spec in data else data.setdefault(
                            spec, _load_data(spec, out_dir, patches, progress)))
    # --- end shared test set ---
    summary = usage_summary(decisions, tests, ratio, rate=alpha, image=image)
    differences = model_differences(decisions, chosen[["model", "backbone", "variant"]], tests,
                                    ratio, image=image)
    table = table3(decisions, runs, conditions, rate=alpha)
    truths = {spec: d.truth for spec, d in data.items() if d.truth}
    if not truths:  # everything resumed: read the truth files without loading the data
        from medattn.data.synthetic.derm import read_truth

        for spec in chosen["data"].unique():
            truth = read_truth(Path(spec.split(":", 1)[-1]).expanduser())
            if truth:
                truths[spec] = truth
    markdown = table3_markdown(table, summary=summary, differences=differences, runs=runs,
                               select=select, prediction=prediction, alpha=alpha, tests=tests,
                               decisions=decisions, set_name=set_name, one_per_group=one_per_group,
                               conditions=conditions, min_per_diagnosis=int(min_per_diagnosis),
                               truths=truths, notes=notes)
    paths = {"pvalues": pv_path, "decisions": out_dir / "decisions.csv",
             "usage": out_dir / "usage.csv", "differences": out_dir / "differences.csv",
             "table3_csv": out_dir / "table3.csv", "table3_md": out_dir / "table3.md"}
    _write_csv(paths["decisions"], decisions)
    _write_csv(paths["usage"], summary)
    _write_csv(paths["differences"], differences)
    _write_csv(paths["table3_csv"], table.reset_index())
    write_text(paths["table3_md"], markdown)
    if truths:
        paths["truth"] = out_dir / "truth.json"
        write_text(paths["truth"], json.dumps(truths, indent=2) + "\n")
    return UsageResult(pvalues=pvalues, decisions=decisions, table=table, markdown=markdown,
                       summary=summary, differences=differences, notes=notes, paths=paths)


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
        future = Future()
        future.set_result(fn(*args))
        return future

    def shutdown(self, cancel_futures: bool = False) -> None:
        pass


def _collect(pending: list, rows: list[dict], alpha: float, prediction: str, set_name: str,
             key: str, pv_path: Path) -> None:
    """Turn the runs of ``pending`` into p-value rows, in run and feature order, and save them
    after each run (an interrupted analysis resumes from there)."""
    while pending:
        rec, resumed, tasks = pending.pop(0)
        rows.extend(resumed)
        for feature, n_left_out, future in tasks:
            for r in future.result():
                rows.append({"dataset": rec.dataset, "model": rec.model, "run_id": rec.run_id,
                             "split_seed": rec.split_seed, "feature": feature, **r,
                             "n_left_out": n_left_out, "alpha": alpha, "prediction": prediction,
                             "set": set_name, "key": key})
        _write_csv(pv_path, _merge_previous(pv_path, rows, key))


def _merge_previous(path: Path, rows: list[dict], key: str) -> pd.DataFrame:
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
