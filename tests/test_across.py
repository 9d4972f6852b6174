"""The answer across data sets: the hierarchical model's sampler against closed forms, the
Bayesian signed-rank test against baycomp, the Wilcoxon note, verdicts and bad input."""

import math

import numpy as np
import pytest

from medattn.analysis.across import (adjusted_threshold, hierarchical, new_dataset_probs,
                                     signed_rank, wilcoxon_needed)
from medattn.analysis.across_sampler import Priors, gibbs
from medattn.errors import ConfigError, DataError

R_SPLIT = 0.2 / 0.7


def test_sampler_matches_normal_normal_closed_form():
    # sigma_0, the within sds and nu (-> normal) held fixed: delta_0 and every delta_i are then
    # jointly normal with a closed-form posterior.
    m = np.array([1.0, -0.5, 2.0, 0.3, 1.5])
    J = np.full(5, 10.0)
    c = 1 / J + R_SPLIT
    s = np.array([1.0, 2.0, 1.5, 0.8, 1.2])
    v = np.array([0, 0, 0.5, 0, 0])  # one data set with a shared test set
    sig0, p = 1.3, Priors()
    d = gibbs(np.repeat(m[None], 8, 0), np.zeros((8, 5)), J, c, v, sigma0_fixed=sig0,
              within_sd_fixed=s, nu_fixed=1e7, n_iter=3000, n_warmup=100,
              rng=np.random.default_rng(3))
    V = c * s**2 + v
    w = 1 / (sig0**2 + V)
    A = 1 / p.delta0_sd**2 + w.sum()
    mean0, sd0 = (w * m).sum() / A, 1 / math.sqrt(A)
    assert d.delta0.mean() == pytest.approx(mean0, abs=0.03)
    assert d.delta0.std() == pytest.approx(sd0, rel=0.03)
    # delta_i | data: mixes its own mean and delta_0's posterior (law of total expectation)
    shrink = (1 / sig0**2) / (1 / sig0**2 + 1 / V)
    expect = shrink * mean0 + (1 - shrink) * m
    np.testing.assert_allclose(d.delta.reshape(-1, 5).mean(axis=0), expect, atol=0.04)


def test_sampler_within_sd_recovers_the_chi2_posterior():
    # J = 200 differences per data set: the posterior of 1/s^2 is Gamma((J-1)/2, (W + ...)/2),
    # its mean about (J-1)/W (the mean's own term adds little), far from the truncation.
    J, s_true = 200, 2.0
    W = s_true**2 * (J - 1)
    d = gibbs(np.zeros((4, 2)), np.full((4, 2), W), np.full(2, J), np.full(2, 1 / J),
              sigma0_fixed=1.0, nu_fixed=1e7, n_iter=2000, n_warmup=100, rng=np.random.default_rng(0))
    prec = 1 / d.within_sd.reshape(-1, 2) ** 2
    assert prec.mean() == pytest.approx((J - 1) / W, rel=0.02)


def test_hierarchical_clear_gain_is_better_and_shrinks_the_noisy_data_set():
    rng = np.random.default_rng(0)
    diffs = [rng.normal(mu, 1.0, 10) for mu in (4, 5, 4.5, 5.5, 4, 5)]
    diffs.append(rng.normal(12, 6.0, 10))  # one noisy outlier data set
    h = hierarchical(diffs, R_SPLIT, 1.0, names=list("abcdefg"), seed=1)
    assert h.verdict_mean == "better" and h.p_mean[2] > 0.99
    assert h.rhat < 1.05
    row = h.per_dataset.set_index("dataset").loc["g"]
    assert abs(row["shrunk"] - h.delta0[0]) < abs(row["mean"] - h.delta0[0])  # pulled in
    assert row["shrunk_high"] - row["shrunk_low"] < row["ci_high"] - row["ci_low"]
    assert list(h.per_dataset["dataset"]) == list("abcdefg")


