"""Table 3 as a table and as Markdown: k of N runs per (model, feature) under each conditioning,
effect sizes with their CIs, significant differences between models, and on synthetic data the
planted truth."""

from __future__ import annotations

import numpy as np
import pandas as pd

from medattn.analysis.features.decisions import MAGNITUDE
from medattn.analysis.features.shared_test_usage import (
    BLOCKS,
    VARIANCE_NO_TERM,
    VARIANCE_SHARED,
    VARIANCE_SPLITS,
)
from medattn.analysis.features.summary import CHANCE_MARK, EFFECTS, cell, chance_p
from medattn.render import markdown_table

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
USED, NOT_USED = "✓", "✗"
CONDITION_NAMES = {"diagnosis": "fine diagnosis", "label": "3-class label"}


def model_order(models) -> list[str]:
    """Models in the zoo's order (base, +GA, ...), unknown names after them."""
    try:  # start-up time: the zoo imports torch and timm; the report imports this module
        from medattn.models import list_models

        known = {m: i for i, m in enumerate(list_models())}
    except Exception:  # the ordering is cosmetic
        known = {}
    return sorted(models, key=lambda m: (known.get(m, len(known)), m))


def table3(decisions: pd.DataFrame, runs: str = "all", conditions=("diagnosis", "label"),
           rate: float = 0.01) -> pd.DataFrame:
    """One row per (model, condition), one column per feature: "k/N" (all runs: the feature used in
    k of N runs; marked † when that many is unlikely by chance at the per-run false rate ``rate``,
    :func:`.summary.cell`) or ✓/✗ (one run per model); "n/a" where no test could run."""
    rows = []
    for (model, cond), grp in decisions.groupby(["model", "condition"], sort=False):
        row = {"model": model, "condition": cond}
        for feature in TABLE3_FEATURES:
            g = grp[grp["feature"] == feature]["used"].dropna()
            if g.empty:
                row[feature] = "n/a"
            elif runs == "best":
                row[feature] = USED if bool(g.iloc[0]) else NOT_USED
            else:
                row[feature] = cell(int(g.astype(bool).sum()), len(g), rate)
        rows.append(row)
    table = pd.DataFrame(rows, columns=["model", "condition", *TABLE3_FEATURES])
    rank = {c: i for i, c in enumerate(dict.fromkeys([*conditions, *CONDITION_NAMES]))}
    order = {m: i for i, m in enumerate(model_order(table["model"].unique()))}
    table = table.sort_values(["model", "condition"], key=lambda c: c.map(
        order if c.name == "model" else rank)).set_index(["model", "condition"])
    return table


def truth_cells(truth: dict) -> dict[str, str]:
    """What a synthetic data set's generator planted, per Table 3 feature."""
    cells = {}
    for feature in TABLE3_FEATURES:
        if feature in truth.get("not_visible", ()):
            cells[feature] = "never in the image"
        elif feature == "Colorful patches":
            bias = truth.get("patch_bias", 0)
            cells[feature] = f"planted (bias {bias:g})" if truth.get("patch_planted") else \
                "in the image, not planted"
        elif feature == "Skin color":
            cells[feature] = "in the image (a real cue)"
        else:
            cells[feature] = "in the image"
    return cells


def _fmt(v: float, digits: int = 3) -> str:
    return "–" if not np.isfinite(v) else f"{v:.{digits}g}"


def _effect_cell(row: pd.Series, test: str) -> str:
    mean, lo, hi = row[f"effect_{test}"], row[f"effect_{test}_low"], row[f"effect_{test}_high"]
    if not np.isfinite(mean):
        return "n/a"
    return _fmt(mean) + (f" [{_fmt(lo)}, {_fmt(hi)}]" if np.isfinite(lo) else "")


def _grid(header: list[str], rows: list[list[str]]) -> list[str]:
    return markdown_table(pd.DataFrame(rows, columns=header)).splitlines()


