"""The stop-when-decided rule: calibrated threshold, decisions on clear cases, no decision on too
little information, and the error rate it holds under repeated looks."""

import math

import numpy as np
import pytest
from scipy import stats as ss

from medattn.analysis import sequential as seq
from medattn.analysis import stats

R = 0.2 / 0.7
LOOKS = seq.planned_looks(2, 10)  # (4, 6, 8, 10)


def test_planned_looks_skip_what_cannot_decide():
    assert seq.planned_looks(2, 7) == (4, 6, 7)
    assert seq.planned_looks(1, 4) == (3, 4)
    assert seq.planned_looks(5, 12) == (5, 10, 12)
    with pytest.raises(ValueError):
        seq.planned_looks(1, 2)


@pytest.mark.slow
def test_one_look_is_the_two_sided_fixed_threshold_and_more_looks_are_stricter():
    # one look: T is exactly t(J-1) under the model, so the threshold is 1 - alpha/2
    assert seq.calibrate_threshold((10,), R) == pytest.approx(0.975, abs=0.002)
    few = seq.calibrate_threshold(seq.planned_looks(5, 10), R)
    many = seq.calibrate_threshold(seq.planned_looks(1, 10), R)
    assert 0.976 < few < many < 0.999
    # deterministic (resume must reach the same decisions)
    assert seq.calibrate_threshold(LOOKS, R, n_sim=50_000) == seq.calibrate_threshold(
        LOOKS, R, n_sim=50_000)


def test_clear_cases_stop_with_the_expected_decision():
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 0.3, 6)
    assert seq.decide(5 + noise, R, 1.0, LOOKS).decision == "better"
    assert seq.decide(-5 + noise, R, 1.0, LOOKS).decision == "worse"
    small = rng.normal(0, 0.05, 10)
    d = seq.decide(small, R, 1.0, LOOKS)
    assert d.decision == "equivalent" and d.p_equivalent > d.threshold
    # an unclear one stays undecided, though the fixed 0.95 rule would decide it
    unclear = np.array([2.4, 3.1, 1.9, 2.8])
    assert seq.decide(unclear, R, 1.0, LOOKS).decision == "undecided"
    assert stats.bayes_decision(stats.bayes_correlated(unclear, R, 1.0)) == "better"


def test_never_decides_with_fewer_than_three_pairs_or_zero_sd():
    d = seq.decide([9.0, 9.5], R, 1.0, LOOKS)
    assert d.decision == "" and "3 pairs" in d.reason
    for same in ([4.0] * 4, [0.1] * 5, [2.3] * 7):  # 0.1 and 2.3 leave rounding noise in the sd
        d = seq.decide(same, R, 1.0, LOOKS)
        assert d.decision == "" and "zero sd" in d.reason
    code, used = seq.first_decisions(np.full((3, 10), 4.0), R, 1.0, LOOKS, 0.99)
    assert (code == 2).all() and (used == 10).all()
    # a look at 2 pairs is no look even when the vectorised rule is given it
    two = np.tile([9.0, 9.5, 9.2, 9.1], (1, 1))
    code, used = seq.first_decisions(two, R, 1.0, (2, 4), 0.9)
    assert used[0] == 4


def test_the_vectorised_procedure_is_the_scalar_rule_at_each_look():
    rng = np.random.default_rng(3)
    d = rng.normal(1.5, 1.5, (60, 10))
    thr = seq.calibrate_threshold(LOOKS, R)
    code, used = seq.first_decisions(d, R, 1.0, LOOKS, thr)
    names = {-1: "worse", 0: "equivalent", 1: "better"}
    for i in range(len(d)):
        first = next(((j, x.decision) for j in LOOKS
                      if (x := seq.decide(d[i, :j], R, 1.0, LOOKS)).decision in seq.DECISIONS),
                     (10, "undecided"))
        assert first == (used[i], names.get(int(code[i]), "undecided"))


def test_repeated_ci_is_wider_than_the_fixed_one_and_centred():
    diffs = np.array([1.0, 2.5, 0.4, 1.9, 3.0, 1.2])
    d = seq.decide(diffs, R, 1.0, LOOKS)
    c = stats.corrected_ttest(diffs, R)
    assert d.rci_low < c.ci_low < c.diff < c.ci_high < d.rci_high
    assert (d.rci_low + d.rci_high) / 2 == pytest.approx(c.diff)
    assert d.rci_high - d.diff == pytest.approx(ss.t.ppf(d.threshold, 5) * c.se)


def test_false_decisions_stay_under_alpha_with_repeated_looks_where_naive_looks_do_not():
    # delta = 0 with a large sd (the ROPE is small against the se): the worst case of the bound
    rng = np.random.default_rng(11)
    n, looks = 4000, seq.planned_looks(1, 10)
    rho = R / (1 + R)
    d = 8.0 * (rng.normal(0, math.sqrt(rho), (n, 1)) + rng.normal(0, math.sqrt(1 - rho), (n, 10)))
    code, _ = seq.first_decisions(d, R, 1.0, looks, seq.calibrate_threshold(looks, R))
    naive, _ = seq.first_decisions(d, R, 1.0, looks, 0.95)
    wrong = np.isin(code, (-1, 1)).sum()
    assert stats.clopper_pearson(wrong, n)[2] < 0.065
    assert np.isin(naive, (-1, 1)).mean() > 0.12  # the fixed 0.95 rule at every look
