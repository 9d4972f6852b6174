"""The top of the report's Table 2 section: the deciding columns, a forest plot of every
comparison, small-multiple posteriors and how to read intervals that disagree.

Reads a :class:`medattn.analysis.compare.CompareResult` through its columns only; the numbers
are computed in :mod:`medattn.analysis`.
"""

from __future__ import annotations

import math

import pandas as pd

from medattn.analysis.settings import TEST_LABELS, recorded
from medattn.report.figures import to_png
from medattn.report.forest import comparison_label, forest_plot, posterior_grid
from medattn.report.html import Figure, Table, Text
from medattn.report.verdict import deciding_table

__all__ = ["reading_note", "table2_blocks"]

DOCS = "docs/statistics.md (\"In short: which test marks the table, and why\")"


def _width(lo, hi) -> float:
    return float(hi - lo) if pd.notna(lo) and pd.notna(hi) else math.nan


def _case(t: pd.DataFrame, alpha: float):
    """The comparison whose intervals disagree most visibly: the bootstrap CI excludes 0 while
    the marking CI does not, else Welch marks what the marking test does not, else the first."""
    boot_only = t[(t["diff_ci_low"] <= 0) & (t["diff_ci_high"] >= 0)
                  & ((t["boot_ci_low"] > 0) | (t["boot_ci_high"] < 0))]
    welch_only = t[(t["welch_p"] < alpha) & ~(t["p"] < alpha)]
    for cand in (boot_only, welch_only, t):
        if len(cand):
            return cand.iloc[0]
    return None


def reading_note(result) -> str | None:
    """Two or three sentences on how to read this table's intervals together, for the case at
    hand (why Welch's p is smaller than the corrected one, why the bootstrap CI is narrower,
    what undecided means), pointing to docs/statistics.md. None for a table without
    comparisons."""
    t = result.comparisons()
    if t is None:
        return None
    st = recorded(result.settings)
    alpha, test_key = st.alpha, st.marking_test
    test, level = TEST_LABELS.get(test_key, "test"), f"{100 * (1 - alpha):g}%"
    r = _case(t, alpha)
    who = f"{comparison_label(r)} base"
    out = []
    if test_key != "welch" and r["welch_p"] < r["p"]:  # NaN compares False
        j, ratio = r["n_pairs"], r["test_train_ratio"]
        widen = (f" by √(1 + J·r) = {math.sqrt(1 + int(j) * float(ratio)):.2f} (J = {int(j)} "
                 f"splits, r = {float(ratio):.3g})" if pd.notna(j) and pd.notna(ratio) else "")
        out.append(f"For {who}, Welch's p is {r['welch_p']:.3f} and the {test}'s p is "
                   f"{r['p']:.3f}: Welch's test treats the runs as independent experiments, "
                   f"but the splits resample one pool of images, so the {test} widens the "
                   f"standard error of the per-split differences{widen}.")
    bw, cw = _width(r["boot_ci_low"], r["boot_ci_high"]), _width(r["diff_ci_low"],
                                                                 r["diff_ci_high"])
    if bw < cw:
        out.append(f"Its bootstrap {level} CI [{r['boot_ci_low']:+.1f}, "
                   f"{r['boot_ci_high']:+.1f}] pp is narrower than the {test}'s "
                   f"[{r['diff_ci_low']:+.1f}, {r['diff_ci_high']:+.1f}] pp because it "
                   f"resamples these splits and test images without the correction for their "
                   f"overlap: it shows how these runs vary, not how a new study would.")
    undecided = int((t["decision"] == "undecided").sum()) if "decision" in t else 0
    if undecided:
        out.append(f"\"Undecided\" ({undecided} of {len(t)} comparisons) means none of "
                   f"P(worse), P(equivalent), P(better) reaches 0.95: the data fit a difference "
                   f"that matters and one that does not; it is not \"no difference\".")
    if not out:
        return None
    return "**How to read these intervals together.** " + " ".join(out) + f" More in `{DOCS}`."


def table2_blocks(result) -> list:
    """Report blocks: the deciding table (difference, CI, decision, n) with its caption."""
    t = result.table
    st = recorded(result.settings)
    test = TEST_LABELS.get(st.marking_test, "test")
    level = f"{100 * (1 - st.alpha):g}%"
    has_bayes = t is not None and t["decision"].notna().any()
    decided_by = (f"the Bayesian correlated t-test (posterior probability above 0.95 of a "
                  f"difference below −{st.margin:g} pp, within ±"
                  f"{st.margin:g} pp, or above; else undecided)" if has_bayes else
                  f"the {test} at alpha {st.alpha:g}")
    frame = deciding_table(result)
    if frame.empty:
        return []
    margin = st.margin
    blocks = []
    fig = forest_plot(result)
    if fig is not None:
        boot = (f", the bootstrap {level} CI over runs (thin bar below)"
                if t["boot_ci_low"].notna().any() else "")
        blocks.append(Figure(to_png(fig), "table2-forest",
                             f"Every comparison at a glance: the difference variant − base "
                             f"(dot; colour: the decision), the {test}'s {level} CI (thick "
                             f"bar){boot} and the ±{margin:g} pp region of practical "
                             f"equivalence (shaded)."))
    blocks.append(Table(frame, f"What decides each comparison: the variant minus its base in "
                               f"percentage points, the {test}'s {level} CI, the decision by "
                               f"{decided_by}, and n = final runs of the variant vs its base. "
                               f"Every other statistic is under \"Statistics per comparison\" "
                               f"below."))
    note = reading_note(result)
    if note:
        blocks.append(Text(note, cls="reading"))
    fig = posterior_grid(result)
    if fig is not None:
        blocks.append(Figure(to_png(fig), "table2-posteriors",
                             f"The Bayesian correlated t-test's posterior of each difference "
                             f"(pp): shaded blue the ±{margin:g} pp region of practical "
                             f"equivalence, green / red the mass of a gain / loss beyond it; "
                             f"the title gives P(worse / equivalent / better) and the "
                             f"decision (a probability above 0.95 decides)."))
    return blocks
