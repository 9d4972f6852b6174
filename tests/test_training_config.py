"""Study configs, run ids, the run store and metrics (no training here)."""

import json
import os

import numpy as np
import pytest
import yaml
from sklearn.metrics import balanced_accuracy_score, confusion_matrix

from medattn.errors import ConfigError
from medattn.runs import store
from medattn.training.config import (RunSpec, TrainSettings, list_packaged_configs, load_config,
                                     parse_config)
from medattn.training.metrics import summarize
from medattn.training.study import final_specs, search_specs, select_hparams

BASE = {"datasets": [{"data": "isic:d/isic", "ood": ["pad-ufes-20:d/pad"]}],
        "models": ["resnet18", "resnet18+ga"],
        "search": {"lr": [0.01, 0.001], "weight_decay": [0, 0.001], "splits": 2},
        "final": {"splits": 3}, "train": {"epochs": 2, "image_size": 32}}


def _cfg(**over):
    raw = json.loads(json.dumps(BASE))
    for k, v in over.items():
        raw[k] = v
    return raw


@pytest.mark.parametrize("raw, key, suggestion", [
    ({**BASE, "modles": ["resnet18"]}, "`modles`", "`models`"),
    (_cfg(train={"epoch": 3}), "`train.epoch`", "`epochs`"),
    (_cfg(search={"lr": [0.1], "weight_decays": [0]}), "`search.weight_decays`", "`weight_decay`"),
    (_cfg(datasets=[{"data": "isic:x", "odd": []}]), "`datasets[0].odd`", "`ood`"),
])
def test_unknown_key_is_named_with_close_match(raw, key, suggestion):
    with pytest.raises(ConfigError) as err:
        parse_config(raw, "study.yaml")
    msg = str(err.value)
    assert "study.yaml" in msg and key in msg and suggestion in msg


@pytest.mark.parametrize("over, key", [
    ({"search": {"lr": ["fast"]}}, "search.lr[0]"),
    ({"search": {"lr": [-1]}}, "search.lr[0]"),
    ({"train": {"epochs": 0}}, "train.epochs"),
    ({"train": {"amp": "yes"}}, "train.amp"),
    ({"train": {"schedule": "step"}}, "train.schedule"),
    ({"train": {"fractions": [0.5, 0.5, 0.5]}}, "train.fractions"),
    ({"datasets": [{"data": "no-colon"}]}, "datasets[0].data"),
    ({"final": {"splits": 2, "first_seed": 1001}}, "first_seed"),
])
def test_bad_values_name_the_key(over, key):
    with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
        parse_config(_cfg(**over), "s.yaml")


def test_missing_required_key():
    raw = _cfg()
    del raw["models"]
    with pytest.raises(ConfigError, match="`models`"):
        parse_config(raw)


def test_unknown_model_is_named():
    with pytest.raises(ConfigError, match="resnet18\\+gaa"):
        parse_config(_cfg(models=["resnet18+gaa"]))


def test_yaml_scientific_strings_and_relative_data(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(_cfg(search={"lr": ["1e-3"], "weight_decay": ["1e-4"]})))
    cfg = load_config(p, data_root=str(tmp_path / "data"))
    assert cfg.search_lr == (0.001,) and cfg.search_weight_decay == (0.0001,)
    spec = cfg.run_spec("final", cfg.datasets[0], "resnet18", 0.001, 0, 0)
    assert spec.data == f"isic:{tmp_path / 'data' / 'd' / 'isic'}"
    assert spec.ood == (f"pad-ufes-20:{tmp_path / 'data' / 'd' / 'pad'}",)


def test_packaged_paper_configs_follow_the_protocol():
    assert {"paper_isic", "paper_camelyon17", "demo"} <= set(list_packaged_configs())
    for name in ("paper_isic", "paper_camelyon17"):
        cfg = load_config(name)
        assert cfg.search_lr == (0.01, 0.001, 0.0001)
        assert cfg.search_weight_decay == (0.0, 0.0001, 0.001, 0.01)
        assert cfg.search_splits == 2 and cfg.final_splits == 10
        assert cfg.train.batch_size == 32 and cfg.train.image_size == 224
        assert len(cfg.models) == 14
        assert not set(cfg.search_seeds()) & set(cfg.final_seeds())
        assert len(search_specs(cfg)) == 14 * 12 * 2


def test_run_id_is_deterministic_and_depends_on_what_changes_results():
    cfg = parse_config(_cfg())
    ids = [s.run_id for s in search_specs(cfg)]
    assert len(ids) == len(set(ids)) == 2 * 2 * 2 * 2
    assert ids == [s.run_id for s in search_specs(parse_config(_cfg()))]
    spec = search_specs(cfg)[0]
    assert RunSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    import dataclasses
    other = lambda **kw: dataclasses.replace(spec, train=dataclasses.replace(spec.train, **kw))  # noqa
    assert other(epochs=3).run_id != spec.run_id
    assert other(image_size=64).run_id != spec.run_id
    assert other(num_workers=4).run_id == spec.run_id  # does not change the result
    assert dataclasses.replace(spec, data="isic:/elsewhere").run_id == spec.run_id