def table3_markdown(table: pd.DataFrame, *, summary: pd.DataFrame, differences: pd.DataFrame,
                    runs: str, select: str, prediction: str, alpha: float, tests,
                    decisions: pd.DataFrame, set_name: str, one_per_group: bool = True,
                    conditions=("diagnosis", "label"), min_per_diagnosis: int = 1,
                    truths: dict | None = None, notes=()) -> str:
    """Table 3 with a legend that states how it was made, then the effect sizes and the
    differences between models."""
    in_table = list(dict.fromkeys(table.index.get_level_values("condition")))
    # a condition asked for but not run (diagnoses that split no class: the label instead)
    present = [c for c in conditions if c in in_table] or in_table
    primary = present[0] if present else "label"
    features = list(TABLE3_FEATURES)
    lines = ["## Table 3: feature usage", "", *_grid(["Model", *features],
                                                    _rows(table, present, truths))]
    which = (f"one run per model, the best by {select} balanced accuracy: {USED} = used"
             if runs == "best" else "every final run: k/N = feature used in k of N runs")
    given = f"given the {CONDITION_NAMES[primary]}"
    cond_text = given
    if len(present) > 1:
        cond_text += f" (in brackets: given the {CONDITION_NAMES[present[1]]}"
        cond_text += ", the paper's conditioning)" if present[1] == "label" else ")"
    lines += [
        "",
        f"Feature usage ({which}), {cond_text}. A feature is used when the majority of "
        f"{', '.join(tests)} rejects independence of the feature and the model's {prediction} "
        f"output at p < {alpha:g} after Holm's adjustment of each test's p-values over the "
        f"{len(features)} features of the run (one family per run, conditioning and test; "
        f"then the majority vote), on the {set_name} predictions"
        f"{' (one image per patient/lesion)' if one_per_group else ''}. A = asymmetry, "
        f"B = border irregularity, C = colours, D = dermoscopic structures (count and area "
        f"share). Samples per test: {_sizes(decisions)}.",
    ]
    if runs == "all":
        lines.append(
            f"{CHANCE_MARK}: k of N is more than chance: k or more of N runs would be called "
            f"used with probability < 0.05 when no model uses the feature (binomial, at a "
            f"per-run false rate of {alpha:g}, the level the vote holds; assuming independent "
            f"runs, so a lower bound: runs trained on one pool are correlated). "
            + _chance_examples(decisions, alpha))
    lines += _strata_legend(decisions, min_per_diagnosis)
    if runs == "all" and MAGNITUDE in tests and len(summary):
        lines += variance_lines(summary, differences, set_name)[1:]
    lines += [f"Note: {note}." for note in notes]
    eff = summary[summary["condition"] == primary] if len(summary) else summary
    if runs == "all" and len(eff):
        lines += _effect_lines(eff, features, tests, given)
        lines += _difference_lines(differences, primary, tests)
    return "\n".join(lines) + "\n"


def _rows(table: pd.DataFrame, present: list[str], truths: dict | None) -> list[list[str]]:
    """One row per model: each feature's cell under the primary conditioning, the second one in
    brackets; on synthetic data the planted truth first."""
    features = list(TABLE3_FEATURES)
    rows = []
    for model in dict.fromkeys(table.index.get_level_values("model")):
        cells = []
        for f in features:
            parts = [table.loc[(model, c), f] for c in present if (model, c) in table.index]
            cells.append(parts[0] + (f" ({parts[1]})" if len(parts) > 1 else ""))
        rows.append([model, *cells])
    for spec, truth in (truths or {}).items():
        cells = truth_cells(truth)
        rows.insert(0, [f"*planted truth* ({spec.split(':', 1)[0]})",
                        *[f"*{cells[f]}*" for f in features]])
    return rows


def _sizes(decisions: pd.DataFrame) -> str:
    """Samples per test of each feature (a range over runs) and how many were left out."""
    n = decisions.groupby("feature")["n"].agg(["min", "max"])
    left = decisions.groupby("feature")["n_left_out"].max()

    def size(f: str) -> str:
        lo, hi = int(n.loc[f, "min"]), int(n.loc[f, "max"])
        return (f"{f}: {lo}" + (f"-{hi}" if lo != hi else "")
                + (f" ({int(left[f])} left out)" if left[f] else ""))

    return ", ".join(size(f) for f in TABLE3_FEATURES if f in n.index)


def _strata_legend(decisions: pd.DataFrame, min_per_diagnosis: int) -> list[str]:
    """The legend line on the fine-diagnosis strata: merged ones, or each its own."""
    dx = decisions[decisions["condition"] == "diagnosis"]
    if not len(dx):
        return []
    lo, hi = int(dx["n_strata"].min()), int(dx["n_strata"].max())
    per_run = f"{lo} strata per run" if lo == hi else f"{lo} to {hi} strata per run"
    if min_per_diagnosis > 1:
        return [
            f"Fine diagnoses with fewer than {min_per_diagnosis} tested images are merged into "
            f"their class (--min-per-diagnosis; this can bring the coarse-label confound back, "
            f"docs/features.md): {per_run}, {int(dx['merged_images'].max())} images at most "
            f"in merged strata ({int(dx['merged_diagnoses'].max())} diagnoses at most)."]
    unknown = int(dx["no_diagnosis"].max()) if "no_diagnosis" in dx else 0
    return [
        f"Every fine diagnosis is its own stratum ({per_run}), never merged; a stratum too small "
        f"for a test (one image; CMIknn's k neighbours) is left out of that test and counted "
        f"(`n_unused` in pvalues.csv)" + (f"; images without a diagnosis are left out ({unknown} "
                                           f"at most per run)" if unknown else "") + "."]


