"""Power and decision probabilities of a design (medattn.analysis.design) against independent
computations: scipy's noncentral t and simulations of the tests the tool runs."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as ss

from medattn.analysis import design as D
from medattn.analysis import stats


def _nct_power(sd, delta, j, r, alpha=0.05, f=None):
    df = j - 1
    f = 1 / j + r if f is None else f
    nc = delta / (sd * np.sqrt(f))
    tc = ss.t.ppf(1 - alpha / 2, df)
    return ss.nct.sf(tc, df, nc) + ss.nct.cdf(-tc, df, nc)


def _studies(sd, delta, j, r, n, seed):
    """n studies of j equicorrelated differences (rho = r / (1 + r), within-study sd ``sd``)."""
    rng = np.random.default_rng(seed)
    shared = rng.standard_normal((n, 1)) * sd * np.sqrt(r)
    return delta + shared + rng.standard_normal((n, j)) * sd


@pytest.mark.parametrize("sd,delta,j,r", [(2.0, 2.0, 10, 0.2857), (1.5, 1.0, 3, 0.25),
                                          (3.0, 4.0, 30, 0.1), (1.0, 0.0, 5, 0.2857),
                                          (0.5, -1.0, 20, 0.05)])
def test_power_equals_scipy_noncentral_t(sd, delta, j, r):
    assert D.power(sd, delta, j, r) == pytest.approx(_nct_power(sd, delta, j, r), abs=1e-4)


def test_power_with_a_design_factor_equals_noncentral_t_with_that_factor():
    got = D.power(2.0, 2.0, 10, 0.25, variance_factor=0.5)
    assert got == pytest.approx(_nct_power(2.0, 2.0, 10, 0.25, f=0.5), abs=1e-4)
    assert got < D.power(2.0, 2.0, 10, 0.25)  # a larger factor (0.5 > 0.35) has less power


def test_power_broadcasts_and_is_alpha_under_the_null():
    p = D.power(np.array([[1.0], [2.0]]), 0.0, [3, 10, 30], 0.2857)
    assert p.shape == (2, 3)
    np.testing.assert_allclose(p, 0.05, atol=1e-5)


@pytest.mark.parametrize("sd,delta,j,r", [(2.0, 2.0, 10, 0.2857), (1.0, 1.0, 5, 0.25),
                                          (2.0, 3.0, 30, 0.2857)])
def test_power_agrees_with_a_simulation_of_the_corrected_test(sd, delta, j, r):
    d = _studies(sd, delta, j, r, 4000, seed=j)
    rejected = np.mean([stats.corrected_ttest(row, r).p < 0.05 for row in d])
    assert abs(D.power(sd, delta, j, r) - rejected) < 0.02


@pytest.mark.parametrize("sd,delta,j,r,rope", [(0.6, 0.9, 30, 0.05, 1.0),
                                               (1.0, 1.5, 10, 0.1, 1.0),
                                               (2.0, 2.0, 10, 0.2857, 1.0),
                                               (1.0, -2.5, 5, 0.25, 0.5)])
@pytest.mark.slow
def test_decision_probability_agrees_with_a_simulation_of_bayes_correlated(sd, delta, j, r, rope):
    d = _studies(sd, delta, j, r, 4000, seed=7 + j)
    counts = np.zeros(3)
    for row in d:
        dec = stats.bayes_decision(stats.bayes_correlated(row, r, rope), 0.95)
        if dec in D.OUTCOMES:
            counts[D.OUTCOMES.index(dec)] += 1
    got = D.decision_probability(sd, delta, j, r, rope, 0.95)
    np.testing.assert_allclose(got, counts / len(d), atol=0.03)


def test_decision_probability_cases_with_known_answers():
    # a tiny sd and a true difference far outside the ROPE: "better" almost surely; mirrored
    np.testing.assert_allclose(D.decision_probability(0.1, 5.0, 30, 0.05, 1.0), [0, 0, 1],
                               atol=1e-6)
    np.testing.assert_allclose(D.decision_probability(0.1, -5.0, 30, 0.05, 1.0), [1, 0, 0],
                               atol=1e-6)
    # ... and at delta = 0 with a tight sd: "equivalent" almost surely; without a ROPE never
    assert D.decision_probability(0.1, 0.0, 30, 0.05, 1.0)[1] > 0.999
    assert D.decision_probability(0.1, 0.0, 30, 0.05, 0.0)[1] == 0.0
    out = D.decision_probability([1.0, 2.0], [[0.0], [2.0]], 10, 0.2857, 1.0)
    assert out.shape == (2, 2, 3) and np.all(out.sum(-1) <= 1 + 1e-9)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="n_pairs"):
        D.power(1.0, 1.0, 1, 0.2)
    with pytest.raises(ValueError, match="sd_diff"):
        D.power(0.0, 1.0, 10, 0.2)
    with pytest.raises(ValueError, match="threshold"):
        D.decision_probability(1.0, 1.0, 10, 0.2, 1.0, threshold=0.4)


def test_design_table_offers_exactly_the_calibrated_kfold_designs():
    from medattn.kfold_designs import KFOLD_DESIGNS

    names = [d.name for d in D.DESIGNS]
    assert {"random J=10", "random J=20", "random J=30", "5-fold x 1", "5-fold x 2",
            "5-fold x 4", "10-fold x 1"} <= set(names)
    for d in D.DESIGNS:
        assert d.calibrated == (d.scheme == "random" or (d.folds, d.repeats) in KFOLD_DESIGNS)
    # a design the calibration did not cover (many repetitions) is listed as uncalibrated
    many = D._kfold(5, 10)
    assert not many.calibrated and many.factor(50, 0.25) == pytest.approx(1 / 50 + 0.25)
    k = next(d for d in D.DESIGNS if d.name == "5-fold x 2")
    assert k.n_pairs == 10 and k.shares(0.2, 0.1) == pytest.approx((0.2, 0.7))
    assert k.factor(10, 0.25) == pytest.approx(0.35)


def test_decided_right_is_the_better_entry_and_mirrors_for_negative_delta():
    full = D.decision_probability(1.5, 2.0, [5, 10, 30], 0.2857, 1.0)
    np.testing.assert_allclose(D.decided_right(1.5, 2.0, [5, 10, 30], 0.2857, 1.0), full[:, 2],
                               atol=1e-4)
    np.testing.assert_allclose(D.decided_right(1.5, -2.0, [5, 10, 30], 0.2857, 1.0), full[:, 2],
                               atol=1e-4)