def test_hierarchical_null_is_not_better_and_threshold_adjusts():
    rng = np.random.default_rng(5)
    diffs = [rng.normal(0.0, 1.5, 10) for _ in range(4)]
    h = hierarchical(diffs, R_SPLIT, 1.0, n_variants=5)
    assert h.threshold == pytest.approx(0.99)
    assert h.verdict in ("undecided", "equivalent")
    assert sum(h.p_new) == pytest.approx(1.0)
    # a shared test set's variance widens that data set's interval
    wide = hierarchical(diffs, R_SPLIT, 1.0, test_var=[4.0, 0, 0, 0])
    pd0, pd1 = h.per_dataset.iloc[0], wide.per_dataset.iloc[0]
    assert pd1["ci_high"] - pd1["ci_low"] > pd0["ci_high"] - pd0["ci_low"]
    assert pd1["shrunk_high"] - pd1["shrunk_low"] > pd0["shrunk_high"] - pd0["shrunk_low"]


def test_new_dataset_probs_match_t_probabilities():
    from scipy import stats

    p = new_dataset_probs(np.array([1.0]), np.array([2.0]), np.array([4.0]), 1.0)
    assert p[0] == pytest.approx(stats.t.cdf(-1.0, 4))
    assert p[2] == pytest.approx(stats.t.sf(0.0, 4))


def test_hierarchical_bad_input_says_what():
    with pytest.raises(DataError, match="at least 2 data sets"):
        hierarchical([np.ones(10)], R_SPLIT, 1.0)
    with pytest.raises(DataError, match="data set 2: needs >= 2"):
        hierarchical([np.ones(10), np.ones(1)], R_SPLIT, 1.0)
    with pytest.raises(DataError, match="derm: needs >= 2"):
        hierarchical([np.ones(10), [1.0, np.nan]], R_SPLIT, 1.0, names=["path", "derm"])
    with pytest.raises(ConfigError, match="^rope must be > 0 pp"):  # a bad argument
        hierarchical([np.ones(3), np.ones(3)], R_SPLIT, 0.0)


@pytest.mark.parametrize("z, rope", [([1.2, -0.3, 2.5, 0.8, 1.9, 0.1, 3.0], 1.0),
                                     ([0.5, -1.5, 0.2, 0.9], 0.5),
                                     ([-2.0, -3.1, 0.4, -1.0, -0.2, 1.0, -2.2, -0.5], 1.0)])
def test_signed_rank_matches_baycomp(z, rope):
    baycomp = pytest.importorskip("baycomp")  # the test extra: pip install -e '.[test]'
    n = 50_000
    ours = signed_rank(z, rope, n_samples=n, seed=3).probs
    ref = baycomp.SignedRankTest.probs(np.zeros(len(z)), np.array(z), rope, nsamples=n,
                                       random_state=7)
    for a, b in zip(ours, ref):
        se = math.sqrt(max(b * (1 - b), 1e-4) * 2 / n)  # two independent MC estimates
        assert abs(a - b) < 5 * se + 1e-9


def test_signed_rank_direction_and_wilcoxon_note():
    r = signed_rank([3.0, 2.5, 4.0, 3.5, 2.8, 5.0, 3.1], 1.0)
    assert r.verdict == "better" and r.wilcoxon_p == pytest.approx(2 / 2**7)
    assert r.note == ""
    worse = signed_rank([-3.0, -2.5, -4.0, -3.5, -2.8, -5.0, -3.1], 1.0)
    assert worse.verdict == "worse"
    two = signed_rank([0.5, 1.5], 1.0)
    assert two.wilcoxon_p == pytest.approx(0.5) and two.d_needed == 6
    assert "D >= 6" in two.note and "D = 2" in two.note
    assert wilcoxon_needed(0.05) == 6 and wilcoxon_needed(0.01) == 8
    assert adjusted_threshold(0.95, 4) == pytest.approx(0.9875)


def test_fixed_split_test_variance_from_the_bootstrap_interval():
    import pandas as pd
    from scipy import stats

    from medattn.analysis.across_study import shared_test_variance

    diffs = np.array([0.5, 1.5, 1.0, 0.0, 2.0])  # var 0.625, / J = 0.125
    z = stats.norm.ppf(0.975)
    row = pd.Series({"boot_ci_low": 1.0 - z * 0.5, "boot_ci_high": 1.0 + z * 0.5})  # se 0.5
    assert shared_test_variance(row, diffs, 0.05) == pytest.approx(0.25 - 0.125)
    missing = pd.Series({"boot_ci_low": np.nan, "boot_ci_high": np.nan})
    assert shared_test_variance(missing, diffs, 0.05) == 0
    narrow = pd.Series({"boot_ci_low": 0.99, "boot_ci_high": 1.01})
    assert shared_test_variance(narrow, diffs, 0.05) == 0.0