def _difference_lines(differences: pd.DataFrame, primary: str, tests) -> list[str]:
    """The section on variants that use a feature more or less than their base."""
    lines = ["", "### Differences between models", ""]
    rule = ("CMI difference per split, corrected paired t-test over splits, Holm-adjusted "
            f"over the {len(TABLE3_FEATURES)} features of each variant/base pair, p < 0.05")
    if MAGNITUDE not in tests:
        return lines + ["Not computed: the models are compared on CMIknn's CMI (nats), a "
                        "magnitude; the z-values of cHSIC and RCoT grow with n and are never "
                        "compared."]
    if differences.empty:
        return lines + ["No variant shares split seeds with its base in these runs."]
    sig = differences[(differences["condition"] == primary)
                      & (differences["verdict"].isin(["more", "less"]))]
    if sig.empty:
        return lines + [f"No variant uses a feature significantly more or less than its base "
                        f"({rule})."]
    lines += [f"Variant vs base ({rule}; the CI is per comparison):", ""]
    for r in sig.itertuples():
        lines.append(f"- {r.model} uses {r.feature} {r.verdict} than {r.reference} "
                     f"({EFFECTS[r.test]}: {r.difference:+.3g} [{_fmt(r.low)}, "
                     f"{_fmt(r.high)}], p = {r.p:.2g}, Holm p = {r.p_holm:.2g}, "
                     f"{r.pairs} splits)")
    return lines


def variance_lines(eff: pd.DataFrame, diffs: pd.DataFrame, set_name: str) -> list[str]:
    """Which variance marks the CIs and the differences of this set (the ``variance`` column of
    usage.csv and differences.csv): the splits alone, or splits + test images on a shared set."""
    labels = set(eff["variance"].dropna()) if "variance" in eff else set()
    if "variance" in diffs:
        labels |= set(diffs["variance"].dropna())
    if not labels or labels == {VARIANCE_SPLITS}:
        return ["", f"Variance of the CIs and of the differences: splits (each split has its own "
                    f"`{set_name}` images; docs/features.md, \"Shared test sets\")."]
    text = (f"Variance of the CIs and of the differences: {VARIANCE_SHARED}. Every run is "
            f"tested on the same `{set_name}` images, so the corrected split variance is joined "
            f"by the variance due to sampling those images (a jackknife over {BLOCKS} blocks of "
            f"images, Welch-Satterthwaite df; `jackknife.csv`, docs/features.md, \"Shared test "
            f"sets\").")
    if VARIANCE_NO_TERM in labels:
        text += (f" Some cells ({VARIANCE_NO_TERM}) lack the image term and are too narrow "
                 f"(`variance` in usage.csv, differences.csv).")
    return ["", text]


def _chance_examples(decisions: pd.DataFrame, rate: float) -> str:
    """The chance level in words for the run counts present, e.g. "With N = 10: P(>= 1) = 0.096,
    P(>= 2) = 0.0043"."""
    counts = sorted({int(n) for n in decisions.dropna(subset=["used"]).groupby(
        ["model", "condition", "feature"]).size()})
    parts = [f"N = {n}: P(k >= 1) = {chance_p(1, n, rate):.2g}, P(k >= 2) = "
             f"{chance_p(2, n, rate):.2g}" for n in counts[:3] if n >= 2]
    return ("Chance levels: " + "; ".join(parts) + ".") if parts else ""


def _effect_lines(eff: pd.DataFrame, features: list[str], tests, given: str) -> list[str]:
    """The CMI table (mean over runs with its CI) and the z-values as evidence (medians)."""
    lines = []
    if MAGNITUDE in tests:
        rows = []
        for model in model_order(eff["model"].unique()):
            m = eff[eff["model"] == model].set_index("feature")
            rows.append([model, *[_effect_cell(m.loc[f], MAGNITUDE) if f in m.index else "n/a"
                                  for f in features]])
        lines += ["", f"### Effect sizes: {EFFECTS[MAGNITUDE]}, {given}", "",
                  *_grid(["Model", *features], rows), "",
                  "Mean over runs [95% CI, Nadeau-Bengio corrected for overlapping splits; on a "
                  "shared test set plus test-image sampling, see the legend above]. CMI: "
                  "the CMIknn estimate minus its mean under the shuffles, in nats (0 = no "
                  "dependence); a magnitude, about the same at any number of test images."]
    zs = [t for t in tests if t != MAGNITUDE and f"z_{t}" in eff]
    if zs:
        rows = []
        for model in model_order(eff["model"].unique()):
            m = eff[eff["model"] == model].set_index("feature")
            rows.append([model, *[" / ".join(_fmt(m.loc[f, f"z_{t}"], 2) for t in zs)
                                  if f in m.index else "n/a" for f in features]])
        lines += ["", f"### Evidence: median z of {' / '.join(zs)}, {given}", "",
                  *_grid(["Model", *features], rows), "",
                  "z = (statistic - null mean) / null sd: how far from independence the data "
                  "are, not how strong the dependence is; at a fixed dependence it grows about "
                  "in proportion to the number of test images, so it is neither given a CI "
                  "nor compared between models."]
    return lines
