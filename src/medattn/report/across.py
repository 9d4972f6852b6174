"""The answer across data sets as text and as a report section: per variant the verdict beside its
per-data-set cells, one sentence per variant, the forest plots and the critical-difference diagram
(numbers from :mod:`medattn.analysis.across_study`)."""

from __future__ import annotations

import pandas as pd

from medattn.analysis.across_study import AcrossStudy, across_study
from medattn.errors import MedattnError
from medattn.render import markdown_table
from medattn.report.html import Figure, Section, Table, Text

__all__ = ["across_display", "across_markdown", "across_section", "verdict_sentence"]

TITLE = "Across data sets"


def verdict_sentence(row, ac: AcrossStudy) -> str:
    """One sentence: what the hierarchical model says for a new data set, and the common effect."""
    what = {"better": "is better than", "worse": "is worse than", "equivalent": "is equivalent to",
            "undecided": "cannot yet be told from"}[row["verdict"]]
    ref = row["comparison"].split(" vs ", 1)[1]
    return (f"{row['comparison'].split(' vs ')[0]} {what} {ref} on a new data set "
            f"(P(worse / equivalent / better) = {row['p_worse']:.2f} / "
            f"{row['p_equivalent']:.2f} / {row['p_better']:.2f}, ROPE ±{ac.margin:g} pp, "
            f"verdict at > {ac.threshold:.3g}); common effect over its {row['datasets']} data "
            f"sets {row['delta0']:+.2f} pp [{row['delta0_low']:+.2f}, {row['delta0_high']:+.2f}], "
            f"{row['verdict_mean']}.")


def across_display(ac: AcrossStudy) -> pd.DataFrame:
    """Per comparison: its per-data-set cells (diff [CI] and Bayes decision) beside the verdicts
    across data sets (strings, for Markdown/HTML)."""
    t = ac.table
    out = ac.cells.loc[t["comparison"]].reset_index(names="comparison")
    out["new data set P(w/e/b)"] = [f"{a:.2f} / {b:.2f} / {c:.2f}" for a, b, c in
                                    zip(t["p_worse"], t["p_equivalent"], t["p_better"])]
    out["verdict"] = list(t["verdict"])
    out["common effect (pp)"] = [f"{d:+.2f} [{lo:+.2f}, {hi:+.2f}] {v}" for d, lo, hi, v in
                                 zip(t["delta0"], t["delta0_low"], t["delta0_high"],
                                     t["verdict_mean"])]
    out["signed-rank P(w/e/b)"] = [f"{a:.2f} / {b:.2f} / {c:.2f} {v}" for a, b, c, v in
                                   zip(t["sr_p_worse"], t["sr_p_equivalent"], t["sr_p_better"],
                                       t["sr_verdict"])]
    out["Wilcoxon p"] = [f"{p:.3g}" for p in t["wilcoxon_p"]]
    return out


def _legend(ac: AcrossStudy) -> str:
    return (f"Per data set: variant − reference (pp) on the ID test set, with the interval and "
            f"Bayes decision of Table 2. Across data sets: the hierarchical model of Corani et "
            f"al. (2017) on every data set's per-split differences; verdict for a new data set "
            f"and for the common effect when a posterior probability exceeds {ac.threshold:.3g} "
            f"(0.95 adjusted over the {len(ac.table)} comparison(s), Bonferroni); the Bayesian "
            f"signed-rank test and the Wilcoxon test on the data sets' mean differences "
            f"(docs/statistics.md, \"Across data sets\").")


def _friedman_lines(ac: AcrossStudy) -> list[str]:
    fr = ac.friedman
    if fr is None:
        return [f"Friedman test: not run ({ac.friedman_note})."]
    ranks = ", ".join(f"{k} {v:.2f}" for k, v in fr.ranks.items())
    groups = "; ".join(" = ".join(g) for g in fr.cliques) or "every pair told apart"
    lines = [f"Friedman test over {fr.n_models} models on {fr.n_datasets} data sets: chi2 = "
             f"{fr.statistic:.2f}, p = {fr.p:.3g} (Iman-Davenport p = {fr.iman_davenport_p:.3g}). "
             f"Mean ranks (1 = best): {ranks}. Nemenyi CD = {fr.cd:.2f}. Not told apart "
             f"({'Wilcoxon-Holm' if fr.posthoc == 'wilcoxon-holm' else 'Nemenyi'}): {groups}."]
    if ac.friedman_note:
        lines.append(f"Friedman: {ac.friedman_note}.")
    return lines


def across_markdown(result) -> str:
    """The section for ``medattn compare`` (Markdown), or why it is absent."""
    try:
        ac = across_study(result)
    except MedattnError as err:
        return f"\n## {TITLE}\n\nNot computed: {err}\n"
    parts = ["", f"## {TITLE}", "", markdown_table(across_display(ac)), "", _legend(ac), ""]
    parts += [f"- {verdict_sentence(r, ac)}" for _, r in ac.table.iterrows()]
    parts += ["", *[f"- {x}" for x in _friedman_lines(ac) + ac.notes]]
    return "\n".join(parts) + "\n"


def across_section(result, slug) -> Section:
    """The report's section: verdicts, table, forest plots and the CD diagram; with fewer than 2
    data sets (or no pairs) it says why it is absent."""
    # start-up time: matplotlib (about 1.5 s) only where the figures are drawn, not for the
    # Markdown that `medattn compare` prints (across_markdown)
    from medattn.report.across_figures import cd_diagram, forest_plot
    from medattn.report.figures import to_png

    if result is None:
        return Section("across", TITLE, [Text("Not computed: Table 2 could not be computed.")])
    try:
        ac = across_study(result)
    except MedattnError as err:
        return Section("across", TITLE, [Text(f"Not computed: {err}")])
    blocks = [Text("\n".join(f"- {verdict_sentence(r, ac)}" for _, r in ac.table.iterrows())),
              Table(across_display(ac), _legend(ac))]
    for label, fit in ac.fits.items():
        blocks.append(Figure(to_png(forest_plot(fit, label)), slug("forest", label),
                             f"{label}: per data set the mean difference with its corrected "
                             f"interval (black) and its shrunken estimate (blue); the common "
                             f"effect and a new data set's effect below; grey: the ROPE."))
    if ac.friedman is not None:
        blocks.append(Figure(to_png(cd_diagram(ac.friedman)), "cd_diagram",
                             "Critical-difference diagram of all models over the data sets."))
    blocks.append(Text("\n".join(f"- {x}" for x in _friedman_lines(ac) + ac.notes)))
    return Section("across", TITLE, blocks)
