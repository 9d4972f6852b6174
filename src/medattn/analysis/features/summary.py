"""Feature usage over every final run: k of N, median p-values, effect sizes with 95% CIs, and
paired differences between a variant and its base.

The final runs of a study are trained on overlapping random splits of one pool, so their results
are correlated; means over runs therefore get the Nadeau-Bengio corrected standard error
``s * sqrt(1/J + r)`` with ``r = n_test / n_train`` (docs/statistics.md), and a variant is compared
with its base split by split (both are trained on the same split seeds), never by the difference
of two significance verdicts.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from medattn.analysis.stats import corrected_ttest

# Effect sizes per test (see medattn.analysis.citests.CIResult): what the numbers mean.
EFFECTS = {"cmiknn": "CMI (nats)", "chsic": "HSIC (z)", "rcot": "RCoT (z)"}
DEFAULT_RATIO = 0.2 / 0.7  # n_test / n_train of the default 70/10/20 splits


def corrected_t(values, ratio: float = DEFAULT_RATIO, alpha: float = 0.05) -> dict[str, float]:
    """Mean of J per-split values with the Nadeau-Bengio corrected t-test against 0
    (:func:`medattn.analysis.stats.corrected_ttest`) as a dict: ``mean``, the ``1 - alpha`` CI
    ``low``/``high``, ``t``, ``df``, the two-sided ``p`` and ``n`` = J. With fewer than 2 finite
    values (or no spread) only the mean is defined."""
    r = corrected_ttest(np.asarray(values, dtype=float), ratio, alpha)
    return {"mean": r.diff, "low": r.ci_low, "high": r.ci_high, "t": r.t, "df": float(r.n - 1),
            "p": r.p, "n": r.n}


def usage_summary(decisions: pd.DataFrame, tests, ratio: float = DEFAULT_RATIO) -> pd.DataFrame:
    """One row per (condition, model, feature): runs N with a decision, runs k where the feature
    is used, the median p of each test, and each test's effect: mean over runs with its 95% CI."""
    rows = []
    for (cond, model, feature), g in decisions.groupby(["condition", "model", "feature"],
                                                       sort=False):
        decided = g["used"].dropna()
        row = {"condition": cond, "model": model, "feature": feature, "runs": len(decided),
               "used": int(decided.astype(bool).sum())}
        row["cell"] = f"{row['used']}/{row['runs']}" if len(decided) else "n/a"
        for t in tests:
            row[f"median_p_{t}"] = float(g[f"p_{t}"].median())
        for t in tests:
            ci = corrected_t(g[f"effect_{t}"], ratio)
            row.update({f"effect_{t}": ci["mean"], f"effect_{t}_low": ci["low"],
                        f"effect_{t}_high": ci["high"]})
        rows.append(row)
    return pd.DataFrame(rows)


def references(models: pd.DataFrame) -> dict[str, list[str]]:
    """variant model -> the base model(s) it is compared with: its own backbone's base, or, for a
    backbone without one (the ViTs), every base (as Table 2 does). ``models``: columns model,
    backbone, variant."""
    models = models.drop_duplicates("model")
    bases = {r.backbone: r.model for r in models.itertuples() if r.variant == "base"}
    refs = {}
    for r in models.itertuples():
        if r.variant == "base":
            continue
        refs[r.model] = [bases[r.backbone]] if r.backbone in bases else sorted(bases.values())
    return refs


def model_differences(decisions: pd.DataFrame, models: pd.DataFrame, tests,
                      ratio: float = DEFAULT_RATIO, alpha: float = 0.05) -> pd.DataFrame:
    """Variant vs base, per (condition, feature, test effect): the per-split differences of the
    effect sizes (runs joined on the split seed) and the corrected paired t-test. ``verdict`` is
    "more" / "less" only when that difference is significant at ``alpha``, else "no difference
    shown"; a pair of models with fewer than 2 shared splits gets no test."""
    cols = ["condition", "feature", "test", "model", "reference", "pairs", "difference", "low",
            "high", "t", "df", "p", "verdict"]
    rows = []
    if "split_seed" not in decisions:
        return pd.DataFrame(columns=cols)
    for model, refs in references(models).items():
        for ref in refs:
            mine = decisions[decisions["model"] == model]
            theirs = decisions[decisions["model"] == ref]
            joined = mine.merge(theirs, on=["condition", "feature", "split_seed"],
                                suffixes=("", "_ref"))
            for (cond, feature), g in joined.groupby(["condition", "feature"], sort=False):
                for t in tests:
                    ci = corrected_t(g[f"effect_{t}"] - g[f"effect_{t}_ref"], ratio, alpha)
                    verdict = "no difference shown"
                    if ci["p"] < alpha:
                        verdict = "more" if ci["mean"] > 0 else "less"
                    rows.append({"condition": cond, "feature": feature, "test": t,
                                 "model": model, "reference": ref, "pairs": ci["n"],
                                 "difference": ci["mean"], "low": ci["low"], "high": ci["high"],
                                 "t": ci["t"], "df": ci["df"], "p": ci["p"],
                                 "verdict": verdict})
    return pd.DataFrame(rows, columns=cols)
