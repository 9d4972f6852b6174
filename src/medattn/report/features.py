"""The report's Table 3 section, from what ``medattn features`` wrote to ``analysis/features/``:
Table 3 (k of N runs, given the fine diagnosis and given the label, side by side, with the planted
truth of a synthetic set), the effect sizes with their CIs as a figure, the significant differences
between models, and the p-values of each test in a table.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd

from medattn.analysis.features.summary import EFFECTS
from medattn.analysis.features.table3 import (
    CONDITION_NAMES,
    TABLE3_FEATURES,
    model_order,
    truth_cells,
)
from medattn.report.figures import styled, subplots, to_png
from medattn.report.html import MAX_ROWS, Details, Figure, Section, Table, Text, read_table
from medattn.report.tables import model_name_label

def _p(v) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return ""
    return f"{v:.2g}" if v < 0.001 else f"{v:.3f}"


def _legend(md_path: Path) -> str:
    """The legend paragraphs under the first table of table3.md."""
    try:
        lines = md_path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return ""
    out, seen_table = [], False
    for line in lines:
        if line.startswith("|"):
            seen_table = True
            continue
        if line.startswith("###"):
            break
        if seen_table and line.strip():
            out.append(line.strip())
    return "\n\n".join(out)


def table3_frame(table: pd.DataFrame, truths: dict | None = None) -> pd.DataFrame:
    """Table 3 with one row per model: "k/N (k/N)", the primary conditioning first; the planted
    truth of each synthetic data set as a first row."""
    conditions = list(dict.fromkeys(table["condition"]))
    features = [f for f in TABLE3_FEATURES if f in table]
    rows = {}
    for spec, truth in (truths or {}).items():
        cells = truth_cells(truth)
        rows[f"planted truth ({spec.split(':', 1)[0]})"] = [cells[f] for f in features]
    for model, g in table.groupby("model", sort=False):
        g = g.set_index("condition")
        present = [c for c in conditions if c in g.index]
        rows[model_name_label(model)] = [g.loc[present[0], f] + (f" ({g.loc[present[1], f]})"
                                               if len(present) > 1 else "") for f in features]
    frame = pd.DataFrame.from_dict(rows, orient="index", columns=features)
    frame.index.name = "model"
    return frame


@styled
def effect_figure(summary: pd.DataFrame, tests=("cmiknn",)):
    """One panel per effect size (CMI in nats, the one magnitude; z-values get no CIs): features
    along x, a point per model with its 95% CI over runs;
    filled markers given the fine diagnosis, open ones given the label. None without effects."""
    tests = [t for t in tests if f"effect_{t}" in summary]
    if summary.empty or not tests:
        return None
    models = model_order(summary["model"].unique())
    conditions = [c for c in ("diagnosis", "label") if c in set(summary["condition"])]
    features = [f for f in TABLE3_FEATURES if f in set(summary["feature"])]
    slots = len(models) * len(conditions)
    width = 0.8 / max(slots, 1)
    colours = matplotlib.colormaps["tab10"]
    fig, axes = subplots(len(tests), 1, figsize=(max(7.0, 1.1 * len(features) + 2),
                                                 3.2 * len(tests)), squeeze=False)
    for ax, test in zip(axes[:, 0], tests):
        for m_i, model in enumerate(models):
            for c_i, cond in enumerate(conditions):
                s = summary[(summary["model"] == model) & (summary["condition"] == cond)]
                s = s.set_index("feature").reindex(features)
                pos = np.arange(len(features)) - 0.4 + width * (m_i * len(conditions) + c_i + 0.5)
                mean = s[f"effect_{test}"].to_numpy(float)
                low = s[f"effect_{test}_low"].to_numpy(float)
                high = s[f"effect_{test}_high"].to_numpy(float)
                err = np.vstack([mean - low, high - mean])
                err = np.where(np.isfinite(err), err, 0.0)
                ax.errorbar(pos, mean, yerr=err, fmt="o", ms=4, capsize=2, color=colours(m_i),
                            mfc=colours(m_i) if cond == "diagnosis" else "white",
                            label=f"{model_name_label(model)}, given {CONDITION_NAMES[cond]}")
        ax.axhline(0, color="#888", lw=0.8)
        ax.set_xticks(np.arange(len(features)), features)
        ax.set_ylabel(EFFECTS.get(test, test))
        ax.set_title(f"{EFFECTS.get(test, test)}: mean over runs, 95% CI")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, ncol=max(1, min(4, slots)), loc="outside lower center")
    return fig


def table3_section(folder: Path, hint: str):
    """The Table 3 section; a hint when ``medattn features`` has not run."""
    title = "Table 3: feature usage"
    # cells are text ("2/3", "✓", "n/a"): pandas would read "n/a" as a missing number
    table = read_table(folder / "table3.csv", dtype=str, keep_default_na=False)
    if table is None or "condition" not in table:
        return None  # not written by this version: the generic section shows what is there
    truths = None
    if (folder / "truth.json").is_file():
        try:
            truths = json.loads((folder / "truth.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            truths = None
    blocks = [Table(table3_frame(table, truths), _legend(folder / "table3.md"), index=True)]
    summary = read_table(folder / "usage.csv")
    if summary is not None and len(summary):
        fig = effect_figure(summary)
        if fig is not None:
            blocks.append(Figure(to_png(fig), "table3-effects",
                                 "Effect sizes per feature and model, mean over the final runs "
                                 "with 95% CIs (Nadeau-Bengio corrected for overlapping splits; "
                                 "on a shared test set plus test-image sampling, `variance` in "
                                 "`usage.csv`). "
                                 "CMI: the CMIknn estimate minus its shuffle mean, nats, a "
                                 "magnitude (cHSIC's and RCoT's z-values grow with n and are "
                                 "evidence only, in `usage.csv`). Filled: given the fine "
                                 "diagnosis; open: given the label."))
    diffs = read_table(folder / "differences.csv")
    if diffs is not None and len(diffs):
        sig = diffs[diffs["verdict"].isin(["more", "less"])]
        cols = [c for c in ["condition", "feature", "test", "model", "reference", "pairs",
                            "difference", "low", "high", "p", "p_holm", "verdict",
                            "variance"] if c in sig]
        if len(sig):
            sig = sig[cols].assign(
                model=[model_name_label(m) for m in sig["model"]],
                reference=[model_name_label(m) for m in sig["reference"]],
                **{c: [f"{v:+.3g}" for v in sig[c]] for c in ("difference", "low", "high")},
                p=[f"{v:.2g}" if v < 0.001 else f"{v:.3f}" for v in sig["p"]]).rename(
                columns={"difference": "difference (effect size)", "low": "95% CI low",
                         "high": "95% CI high"})
            blocks.append(Table(sig.head(MAX_ROWS),
                                "Significant differences between a variant and its base: "
                                "per-split differences of the CMI (nats), corrected paired "
                                "t-test, Holm-adjusted over the features of each variant/base "
                                "pair, p_holm < 0.05 (`differences.csv` has every pair)."))
        else:
            blocks.append(Text("No variant uses a feature significantly more or less than its "
                               "base (corrected paired t-test over splits of the CMI, "
                               "Holm-adjusted over the features of each pair, p < 0.05; every "
                               "pair in `differences.csv`)."))
    if summary is not None and len(summary):
        cols = ["condition", "model", "feature", "cell",
                *[c for c in ("chance_p",) if c in summary],
                *[c for c in summary.columns if c.startswith("median_p_")]]
        shown = summary[cols].rename(columns={"cell": "used (k/N)"})
        shown["model"] = [model_name_label(m) for m in shown["model"]]
        for c in shown.columns:
            if c.startswith("median_p_") or c == "chance_p":  # one precision for every p-value
                shown[c] = [_p(v) for v in shown[c]]
        cap = ("chance_p: P(k or more of N runs called used by chance), binomial at the per-run "
               "false rate alpha, assuming independent runs (a lower bound). "
               "p-values of each test: the median raw p over runs per model, feature and "
               "conditioning "
               "(`usage.csv`; every run's p-values in `decisions.csv`, every test in "
               "`pvalues.csv`)")
        if len(shown) > MAX_ROWS:
            cap += f"; first {MAX_ROWS} of {len(shown)} rows"
        blocks.append(Details(f"Median p-values per model, feature and test: {len(shown)} rows "
                              "(click to open)", [Table(shown.head(MAX_ROWS), cap + ".")]))
    return Section("table3", title, blocks or [Text(f"Table 3: {hint}.")])
