"""Figures of the answer across data sets: the forest plot of one variant against its reference and
the critical-difference diagram of many models (matplotlib Figure objects, no pyplot state; the
report's style as in :mod:`medattn.report.figures`)."""

from __future__ import annotations

import numpy as np
from matplotlib.patches import Patch

from medattn.analysis.across import HierarchicalResult
from medattn.analysis.ranks import FriedmanResult
from medattn.report.figures import styled, subplots

__all__ = ["cd_diagram", "forest_plot"]


@styled
def forest_plot(res: HierarchicalResult, title: str):
    """Per data set: the mean paired difference with its corrected interval (black) and its
    shrunken estimate under the model (blue); below them the common effect delta_0 and the effect
    on a new data set (diamonds, with intervals); the ROPE band shaded. Differences in pp."""
    pdf = res.per_dataset
    n = len(pdf)
    fig, ax = subplots(figsize=(7.5, 1.6 + 0.42 * (n + 3)), layout="constrained")
    y = np.arange(n)[::-1] + 3.0
    ax.axvspan(-res.rope, res.rope, color="#bbbbbb", alpha=0.35, lw=0)
    ax.axvline(0, color="grey", lw=0.8)
    ax.errorbar(pdf["mean"], y + 0.14, xerr=[pdf["mean"] - pdf["ci_low"],
                                             pdf["ci_high"] - pdf["mean"]],
                fmt="s", color="black", ms=5, capsize=3, label="data set alone (corrected CI)")
    ax.errorbar(pdf["shrunk"], y - 0.14, xerr=[pdf["shrunk"] - pdf["shrunk_low"],
                                               pdf["shrunk_high"] - pdf["shrunk"]],
                fmt="o", color="#1f77b4", ms=5, capsize=3, label="shrunken (hierarchical model)")
    for yy, (mean, lo, hi), color, label in ((1.4, res.delta0, "#d62728", "common effect δ₀"),
                                             (0.4, res.new, "#9467bd", "a new data set")):
        ax.fill([lo, mean, hi, mean], [yy, yy + 0.25, yy, yy - 0.25], color=color, alpha=0.8,
                label=label)
    ax.set_yticks(list(y) + [1.4, 0.4], list(pdf["dataset"]) + ["common effect", "new data set"])
    ax.axhline(2.2, color="grey", lw=0.6, ls=":")
    ax.set_xlabel("difference in balanced accuracy, variant − reference (pp)")
    pw, pe, pb = res.p_new
    ax.set_title(f"{title}\nnew data set: P(worse / equiv. / better) = {pw:.2f} / {pe:.2f} / "
                 f"{pb:.2f} → {res.verdict}")
    handles, labels = ax.get_legend_handles_labels()
    handles.append(Patch(color="#bbbbbb", alpha=0.35))
    labels.append(f"ROPE ±{res.rope:g} pp")
    ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8,
              frameon=False)
    ax.grid(axis="x", alpha=0.3)
    return fig


@styled
def cd_diagram(res: FriedmanResult, title: str = "Critical-difference diagram"):
    """Demšar's diagram: models on the mean-rank axis (1 = best, left), bars joining models the
    post-hoc cannot tell apart; Nemenyi's CD drawn as a scale bar for reference."""
    ranks = res.ranks
    m = len(ranks)
    half = (m + 1) // 2
    n_bars = len(res.cliques)
    fig, ax = subplots(figsize=(8.0, 1.9 + 0.28 * max(half, n_bars + 1)), layout="constrained")
    ax.set_xlim(0.5, m + 0.5)
    top = 0.0
    ax.hlines(top, 1, m, color="black", lw=1)
    for k in range(1, m + 1):
        ax.vlines(k, top, top + 0.12, color="black", lw=1)
        ax.text(k, top + 0.18, str(k), ha="center", va="bottom", fontsize=9)
    step = 0.32
    for i, (name, r) in enumerate(ranks.items()):
        left = i < half
        depth = top - step * (1 + (i if left else m - 1 - i))
        xe = 0.6 if left else m + 0.4
        ax.plot([r, r, xe], [top, depth, depth], color="black", lw=0.8)
        ax.text(xe + (-0.05 if left else 0.05), depth, f"{name} ({r:.2f})", fontsize=8,
                va="center", ha="right" if left else "left")
    for j, group in enumerate(res.cliques):
        lo, hi = ranks[group].min(), ranks[group].max()
        yb = top - 0.12 - 0.1 * j
        ax.hlines(yb, lo - 0.03, hi + 0.03, color="#d62728", lw=3)
    ax.hlines(top + 0.6, 1, 1 + res.cd, color="black", lw=1.5)
    ax.text(1 + res.cd / 2, top + 0.66, f"Nemenyi CD = {res.cd:.2f}", ha="center", fontsize=8)
    bottom = top - step * (max(half, m - half) + 1)
    ax.set_ylim(bottom, top + 0.95)
    ax.axis("off")
    how = ("pairwise Wilcoxon tests (Holm)" if res.posthoc == "wilcoxon-holm"
           else "Nemenyi's critical difference")
    ax.set_title(f"{title}: mean rank over {res.n_datasets} data sets (1 = best); Friedman p = "
                 f"{res.p:.3g}\nred bars join models that {how} cannot tell apart "
                 f"(alpha {res.alpha:g})",
                 fontsize=9)
    return fig
