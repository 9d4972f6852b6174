"""Paired comparisons of final runs: split sizes, pairing on the split seed, divergence rates, and
the bootstrap over the stored per-image predictions (docs/statistics.md).

Every model of a study is trained on the same split seeds, so a variant's run on split s and its
reference's run on split s saw the same training and test images; their difference removes the
split-to-split variance that an unpaired test has to carry.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd

from medattn.analysis import stats
from medattn.analysis.bootstrap import paired_bootstrap
from medattn.analysis.shared_test import PairPredictions, read_pair_predictions
from medattn.analysis.variance import kfold_multiplier, variance_factor
from medattn.kfold_designs import KFOLD_DESIGNS
from medattn.errors import ConfigError

__all__ = ["DEFAULT_FRACTIONS", "add_bootstrap", "bootstrap_pairs", "comparison_factor",
           "comparison_ratio",
           "divergence_table", "pair_runs", "paired_columns", "run_info", "side_by_side",
           "split_info"]

DEFAULT_FRACTIONS = (0.7, 0.1, 0.2)
FIXED_SPLIT_NOTE = "fixed split: runs differ only by seed (no resampling correction, r = 0)"


def split_info(record: Mapping) -> dict:
    """The split a run was trained on: ``kind``, ``test_train_ratio`` (n_test / n_train; 0 for a
    fixed official split) and ``ratio_source`` (where the sizes came from).

    The sizes are the record's ``split`` (``n_train``, ``n_test``); a record without them gets
    ratio NaN (and :func:`comparison_ratio` says so).
    """
    split = record.get("split") if isinstance(record.get("split"), dict) else None
    if split and split.get("kind") == "official":
        return {"kind": "official", "test_train_ratio": 0.0, "ratio_source": "split"}
    split = split or {}
    n_train, n_test = split.get("n_train"), split.get("n_test")
    if isinstance(n_train, (int, float)) and isinstance(n_test, (int, float)) and n_train > 0:
        kind, folds = split.get("kind", "random"), split.get("folds")
        return {"kind": kind, "test_train_ratio": float(n_test) / float(n_train),
                "ratio_source": "split", **({"folds": int(folds)} if kind == "kfold" and folds
                                            else {})}
    return {"kind": split.get("kind", "random"), "test_train_ratio": math.nan,
            "ratio_source": "unknown"}


def run_info(records: Iterable[Mapping]) -> pd.DataFrame:
    """Per final run: ``run_id, n_classes, ood_sets, kind, test_train_ratio, ratio_source,
    folds`` (kind ``random``, ``official`` or ``kfold``; folds: k of a k-fold run, else NaN)."""
    rows = []
    for r in records:
        if r.get("phase") != "final":
            continue
        classes = r.get("classes") or []
        rows.append({"run_id": r.get("run_id"), "n_classes": len(classes) or np.nan,
                     "ood_sets": [f"ood-{k}" for k in (r.get("ood") or {})], **split_info(r)})
    return pd.DataFrame(rows, columns=["run_id", "n_classes", "ood_sets", "kind",
                                       "test_train_ratio", "ratio_source", "folds"])


def _unit(seed, fold) -> tuple[int, int] | None:
    """The pairing key of a run: (split seed, fold), fold -1 for a random split; None: unknown."""
    if seed is None or pd.isna(seed):
        return None
    return int(seed), -1 if fold is None or pd.isna(fold) else int(fold)


def _unit_name(unit: tuple[int, int]) -> str:
    return str(unit[0]) if unit[1] < 0 else f"{unit[0]} fold {unit[1]}"


def pair_runs(variant: pd.DataFrame, reference: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Join a variant's and its reference's runs (long rows of one data set and set) on the split
    seed, and for k-fold runs on (repetition seed, fold); returns ``(pairs, notes)`` with pairs
    ``split_seed, fold, run_id, ref_run_id, bacc_pct, ref_bacc_pct, diff`` (pp; diff = variant -
    reference; fold NaN for random splits), sorted by seed and fold.

    Units with a run on one side only are left out (named in the notes); where a model has several
    runs on one unit the last by run id is used (and noted).
    """
    notes = []
    sides = []
    for side in (variant, reference):
        folds = side["fold"] if "fold" in side else pd.Series(np.nan, index=side.index)
        by_unit: dict[tuple[int, int], tuple[str, float]] = {}
        for run_id, seed, fold, bacc, bb, model in sorted(
                zip(side["run_id"], side["split_seed"], folds, side["bacc_pct"],
                    side["backbone"], side["model"]), key=lambda t: t[0]):
            unit = _unit(seed, fold)
            if unit is None:
                notes.append(f"{bb} {model}: run {run_id} records no split seed and cannot be "
                             f"paired")
                continue
            if unit in by_unit:
                notes.append(f"{bb} {model}: several final runs on split seed "
                             f"{_unit_name(unit)}; paired using the last by run id, not "
                             f"{by_unit[unit][0]}")
            by_unit[unit] = (run_id, float(bacc))
        sides.append(by_unit)
    v, r = sides
    common = sorted(set(v) & set(r))
    lonely = sorted(set(v) ^ set(r))
    if lonely:
        notes.append(f"split seed(s) {', '.join(map(_unit_name, lonely))} have a run of only one "
                     f"of the two models and are left out of the pairs")
    pairs = pd.DataFrame({"split_seed": [u[0] for u in common],
                          "fold": [u[1] if u[1] >= 0 else np.nan for u in common],
                          "run_id": [v[u][0] for u in common],
                          "ref_run_id": [r[u][0] for u in common],
                          "bacc_pct": [v[u][1] for u in common],
                          "ref_bacc_pct": [r[u][1] for u in common]},
                         columns=["split_seed", "fold", "run_id", "ref_run_id", "bacc_pct",
                                  "ref_bacc_pct"])
    pairs["diff"] = pairs["bacc_pct"] - pairs["ref_bacc_pct"]
    return pairs, notes


