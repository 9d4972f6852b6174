"""The top of the report's Table 2 section: the deciding columns, a forest plot of every
comparison, small-multiple posteriors and how to read intervals that disagree.

Reads a :class:`medattn.analysis.compare.CompareResult` through its columns only; the numbers
are computed in :mod:`medattn.analysis`.
"""

from __future__ import annotations

from medattn.analysis.compare import TEST_LABELS
from medattn.report.figures import to_png
from medattn.report.forest import forest_plot, posterior_grid
from medattn.report.html import Figure, Table, Text
from medattn.report.verdict import deciding_table

__all__ = ["table2_blocks"]


def table2_blocks(result) -> list:
    """Report blocks: the deciding table (difference, CI, decision, n) with its caption."""
    t = result.table
    st = result.settings or {}
    test = TEST_LABELS.get(st.get("test", "welch"), "test")
    level = f"{100 * (1 - st.get('alpha', 0.05)):g}%"
    has_bayes = t is not None and t["decision"].notna().any()
    decided_by = (f"the Bayesian correlated t-test (posterior probability above 0.95 of a "
                  f"difference below −{st.get('margin', 1.0):g} pp, within ±"
                  f"{st.get('margin', 1.0):g} pp, or above; else undecided)" if has_bayes else
                  f"the {test} at alpha {st.get('alpha', 0.05):g}")
    frame = deciding_table(result)
    if frame.empty:
        return []
    margin = st.get("margin", 1.0)
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
    fig = posterior_grid(result)
    if fig is not None:
        blocks.append(Figure(to_png(fig), "table2-posteriors",
                             f"The Bayesian correlated t-test's posterior of each difference "
                             f"(pp): shaded blue the ±{margin:g} pp region of practical "
                             f"equivalence, green / red the mass of a gain / loss beyond it; "
                             f"the title gives P(worse / equivalent / better) and the "
                             f"decision (a probability above 0.95 decides)."))
    return blocks
