"""make_split: grouped (no group on two sides), stratified as far as groups allow, a pure function of
(table content, seed, fractions) — independent of row order — and clear errors for bad fractions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from medattn.data import fingerprint, make_split
from medattn.data.splits import split_groups_disjoint
from medattn.errors import ConfigError, DataError


def table(n_groups=300, seed=0, max_size=4, p=(0.2, 0.5, 0.3)) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for g in range(n_groups):
        label = int(rng.choice(3, p=p))
        for k in range(int(rng.integers(1, max_size + 1))):
            # a few groups hold two classes (a patient with two lesions)
            lab = label if rng.random() > 0.1 else int(rng.integers(3))
            rows.append((f"img{g}_{k}", lab, f"patient:{g}"))
    return pd.DataFrame(rows, columns=["image_id", "label", "group"])


@pytest.mark.parametrize("seed", range(15))
def test_grouped_partition_and_fractions(seed):
    t = table(seed=seed)
    s = make_split(t, seed)
    assert split_groups_disjoint(t, s)
    assert np.array_equal(np.sort(np.concatenate(list(s.values()))), np.arange(len(t)))
    n = len(t)
    for name, frac in zip(("train", "val", "test"), (0.7, 0.1, 0.2)):
        assert abs(len(s[name]) / n - frac) < 0.03
        # stratified: each class's share within 4 points of its overall share
        share = np.bincount(t["label"].to_numpy()[s[name]], minlength=3) / len(s[name])
        overall = np.bincount(t["label"], minlength=3) / n
        assert np.abs(share - overall).max() < 0.04, (name, share, overall)


def test_pure_function_of_content_seed_and_fractions():
    t = table()
    a, b = make_split(t, 7), make_split(t, 7)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    c = make_split(t, 8)
    assert not np.array_equal(a["test"], c["test"])
    # row order does not matter: the same images land in the same subsets
    perm = np.random.default_rng(0).permutation(len(t))
    shuffled = t.iloc[perm].reset_index(drop=True)
    d = make_split(shuffled, 7)
    for k in a:
        assert set(t["image_id"].iloc[a[k]]) == set(shuffled["image_id"].iloc[d[k]])
    assert fingerprint(t) == fingerprint(shuffled)
    e = make_split(t, 7, (0.6, 0.2, 0.2))
    assert len(e["val"]) > len(a["val"])


def test_different_seeds_spread_groups_over_subsets():
    t = table(n_groups=100)
    in_test = np.zeros(len(t))
    for seed in range(40):
        in_test[make_split(t, seed)["test"]] += 1
    # every image is in the test set for some seed, and no image always
    assert (in_test > 0).mean() > 0.95 and (in_test < 40).all()


def test_big_groups_and_zero_fraction():
    t = table(n_groups=30, max_size=20)
    s = make_split(t, 0, (0.8, 0.0, 0.2))
    assert len(s["val"]) == 0 and split_groups_disjoint(t, s)
    assert len(s["test"]) > 0


@pytest.mark.parametrize("fractions", [(0.7, 0.2, 0.2), (0.5, 0.5), (1.2, -0.1, -0.1)])
def test_bad_fractions(fractions):
    with pytest.raises(ConfigError, match="sum to 1"):
        make_split(table(n_groups=10), 0, fractions)


def test_too_few_groups():
    t = pd.DataFrame({"image_id": ["a", "b", "c"], "label": [0, 1, 0], "group": ["g", "g", "h"]})
    with pytest.raises(DataError, match="too few"):
        make_split(t, 0)
