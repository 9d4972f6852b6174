"""The answer across data sets for a whole study: every variant against its reference on the
in-distribution test sets of D >= 2 data sets (:mod:`medattn.analysis.across`), and the Friedman
test with its post-hoc over all models (:mod:`medattn.analysis.ranks`), from Table 2's
:class:`~medattn.analysis.compare.CompareResult` (one study's, or several merged).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.stats import norm

from medattn.analysis.across import HierarchicalResult, hierarchical, signed_rank
from medattn.analysis.compare import CompareResult
from medattn.analysis.settings import CompareSettings
from medattn.analysis.ranks import FriedmanResult, friedman
from medattn.errors import DataError
from medattn.models import registry as R

__all__ = ["AcrossStudy", "across_study", "merge_results", "shared_test_variance"]


@dataclass
class AcrossStudy:
    """``table``: one row per variant comparison (``comparison, backbone, model, reference,
    datasets, p_worse, p_equivalent, p_better, verdict, ...``); ``fits``: its hierarchical fit
    by comparison label; ``friedman`` (None with ``friedman_note`` saying why); ``cells``:
    the per-data-set cells of every comparison (rows = comparison, columns = data sets)."""

    table: pd.DataFrame
    fits: dict[str, HierarchicalResult]
    cells: pd.DataFrame
    datasets: list[str]
    friedman: FriedmanResult | None = None
    friedman_note: str = ""
    notes: list[str] = field(default_factory=list)
    threshold: float = 0.95
    margin: float = 1.0


def merge_results(results: list[CompareResult]) -> CompareResult:
    """One :class:`CompareResult` of several studies' (each over different data sets)."""
    seen: dict[str, int] = {}
    for i, r in enumerate(results):
        for ds in dict.fromkeys(r.table["dataset"]):
            if ds in seen:
                raise DataError(f"data set {ds!r} is in RUNS_DIR number {seen[ds] + 1} and "
                                f"{i + 1}; give each data set's runs once.")
            seen[ds] = i

    def cat(name):
        frames = [getattr(r, name) for r in results if getattr(r, name) is not None]
        return pd.concat(frames, ignore_index=True) if frames else None

    return CompareResult(cat("table"), cat("runs"), cat("excluded"), results[0].settings,
                         pairs=cat("pairs"), divergence=cat("divergence"),
                         sensitivity=cat("sensitivity"),
                         notes=[n for r in results for n in r.notes],
                         warnings=[w for r in results for w in r.warnings])


def shared_test_variance(row, diffs: np.ndarray, alpha: float) -> float:
    """Test-sampling variance (pp^2) of a fixed-split data set's mean difference: the paired
    bootstrap's variance over splits and test images (from its (1 - alpha) CI in Table 2's
    ``boot_ci_low/high``) less the spread over the splits alone, s^2 / J; 0 without a bootstrap."""
    lo, hi = row.get("boot_ci_low"), row.get("boot_ci_high")
    if lo is None or hi is None or pd.isna(lo) or pd.isna(hi) or len(diffs) < 2:
        return 0.0
    se_boot = (float(hi) - float(lo)) / (2 * float(norm.ppf(1 - alpha / 2)))
    return max(0.0, se_boot**2 - float(np.var(diffs, ddof=1)) / len(diffs))


def _cell(row) -> str:
    if row is None or pd.isna(row["diff"]):
        return "–"
    if pd.isna(row["diff_ci_low"]):  # every split gave the same difference
        return f"{row['diff']:+.2f} (no spread)"
    out = f"{row['diff']:+.2f} [{row['diff_ci_low']:+.2f}, {row['diff_ci_high']:+.2f}]"
    return out + (f" {row['decision']}" if isinstance(row["decision"], str) else "")


def _friedman(table: pd.DataFrame, alpha: float, posthoc: str) -> tuple[FriedmanResult | None, str]:
    t = table[table["set"] == "id"].drop_duplicates(["dataset", "backbone", "model"])
    scores = t.assign(label=[R.model_label(b, m) for b, m in zip(t["backbone"], t["model"])]
                      ).pivot(index="dataset", columns="label", values="mean")
    complete = scores.dropna(axis=1)
    left = sorted(set(scores.columns) - set(complete.columns))
    if complete.shape[1] < 3 or complete.shape[0] < 2:
        return None, (f"the Friedman test needs >= 3 models on every one of >= 2 data sets; "
                      f"here {complete.shape[1]} model(s) on all {complete.shape[0]} data sets")
    note = f"left out (not on every data set): {', '.join(left)}" if left else ""
    return friedman(complete, alpha=alpha, posthoc=posthoc), note


