"""Friedman, mean ranks, Nemenyi's CD and the Wilcoxon-Holm post-hoc against hand computations
and Demšar's (2006) table."""

import math

import pandas as pd
import pytest

from medattn.analysis.ranks import cliques, friedman, mean_ranks, nemenyi_cd, pairwise_wilcoxon
from medattn.errors import DataError

# 4 data sets x 3 models; ranks by hand (1 = best): A 1,2,1,1  B 2,1,3,2.5  C 3,3,2,2.5
SCORES = pd.DataFrame({"A": [90, 88, 75, 60], "B": [85, 89, 70, 55], "C": [80, 70, 72, 55]},
                      index=["d1", "d2", "d3", "d4"], dtype=float)


def test_mean_ranks_by_hand():
    r = mean_ranks(SCORES)
    assert list(r.index) == ["A", "B", "C"]
    assert r.tolist() == pytest.approx([1.25, 2.125, 2.625])


def test_friedman_statistic_by_hand():
    res = friedman(SCORES)
    # Demšar's chi2_F = 12 N / (k (k+1)) [sum R_j^2 - k (k+1)^2 / 4], then the tie correction
    # 1 - sum(t^3 - t) / (N k (k^2 - 1)) for the one tie of two in d4
    n, k = 4, 3
    chi2 = 12 * n / (k * (k + 1)) * (1.25**2 + 2.125**2 + 2.625**2 - k * (k + 1) ** 2 / 4)
    assert chi2 == pytest.approx(3.875)
    chi2 /= 1 - 6 / (n * k * (k * k - 1))
    assert res.statistic == pytest.approx(chi2)
    assert res.p == pytest.approx(math.exp(-chi2 / 2))  # chi2 with 2 df
    ff = (n - 1) * chi2 / (n * (k - 1) - chi2)
    from scipy import stats

    assert res.iman_davenport_p == pytest.approx(stats.f.sf(ff, k - 1, (k - 1) * (n - 1)))
    assert res.cd == pytest.approx(2.343 * math.sqrt(k * (k + 1) / (6 * n)), abs=2e-3)
    assert res.cliques == [["A", "B", "C"]]  # 2.625 - 1.25 < CD: nothing told apart


def test_nemenyi_q_matches_demsar_table():
    table = {2: 1.960, 3: 2.343, 4: 2.569, 5: 2.728, 6: 2.850, 7: 2.949, 8: 3.031, 9: 3.102,
             10: 3.164}
    for m, q in table.items():
        assert nemenyi_cd(m, 6, 0.05) / math.sqrt(m * (m + 1) / 36) == pytest.approx(q, abs=2e-3)


def test_pairwise_wilcoxon_holm_by_hand():
    # 6 data sets where A beats B and C everywhere, B vs C split: exact p = 2 / 2^6
    s = pd.DataFrame({"A": [9, 9, 9, 9, 9, 9], "B": [5, 6, 5, 6, 5, 6],
                      "C": [6, 5, 6, 5, 6, 5.5]}, dtype=float)
    pw = pairwise_wilcoxon(s).set_index(["a", "b"])
    assert pw.loc[("A", "B"), "p"] == pytest.approx(2 / 64)
    # Holm over 3 pairs: the two smallest p (2/64 each) times 3 and 2, monotone -> both 3 * 2/64
    assert pw.loc[("A", "B"), "p_adjusted"] == pytest.approx(3 * 2 / 64)
    assert pw.loc[("A", "C"), "p_adjusted"] == pytest.approx(3 * 2 / 64)
    assert not pw["significant"].any()  # 0.094 > 0.05: six data sets are too few after Holm


def test_cliques_are_maximal_consecutive_runs():
    differ = {frozenset(p) for p in (("A", "C"), ("A", "D"), ("B", "D"))}
    assert cliques(list("ABCD"), differ) == [["A", "B"], ["B", "C", ], ["C", "D"]]
    assert cliques(list("ABC"), set()) == [["A", "B", "C"]]
    assert cliques(list("AB"), {frozenset("AB")}) == []


def test_friedman_bad_input():
    with pytest.raises(DataError, match=">= 3 models"):
        friedman(SCORES[["A", "B"]])
    bad = SCORES.copy()
    bad.loc["d2", "C"] = float("nan")
    with pytest.raises(DataError, match="C on d2"):
        friedman(bad)
    with pytest.raises(DataError, match="post-hoc"):
        friedman(SCORES, posthoc="tukey")


def test_cd_diagram_draws_every_model_and_one_bar_per_clique():
    import numpy as np

    from medattn.report.across_figures import cd_diagram

    rng = np.random.default_rng(0)
    s = pd.DataFrame(rng.normal(0, 1, (10, 5)) + np.arange(5) * 0.8, columns=list("VWXYZ"))
    res = friedman(s)
    fig = cd_diagram(res)
    texts = [t.get_text() for t in fig.axes[0].texts]
    for name, r in res.ranks.items():
        assert f"{name} ({r:.2f})" in texts
    red = [c for c in fig.axes[0].collections if c.get_linewidth()[0] == 3]
    assert len(red) == len(res.cliques) >= 1
    assert any("Nemenyi CD" in t for t in texts)
