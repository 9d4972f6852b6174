"""Table 2: every model variant against its reference, from run records or a summary CSV.

A *summary* is a table with one row per (dataset, backbone, model, set) and the columns
``mean, sd, n`` (balanced accuracy in percent, sd with ddof=1). ``model`` is the variant
(``base``, ``ga``, ``la``, ``ga+la``, ``ela``, ``ga+ela``; ``1k``/``21k`` for the ViT backbone
``vit``); ``set`` is ``id`` (the in-distribution test split) or ``ood``/``ood-<name>``.

References: a variant is compared with the ``base`` of its own backbone in the same data set and
set. A backbone without a base of its own (the ViTs) is compared with *every* base in the same
data set and set, which generalises the paper's layout (ViT-1k under the ResNet columns, ViT-21k
under the EfficientNet ones) to all pairs. Multiple-comparison correction runs within each column
of Table 2, i.e. over all comparisons that share (dataset, set, reference).

Tests (docs/statistics.md): from runs, a variant's and its reference's final runs are joined on the
split seed and the per-split differences go through the corrected resampled t-test (the default
mark), the naive paired t-test and the Bayesian correlated t-test; Welch's test on the two sets of
accuracies (the paper's) is always reported too. Where the runs share their test images (OOD
sets, a fixed split) the paired, corrected and Bayesian tests add the test-image sampling variance
(:mod:`medattn.analysis.shared_test`; column ``variance``). From a summary there are no pairs: Welch marks
the table, or the corrected test approximated from the summary (``test_train_ratio``).

This module computes; :mod:`medattn.analysis.summary` reads its inputs and
:mod:`medattn.report.table2` renders the result (Markdown, LaTeX, JSON).
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from medattn.analysis import paired, shared_test, stats
from medattn.analysis.labels import comparison_label
from medattn.analysis.sequential import sequential_note
from medattn.analysis.settings import TESTS, CompareSettings
from medattn.analysis.summary import SUMMARY_COLUMNS, _summary_of, summarize_runs
from medattn.errors import ArgumentError, DataError
from medattn.models import registry as R
from medattn.runs import store
from medattn.runs.hint import check_runs_dir

__all__ = ["CompareResult", "FORMATS", "PAPER_TABLE2", "compare_runs", "compare_summary"]

log = logging.getLogger("medattn.compare")

PAPER_TABLE2 = Path(__file__).resolve().parents[1] / "configs" / "paper_table2.csv"
FORMATS = ("md", "csv", "json", "latex")
# labels and table order of backbones and variants: the model registry (R.backbone_label, ...);
# the settings, tests and corrections: medattn.analysis.settings
KEY_COLUMNS = ["dataset", "backbone", "model", "set", "reference", "mean", "sd", "n", "ref_mean",
               "ref_sd", "ref_n"]
# The marking test's statistics, then the Bayesian, paired, bootstrap and Welch (paper) columns.
STAT_COLUMNS = ["test", "diff", "diff_ci_low", "diff_ci_high", "se", "t", "df", "p", "p_adjusted",
                "significant", "significant_adjusted", "tost_p", "equivalent", "detectable_diff",
                "p_worse", "p_equivalent", "p_better", "decision",
                "n_pairs", "test_train_ratio", "paired_diff", "paired_sd", "paired_p",
                "paired_ci_low", "paired_ci_high", "corrected_p", "corrected_ci_low",
                "corrected_ci_high", "corrected_se", "corrected_df", "boot_ci_low", "boot_ci_high", "boot_n_pairs",
                "welch_p", "welch_ci_low", "welch_ci_high", "welch_significant", "hedges_g",
                "hedges_g_ci_low", "hedges_g_ci_high", "welch_tost_p", "welch_detectable_diff",
                "variance", "image_var", "n_images"]
# What the marking test's variance holds (column ``variance``; docs/statistics.md).
VARIANCE_SPLITS, VARIANCE_SHARED = shared_test.VARIANCE_SPLITS, shared_test.VARIANCE_SHARED
VARIANCE_WELCH = "between runs (Welch)"
VARIANCE_SUMMARY = "splits (from the summary, unpaired)"
TABLE_COLUMNS = KEY_COLUMNS + STAT_COLUMNS
PAIR_COLUMNS = ["dataset", "backbone", "model", "set", "reference", "split_seed", "fold", "run_id",
                "ref_run_id", "bacc_pct", "ref_bacc_pct", "diff"]


@dataclass
class CompareResult:
    """Table 2 in long form plus what the reader needs to judge it.

    ``table``: one row per (dataset, backbone, model, set, reference), columns ``TABLE_COLUMNS``
    (percent / percentage points). ``runs``: per-run values (long form, ``RUN_COLUMNS``; ``None``
    for a summary). ``excluded``: final runs that did not enter, with ``reason``. ``settings``:
    the :class:`~medattn.analysis.settings.CompareSettings` as a dict, ``test`` resolved (plus
    ``design: sequential`` for a stop-when-decided study). From runs also: ``pairs`` (``PAIR_COLUMNS``, the per-split
    differences of every comparison), ``divergence`` (rate per model with its exact CI),
    ``sensitivity`` (the comparison on converged runs and on all runs, side by side) and
    ``notes`` (what the reader must know: missing partners, where r came from, ...). Final runs
    of an earlier hyper-parameter selection are among ``excluded``; ``warnings`` names data sets
    whose final runs were trained on different data (``store.final_runs``). ``paths``: the
    files written (:func:`medattn.report.table2.run_compare`'s ``out``; none by
    :func:`compare_runs`); ``text``: the rendered output where one was asked for.
    """

    table: pd.DataFrame
    runs: pd.DataFrame | None = None
    excluded: pd.DataFrame = field(default_factory=pd.DataFrame)
    settings: dict = field(default_factory=dict)
    pairs: pd.DataFrame | None = None
    divergence: pd.DataFrame | None = None
    sensitivity: pd.DataFrame | None = None
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    paths: dict[str, Path] = field(default_factory=dict)
    text: str = ""

    def comparisons(self) -> pd.DataFrame | None:
        """The rows of :attr:`table` that compare a model with a reference; None when there
        are none (a table of bases only, or no table)."""
        t = self.table
        t = t[t["reference"].notna()] if t is not None and len(t) else None
        return None if t is None or t.empty else t


# ----------------------------------------------------------------------------------------------
# The comparison
# ----------------------------------------------------------------------------------------------


def _backbone_order(values) -> list:
    return [(R.backbone_rank(v), v) for v in values]


def _model_order(values) -> list:
    return [R.variant_rank(v) for v in values]


def _sort(df: pd.DataFrame, datasets: list[str]) -> pd.DataFrame:
    # Table order: dataset, set (id first), column (reference, or own backbone for a base), then
    # the column's own variants before the models compared with it from elsewhere (ViTs).
    col = [r if isinstance(r, str) else b for r, b in zip(df["reference"], df["backbone"])]
    keys = list(zip(
        [datasets.index(v) for v in df["dataset"]],
        [(0, "") if v == "id" else (1, v) for v in df["set"]],
        _backbone_order(col),
        [int(b != c) for b, c in zip(df["backbone"], col)],
        _backbone_order(df["backbone"]),
        _model_order(df["model"]),
    ))
    idx = sorted(range(len(df)), key=lambda i: keys[i])
    return df.iloc[idx].reset_index(drop=True)


def _references(summary: pd.DataFrame):
    """Yield ``(row, reference row or None)`` for every row of a summary (module docstring)."""
    for (_, _), grp in summary.groupby(["dataset", "set"], sort=False):
        bases = {r["backbone"]: r for _, r in grp[grp["model"] == "base"].iterrows()}
        for _, r in grp.iterrows():
            if r["model"] == "base":
                refs = [None]
            elif r["backbone"] in bases:
                refs = [bases[r["backbone"]]]
            elif R.is_attention_variant(r["model"]):
                refs = [None]  # a CNN variant is only ever compared with its own base
            else:
                refs = list(bases.values()) or [None]  # ViTs: against every base
            for ref in refs:
                yield dict(r[SUMMARY_COLUMNS]), ref


def _welch_columns(own: dict, ref, settings: CompareSettings) -> dict:
    alpha, margin, power = settings.alpha, settings.margin, settings.power
    args = (own["mean"], own["sd"], int(own["n"]), ref["mean"], ref["sd"], int(ref["n"]))
    w = stats.welch(*args, confidence=1 - alpha)
    g = stats.hedges_g(*args, confidence=1 - alpha)
    return {"reference": ref["backbone"], "ref_mean": ref["mean"], "ref_sd": ref["sd"],
            "ref_n": int(ref["n"]), "welch_diff": w.diff, "welch_se": w.se, "welch_t": w.t,
            "welch_df": w.df, "welch_p": w.p, "welch_ci_low": w.ci_low, "welch_ci_high": w.ci_high,
            "hedges_g": g[0], "hedges_g_ci_low": g[1], "hedges_g_ci_high": g[2],
            "welch_tost_p": stats.tost(*args, margin),
            "welch_detectable_diff": stats.detectable_difference(*args[1:3], *args[4:6], alpha,
                                                                 power)}


def _finish(rows: list[dict], settings: CompareSettings, datasets: list[str]) -> pd.DataFrame:
    """Marks from the chosen test, Holm within columns, column order and table order."""
    test, alpha, margin = settings.marking_test, settings.alpha, settings.margin
    internal = [f"{src}_{c}" for src in TESTS for c in ("diff", "se", "t", "df", "p", "ci_low",
                                                         "ci_high")]
    table = pd.DataFrame(rows).reindex(columns=list(dict.fromkeys(TABLE_COLUMNS + internal)))
    table["test"] = [test if isinstance(r, str) else None for r in table["reference"]]
    src = {"welch": "welch", "paired": "paired", "corrected": "corrected"}[test]
    for col in ("diff", "se", "t", "df", "p", "ci_low", "ci_high"):
        out = {"ci_low": "diff_ci_low", "ci_high": "diff_ci_high"}.get(col, col)
        table[out] = table[f"{src}_{col}"].astype(float)
    table["tost_p"] = [stats.tost_from_se(d, s, f, margin) for d, s, f in
                       zip(table["diff"], table["se"], table["df"])]
    table["detectable_diff"] = [stats.detectable_from_se(s, f, alpha, settings.power)
                                for s, f in zip(table["se"], table["df"])]
    table["p_adjusted"] = np.nan
    has_ref = table["reference"].notna()
    for _, idx in table[has_ref].groupby(["dataset", "set", "reference"]).groups.items():
        table.loc[idx, "p_adjusted"] = stats.adjust_pvalues(table.loc[idx, "p"].to_numpy(float),
                                                            settings.correction, alpha)
    for out, src_col in (("significant", "p"), ("significant_adjusted", "p_adjusted"),
                         ("equivalent", "tost_p"), ("welch_significant", "welch_p")):
        v = table[src_col].to_numpy(float)
        table[out] = pd.array([None if math.isnan(x) else bool(x < alpha) for x in v],
                              dtype="boolean")
    probs = table[["p_worse", "p_equivalent", "p_better"]].to_numpy(float)
    # No decision from fewer than 3 pairs or from a zero variance (docs/statistics.md).
    n_dec = table["n_pairs"].astype(float).fillna(
        np.fmin(table["n"].astype(float), table["ref_n"].astype(float)))
    table["decision"] = [None if not np.isfinite(p).all() else
                         stats.decision_withheld(n, se) or stats.bayes_decision(tuple(p))
                         for p, n, se in zip(probs, n_dec, table["corrected_se"].astype(float))]
    # Hedges' g's CI: the marking test's CI of the difference on g's scale (stats.scaled_g_ci).
    g_ci = [stats.scaled_g_ci(lo, hi, sd, int(n), rsd, int(rn)) if ref else (math.nan,) * 2
            for lo, hi, sd, n, rsd, rn, ref in zip(table["diff_ci_low"], table["diff_ci_high"],
                                                   table["sd"], table["n"], table["ref_sd"],
                                                   table["ref_n"], has_ref)]
    table["hedges_g_ci_low"] = [lo for lo, _ in g_ci]
    table["hedges_g_ci_high"] = [hi for _, hi in g_ci]
    table["variance"] = [None if not ref else VARIANCE_WELCH if test == "welch" else
                         v if isinstance(v, str) else VARIANCE_SPLITS
                         for v, ref in zip(table["variance"].astype(object), has_ref)]
    for col in ("n", "ref_n", "n_pairs", "boot_n_pairs"):
        table[col] = table[col].astype("Float64").round().astype("Int64")
    return _sort(table[TABLE_COLUMNS], datasets)


def compare_summary(summary: pd.DataFrame, *,
                    settings: CompareSettings = CompareSettings()) -> pd.DataFrame:
    """Compare every variant with its reference; returns Table 2 in long form (``TABLE_COLUMNS``).

    ``summary``: ``SUMMARY_COLUMNS`` in percent. ``settings.test``: the test that marks the
    table, ``welch`` (the paper's; the default for a summary) or ``corrected``: Welch's variance
    with each term multiplied by ``1 + n * test_train_ratio``
    (:func:`medattn.analysis.stats.corrected_welch`, an approximation without pairing
    information); ``settings.test_train_ratio`` (n_test / n_train of the splits) also gives the
    Bayesian columns. The correction applies to the marking test within each (dataset, set,
    reference) family. Base rows are kept (with empty statistics) so the table is complete.
    """
    settings = settings.for_source(summary=True)
    if settings.test == "paired":
        raise ArgumentError("{test} paired needs the per-split results of both models; a summary "
                            "has only means and sds: use {test} corrected or welch, or give "
                            "the runs folder.", "test")
    ratio = settings.test_train_ratio
    if settings.test == "corrected" and ratio is None:
        raise ArgumentError("{test} corrected on a summary needs {test_train_ratio}, the ratio "
                            "n_test / n_train of the splits (0.2857 for 70/10/20 splits).",
                            "test", "test_train_ratio")
    alpha, margin = settings.alpha, settings.margin
    rows = []
    for own, ref in _references(summary):
        row = dict(own)
        if ref is not None:
            row.update(_welch_columns(own, ref, settings))
            if ratio is not None:
                c = stats.corrected_welch(own["mean"], own["sd"], int(own["n"]), ref["mean"],
                                          ref["sd"], int(ref["n"]), ratio, 1 - alpha)
                probs = stats.bayes_from_t(c.diff, c.se, c.df, margin)
                row.update({"variance": VARIANCE_SUMMARY,
                            "test_train_ratio": ratio, "corrected_diff": c.diff,
                            "corrected_se": c.se, "corrected_t": c.t, "corrected_df": c.df,
                            "corrected_p": c.p, "corrected_ci_low": c.ci_low,
                            "corrected_ci_high": c.ci_high, "p_worse": probs[0],
                            "p_equivalent": probs[1], "p_better": probs[2]})
        rows.append(row)
    return _finish(rows, settings, list(dict.fromkeys(summary["dataset"])))


def _run_table(runs: pd.DataFrame, settings: CompareSettings, shared=None
               ) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """Table 2 of the runs in ``runs`` (long form, all included): Welch on their summary, the
    paired statistics on the runs joined by split seed. ``shared(set, pairs, used_runs)``:
    ``(image_var, n_images, variance label, notes)`` of a comparison
    (:func:`medattn.analysis.shared_test.shared_variance`;
    ``None``: no test-image term). Returns ``(table, pairs, notes)``."""
    summary = _summary_of(runs)
    alpha, margin = settings.alpha, settings.margin
    groups = dict(list(runs.groupby(["dataset", "set", "backbone", "model"], sort=False)))
    rows, pair_frames, notes = [], [], []
    for own, ref in _references(summary):
        row = dict(own)
        if ref is not None:
            row.update(_welch_columns(own, ref, settings))
            v = groups[(own["dataset"], own["set"], own["backbone"], own["model"])]
            r = groups[(own["dataset"], own["set"], ref["backbone"], "base")]
            pairs, why = paired.pair_runs(v, r)
            label = comparison_label({**own, "reference": ref["backbone"]})
            notes += [f"{label}: {w}" for w in why]
            both = pd.concat([v, r])
            used = both[both["run_id"].isin(set(pairs["run_id"]) | set(pairs["ref_run_id"]))]
            ratio, why = paired.comparison_ratio(used, settings.test_train_ratio)
            notes += [f"{own['dataset']}: {w}" for w in why]
            factor, why = paired.comparison_factor(used, len(pairs), ratio)
            notes += [f"{own['dataset']}: {w}" for w in why]
            image_var, n_images, variance, why = (shared(own["set"], pairs, used) if shared
                                                  else (0.0, math.inf, VARIANCE_SPLITS, []))
            notes += [f"{label}: {w}" for w in why]
            row.update(paired.paired_columns(pairs["diff"].to_numpy(), ratio, alpha=alpha,
                                             margin=margin, factor=factor, image_var=image_var,
                                             n_images=n_images))
            row["variance"] = variance
            row["corrected_diff"] = row["paired_diff"]
            pair_frames.append(pairs.assign(**{k: own[k] for k in ("dataset", "backbone",
                                                                  "model", "set")},
                                            reference=ref["backbone"]))
        rows.append(row)
    table = _finish(rows, settings, list(dict.fromkeys(summary["dataset"])))
    keys = ["dataset", "backbone", "model", "set", "reference"]
    order = {k: i for i, k in enumerate(table[keys].itertuples(index=False, name=None))}
    pair_frames.sort(key=lambda f: order[tuple(f[keys].iloc[0])] if len(f) else len(order))
    pairs = (pd.concat(pair_frames, ignore_index=True) if pair_frames
             else pd.DataFrame(columns=PAIR_COLUMNS))[PAIR_COLUMNS]
    return table, pairs, list(dict.fromkeys(notes))


def compare_runs(runs_dir: str | os.PathLike, *,
                 settings: CompareSettings = CompareSettings()) -> CompareResult:
    """Table 2 from the final runs in ``runs_dir``: variant and reference paired on split seeds.

    ``settings.test``: ``corrected`` (the default for runs; Nadeau-Bengio with r = n_test /
    n_train from the records, or ``settings.test_train_ratio`` if given), ``paired`` (naive) or
    ``welch`` (unpaired, the paper's). ``settings.bootstrap``: resamples of the paired bootstrap
    over splits and test images from the stored predictions (0 = skip), seeded by
    ``settings.seed``. Diverged runs are excluded unless ``settings.include_diverged``; the
    result also holds the comparison with the other choice (``sensitivity``), divergence rates,
    the per-split pairs and notes.
    """
    settings = settings.for_source(summary=False)
    check_runs_dir(runs_dir)
    finals = store.final_runs(runs_dir)  # only the current selection's; superseded are listed
    frame = finals.current
    info = paired.run_info(finals.records.values())
    summary, runs, excluded = summarize_runs(frame, settings.include_diverged, info)
    if len(finals.superseded):
        sup = finals.superseded.rename(columns={"model": "model_name", "variant": "model"})
        excluded = pd.concat([excluded, sup.reindex(columns=excluded.columns)], ignore_index=True)
    for w in finals.warnings:
        log.warning("warning: %s", w)
    if summary.empty:
        raise DataError(f"{runs_dir}: no finished final runs with test metrics; run "
                        f"`medattn study` first (search runs do not enter Table 2).")
    runs = runs.merge(info[["run_id", "kind", "test_train_ratio", "ratio_source", "folds"]],
                      on="run_id", how="left")
    cache: dict = {}  # predictions read once for the test-image variance and the bootstrap
    shared = shared_test.shared_variance(runs_dir, cache)
    table, pairs, notes = _run_table(runs[runs["included"].astype(bool)], settings, shared)
    if settings.bootstrap:
        notes += paired.add_bootstrap(table, pairs, runs_dir, settings.bootstrap, settings.seed,
                                      1 - settings.alpha, label=comparison_label, cache=cache)
    # The comparison with the other choice of runs (converged only / all), raw p-values only.
    other = runs[runs["status"].isin(["done"] if settings.include_diverged
                                     else ["done", "diverged"])]
    other_table = table
    if (runs["status"] == "diverged").any():
        other_table = (_run_table(other, replace(settings, correction="none"), shared)[0]
                       if len(other) else None)
    sensitivity = paired.side_by_side(table, other_table, settings.include_diverged)
    if runs["imputed"].any():
        notes.append("diverged runs without a recorded accuracy (non-finite loss) count at "
                     "chance level, 1 / number of classes, where diverged runs are included")
    notes += margin_notes(runs_dir, settings.margin)
    divergence = _sort_models(paired.divergence_table(frame), list(summary["dataset"]))
    recorded = settings.as_dict()
    if lines := sequential_note(runs_dir):  # a stop-when-decided study
        notes[:0] = lines
        recorded["design"] = "sequential"
    return CompareResult(table, runs, excluded, recorded, pairs=pairs, divergence=divergence,
                         sensitivity=sensitivity, notes=notes, warnings=finals.warnings)


def _sort_models(df: pd.DataFrame, datasets: list[str]) -> pd.DataFrame:
    """Rows of ``dataset, backbone, model`` in table order (data sets as given, then models)."""
    datasets = list(dict.fromkeys(datasets)) + sorted(set(df["dataset"]) - set(datasets))
    keys = list(zip([datasets.index(d) for d in df["dataset"]],
                    _backbone_order(df["backbone"]), _model_order(df["model"])))
    return df.iloc[sorted(range(len(df)), key=lambda i: keys[i])].reset_index(drop=True)


def margin_notes(runs_dir: str | os.PathLike, margin: float) -> list[str]:
    """A note when the study was planned (``medattn plan``) with a margin other than ``margin``:
    the plan's power and decision probabilities hold for the planned margin only."""
    try:
        planned = json.loads((Path(runs_dir) / store.PLAN_FILE).read_text(encoding="utf-8"))
        planned = float(planned["settings"]["margin"])
    except (OSError, ValueError, KeyError, TypeError):
        return []  # no plan, or one this version cannot read: nothing to compare with
    if math.isclose(planned, margin):
        return []
    return [f"this study was planned (`{store.PLAN_FILE}`) with a margin of {planned:g} pp, not "
            f"the {margin:g} pp used here: its power and decision probabilities hold for the "
            "planned margin only; changing the margin after seeing the results is a form of "
            "p-hacking"]