def paired_columns(diffs: np.ndarray, ratio: float, *, alpha: float, margin: float,
                   factor: float | None = None, image_var: float = 0.0,
                   n_images: float = math.inf) -> dict:
    """The paired, corrected and Bayesian statistics of per-split differences (pp).

    ``ratio``: n_test / n_train; ``factor``: the design's variance factor
    (:func:`medattn.analysis.variance.variance_factor`; default 1/J + ratio, random splits).
    ``image_var`` (pp^2) and ``n_images``: the test-image sampling variance of a shared test set
    (:mod:`medattn.analysis.shared_test`), added to the paired and the corrected variance and
    to the Bayesian posterior's; 0 where each split has its own test images.
    """
    extra = {"image_var": image_var, "n_images": n_images}
    j = int(np.isfinite(np.asarray(diffs, float)).sum())
    # corrected_ttest's se is s_d sqrt(1/J + x): pass the x that gives the design's factor
    x = ratio if factor is None or j < 1 else max(0.0, factor - 1.0 / j)
    naive = stats.paired_ttest(diffs, alpha, **extra)
    corr = stats.corrected_ttest(diffs, x, alpha, **extra)
    probs = stats.bayes_correlated(diffs, x, margin, **extra)
    return {
        "n_pairs": corr.n, "test_train_ratio": ratio, "paired_diff": corr.diff,
        "paired_sd": corr.sd, "paired_se": naive.se, "paired_t": naive.t, "paired_df": naive.df,
        "paired_p": naive.p, "paired_ci_low": naive.ci_low, "paired_ci_high": naive.ci_high,
        "corrected_se": corr.se, "corrected_t": corr.t, "corrected_df": corr.df,
        "corrected_p": corr.p, "corrected_ci_low": corr.ci_low, "corrected_ci_high": corr.ci_high,
        "p_worse": probs[0], "p_equivalent": probs[1], "p_better": probs[2],
        "image_var": image_var if image_var > 0 else math.nan,
        "n_images": n_images if image_var > 0 else math.nan,
    }