def _rec(cfg, model, lr, wd, seed, bacc, status="done"):
    spec = cfg.run_spec("search", cfg.datasets[0], model, lr, wd, seed)
    metrics = {} if bacc is None else {"val": {"balanced_accuracy": bacc}}
    return {"run_id": spec.run_id, "status": status, "phase": "search", "classes": ["a", "b", "c"],
            "metrics": metrics}


def test_selection_uses_mean_val_bacc_first_in_grid_on_ties_and_chance_for_nan():
    cfg = parse_config(_cfg(models=["resnet18"]))
    recs = [
        _rec(cfg, "resnet18", 0.01, 0.0, 1000, 0.875), _rec(cfg, "resnet18", 0.01, 0.0, 1001, None,
                                                         "diverged"),  # NaN -> 1/3
        _rec(cfg, "resnet18", 0.01, 0.001, 1000, 0.5), _rec(cfg, "resnet18", 0.01, 0.001, 1001, 0.75),
        _rec(cfg, "resnet18", 0.001, 0.0, 1000, 0.625), _rec(cfg, "resnet18", 0.001, 0.0, 1001, 0.625),
        _rec(cfg, "resnet18", 0.001, 0.001, 1000, 0.5), _rec(cfg, "resnet18", 0.001, 0.001, 1001, 0.5),
    ]
    sel = select_hparams(cfg, recs).iloc[0]
    # (0.875 + 1/3)/2 = 0.604 < 0.625: the unstable setting loses; 0.01/0.001 ties 0.001/0 at
    # 0.625 (exact in binary) and comes first in the grid
    assert (sel.lr, sel.weight_decay) == (0.01, 0.001)
    assert sel.mean_val_bacc == 0.625
    finals = final_specs(cfg, select_hparams(cfg, recs))
    assert [s.split_seed for s in finals] == [0, 1, 2]
    assert {(s.phase, s.lr, s.weight_decay) for s in finals} == {("final", 0.01, 0.001)}


def test_fixed_hparams_skip_the_search():
    cfg = parse_config(_cfg(hparams={"resnet18": {"lr": 0.05, "weight_decay": 0}}))
    assert {s.model for s in search_specs(cfg)} == {"resnet18+ga"}
    with pytest.raises(ConfigError, match="hparams.vit"):
        parse_config(_cfg(hparams={"vit_tiny_in1k": {"lr": 0.1, "weight_decay": 0}}))


def test_atomic_write_keeps_old_content_on_failure(tmp_path):
    p = tmp_path / "r" / "record.json"
    store.write_json(p, {"a": 1, "x": float("nan")})
    assert json.loads(p.read_text()) == {"a": 1, "x": None}

    def broken(tmp):
        with open(tmp, "w") as f:
            f.write("{partial")
        raise RuntimeError("killed")
    with pytest.raises(RuntimeError):
        store.atomic_write(p, broken)
    assert json.loads(p.read_text())["a"] == 1
    assert os.listdir(p.parent) == ["record.json"]  # no temporary left behind


def test_load_records_flattens_metrics(tmp_path):
    store.write_record(tmp_path, {"run_id": "b", "status": "done", "phase": "final",
                                  "model": "resnet18", "dataset": "isic",
                                  "metrics": {"test": {"balanced_accuracy": 0.75},
                                              "ood-pad-ufes-20": {"balanced_accuracy": 0.5}}})
    store.write_record(tmp_path, {"run_id": "a", "status": "diverged", "phase": "final",
                                  "model": "resnet18", "dataset": "isic", "metrics": {}})
    df = store.load_records(tmp_path)
    assert list(df["run_id"]) == ["a", "b"]
    assert df.loc[1, "bacc_test"] == 0.75 and df.loc[1, "bacc_ood-pad-ufes-20"] == 0.5
    assert np.isnan(df.loc[0, "bacc_test"])
    assert store.load_records(tmp_path / "empty").empty


def test_metrics_match_sklearn_and_mark_absent_classes():
    rng = np.random.default_rng(0)
    y, p = rng.integers(0, 3, 200), rng.integers(0, 3, 200)
    m = summarize(y, p, ["a", "b", "c"])
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, p))
    assert m["confusion_matrix"] == confusion_matrix(y, p, labels=[0, 1, 2]).tolist() and m["n"] == 200
    empty = summarize(np.array([], dtype=int), np.array([], dtype=int), ["a", "b"])
    assert empty["confusion_matrix"] == [[0, 0], [0, 0]] and np.isnan(empty["balanced_accuracy"])
    with pytest.raises(ValueError, match="class indices 0..2"):
        summarize(np.array([0, 3]), np.array([0, 1]), ["a", "b", "c"])
    m = summarize(np.array([0, 0, 1]), np.array([0, 1, 1]), ["a", "b", "c"])
    assert m["per_class_recall"] == {"a": 0.5, "b": 1.0, "c": None}
    assert m["balanced_accuracy"] == pytest.approx(0.75)


def test_train_settings_defaults_follow_the_paper():
    t = TrainSettings()
    assert t.batch_size == 32 and t.momentum == 0.9 and t.schedule == "cosine"
