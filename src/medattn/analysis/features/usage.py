"""Table 3: which features the trained models use beyond what the diagnosis explains.

Feature F is *used* by a model when F is not independent of the model's prediction Y given the
ground-truth label Z (Reimers et al. 2020): each of cHSIC, RCoT and CMIknn tests ``F _||_ Y | Z`` on the
run's test-set predictions, and F counts as used when the majority of the tests reject at ``alpha``.

Outputs in ``RUNS_DIR/analysis/features/``: ``features_<data>.csv`` (the per-image features, a cache),
``pvalues.csv`` (one row per run, feature and test; re-used on the next call with the same
settings, so an interrupted analysis resumes), ``table3.csv`` and ``table3.md``.
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

from medattn.errors import ConfigError, DataError

# Table 3 columns -> feature columns of ``extract.py`` (D is tested as the 2-D vector count, area).
TABLE3_FEATURES: dict[str, tuple[str, ...]] = {
    "A": ("asymmetry",),
    "B": ("border",),
    "C": ("n_colours",),
    "D": ("structures", "structures_area"),
    "Age": ("age",),
    "Sex": ("sex",),
    "Skin color": ("skin_ita",),
    "Colorful patches": ("patch",),
}
PREDICTIONS = ("softmax", "logits", "class")
RUN_CHOICES = ("best", "all")
SKIN_SOURCES = ("isic", "ham10000", "pad-ufes-20")
DEFAULT_TESTS = ("chsic", "rcot", "cmiknn")
MIN_SAMPLES = 20
USED, NOT_USED = "✓", "✗"


@dataclass
class UsageResult:
    """What ``feature_usage`` computed and where it wrote it."""

    pvalues: pd.DataFrame  # one row per (run, feature, test)
    decisions: pd.DataFrame  # one row per (run, feature): n, left out, rejections, used
    table: pd.DataFrame  # Table 3: one row per model, one column per feature
    markdown: str
    paths: dict[str, Path] = field(default_factory=dict)


def prediction_matrix(preds: pd.DataFrame, classes: list[str], kind: str = "softmax") -> np.ndarray:
    """The model output used as Y, (n, d).

    ``softmax``: the class probabilities without the last one (they sum to 1, so C - 1 columns carry
    all the information and kNN distances are not distorted by the redundant coordinate);
    ``logits``: all C logits; ``class``: the predicted class one-hot, without the last column.
    """
    if kind not in PREDICTIONS:
        raise ConfigError(f"features: --prediction {kind!r} is not one of {', '.join(PREDICTIONS)}")
    if kind == "class":
        onehot = np.eye(len(classes))[preds["pred"].to_numpy(dtype=int)]
        return onehot[:, :-1]
    prefix = "prob_" if kind == "softmax" else "logit_"
    cols = [f"{prefix}{c}" for c in classes]
    missing = [c for c in cols if c not in preds]
    if missing:
        raise DataError(f"predictions lack columns {missing}; they are written by `medattn train`")
    values = preds[cols].to_numpy(dtype=float)
    return values[:, :-1] if kind == "softmax" else values


def select_runs(records: pd.DataFrame, runs: str = "best", select_by: str = "test") -> pd.DataFrame:
    """Finished final runs on skin data; for ``runs="best"`` the one per model with the highest
    balanced accuracy on ``select_by`` (ties: validation balanced accuracy, then run id)."""
    if runs not in RUN_CHOICES:
        raise ConfigError(f"features: --runs {runs!r} is not one of {', '.join(RUN_CHOICES)}")
    if records.empty:
        return records
    rec = records[(records["status"] == "done") & (records["phase"] == "final")].copy()
    rec = rec[rec["data"].astype(str).str.split(":").str[0].isin(SKIN_SOURCES)]
    if runs == "all" or rec.empty:
        return rec.sort_values(["model", "run_id"])
    key = f"bacc_{select_by}"
    if key not in rec:
        raise ConfigError(f"features: no run has a balanced accuracy on {select_by!r}")
    rec = rec.assign(_k1=rec[key].fillna(-1.0),
                     _k2=rec["bacc_val"].fillna(-1.0) if "bacc_val" in rec else 0.0)
    rec = rec.sort_values(["model", "_k1", "_k2", "run_id"], ascending=[True, False, False, True])
    return rec.groupby("model", sort=False).head(1).drop(columns=["_k1", "_k2"])


def _slug(spec: str) -> str:
    name = re.sub(r"[^A-Za-z0-9]+", "-", spec.split(":", 1)[0]).strip("-")
    return f"{name}-{hashlib.sha1(spec.encode()).hexdigest()[:8]}"


def _model_order(models) -> list[str]:
    try:
        from medattn.models import list_models

        known = {m: i for i, m in enumerate(list_models())}
    except Exception:  # the ordering is cosmetic
        known = {}
    return sorted(models, key=lambda m: (known.get(m, len(known)), m))


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _write_csv(path: Path, frame: pd.DataFrame) -> None:
    tmp = path.with_name(path.name + ".tmp")
    frame.to_csv(tmp, index=False)
    os.replace(tmp, path)


def feature_pvalues(x: np.ndarray, y: np.ndarray, z: np.ndarray, tests=DEFAULT_TESTS, seed: int = 0,
                 options: dict | None = None) -> dict[str, float]:
    """p-value of each test of x _||_ y | z (NaN when too few samples or x constant in every class)."""
    from medattn.analysis.citests import TESTS

    keep = ~np.isnan(x).any(axis=1)
    x, y, z = x[keep], y[keep], z[keep]
    informative = any(np.ptp(x[z == c], axis=0).max() > 0 for c in np.unique(z) if (z == c).sum() > 1)
    out = {}
    for i, name in enumerate(tests):
        if len(x) < MIN_SAMPLES or not informative:
            out[name] = float("nan")
        else:
            out[name] = TESTS[name](x, y, z, seed=seed + i, **(options or {}).get(name, {}))
    return out


def _pvalues_job(x: np.ndarray, y: np.ndarray, z: np.ndarray, tests, seed: int,
                 options: dict | None) -> dict[str, float]:
    """:func:`feature_pvalues` in a worker process, with BLAS on one thread."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        return feature_pvalues(x, y, z, tests, seed=seed, options=options)