def comparison_factor(runs: pd.DataFrame, n_pairs: int,
                      ratio: float) -> tuple[float, list[str]]:
    """The variance factor of one comparison's corrected test from its runs' design (``kind``
    and ``folds`` of :func:`run_info`; ``ratio``: r = n_test / n_train as used), and a note when
    it is not Bouckaert & Frank's 1/J + r."""
    j = max(int(n_pairs), 1)
    kinds = set(runs["kind"].dropna()) if "kind" in runs else set()
    if kinds != {"kfold"}:
        if "kfold" in kinds:
            return 1 / j + ratio, ["runs of k-fold and of other splits are paired; the "
                                   "correction uses random splits' factor 1/J + r"]
        return 1 / j + ratio, []
    folds = sorted({int(f) for f in runs["folds"].dropna()}) if "folds" in runs else []
    if len(folds) != 1:
        return 1 / j + ratio, ["k-fold runs without one recorded number of folds; the "
                               "correction uses random splits' factor 1/J + r"]
    k = folds[0]
    # repetitions: the distinct repetition seeds among the paired runs
    repeats = int(runs["split_seed"].nunique()) if "split_seed" in runs else max(1, round(j / k))
    try:
        c = kfold_multiplier(k, repeats)
    except ConfigError:  # not a calibrated design (e.g. runs of another version's config)
        c = max(KFOLD_DESIGNS.values())
        return 1 / j + c * ratio, [f"{k}-fold x {repeats} is not a calibrated design; the "
                                   f"correction uses the largest calibrated multiplier, c = {c:g}"]
    factor = variance_factor("kfold", j, ratio, folds=k, repeats=repeats)
    return factor, [f"repeated {k}-fold ({repeats} x {k} = {j} pairs): variance factor "
                    f"1/J + {c:g} r = {factor:.4g} (calibrated; docs/statistics.md)"]


