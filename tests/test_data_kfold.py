"""kfold_split: repeated grouped, class-stratified k-fold. The k test folds of one repetition are
disjoint and cover the pool; no group is on two sides of train / val / test; the folds are a pure
function of (content, seed), whatever the row order; bad folds / val shares are refused."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from medattn.data import kfold_split
from medattn.data.kfold import kfold_assign
from medattn.data.splits import split_groups_disjoint
from medattn.errors import ConfigError, DataError


def table(n_groups=400, seed=0, max_size=4, p=(0.5, 0.3, 0.2)) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for g in range(n_groups):
        label = int(rng.choice(3, p=p))
        for k in range(int(rng.integers(1, max_size + 1))):
            lab = label if rng.random() > 0.1 else int(rng.integers(3))  # a few mixed groups
            rows.append((f"img{g}_{k}", lab, f"lesion:{g}"))
    return pd.DataFrame(rows, columns=["image_id", "label", "group"])


@pytest.mark.parametrize("folds,seed", [(3, 0), (5, 1), (5, 2), (10, 3)])
def test_test_folds_partition_the_pool_and_groups_stay_on_one_side(folds, seed):
    t = table(seed=seed)
    splits = [kfold_split(t, seed, folds, i, val_fraction=0.1) for i in range(folds)]
    tests = np.concatenate([s["test"] for s in splits])
    assert len(tests) == len(t) and np.array_equal(np.sort(tests), np.arange(len(t)))
    overall = np.bincount(t["label"], minlength=3) / len(t)
    for s in splits:
        assert split_groups_disjoint(t, s)
        assert np.array_equal(np.sort(np.concatenate(list(s.values()))), np.arange(len(t)))
        assert abs(len(s["test"]) / len(t) - 1 / folds) < 0.02
        assert abs(len(s["val"]) / len(t) - 0.1) < 0.02
        for part in ("test", "val"):  # stratified as far as groups allow
            share = np.bincount(t["label"].to_numpy()[s[part]], minlength=3) / len(s[part])
            tol = 0.04 if part == "test" else 0.07  # val: ~100 images in whole groups
            assert np.abs(share - overall).max() < tol, (part, share, overall)


def test_same_seed_same_folds_in_any_row_order_and_other_seeds_differ():
    t = table(seed=5)
    shuffled = t.sample(frac=1.0, random_state=3).reset_index(drop=True)
    for fold in range(5):
        a, b = kfold_split(t, 11, 5, fold), kfold_split(shuffled, 11, 5, fold)
        for part in ("train", "val", "test"):
            assert (set(t["image_id"].iloc[a[part]])
                    == set(shuffled["image_id"].iloc[b[part]])), (fold, part)
    other = kfold_split(t, 12, 5, 0)["test"]
    assert set(other) != set(kfold_split(t, 11, 5, 0)["test"])


def test_validation_comes_from_the_training_folds_and_differs_by_fold():
    t = table(seed=2)
    codes = pd.factorize(t["group"], sort=True)[0]
    test_fold, val = kfold_assign(codes, t["label"].to_numpy(), 4, 5, 0.1)
    for i in range(5):
        assert not (val[i] & (test_fold == i)).any()
    assert not np.array_equal(val[0], val[1])


@pytest.mark.parametrize("folds,val,match", [(2, 0.1, "folds` >= 3"), (5, 0.8, "validation share"),
                                             (3.5, 0.1, "folds` >= 3")])
def test_bad_design_is_refused(folds, val, match):
    with pytest.raises(ConfigError, match=match):
        kfold_split(table(n_groups=30), 0, folds, 0, val_fraction=val)


def test_too_few_groups_and_bad_fold():
    with pytest.raises(DataError, match="too few for 5 folds"):
        kfold_split(table(n_groups=4), 0, 5, 0)
    with pytest.raises(ConfigError, match="out of range"):
        kfold_split(table(n_groups=30), 0, 5, 5)
