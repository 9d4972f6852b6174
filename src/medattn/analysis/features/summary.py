"""Feature usage over every final run: k of N, median p-values, effect sizes with 95% CIs, and
paired differences between a variant and its base.

The final runs of a study are trained on overlapping random splits of one pool, so their results
are correlated; means over runs therefore get the Nadeau-Bengio corrected standard error
``s * sqrt(1/J + r)`` with ``r = n_test / n_train`` (docs/statistics.md), and a variant is compared
with its base split by split (both are trained on the same split seeds), never by the difference
of two significance verdicts.

Only a magnitude gets a CI and a comparison between models: CMI in nats (CMIknn's estimate minus
its shuffle mean), which stays put for a fixed dependence as n grows. cHSIC's and RCoT's
standardised statistics (z-values) grow about like n at a fixed dependence; they are reported as
evidence (their median over runs), never given CIs or compared. The comparisons of a variant with
its base are one family per (conditioning, variant, base) over the features: Holm-adjusted. A
cell k/N gets a chance reference: P(K >= k) for K ~ Binomial(N, rate) with rate = the per-run
false "used" rate under no usage (at most alpha), assuming independent runs.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from scipy import stats

from medattn.analysis.features.decisions import MAGNITUDE, holm
from medattn.analysis.features.shared_test_usage import VARIANCE_SHARED, VARIANCE_SPLITS
from medattn.analysis.stats import corrected_ttest

# Effect sizes per test (see medattn.analysis.citests.CIResult): what the numbers mean.
EFFECTS = {"cmiknn": "CMI (nats)", "chsic": "HSIC z (evidence)", "rcot": "RCoT z (evidence)"}
DEFAULT_RATIO = 0.2 / 0.7  # n_test / n_train of the default 70/10/20 splits


def corrected_t(values, ratio: float = DEFAULT_RATIO, alpha: float = 0.05, *,
                image_var: float = 0.0, n_images: float = math.inf) -> dict[str, float]:
    """Mean of J per-split values with the Nadeau-Bengio corrected t-test against 0
    (:func:`medattn.analysis.stats.corrected_ttest`) as a dict: ``mean``, the ``1 - alpha`` CI
    ``low``/``high``, ``t``, ``df``, the two-sided ``p`` and ``n`` = J. With fewer than 2 finite
    values (or no spread) only the mean is defined. ``image_var`` (nats^2) and ``n_images``: the
    test-image sampling variance of a shared test set and its df + 1 (:mod:`.shared_test_usage`),
    added to the corrected variance with Welch-Satterthwaite df; 0 in-distribution."""
    r = corrected_ttest(np.asarray(values, dtype=float), ratio, alpha, image_var=image_var,
                        n_images=n_images)
    df = float(r.df) if image_var > 0 and math.isfinite(r.df) else float(r.n - 1)
    return {"mean": r.diff, "low": r.ci_low, "high": r.ci_high, "t": r.t, "df": df,
            "p": r.p, "n": r.n}


def _image_term(image, condition: str, feature: str, weights: dict) -> tuple[float, float, str]:
    """``(image_var, n_images, variance label)``: the shared set's image term for these run
    weights, or none (``image`` None: each split has its own test images)."""
    if image is None:
        return 0.0, math.inf, VARIANCE_SPLITS
    return image.term(condition, feature, weights)


def chance_p(k: int, n: int, rate: float) -> float:
    """P(K >= k) for K ~ Binomial(n, rate): how often k or more of n independent runs would call
    a feature used by chance when no model uses it (a lower bound for correlated runs)."""
    return float(stats.binom.sf(k - 1, n, rate)) if n else float("nan")


def usage_summary(decisions: pd.DataFrame, tests, ratio: float = DEFAULT_RATIO,
                  rate: float = 0.01, image=None) -> pd.DataFrame:
    """One row per (condition, model, feature): runs N with a decision, runs k where the feature
    is used, ``chance_p`` = P(>= k of N by chance) at the per-run false rate ``rate``
    (:func:`chance_p`), the median raw p of each test, the CMI (nats) mean over runs with its 95%
    CI, and the median z of cHSIC/RCoT (``z_<test>``, evidence only). ``image``: the shared test
    set's :class:`.shared_test_usage.ImageTerms` (None in-distribution); ``variance`` says what
    the CI's variance holds and ``image_var_<test>`` the image term (nats^2)."""
    rows = []
    for (cond, model, feature), g in decisions.groupby(["condition", "model", "feature"],
                                                       sort=False):
        decided = g["used"].dropna()
        row = {"condition": cond, "model": model, "feature": feature, "runs": len(decided),
               "used": int(decided.astype(bool).sum())}
        row["chance_p"] = chance_p(row["used"], row["runs"], rate)
        row["cell"] = cell(row["used"], row["runs"], rate) if len(decided) else "n/a"
        for t in tests:
            row[f"median_p_{t}"] = float(g[f"p_{t}"].median())
        for t in tests:
            if t == MAGNITUDE:
                effect = g[f"effect_{t}"].to_numpy(float)
                finite = np.isfinite(effect)
                weights = ({r: 1 / finite.sum() for r in g["run_id"][finite]}
                           if image is not None else {})
                v, n_img, label = _image_term(image, cond, feature, weights)
                ci = corrected_t(effect, ratio, image_var=v, n_images=n_img)
                row.update({f"effect_{t}": ci["mean"], f"effect_{t}_low": ci["low"],
                            f"effect_{t}_high": ci["high"], "variance": label,
                            f"image_var_{t}": v if label == VARIANCE_SHARED else np.nan})
            else:
                row[f"z_{t}"] = float(g[f"z_{t}"].median())
        rows.append(row)
    return pd.DataFrame(rows)