def divergence_table(frame: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """Divergence rate of the final runs per (dataset, backbone, model) with an exact CI.

    ``frame``: :func:`medattn.runs.store.load_records`. Finished runs (``done`` or
    ``diverged``) are the denominator; failed or unfinished runs are not trials of the model.
    Columns ``dataset, backbone, model, finished, diverged, rate, ci_low, ci_high`` (fractions;
    Clopper-Pearson interval).
    """
    cols = ["dataset", "backbone", "model", "finished", "diverged", "rate", "ci_low", "ci_high"]
    if not len(frame):
        return pd.DataFrame(columns=cols)
    fin = frame[(frame["phase"] == "final") & frame["status"].isin(["done", "diverged"])]
    rows = []
    for (ds, bb, var), g in fin.groupby(["dataset", "backbone", "variant"], sort=False):
        k, n = int((g["status"] == "diverged").sum()), len(g)
        rate, lo, hi = stats.clopper_pearson(k, n, confidence)
        rows.append(dict(zip(cols, [ds, bb, var, n, k, rate, lo, hi])))
    return pd.DataFrame(rows, columns=cols)


def comparison_ratio(runs: pd.DataFrame, override: float | None) -> tuple[float, list[str]]:
    """r = n_test / n_train of the runs of one comparison, and notes on where it came from."""
    if override is not None:
        return float(override), [f"r = n_test / n_train = {override:.4g} as given "
                                 f"(test_train_ratio; CLI --test-train-ratio)"]
    if "kind" not in runs or runs.empty or runs["test_train_ratio"].isna().all():
        f = DEFAULT_FRACTIONS
        return f[2] / f[0], ["split sizes unknown; r = 0.2 / 0.7 (the default 70/10/20)"]
    if (runs["kind"] == "official").all():
        return 0.0, [FIXED_SPLIT_NOTE]
    notes = []
    if (runs["kind"] == "official").any():
        notes.append("runs on a fixed split are paired with runs on random splits; the "
                     "correction uses the random splits' r")
        runs = runs[runs["kind"] != "official"]
    ratio = float(runs["test_train_ratio"].mean())  # NaN-skipping: over the runs that record it
    unknown = int(runs["test_train_ratio"].isna().sum())
    notes.append(f"r = n_test / n_train = {ratio:.4g} from the runs' recorded split sizes"
                 + (f" ({unknown} run(s) record none)" if unknown else ""))
    return ratio, notes


# ----------------------------------------------------------------------------------------------
# Bootstrap over the stored predictions
# ----------------------------------------------------------------------------------------------


def bootstrap_pairs(runs_dir, pairs: pd.DataFrame, set_name: str, *, n_resamples: int,
                    seed: int, key: str, confidence: float = 0.95, cache: dict | None = None,
                    preds: PairPredictions | None = None) -> tuple[dict, list[str]]:
    """Paired bootstrap CI of one comparison from the runs' per-image predictions.

    ``pairs``: :func:`pair_runs` output; ``set_name``: ``test`` or ``ood-<name>``; ``key``: a
    string naming the comparison, mixed into ``seed`` so that each comparison has its own
    stream whatever the order they are computed in; ``preds``: the pairs' predictions if already
    read (:func:`medattn.analysis.shared_test.read_pair_predictions`). Returns
    ``({boot_ci_low, boot_ci_high, boot_n_pairs}, notes)``; pairs without usable predictions
    are left out (and noted, naming a truncated or unreadable file).
    """
    if preds is None:
        preds = read_pair_predictions(runs_dir, pairs, set_name, cache)
    notes = [f"{n} (bootstrap)" for n in preds.notes]
    if not preds.splits:
        return {"boot_ci_low": math.nan, "boot_ci_high": math.nan, "boot_n_pairs": 0}, notes
    res = paired_bootstrap(preds.splits, preds.n_classes, n_resamples=n_resamples,
                           confidence=confidence, seed=_mix(seed, key))
    return {"boot_ci_low": res.ci_low, "boot_ci_high": res.ci_high,
            "boot_n_pairs": res.n_splits}, notes


def _mix(seed: int, key: str) -> int:
    return int(seed) * 2**32 + zlib.crc32(key.encode("utf-8"))


def add_bootstrap(table: pd.DataFrame, pairs: pd.DataFrame, runs_dir, n_resamples: int,
                  seed: int, confidence: float, label=None,
                  cache: dict | None = None) -> list[str]:
    """Fill ``boot_ci_low``, ``boot_ci_high``, ``boot_n_pairs`` of ``table`` in place from the
    runs' predictions, one bootstrap per comparison of ``pairs``; returns notes, each prefixed by
    ``label(key dict)`` (default: the raw names)."""
    notes, cache = [], ({} if cache is None else cache)
    keys = ["dataset", "backbone", "model", "set", "reference"]
    for key, g in pairs.groupby(keys, sort=False):
        k = dict(zip(keys, key))
        set_file = "test" if k["set"] == "id" else k["set"]
        cols, why = bootstrap_pairs(runs_dir, g, set_file, n_resamples=n_resamples, seed=seed,
                                    key="/".join(map(str, key)), confidence=confidence,
                                    cache=cache)
        prefix = label(k) if label else " ".join(map(str, key))
        notes += [f"{prefix}: {w}" for w in why]
        sel = np.ones(len(table), bool)
        for c in keys:
            sel &= (table[c] == k[c]).to_numpy(bool)
        for c, v in cols.items():
            table.loc[sel, c] = v
    return notes


def side_by_side(table: pd.DataFrame, other: pd.DataFrame | None,
                 include_diverged: bool) -> pd.DataFrame:
    """The comparison on converged runs and on all runs (diverged included), side by side."""
    keys = ["dataset", "backbone", "model", "set", "reference"]
    cols = ["n_pairs", "diff", "p", "decision"]
    conv, all_ = (other, table) if include_diverged else (table, other)
    out = table.loc[table["reference"].notna(), keys].reset_index(drop=True).astype(object)
    for name, t in (("converged", conv), ("all", all_)):
        part = (t[keys + cols] if t is not None else pd.DataFrame(columns=keys + cols))
        # a side without any comparison has an all-missing (float) `reference`: join as objects
        part = part.astype({k: object for k in keys}).rename(
            columns={c: f"{name}_{c}" for c in cols})
        out = out.merge(part, on=keys, how="left")
    return out
