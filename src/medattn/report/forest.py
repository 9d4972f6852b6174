"""Table 2 as pictures: a forest plot of every comparison and the Bayesian test's posteriors.

Both read a :class:`medattn.analysis.compare.CompareResult`'s table through its columns (``diff``,
``diff_ci_low``/``high``, ``boot_ci_low``/``high``, ``decision``, ``p_worse``/``p_equivalent``/
``p_better``; for the posterior curve the per-split columns ``paired_diff``, ``paired_sd``,
``n_pairs``, ``test_train_ratio``). Differences in percentage points.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

from medattn.analysis.labels import comparison_label as _comparison_label
from medattn.analysis.settings import TEST_LABELS, recorded
from medattn.report.figures import styled, subplots
from medattn.report.verdict import _true

__all__ = ["DECISION_COLOURS", "comparison_label", "forest_plot", "posterior_grid"]

DECISION_COLOURS = {"better": "#2a9d3a", "worse": "#d1342f", "equivalent": "#2f6fd1",
                    "undecided": "#7a7a7a", "no difference shown": "#7a7a7a"}


def _num(v) -> float:
    return math.nan if v is None or v is pd.NA else float(v)


def comparison_label(r) -> str:
    """The short label of a comparison for plots (:func:`medattn.analysis.labels.
    comparison_label`): ``isic ID: +GA vs ResNet18``."""
    return _comparison_label(r, short=True)


def _decision(r) -> str:
    if isinstance(r.decision, str) and r.decision:
        return r.decision
    return ("better" if r.diff > 0 else "worse") if _true(r.significant) else "undecided"


@styled
def forest_plot(result):
    """One row per comparison: the difference (dot, coloured by the decision), the marking test's
    CI (thick), the bootstrap CI over runs (thin, below), the ROPE ±margin shaded, 0 marked.
    None when nothing is compared."""
    t = result.comparisons()
    if t is None:
        return None
    st = recorded(result.settings)
    margin, alpha = st.margin, st.alpha
    test = TEST_LABELS.get(st.marking_test, "marking test")
    rows = list(t.itertuples(index=False))
    fig, ax = subplots(1, 1, figsize=(9.5, 0.42 * len(rows) + 1.6))
    ax.axvspan(-margin, margin, color="#dbe8f7", zorder=0, label=f"±{margin:g} pp (ROPE)")
    ax.axvline(0, color="#555", lw=0.8, zorder=1)
    seen = set()
    for i, r in enumerate(rows):
        y = len(rows) - 1 - i
        colour = DECISION_COLOURS.get(_decision(r), "#7a7a7a")
        lo, hi = _num(r.diff_ci_low), _num(r.diff_ci_high)
        if np.isfinite(lo) and np.isfinite(hi):
            ax.plot([lo, hi], [y, y], color=colour, lw=3, solid_capstyle="butt", zorder=2)
        blo, bhi = _num(getattr(r, "boot_ci_low", None)), _num(getattr(r, "boot_ci_high", None))
        if np.isfinite(blo) and np.isfinite(bhi):
            ax.plot([blo, bhi], [y - 0.22, y - 0.22], color="#333", lw=1, zorder=2,
                    label=None if "boot" in seen else f"bootstrap {100 * (1 - alpha):g}% CI")
            seen.add("boot")
        d = _decision(r)
        ax.plot([r.diff], [y], "o", ms=7, color=colour, zorder=3,
                label=None if d in seen else d)
        seen.add(d)
    ax.set_yticks(range(len(rows)), [comparison_label(r) for r in rows][::-1])
    ax.set_ylim(-0.8, len(rows) - 0.4)
    ax.set_xlabel(f"variant − base, balanced accuracy (pp); thick: {test} "
                  f"{100 * (1 - alpha):g}% CI; dot colour: decision")
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside upper center", ncol=6, fontsize=8, frameon=False)
    ax.grid(axis="x", color="#eee")
    return fig


def _posterior(r):
    """The Bayesian correlated t-test's posterior: Student-t(df, mean of the per-split
    differences, se) with the marking test's se and df as Table 2 holds them (the design's
    variance factor, and test-image sampling on shared test sets), or None."""
    n = r.n_pairs if r.n_pairs is not pd.NA else None
    diff, se, df = _num(r.paired_diff), _num(r.corrected_se), _num(r.corrected_df)
    if n is None or n < 2 or not (np.isfinite(diff) and se > 0 and df > 0):
        return None
    return stats.t(df=df, loc=diff, scale=se)


@styled
def posterior_grid(result, cols: int = 4):
    """Small multiples, one per comparison with per-split pairs: the posterior density of the
    difference (pp) of the Bayesian correlated t-test, the ROPE shaded, titled with the table's
    P(worse / equivalent / better) and decision. None when no comparison has pairs."""
    t = result.table
    if t is None or t.empty or "p_better" not in t:
        return None
    rows = [r for r in t[t["reference"].notna()].itertuples(index=False)
            if _posterior(r) is not None and pd.notna(r.p_better)]
    if not rows:
        return None
    margin = recorded(result.settings).margin
    cols = min(cols, len(rows))
    nrows = math.ceil(len(rows) / cols)
    fig, axes = subplots(nrows, cols, figsize=(2.9 * cols, 2.2 * nrows), squeeze=False)
    for ax, r in zip(axes.ravel(), rows):
        post = _posterior(r)
        lo, hi = post.ppf(0.002), post.ppf(0.998)
        lo, hi = min(lo, -2 * margin), max(hi, 2 * margin)
        x = np.linspace(lo, hi, 400)
        y = post.pdf(x)
        colour = DECISION_COLOURS.get(_decision(r), "#7a7a7a")
        ax.axvspan(-margin, margin, color="#dbe8f7", zorder=0)
        ax.plot(x, y, color=colour, lw=1.5)
        ax.fill_between(x, 0, y, where=x > margin, color=DECISION_COLOURS["better"], alpha=.25)
        ax.fill_between(x, 0, y, where=x < -margin, color=DECISION_COLOURS["worse"], alpha=.25)
        ax.axvline(0, color="#555", lw=0.6)
        ax.set_yticks([])
        ax.set_title(f"{comparison_label(r)}\nP = {r.p_worse:.2f} / {r.p_equivalent:.2f} / "
                     f"{r.p_better:.2f}: {_decision(r)}", fontsize=8)
        ax.set_xlabel("difference (pp)", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes.ravel()[len(rows):]:
        ax.set_visible(False)
    return fig
