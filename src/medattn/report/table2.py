"""Table 2 as text: the paper's wide layout, the statistics per comparison and the extras, in
Markdown, LaTeX, CSV and JSON; and :func:`run_compare`, what ``medattn compare`` does.

The numbers come from :mod:`medattn.analysis.compare` (a :class:`CompareResult`); this module only
lays them out. The display tables of the paired extras are in :mod:`medattn.report.table2_extras`.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pandas as pd

from medattn.analysis.compare import (
    FORMATS,
    PAPER_TABLE2,
    CompareResult,
    compare_runs,
    compare_summary,
)
from medattn.analysis.across_study import merge_results
from medattn.analysis.summary import read_summary
from medattn.analysis.labels import model_label
from medattn.analysis.settings import TEST_LABELS, CompareSettings, recorded
from medattn.errors import ArgumentError
from medattn.runs.atomic import write_text
from medattn.models import registry as R
from medattn.render import latex_table, markdown_table
from medattn.report.across import across_markdown
from medattn.report.summary_checks import implausible_sds
from medattn.report.table2_extras import (
    _num,
    _p,
    divergence_display,
    pairs_display,
    recheck_display,
    sensitivity_display,
    terminal_table,
)
from medattn.report.verdict import verdict_text

__all__ = ["format_result", "legend", "run_compare", "stats_display", "table2_latex",
           "table2_markdown", "table2_sections", "terminal_table", "wide_table"]


def _cell(row, n_mode: int | None, markup: str) -> str:
    if pd.isna(row["mean"]):
        return "–"
    sd = "n/a" if pd.isna(row["sd"]) else f"{row['sd']:.2f}"
    text = f"{row['mean']:.1f}"
    if row.get("significant") is True:
        text = f"**{text}**" if markup == "md" else rf"\textbf{{{text}}}"
    marks = ""
    if row.get("significant_adjusted") is True:
        marks += "†" if markup == "md" else r"$^\dagger$"
    if row.get("equivalent") is True:
        marks += "≈" if markup == "md" else r"$^\approx$"
    pm = "±" if markup == "md" else r"$\pm$"
    # marks after the sd: "98.4≈ ± 0.07" read like a typo in the mean
    out = f"{text} {pm} {sd}" + (f" {marks}" if marks else "")
    if n_mode is not None and row["n"] != n_mode:
        out += f" [n={row['n']}]"
    return out


def wide_table(table: pd.DataFrame, markup: str = "md") -> pd.DataFrame:
    """The paper's layout: rows = models, columns = (dataset, reference backbone).

    A cell is ``ID (OOD)`` as ``mean ± sd`` (the paper's precision: mean to 0.1 pp, sd to
    0.01 pp), marks after the sd; ViT rows appear in every column, marked against that
    column's base. Marks: bold = p < alpha (the paper's), † = significant after correction,
    ≈ = equivalent within the TOST margin. ``[n=k]`` flags a cell whose n differs from the rest.
    """
    if table.empty:
        return pd.DataFrame()
    n_mode = int(table["n"].mode().iloc[0])
    datasets = list(dict.fromkeys(table["dataset"]))
    columns: dict[str, dict[str, str]] = {}
    ranks: dict[str, tuple] = {}  # row label -> table order (a column's own variants first)
    for ds in datasets:
        t = table[table["dataset"] == ds]
        present = sorted(set(t["backbone"]), key=lambda b: (R.backbone_rank(b), b))
        compared_elsewhere = set(t.loc[t["reference"].notna() & (t["reference"] != t["backbone"]),
                                       "backbone"])
        # One column per backbone, except those whose rows sit in the other columns (the ViTs).
        for col_bb in [b for b in present if b not in compared_elsewhere]:
            own = t["backbone"] == col_bb
            sel = t[(own & (t["reference"].isna() | (t["reference"] == col_bb)))
                    | (~own & (t["reference"] == col_bb))]
            cells: dict[str, str] = {}
            for (bb, model), g in sel.groupby(["backbone", "model"], sort=False):
                parts = {r["set"]: _cell(r, n_mode, markup) for _, r in g.iterrows()}
                text = parts.pop("id", "–")
                if parts:
                    text += " (" + "; ".join(parts[k] for k in sorted(parts)) + ")"
                label = R.variant_label(model) if bb == col_bb else R.model_label(bb, model)
                if label == R.variant_label(model):
                    ranks[label] = R.variant_rank(model)
                cells[label] = text
            columns[f"{ds} · {R.backbone_label(col_bb)}"] = cells
    labels = list(dict.fromkeys(k for c in columns.values() for k in c))
    labels.sort(key=lambda x: ranks.get(x, (3,)))
    wide = pd.DataFrame({c: [cells.get(lbl, "") for lbl in labels] for c, cells in columns.items()},
                        index=pd.Index(labels, name="model"))
    return wide


def _fmt(v, spec: str) -> str:
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    return _num(v, spec)


def stats_display(table: pd.DataFrame, alpha: float = 0.05) -> pd.DataFrame:
    """Human-readable statistics per comparison (strings), for Markdown / HTML / LaTeX.

    The difference, CI and p of the test that marks the table, the Bayesian probabilities and
    decision, the bootstrap CI (runs), then the paper's statistics (Welch p, Hedges' g). Columns
    that are empty for every comparison are left out.
    """
    t = table[table["reference"].notna()]
    test = t["test"].iloc[0] if len(t) else "welch"
    level = f"{100 * (1 - alpha):g}%"
    probs = [f"{_fmt(a, '.2f')} / {_fmt(b, '.2f')} / {_fmt(c, '.2f')}" if pd.notna(a) else ""
             for a, b, c in zip(t["p_worse"], t["p_equivalent"], t["p_better"])]
    out = pd.DataFrame({
        "dataset": t["dataset"],
        "set": t["set"],
        "model": [model_label(b, m) for b, m in zip(t["backbone"], t["model"])],
        "vs": [f"{R.backbone_label(r)} base" for r in t["reference"]],
        "n": [f"{a} vs {b}" for a, b in zip(t["n"], t["ref_n"])],
        "pairs": [_fmt(v if v is not pd.NA else None, "d") for v in t["n_pairs"]],
        "r": [_fmt(v, ".3g") for v in t["test_train_ratio"]],
        "variance": [v if isinstance(v, str) and t["test"].iloc[0] != "welch" else ""
                     for v in t["variance"]],
        f"diff [{level} CI] (pp)": [f"{_fmt(d, '+.2f')} [{_fmt(lo, '+.2f')}, {_fmt(hi, '+.2f')}]"
                                   for d, lo, hi in zip(t["diff"], t["diff_ci_low"],
                                                        t["diff_ci_high"])],
        f"bootstrap {level} CI (pp)": [f"[{_fmt(lo, '+.2f')}, {_fmt(hi, '+.2f')}]"
                                      if pd.notna(lo) else "" for lo, hi in
                                      zip(t["boot_ci_low"], t["boot_ci_high"])],
        f"p ({TEST_LABELS[test]})": [_p(v) for v in t["p"]],
        "p adj.": [_p(v) for v in t["p_adjusted"]],
        "P(worse / equiv. / better)": probs,
        "Bayes": [v if isinstance(v, str) else "" for v in t["decision"]],
        "Welch p (paper)": [_p(v) for v in t["welch_p"]],
        f"g [{level} CI]": [f"{_fmt(g, '+.2f')} [{_fmt(lo, '+.2f')}, {_fmt(hi, '+.2f')}]"
                            for g, lo, hi in zip(t["hedges_g"], t["hedges_g_ci_low"],
                                                 t["hedges_g_ci_high"])],
        "TOST p": [_p(v) for v in t["tost_p"]],
        "equiv.": [_fmt(v if v is not pd.NA else None, "") for v in t["equivalent"]],
        "detectable (pp)": [_fmt(v, ".2f") for v in t["detectable_diff"]],
    }).reset_index(drop=True)
    if test == "welch":
        out = out.drop(columns=["Welch p (paper)"])
    return out[[c for c in out.columns if (out[c] != "").any() or c in ("p adj.",)]]


def legend(settings: dict, table: pd.DataFrame | None = None) -> str:
    """One paragraph explaining the marks and settings of Table 2 (with its usual n if given)."""
    st = recorded(settings)
    test, alpha, margin = st.marking_test, st.alpha, st.margin
    corr = {"holm": "Holm", "none": "no", "bonferroni": "Bonferroni", "holm-sidak": "Holm-Sidak",
            "fdr_bh": "Benjamini-Hochberg", "fdr_by": "Benjamini-Yekutieli"}.get(st.correction,
                                                                                 st.correction)
    n = ""
    if table is not None and len(table) and table["n"].notna().any():
        n = f", n = {int(table['n'].mode().iloc[0])} runs unless marked [n=k]"
    what = {"welch": "Welch's t-test against the respective base (the paper's test)",
            "paired": "the paired t-test on the per-split differences against the respective "
                      "base (naive: ignores that the splits overlap)",
            "corrected": "the corrected resampled t-test (Nadeau-Bengio) on the per-split "
                         "differences against the respective base"}[test]
    if test == "corrected" and table is not None and table["n_pairs"].isna().all():
        what = ("the corrected t-test against the respective base (approximated from the "
                "summary: Welch's variance with each term corrected)")
    text = (f"Balanced accuracy in %, mean ± sd over the final runs (ID test set, OOD in "
            f"parentheses{n}). **Bold**: {what}, p < {alpha}. †: still significant after "
            f"{corr} correction within each column. ≈: equivalent within ±{margin} pp (TOST on "
            f"the same test, alpha {alpha}). Detectable: the smallest true difference that test "
            f"finds with {int(100 * st.power)}% power at these n and sds.")
    if table is not None and table["p_worse"].notna().any():
        text += (f" Bayes: the Bayesian correlated t-test's decision, worse / equivalent / "
                 f"better when its posterior probability of a difference below −{margin} pp, "
                 f"within ±{margin} pp or above +{margin} pp exceeds 0.95, else undecided.")
    if test != "welch":
        text += " Welch p (paper): the paper's test, kept as a reproduction."
    if test != "welch" and table is not None and table["n_pairs"].notna().any():
        text += (" Variance (statistics per comparison): 'splits' where each split has its own "
                 "test images; 'splits + test images' where every run is tested on the same "
                 "images (OOD sets, a fixed split): the mark, the CI and the Bayes decision then "
                 "also count the sampling of those images (docs/statistics.md, shared test "
                 "sets). Hedges' g's CI is the marking test's CI on g's scale. No Bayes decision "
                 "from fewer than 3 pairs or from differences that are all equal.")
    return text


def table2_sections(result: CompareResult) -> list[tuple[str, str, pd.DataFrame | list[str]]]:
    """The parts of the output after Table 2 itself: ``(title, caption, frame or lines)``."""
    st = recorded(result.settings)
    alpha = st.alpha
    out = [("Statistics per comparison", "Differences are variant − reference in percentage "
            "points (pp); r = n_test / n_train of the correction; Bayes probabilities with the "
            f"±{st.margin} pp region of practical equivalence.",
            stats_display(result.table, alpha))]
    extra = [("Per-split differences (pp)", "Variant − reference on each split seed (the pairs "
              "the paired tests use).", pairs_display(result.pairs)),
             ("Marks of Welch's test re-checked", "Comparisons Welch's test marks (the paper's "
              "bold) and what the marking test and the Bayesian test say.",
              recheck_display(result.table)),
             ("Divergence rate per model", "Final runs that diverged, with the 95% "
              "Clopper-Pearson interval of the rate.", divergence_display(result.divergence))]
    div = result.divergence
    if div is not None and len(div) and div["diverged"].sum() > 0:
        extra.append(("Converged runs and all runs", "The comparison with diverged runs left "
                      "out and with them counted at their recorded accuracy (chance if none "
                      "was recorded).", sensitivity_display(result.sensitivity)))
    elif div is not None and len(div):
        extra.append(("Converged runs and all runs", "", [
            "No final run diverged: the comparison on all runs is the one above."]))
    out += [x for x in extra if len(x[2])]
    if result.warnings:  # first: they concern the whole table
        out.insert(0, ("Warnings", "", list(result.warnings)))
    if result.notes:
        out.append(("Notes", "", list(result.notes)))
    if result.excluded is not None and len(result.excluded):
        out.append(("Final runs not included", "", [
            f"`{r.run_id}` ({r.dataset}, {r.backbone} {r.model}): {r.reason}"
            for r in result.excluded.itertuples()]))
    return out


def table2_markdown(result: CompareResult) -> str:
    """Table 2 (paper layout), the statistics per comparison, the paired extras, notes and the
    excluded runs, as Markdown."""
    verdict = verdict_text(result)  # the answer first
    sections = table2_sections(result)
    first = ("Warnings", "Marks of Welch's test re-checked") if result.runs is None else ()
    parts = []  # a summary: what to check in it and the re-check, before the verdict
    for title, caption, body in [x for x in sections if x[0] in first]:
        parts += [f"## {title}", ""] + ([caption, ""] if caption else []) + (
            [f"- {line}" for line in body] if isinstance(body, list) else [markdown_table(body)])
        parts.append("")
    parts += (["## What the study found", "", verdict, ""] if verdict else []) + [
        "## Table 2: balanced accuracy per model", "",
        markdown_table(wide_table(result.table), index=True), "",
        legend(result.settings, result.table)]
    for title, caption, body in [x for x in sections if x[0] not in first]:
        parts += ["", f"### {title}", ""]
        if caption:
            parts += [caption, ""]
        if isinstance(body, list):
            parts += [f"- {line}" for line in body]
        else:
            parts.append(markdown_table(body))
    return "\n".join(parts) + "\n"


def table2_latex(result: CompareResult) -> str:
    """Table 2 (paper layout) and the statistics table as LaTeX (booktabs) tabulars."""
    wide = wide_table(result.table, markup="latex")
    st = recorded(result.settings)
    test = TEST_LABELS[st.marking_test]
    return (f"% Table 2: balanced accuracy (%), mean $\\pm$ sd; \\textbf{{}}: p < alpha ({test}), "
            "$^\\dagger$: significant after correction, $^\\approx$: equivalent (TOST)\n"
            + latex_table(wide, index=True, raw_cells=True) + "\n\n% Statistics per comparison (pp)\n"
            + latex_table(stats_display(result.table, st.alpha)) + "\n")


def _json_value(v):
    if v is None or v is pd.NA:
        return None
    if isinstance(v, (np.bool_, bool)):
        return bool(v)
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return None if math.isnan(v) else float(v)
    return v


def format_result(result: CompareResult, fmt: str = "md") -> str:
    """Render a comparison as ``md`` (paper layout + statistics), ``csv``, ``json`` or ``latex``."""
    if fmt == "md":
        return table2_markdown(result)
    if fmt == "csv":
        return result.table.to_csv(index=False, float_format="%.6g")
    if fmt == "json":
        rows = [{k: _json_value(v) for k, v in r.items()}
                for r in result.table.to_dict(orient="records")]
        return json.dumps(rows, indent=1) + "\n"
    if fmt == "latex":
        return table2_latex(result)
    raise ArgumentError(f"{{fmt}} {fmt!r} is unknown; use one of {', '.join(FORMATS)}.", "fmt")


def run_compare(runs_dir: str | os.PathLike | list | None = None, *,
                summary: str | os.PathLike | None = None, fmt: str = "md",
                out: str | os.PathLike | None = None,
                settings: CompareSettings = CompareSettings(),
                across: str = "auto") -> CompareResult:
    """What ``medattn compare`` does: compare, render (``result.text``), optionally write
    ``out`` (``result.paths["out"]``).

    ``runs_dir``: one folder or a list (studies over different data sets, compared together),
    or ``summary``: a summary CSV (``paper``: the paper's Table 2). ``settings.test`` defaults
    to ``corrected`` for runs and ``welch`` for a summary. ``across``: ``auto`` (the Markdown
    output gets the section "Across data sets" when the runs hold >= 2 data sets), ``on``
    (always, saying why when it cannot be computed) or ``off``.
    """
    if isinstance(runs_dir, (list, tuple)):
        runs_dir = list(runs_dir) or None
    if (runs_dir is None) == (summary is None):
        raise ArgumentError("give either {runs_dir} or {summary} (exactly one).", "runs_dir",
                            "summary")
    if fmt not in FORMATS:
        raise ArgumentError(f"{{fmt}} {fmt!r} is unknown; use one of {', '.join(FORMATS)}.",
                            "fmt")
    if across not in ("auto", "on", "off"):
        raise ArgumentError(f"{{across}} must be 'auto', 'on' or 'off', got {across!r}.",
                            "across")
    if summary is not None:
        if str(summary) == "paper":
            summary = PAPER_TABLE2
        settings = settings.for_source(summary=True)
        table = compare_summary(read_summary(str(summary)), settings=settings)
        result = CompareResult(table, settings=settings.as_dict(),
                               notes=_summary_notes(settings), warnings=implausible_sds(table))
    else:
        dirs = runs_dir if isinstance(runs_dir, list) else [runs_dir]
        results = [compare_runs(d, settings=settings) for d in dirs if d is not None]
        if len(results) > 1:
            results = [merge_results(results)]
        result = results[0]
    text = format_result(result, fmt)
    n_sets = result.table["dataset"].nunique()
    if fmt == "md" and (across == "on" or (across == "auto" and n_sets >= 2
                                              and summary is None)):
        text += across_markdown(result)
    result.text = text
    if out:
        result.paths["out"] = write_text(out, text)
    return result


def _summary_notes(settings: CompareSettings) -> list[str]:
    if settings.test_train_ratio is None:
        return ["a summary has no per-split pairs: the paired and bootstrap columns are empty; "
                "give test_train_ratio (CLI: --test-train-ratio), n_test / n_train, for the "
                "corrected and Bayesian columns"]
    return ["a summary has no per-split pairs: the corrected test and the Bayesian posterior use "
            "Welch's variance with each term corrected, s^2 (1/n + r), which treats the two "
            "models' accuracies on a split as uncorrelated (an approximation; usually "
            "conservative)"]