CHANCE_MARK = "†"  # k of N more than chance: P(>= k of N | no usage, independent runs) < 0.05


def cell(k: int, n: int, rate: float) -> str:
    """"k/N", marked † when k or more of N independent runs would be called by chance with
    probability below 0.05 at the per-run false rate ``rate``."""
    return f"{k}/{n}" + (CHANCE_MARK if k and chance_p(k, n, rate) < 0.05 else "")


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
                      ratio: float = DEFAULT_RATIO, alpha: float = 0.05,
                      image=None) -> pd.DataFrame:
    """Variant vs base, per (condition, feature), on the magnitude (CMI in nats): the per-split
    differences (runs joined on the split seed) and the corrected paired t-test; ``p_holm`` is
    Holm-adjusted over the features of that (condition, variant, base) family. ``verdict`` is
    "more" / "less" only when ``p_holm < alpha``, else "no difference shown"; a pair of models
    with fewer than 2 shared splits gets no test. Without CMIknn among ``tests`` there is no
    magnitude, so no rows (z-values are never compared). ``image``: as in
    :func:`usage_summary`; on a shared test set the test's variance adds the image-sampling
    variance of the mean paired difference (``variance``, ``image_var``)."""
    cols = ["condition", "feature", "test", "model", "reference", "pairs", "difference", "low",
            "high", "t", "df", "p", "p_holm", "verdict", "variance", "image_var"]
    rows = []
    if "split_seed" not in decisions or MAGNITUDE not in tests:
        return pd.DataFrame(columns=cols)
    t = MAGNITUDE
    for model, refs in references(models).items():
        for ref in refs:
            mine = decisions[decisions["model"] == model]
            theirs = decisions[decisions["model"] == ref]
            joined = mine.merge(theirs, on=["condition", "feature", "split_seed"],
                                suffixes=("", "_ref"))
            for cond, fam in joined.groupby("condition", sort=False):
                family = []
                for feature, g in fam.groupby("feature", sort=False):
                    diffs = (g[f"effect_{t}"] - g[f"effect_{t}_ref"]).to_numpy(float)
                    weights = _pair_weights(g, np.isfinite(diffs)) if image is not None else {}
                    v, n_img, label = _image_term(image, cond, feature, weights)
                    ci = corrected_t(diffs, ratio, alpha, image_var=v, n_images=n_img)
                    family.append({"condition": cond, "feature": feature, "test": t,
                                   "model": model, "reference": ref, "pairs": ci["n"],
                                   "difference": ci["mean"], "low": ci["low"], "high": ci["high"],
                                   "t": ci["t"], "df": ci["df"], "p": ci["p"], "variance": label,
                                   "image_var": v if label == VARIANCE_SHARED else np.nan})
                adjusted = holm([r["p"] for r in family])
                for r, p_holm in zip(family, adjusted):
                    verdict = "no difference shown"
                    if p_holm < alpha:
                        verdict = "more" if r["difference"] > 0 else "less"
                    rows.append({**r, "p_holm": p_holm, "verdict": verdict})
    return pd.DataFrame(rows, columns=cols)


def _pair_weights(pairs: pd.DataFrame, finite: np.ndarray) -> dict:
    """Run weights of the mean paired difference: +1/J per variant run, -1/J per base run."""
    weights: dict = {}
    j = int(finite.sum())
    for run, ref in zip(pairs["run_id"][finite], pairs["run_id_ref"][finite]):
        weights[run] = weights.get(run, 0.0) + 1 / j
        weights[ref] = weights.get(ref, 0.0) - 1 / j
    return weights