def across_study(result: CompareResult, *, posthoc: str = "wilcoxon-holm", n_iter: int = 2000
                 ) -> AcrossStudy:
    """Fit every comparison of ``result`` over the data sets where it has >= 2 split pairs (ID
    test sets), with the comparison's own settings (``result.settings``: margin as the ROPE,
    alpha, seed); the verdicts' threshold is adjusted over the comparisons fitted. Raises
    :class:`DataError` when fewer than 2 data sets have pairs."""
    settings = CompareSettings.from_dict(result.settings)
    margin, alpha, seed = settings.margin, settings.alpha, settings.seed
    pairs = result.pairs
    if pairs is None or not len(pairs):
        raise DataError("the answer across data sets needs per-split pairs: give RUNS_DIR(s) "
                        "of final runs, not a summary.")
    pairs = pairs[pairs["set"] == "id"]
    datasets = [d for d in dict.fromkeys(result.table["dataset"]) if d in set(pairs["dataset"])]
    if len(datasets) < 2:
        raise DataError(f"the answer across data sets needs >= 2 data sets; these runs hold "
                        f"{len(datasets)} ({', '.join(datasets) or 'none'}). Run the study on "
                        f"more data sets or give several RUNS_DIRs.")
    keys = ["backbone", "model", "reference"]
    table = result.table[result.table["set"] == "id"].set_index(["dataset"] + keys)
    groups = []
    notes = []
    for key, g in pairs.groupby(keys, sort=False):
        ok = [ds for ds in datasets if int((g["dataset"] == ds).sum()) >= 2]
        label = f"{R.model_label(key[0], key[1])} vs {R.backbone_label(key[2])} base"
        if len(ok) >= 2:
            groups.append((key, label, g, ok))
        else:
            notes.append(f"{label}: fewer than 2 data sets with >= 2 split pairs; not judged "
                         "across data sets")
    fixed = sorted({ds for ds in datasets for k, *_ in groups
                    if (ds,) + k in table.index and table.loc[(ds,) + k, "test_train_ratio"] == 0})
    if fixed:
        notes.append(f"{', '.join(fixed)}: fixed split (r = 0): its runs share one test set; its "
                     "sampling variance is taken from Table 2's bootstrap over test images where "
                     "there is one (else it is missing: compare with a bootstrap, `medattn compare --bootstrap N`)")
    rows, fits, cells = [], {}, {}
    for i, (key, label, g, ok) in enumerate(groups):
        diffs = [g.loc[g["dataset"] == ds, "diff"].to_numpy(float) for ds in ok]
        ratios = [float(table.loc[(ds,) + key, "test_train_ratio"]) for ds in ok]
        ratios = [0.0 if math.isnan(x) else x for x in ratios]
        tvar = [shared_test_variance(table.loc[(ds,) + key], d, alpha) if r == 0 else 0.0
                for ds, d, r in zip(ok, diffs, ratios)]
        fit = hierarchical(diffs, ratios, margin, test_var=tvar, names=ok,
                           n_variants=len(groups), level=1 - alpha, n_iter=n_iter, seed=seed + i)
        sr = signed_rank([d.mean() for d in diffs], margin, n_variants=len(groups),
                         level=1 - alpha, alpha=alpha, seed=seed + i)
        fits[label] = fit
        cells[label] = {ds: _cell(table.loc[(ds,) + key] if (ds,) + key in table.index else None)
                        for ds in datasets}
        rows.append({"comparison": label, "backbone": key[0], "model": key[1],
                     "reference": key[2], "datasets": len(ok),
                     "p_worse": fit.p_new[0], "p_equivalent": fit.p_new[1],
                     "p_better": fit.p_new[2], "verdict": fit.verdict,
                     "mean_p_worse": fit.p_mean[0], "mean_p_equivalent": fit.p_mean[1],
                     "mean_p_better": fit.p_mean[2], "verdict_mean": fit.verdict_mean,
                     "delta0": fit.delta0[0], "delta0_low": fit.delta0[1],
                     "delta0_high": fit.delta0[2], "sigma0": fit.sigma0[0], "rhat": fit.rhat,
                     "sr_p_worse": sr.probs[0], "sr_p_equivalent": sr.probs[1],
                     "sr_p_better": sr.probs[2], "sr_verdict": sr.verdict,
                     "wilcoxon_p": sr.wilcoxon_p})
        notes += [f"{label}: {n}" for n in fit.notes]
        if sr.note:
            notes.append(sr.note)
    fr, fnote = _friedman(result.table, alpha, posthoc)
    thr = 1 - alpha / max(1, len(groups))
    return AcrossStudy(pd.DataFrame(rows), fits, pd.DataFrame(cells).T, datasets, fr, fnote,
                       list(dict.fromkeys(notes)), thr, margin)
