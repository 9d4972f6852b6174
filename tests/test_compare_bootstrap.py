"""The paired bootstrap over splits and test images, against direct computations."""

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score

from medattn.analysis.bootstrap import (SplitPredictions, balanced_accuracy_weighted,
                                        image_sampling_variance, paired_bootstrap, same_images)


def _splits(rng, n_pool=400, n_test=120, n_splits=5, k=3, shared=False, gap=0.05):
    """Overlapping test sets of a pool (or the same set, ``shared``: an OOD set); correctness of
    the two models correlated through a per-image difficulty."""
    labels = rng.integers(0, k, n_pool)
    hard = rng.normal(0, 1, n_pool)
    out = []
    for _ in range(n_splits):
        idx = np.arange(n_test) if shared else rng.choice(n_pool, n_test, replace=False)
        noise = rng.normal(0, 0.7, (2, n_test))
        out.append(SplitPredictions(idx, labels[idx], hard[idx] + noise[0] > -0.6,
                                    hard[idx] + noise[1] > -0.6 + gap))
    return out


def _bacc(labels, correct, k):
    pred = np.where(correct, labels, (labels + 1) % k)
    return balanced_accuracy_score(labels, pred)


def test_weighted_balanced_accuracy_equals_sklearn_on_the_expanded_sample():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 60)
    correct = rng.random(60) < 0.7
    weights = rng.multinomial(60, np.full(60, 1 / 60), size=25)
    ours = balanced_accuracy_weighted(labels, correct, weights, 4)
    for w, v in zip(weights, ours):
        rep = np.repeat(np.arange(60), w)  # the resampled images themselves
        assert v == pytest.approx(_bacc(labels[rep], correct[rep], 4), abs=1e-12)


def _bacc_direct(labels, correct, k):
    hits, total = np.bincount(labels, correct, k), np.bincount(labels, minlength=k)
    return np.mean(hits[total > 0] / total[total > 0])


def _reference_bootstrap(splits, k, n_resamples, seed, level=0.95):
    """The crossed scheme written directly: draw images (by id) and splits, score each drawn
    split on its test images weighted by how often they were drawn."""
    rng = np.random.default_rng(seed)
    ids = np.unique(np.concatenate([s.images for s in splits]))
    stat = []
    for _ in range(n_resamples):
        draw = rng.choice(ids, len(ids))
        count = np.bincount(draw, minlength=ids.max() + 1)
        diffs = []
        for j in rng.integers(0, len(splits), len(splits)):
            s = splits[j]
            rep = np.repeat(np.arange(len(s.images)), count[s.images])
            a = _bacc_direct(s.labels[rep], s.correct_a[rep], k)
            b = _bacc_direct(s.labels[rep], s.correct_b[rep], k)
            diffs.append(100 * (a - b))
        stat.append(np.mean(diffs))
    return np.quantile(stat, [(1 - level) / 2, (1 + level) / 2]), np.std(stat, ddof=1)


@pytest.mark.parametrize("shared", [False, True])
def test_bootstrap_agrees_with_a_direct_resampling_loop(shared):
    rng = np.random.default_rng(1 + shared)
    splits = _splits(rng, n_splits=4, shared=shared)
    res = paired_bootstrap(splits, 3, n_resamples=10_000, seed=3, method="exact")
    (lo, hi), se = _reference_bootstrap(splits, 3, 1500, seed=4)
    obs = np.mean([100 * (_bacc(s.labels, s.correct_a, 3) - _bacc(s.labels, s.correct_b, 3))
                   for s in splits])
    assert res.diff == pytest.approx(obs, abs=1e-9)
    assert res.n_splits == 4 and res.method == "exact"
    assert res.n_images == len(np.unique(np.concatenate([s.images for s in splits])))
    # Monte Carlo agreement of two independent runs of the same scheme.
    assert res.se == pytest.approx(se, rel=0.15)
    width = hi - lo
    assert abs(res.ci_low - lo) < 0.2 * width and abs(res.ci_high - hi) < 0.2 * width