def feature_usage(runs_dir: str | os.PathLike, *, runs: str = "best", prediction: str = "softmax",
                  alpha: float = 0.01, tests: tuple[str, ...] = DEFAULT_TESTS, set_name: str = "test",
                  select_by: str = "test", seed: int = 0, test_options: dict | None = None,
                  patches: str = "auto", one_per_group: bool = True, jobs: int = 1,
                  progress: bool = True) -> UsageResult:
    """Run the feature-usage analysis over a study directory and write Table 3.

    Args:
        runs_dir: a study directory (``runs/<id>/record.json`` + predictions).
        runs: ``"best"`` (the best final run per model by balanced accuracy on ``select_by``) or
            ``"all"`` (every final run; Table 3 then shows the share of runs using each feature).
        prediction: which output is Y: ``"softmax"`` (default), ``"logits"`` or ``"class"``.
        alpha: significance level of each test; used = a majority of the tests reject.
        tests: names in ``medattn.analysis.citests.TESTS``.
        set_name: the predictions analysed (``test`` or ``ood-<name>``).
        seed: base seed of the tests (each run/feature/test gets its own derived seed).
        test_options: per-test keyword options, e.g. ``{"cmiknn": {"k": 20}}``.
        patches: colourful-patch source for the feature extraction (``auto``/``detector``/``annotation``).
        one_per_group: test one randomly chosen (seeded) image per leakage group (patient, else
            lesion). The tests assume independent samples; several images of one patient share
            patient- and lesion-level features *and* similar predictions, which looks like
            dependence and inflates false positives. ``False`` tests every image.
        jobs: worker processes for the tests (one feature of one run each); the p-values do not
            depend on it (every test has its own seed).
    """
    from threadpoolctl import threadpool_limits
    from medattn.progress import progress_bar

    from medattn.analysis.citests import TESTS
    from medattn.analysis.features.extract import extract_features
    from medattn.data import load_dataset
    from medattn.training.store import load_records, read_predictions

    if not 0 < alpha < 1:
        raise ConfigError(f"features: --alpha {alpha} must lie in (0, 1)")
    if int(jobs) != jobs or jobs < 1:
        raise ConfigError(f"features: --jobs {jobs!r} must be a whole number >= 1")
    unknown = [t for t in tests if t not in TESTS]
    if unknown or not tests:
        raise ConfigError(f"features: unknown test(s) {unknown}; choose from {', '.join(TESTS)}")
    if prediction not in PREDICTIONS:
        raise ConfigError(f"features: --prediction {prediction!r} is not one of {', '.join(PREDICTIONS)}")
    runs_dir = Path(runs_dir)
    if not (runs_dir / "runs").is_dir():
        raise DataError(f"{runs_dir}: not a study directory (no runs/ inside); give the RUNS_DIR "
                        f"of `medattn study` (its --out) or `medattn train` (its --runs)")
    chosen = select_runs(load_records(runs_dir), runs, select_by)
    if chosen.empty:
        raise DataError(f"{runs_dir}: no finished final runs on skin-lesion data "
                        f"({', '.join(SKIN_SOURCES)}); feature usage needs them")
    out_dir = runs_dir / "analysis" / "features"
    out_dir.mkdir(parents=True, exist_ok=True)
    settings = {"prediction": prediction, "set": set_name, "seed": seed, "tests": list(tests),
                "options": test_options or {}, "patches": patches, "one_per_group": one_per_group}
    key = hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    pv_path = out_dir / "pvalues.csv"
    previous = pd.read_csv(pv_path, dtype={"run_id": str, "key": str}) if pv_path.exists() else None
    if previous is not None and "key" in previous:
        previous = previous[previous["key"] == key]
    else:
        previous = None

    feature_tables: dict[str, pd.DataFrame] = {}
    groups: dict[str, pd.Series] = {}
    rows: list[dict] = []
    todo = [(r, f) for r in chosen.itertuples(index=False) for f in TABLE3_FEATURES]
    if "cmiknn" in tests:
        from medattn.analysis.citests.cmiknn import warn_if_slow
        warn_if_slow()  # before the bar and the workers, which then stay silent
    bar = progress_bar(total=len(todo), desc="feature tests", disable=not progress)
    pool = _InlinePool()
    if jobs > 1:  # spawn: workers never inherit torch's threads from this process
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        pool = ProcessPoolExecutor(int(jobs), mp_context=multiprocessing.get_context("spawn"))
    pending = []  # per run: (record, resumed rows, [(feature, n_left_out, n, future p-values)])
    try:
        with threadpool_limits(1):
            for r_i, rec in enumerate(chosen.itertuples(index=False)):
                done = previous[previous["run_id"] == rec.run_id] if previous is not None else None
                if done is not None and set(done["feature"]) >= set(TABLE3_FEATURES):
                    pending.append((rec, done.to_dict("records"), []))  # resumed as they were
                    bar.update(len(TABLE3_FEATURES))
                    continue
                if rec.data not in feature_tables:
                    table = load_dataset(rec.data)
                    # missing groups stay NA: each such image is then its own group
                    groups[rec.data] = (table.set_index("image_id")["group"].astype(object)
                                        if "group" in table else None)
                    feature_tables[rec.data] = extract_features(
                        table, cache=out_dir / f"features_{_slug(rec.data)}.csv", patches=patches,
                        progress=progress)
                feats = feature_tables[rec.data]
                preds = read_predictions(runs_dir, rec.run_id, set_name)
                classes = [c[len("prob_"):] for c in preds.columns if c.startswith("prob_")]
                missing_ids = ~preds["image_id"].isin(feats.index)
                if missing_ids.any():
                    raise DataError(f"run {rec.run_id}: {int(missing_ids.sum())} predicted images "
                                    f"(e.g. {preds['image_id'][missing_ids].iloc[0]}) are not in "
                                    f"{rec.data}; was the data set changed after training?")
                if one_per_group and groups[rec.data] is not None:
                    preds = one_image_per_group(preds, groups[rec.data], seed)
                y = prediction_matrix(preds, classes, prediction)
                z = preds["label"].to_numpy(dtype=int)
                fx = feats.loc[preds["image_id"]]
                tasks = []
                for f_i, (feature, cols) in enumerate(TABLE3_FEATURES.items()):
                    x = fx[list(cols)].to_numpy(dtype=float)
                    n_left_out = int(np.isnan(x).any(axis=1).sum())
                    future = pool.submit(_pvalues_job, x, y, z, tests,
                                         seed + 1000 * r_i + 10 * f_i, test_options)
                    future.add_done_callback(lambda _: bar.update())
                    tasks.append((feature, n_left_out, len(x) - n_left_out, future))
                pending.append((rec, [], tasks))
                if jobs == 1:  # done already: save this run now
                    _collect(pending, rows, alpha, prediction, set_name, key, pv_path)
            _collect(pending, rows, alpha, prediction, set_name, key, pv_path)
    finally:
        pool.shutdown(cancel_futures=True)
    bar.close()
    pvalues = pd.DataFrame(rows)
    pvalues["alpha"] = alpha
    pvalues["reject"] = pvalues["p_value"] < alpha
    _write_csv(pv_path, _merge_previous(pv_path, pvalues.drop(columns="reject").to_dict("records"), key))
    decisions = decide(pvalues, len(tests))
    table = table3(decisions, runs)
    markdown = table3_markdown(table, runs=runs, prediction=prediction, alpha=alpha, tests=tests,
                               decisions=decisions, set_name=set_name, one_per_group=one_per_group)
    paths = {"pvalues": pv_path, "table3_csv": out_dir / "table3.csv", "table3_md": out_dir / "table3.md",
             "decisions": out_dir / "decisions.csv"}
    _write_csv(paths["table3_csv"], table.reset_index())
    _write_csv(paths["decisions"], decisions)
    _write_text(paths["table3_md"], markdown)
    return UsageResult(pvalues=pvalues, decisions=decisions, table=table, markdown=markdown, paths=paths)


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
        for feature, n_left_out, n, future in tasks:
            for name, p in future.result().items():
                rows.append({"model": rec.model, "run_id": rec.run_id, "feature": feature,
                             "test": name, "p_value": p, "n": n, "n_left_out": n_left_out,
                             "alpha": alpha, "prediction": prediction, "set": set_name,
                             "key": key})
        _write_csv(pv_path, _merge_previous(pv_path, rows, key))


