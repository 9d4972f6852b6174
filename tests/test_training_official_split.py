"""The data set's own partition as a study option (MedMNIST): the config key, the run id, what the
record says, and the shipped medmnist_plus study end to end on a tiny file in MedMNIST's layout."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from medattn.analysis.study_summary import final_summary
from medattn.data import load_dataset, official_split
from medattn.errors import ConfigError, DataError
from medattn.runs import store
from medattn.training import run_study
from medattn.training.config import RunSpec, TrainSettings, load_config, parse_config
from medattn.training.engine import train_run

SIZES = {"train": 28, "val": 10, "test": 12}


def write_dermamnist(path: Path) -> Path:
    """A DermaMNIST+ file as released (keys train/val/test_images/labels, labels N x 1, uint8)."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in SIZES.items():
        labels = (np.arange(n) % 7).reshape(-1, 1).astype(np.uint8)
        images = rng.integers(0, 60, (n, 28, 28, 3), dtype=np.uint8)
        images[labels[:, 0] == 4] += 150       # melanoma brighter: something to learn
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images, labels
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)
    return path


@pytest.fixture(scope="module")
def derma(tmp_path_factory):
    return write_dermamnist(tmp_path_factory.mktemp("mnist") / "dermamnist_224.npz")


# These tests check which images a run uses and what its record says, not learning: one epoch on
# 28 images is at chance, so the chance-level divergence rule is switched off (margin below 0).
NO_CHANCE_RULE = -1.0


def _spec(data, seed=0, **train):
    settings = dict(epochs=1, batch_size=8, image_size=28, pretrained=False, threads=1, cache=False,
                    chance_margin=NO_CHANCE_RULE)
    settings.update(train)
    return RunSpec(phase="final", dataset="dermamnist", data=data, model="resnet18", lr=0.01,
                   weight_decay=1e-4, split_seed=seed, train=TrainSettings(**settings))


def test_config_key_is_checked():
    raw = {"datasets": ["medmnist:x.npz"], "models": ["resnet18"], "train": {"split": "official"}}
    assert parse_config(raw).train.split == "official"
    raw["train"]["split"] = "fixed"
    with pytest.raises(ConfigError, match="`train.split` must be one of random, official"):
        parse_config(raw)


def test_run_ids_of_official_splits_differ_from_random_ones():
    spec = _spec("medmnist:/x/d.npz", seed=3, epochs=2, image_size=32, cache=True, threads=0,
                 batch_size=32, chance_margin=0.02)
    assert spec.run_id.startswith("final-dermamnist-resnet18-lr0.01-wd0.0001-split3-")
    same = _spec("medmnist:/x/d.npz", seed=3, epochs=2, image_size=32, cache=False, threads=1,
                 batch_size=32, chance_margin=0.02)
    assert spec.run_id == same.run_id  # cache and threads do not change the result
    official = dataclasses.replace(spec, train=dataclasses.replace(spec.train, split="official"))
    assert official.run_id != spec.run_id
    assert RunSpec.from_dict(official.to_dict()) == official


def test_official_split_is_the_subset_column_and_refused_without_one(derma, tmp_path):
    table = load_dataset(f"medmnist:{derma}")
    split = official_split(table)
    assert {k: len(v) for k, v in split.items()} == SIZES
    assert (table["subset"].iloc[split["test"]] == "test").all()
    from tests.test_data_readers import write_camelyon, write_isic_new
    from medattn.data import load_task
    isic, _ = write_isic_new(tmp_path / "isic", n=12)
    with pytest.raises(DataError, match=r"no official train/val/test partition to use "
                       r"\(subset values: none\)"):
        official_split(load_dataset(f"isic:{isic}"))
    cam, _ = write_camelyon(tmp_path / "cam")
    with pytest.raises(DataError, match="subset values: id_val, train"):
        official_split(load_task(f"camelyon17:{cam}").table)


@pytest.mark.slow
def test_official_runs_record_the_fixed_split_and_differ_only_by_seed(derma, tmp_path, one_thread):
    data = f"medmnist:{derma}"
    recs = [train_run(_spec(data, seed=s, split="official"), tmp_path, progress=False)
            for s in (0, 1)]
    for rec in recs:
        assert rec["status"] == "done", rec.get("message")
        assert rec["split"] == {"kind": "official", "fractions": None, "n_train": 28, "n_val": 10,
                                "n_test": 12}
    tests = [store.read_predictions(tmp_path, r["run_id"], "test") for r in recs]
    assert list(tests[0]["image_id"]) == list(tests[1]["image_id"]) == \
        [f"dermamnist_test_{i}" for i in range(12)]
    random = train_run(_spec(data, seed=0), tmp_path, progress=False)
    assert random["split"]["kind"] == "random" and random["split"]["fractions"] == [0.7, 0.1, 0.2]
    assert set(store.read_predictions(tmp_path, random["run_id"], "test")["image_id"]) != \
        set(tests[0]["image_id"])


@pytest.mark.slow
def test_shipped_medmnist_plus_study_runs_on_the_released_layout(derma, tmp_path, one_thread):
    cfg = load_config("medmnist_plus")
    assert cfg.train.split == "official" and len(cfg.models) == 14
    assert [d.data for d in cfg.datasets] == ["medmnist:dermamnist_224.npz",
                                              "medmnist:pathmnist_224.npz"]
    small = load_config("medmnist_plus", data_root=str(derma.parent), overrides={
        "datasets": [{"name": "dermamnist", "data": "medmnist:dermamnist_224.npz"}],
        "models": ["resnet18"], "search": {"lr": [0.01, 0.001], "weight_decay": [0], "splits": 1},
        "final": {"splits": 2}, "train": {"epochs": 1, "image_size": 28, "pretrained": False,
                                          "batch_size": 8, "num_workers": 0, "threads": 1,
                                          "cache": False}})
    small = dataclasses.replace(small, train=dataclasses.replace(small.train,
                                                                 chance_margin=NO_CHANCE_RULE))
    res = run_study(small, tmp_path / "runs", progress=False)
    recs = list(store.iter_records(tmp_path / "runs"))
    assert len(recs) == 4 and all(r["status"] == "done" for r in recs)
    assert {r["split"]["kind"] for r in recs} == {"official"}
    finals = [r for r in recs if r["phase"] == "final"]
    assert sorted(r["split_seed"] for r in finals) == [0, 1]
    assert len({r["split"]["n_test"] for r in finals}) == 1
    summary = final_summary(store.final_runs(res.runs_dir))
    assert list(summary["n"]) == [2] and summary["mean_pct"].notna().all()