def test_bootstrap_is_seeded_and_identical_models_give_zero():
    rng = np.random.default_rng(2)
    splits = _splits(rng)
    a = paired_bootstrap(splits, 3, n_resamples=500, seed=7)
    assert a == paired_bootstrap(splits, 3, n_resamples=500, seed=7)
    assert a != paired_bootstrap(splits, 3, n_resamples=500, seed=8)
    same = [SplitPredictions(s.images, s.labels, s.correct_a, s.correct_a) for s in splits]
    z = paired_bootstrap(same, 3, n_resamples=300)
    assert (z.diff, z.ci_low, z.ci_high) == (0.0, 0.0, 0.0)


def test_shared_images_are_resampled_once_for_all_splits():
    # The crossed design: J copies of one OOD split carry no more information than one, so the
    # CI must not shrink by sqrt(J) as a nested (per-split) image resample would make it.
    rng = np.random.default_rng(4)
    one = _splits(rng, n_splits=1, shared=True)
    many = one * 10
    s1 = paired_bootstrap(one, 3, n_resamples=3000, seed=1).se
    s10 = paired_bootstrap(many, 3, n_resamples=3000, seed=1).se
    assert s10 == pytest.approx(s1, rel=0.1)


def test_normal_approximation_agrees_with_the_exact_multinomial():
    rng = np.random.default_rng(5)
    splits = _splits(rng, n_pool=6000, n_test=1500, n_splits=6)
    exact = paired_bootstrap(splits, 3, n_resamples=3000, seed=0, method="exact")
    normal = paired_bootstrap(splits, 3, n_resamples=3000, seed=0, method="normal")
    assert normal.method == "normal" and normal.diff == exact.diff
    assert normal.se == pytest.approx(exact.se, rel=0.1)
    width = exact.ci_high - exact.ci_low
    assert abs(normal.ci_low - exact.ci_low) < 0.1 * width
    assert abs(normal.ci_high - exact.ci_high) < 0.1 * width


def test_bootstrap_rejects_bad_input():
    with pytest.raises(ValueError, match="at least one split"):
        paired_bootstrap([], 3)
    s = _splits(np.random.default_rng(0), n_splits=1)
    with pytest.raises(ValueError, match="n_resamples"):
        paired_bootstrap(s, 3, n_resamples=0)
    with pytest.raises(ValueError, match="method"):
        paired_bootstrap(s, 3, method="poisson")


@pytest.mark.parametrize("shared", [True, False])
def test_image_sampling_variance_equals_the_bootstrap_over_images_alone(shared):
    # The delta-method variance of the mean difference over images equals the variance of
    # resampling the distinct images (splits held fixed), shared or overlapping test sets.
    rng = np.random.default_rng(11)
    splits = _splits(rng, n_pool=500, n_test=300, n_splits=4, shared=shared)
    v, n = image_sampling_variance(splits, 3)
    ids = np.unique(np.concatenate([s.images for s in splits]))
    assert n == ids.size
    w = rng.multinomial(n, np.full(n, 1 / n), size=4000)  # (B, distinct images)
    pos = {i: k for k, i in enumerate(ids)}
    stat = np.zeros(len(w))
    for s in splits:
        ws = w[:, [pos[i] for i in s.images]]
        stat += 100 * (balanced_accuracy_weighted(s.labels, s.correct_a, ws, 3)
                       - balanced_accuracy_weighted(s.labels, s.correct_b, ws, 3)) / len(splits)
    assert v == pytest.approx(np.var(stat, ddof=1), rel=0.08)  # 4000 resamples: sd ~2%
    assert same_images(splits) == shared
    identical = [SplitPredictions(s.images, s.labels, s.correct_a, s.correct_a) for s in splits]
    assert image_sampling_variance(identical, 3)[0] == 0.0
