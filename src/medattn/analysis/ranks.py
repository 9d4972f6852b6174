"""Many models over many data sets (Demšar 2006): the Friedman test on the ranks of the data sets'
mean balanced accuracies, every model's mean rank, and a post-hoc: pairwise Wilcoxon signed-rank
tests with Holm's correction (the default; Benavoli, Corani & Mangili 2016 show that the mean-rank
tests' outcome for two models depends on which other models are in the comparison) or Nemenyi's
critical difference CD = q_alpha sqrt(m (m + 1) / (6 D)) (the classic).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as sps

from medattn.analysis import stats
from medattn.errors import DataError

__all__ = ["FriedmanResult", "POSTHOCS", "cliques", "friedman", "mean_ranks", "nemenyi_cd",
           "pairwise_wilcoxon"]

POSTHOCS = ("wilcoxon-holm", "nemenyi")


def mean_ranks(scores: pd.DataFrame) -> pd.Series:
    """Mean rank of every model (columns) over the data sets (rows); rank 1 = the highest score,
    ties share the average rank. Sorted best first."""
    ranks = scores.rank(axis=1, ascending=False, method="average")
    return ranks.mean(axis=0).sort_values(kind="stable")


def nemenyi_cd(m: int, d: int, alpha: float = 0.05) -> float:
    """Nemenyi's critical difference of mean ranks for ``m`` models over ``d`` data sets:
    q_alpha sqrt(m (m + 1) / (6 d)), q_alpha the studentized range quantile / sqrt(2)."""
    q = sps.studentized_range.ppf(1 - alpha, m, np.inf) / math.sqrt(2)
    return float(q * math.sqrt(m * (m + 1) / (6.0 * d)))


def pairwise_wilcoxon(scores: pd.DataFrame, correction: str = "holm", alpha: float = 0.05
                      ) -> pd.DataFrame:
    """Wilcoxon signed-rank test of every pair of models (columns) over the data sets (rows).

    Columns ``a, b, median_diff, p, p_adjusted, significant`` (diff = a - b, in the scores' unit);
    ``correction`` is a :func:`medattn.analysis.stats.adjust_pvalues` method over all pairs.
    """
    rows = []
    for a, b in itertools.combinations(scores.columns, 2):
        d = (scores[a] - scores[b]).to_numpy(float)
        p = float(sps.wilcoxon(d).pvalue) if np.any(d != 0) else 1.0
        rows.append({"a": a, "b": b, "median_diff": float(np.median(d)), "p": p})
    out = pd.DataFrame(rows, columns=["a", "b", "median_diff", "p"])
    out["p_adjusted"] = stats.adjust_pvalues(out["p"].to_numpy(float), correction, alpha)
    out["significant"] = out["p_adjusted"] < alpha
    return out


def cliques(order: list[str], differ: set[frozenset]) -> list[list[str]]:
    """Maximal runs of models, consecutive in ``order`` (best first), with no pair in ``differ``
    (the pairs the post-hoc tells apart): the bars of a critical-difference diagram."""
    runs = []
    for i in range(len(order)):
        j = i
        while j + 1 < len(order) and all(frozenset((order[k], order[j + 1])) not in differ
                                         for k in range(i, j + 1)):
            j += 1
        if j > i:
            runs.append(order[i:j + 1])
    # keep maximal runs only (a run inside another adds no information)
    return [r for r in runs if not any(set(r) < set(o) for o in runs)]


@dataclass
class FriedmanResult:
    """``statistic``, ``p``: the Friedman chi-square test (scipy); ``iman_davenport_p``: its less
    conservative F form (Demšar 2006); ``ranks``: mean rank per model, best first; ``cd``:
    Nemenyi's critical difference; ``posthoc``: the method used for ``cliques``; ``pairs``:
    pairwise Wilcoxon-Holm table; ``cliques``: groups the post-hoc cannot tell apart."""

    statistic: float
    p: float
    iman_davenport_p: float
    n_datasets: int
    n_models: int
    ranks: pd.Series
    cd: float
    posthoc: str
    pairs: pd.DataFrame
    cliques: list[list[str]]
    alpha: float


def friedman(scores: pd.DataFrame, *, alpha: float = 0.05, posthoc: str = "wilcoxon-holm"
             ) -> FriedmanResult:
    """Friedman test and post-hoc on ``scores`` (rows = data sets, columns = models; e.g. mean
    balanced accuracy in %). Needs >= 3 models and >= 2 data sets with no missing score."""
    if posthoc not in POSTHOCS:
        raise DataError(f"post-hoc {posthoc!r} is unknown; use one of {', '.join(POSTHOCS)}.")
    if scores.isna().any().any():
        missing = [f"{c} on {i}" for i, r in scores.iterrows() for c in scores.columns
                   if pd.isna(r[c])]
        raise DataError(f"the Friedman test needs every model on every data set; missing: "
                        f"{', '.join(missing[:5])}. Run those models or leave them out.")
    d, m = scores.shape
    if m < 3 or d < 2:
        raise DataError(f"the Friedman test needs >= 3 models and >= 2 data sets (got {m} "
                        f"models, {d} data sets).")
    res = sps.friedmanchisquare(*[scores[c].to_numpy(float) for c in scores.columns])
    chi2 = float(res.statistic)
    ff = (d - 1) * chi2 / (d * (m - 1) - chi2) if d * (m - 1) > chi2 else math.inf
    id_p = float(sps.f.sf(ff, m - 1, (m - 1) * (d - 1))) if math.isfinite(ff) else 0.0
    ranks = mean_ranks(scores)
    cd = nemenyi_cd(m, d, alpha)
    pairs = pairwise_wilcoxon(scores, "holm", alpha)
    if posthoc == "nemenyi":
        differ = {frozenset((a, b)) for a, b in itertools.combinations(ranks.index, 2)
                  if abs(ranks[a] - ranks[b]) > cd}
    else:
        differ = {frozenset((a, b)) for a, b, s in zip(pairs["a"], pairs["b"],
                                                      pairs["significant"]) if s}
    return FriedmanResult(statistic=chi2, p=float(res.pvalue), iman_davenport_p=id_p,
                          n_datasets=d, n_models=m, ranks=ranks, cd=cd, posthoc=posthoc,
                          pairs=pairs, cliques=cliques(list(ranks.index), differ), alpha=alpha)