def one_image_per_group(preds: pd.DataFrame, group: pd.Series, seed: int = 0) -> pd.DataFrame:
    """Keep one randomly chosen (seeded) prediction row per group (``group``: image_id -> group)."""
    order = np.random.default_rng(seed).permutation(len(preds))
    shuffled = preds.iloc[order]
    ids = shuffled["image_id"].to_numpy()
    g = group.reindex(ids).to_numpy(dtype=object)
    g = np.where(pd.isna(g), ids, g)  # an image without a group is its own group
    return shuffled[~pd.Series(g).duplicated().to_numpy()].sort_index()


def _merge_previous(path: Path, rows: list[dict], key: str) -> pd.DataFrame:
    """Rows of other settings already in pvalues.csv are kept; ours replace our key's rows."""
    ours = pd.DataFrame(rows)
    if path.exists():
        old = pd.read_csv(path, dtype={"run_id": str, "key": str})
        if "key" in old:
            old = old[old["key"] != key]
            return pd.concat([old, ours], ignore_index=True)
    return ours


def decide(pvalues: pd.DataFrame, n_tests: int) -> pd.DataFrame:
    """Majority decision per (run, feature): used when more than half of the tests reject.

    A test that could not run (NaN p-value: too few samples, or a feature constant within every
    class) does not reject; when no test ran the decision is missing.
    """
    pv = pvalues.assign(reject=pvalues["p_value"] < pvalues["alpha"], ran=pvalues["p_value"].notna())
    out = pv.groupby(["model", "run_id", "feature"], sort=False).agg(
        n=("n", "first"), n_left_out=("n_left_out", "first"), rejections=("reject", "sum"),
        tests_run=("ran", "sum")).reset_index()
    out["used"] = np.where(out["tests_run"] > 0, out["rejections"] > n_tests / 2, np.nan)
    for name in pv["test"].unique():
        col = pv[pv["test"] == name].set_index(["run_id", "feature"])["p_value"]
        out[f"p_{name}"] = [col.get((r, f), np.nan) for r, f in zip(out["run_id"], out["feature"])]
    return out


def table3(decisions: pd.DataFrame, runs: str = "best") -> pd.DataFrame:
    """One row per model, one column per Table 3 feature: ✓/✗ (best run) or the share of runs
    using the feature, as "k/N" (all runs); "n/a" where no test could run."""
    cells = {}
    for model, grp in decisions.groupby("model", sort=False):
        row = {}
        for feature in TABLE3_FEATURES:
            g = grp[grp["feature"] == feature]["used"].dropna()
            if g.empty:
                row[feature] = "n/a"
            elif runs == "best":
                row[feature] = USED if bool(g.iloc[0]) else NOT_USED
            else:
                row[feature] = f"{int(g.sum())}/{len(g)}"
        cells[model] = row
    table = pd.DataFrame.from_dict(cells, orient="index")[list(TABLE3_FEATURES)]
    table = table.loc[_model_order(table.index)]
    table.index.name = "model"
    return table


def table3_markdown(table: pd.DataFrame, *, runs: str, prediction: str, alpha: float, tests,
                    decisions: pd.DataFrame, set_name: str, one_per_group: bool = True) -> str:
    """Table 3 as Markdown with a legend that states how it was made."""
    header = "| Model | " + " | ".join(table.columns) + " |"
    lines = [header, "|" + "---|" * (len(table.columns) + 1)]
    for model, row in table.iterrows():
        lines.append(f"| {model} | " + " | ".join(str(v) for v in row) + " |")
    n = decisions.groupby("feature")["n"].agg(["min", "max"])
    left = decisions.groupby("feature")["n_left_out"].max()
    sizes = ", ".join(f"{f}: {int(n.loc[f, 'min'])}" + (f"-{int(n.loc[f, 'max'])}" if n.loc[f, "min"] !=
                      n.loc[f, "max"] else "") + (f" ({int(left[f])} left out)" if left[f] else "")
                      for f in TABLE3_FEATURES if f in n.index)
    which = ("the best final run of each model by test balanced accuracy" if runs == "best"
             else "all final runs; k/N = feature used in k of N runs")
    legend = (f"\nFeature usage ({which}). A feature is used ({USED}) when the majority of "
              f"{', '.join(tests)} rejects independence of the feature and the model's {prediction} "
              f"output given the true label at p < {alpha:g}, on the {set_name} predictions"
              f"{' (one image per patient/lesion)' if one_per_group else ''}. "
              f"A = asymmetry, B = border irregularity, C = colours, D = dermoscopic structures "
              f"(count and area share). Samples per test: {sizes}.\n")
    return "\n".join(lines) + "\n" + legend
