"""Repeated grouped k-fold as a study's final phase: config keys and their validation, run ids
and training seeds, the design's variance factor, pairing on (repetition seed, fold), and a tiny
k-fold study end to end through the real study code and compare."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from medattn.analysis import compare
from medattn.analysis.study_summary import final_summary
from medattn.analysis.variance import variance_factor
from medattn.kfold_designs import KFOLD_DESIGNS
from medattn.errors import ConfigError
from medattn.report.tables import expected_runs
from medattn.runs import store
from medattn.training.config import parse_config
from medattn.training.study import final_specs, run_study, select_hparams
from medattn.analysis.settings import CompareSettings
from medattn.analysis.settings import SequentialSettings

BASE = {"datasets": [{"data": "isic:d/isic"}], "models": ["resnet18", "resnet18+ga"],
        "search": {"lr": [0.01], "weight_decay": [0.0]},
        "final": {"scheme": "kfold", "folds": 5, "repeats": 2, "first_seed": 0}}


def _cfg(final=None, **over):
    raw = json.loads(json.dumps(BASE))
    if final is not None:
        raw["final"] = final
    raw.update(over)
    return parse_config(raw, "study.yaml")


def test_kfold_config_expands_into_repeats_x_folds_runs_per_model():
    cfg = _cfg()
    assert cfg.final_units() == [(s, f) for s in (0, 1) for f in range(5)]
    specs = final_specs(cfg, select_hparams(cfg, []))
    assert len(specs) == 2 * 10 and len({s.run_id for s in specs}) == 20
    one = [s for s in specs if s.model == "resnet18"]
    assert {(s.split_seed, s.fold, s.folds) for s in one} == {(s, f, 5) for s in (0, 1)
                                                              for f in range(5)}
    # a run's training seed derives from both the repetition seed and the fold
    seeds = {s.train_seed for s in one}
    assert len(seeds) == 10 and not seeds & {0, 1}
    # the resolved config (study.yaml) reads back to the same design
    again = parse_config(cfg.to_dict(), "study.yaml")
    assert again.final_units() == cfg.final_units() and again.final_scheme == "kfold"
    # and the report expects r x k final runs of each model from it
    exp = expected_runs(cfg.to_dict())
    assert list(exp[exp["phase"] == "final"]["expected"]) == [10, 10]


def test_random_scheme_stays_the_default_and_keeps_its_run_ids():
    cfg = _cfg(final={"splits": 3})
    assert cfg.final_scheme == "random" and cfg.final_units() == [(0, None), (1, None), (2, None)]
    spec = final_specs(cfg, select_hparams(cfg, []))[0]
    assert spec.train_seed == spec.split_seed and "fold" not in spec.run_id
    # the id's hash covers the same keys as before k-fold existed (no `kfold` key)
    assert spec.run_id.endswith(cfg.run_spec("final", cfg.datasets[0], spec.model, spec.lr,
                                             spec.weight_decay, spec.split_seed).run_id[-8:])


@pytest.mark.parametrize("final, needle", [
    ({"scheme": "kfolds"}, "`final.scheme` must be `random`"),
    ({"scheme": "kfold", "folds": 2}, "`final.folds` must be >= 3"),
    ({"scheme": "kfold", "folds": 7, "repeats": 3}, "corrected test has been calibrated; offered"),
    ({"scheme": "kfold", "folds": 5, "splits": 10}, "`final.splits` is for random splits"),
    ({"splits": 10, "repeats": 2}, "`final.repeats` is for `final.scheme: kfold`"),
    ({"scheme": "kfold", "folds": 5, "repeat": 2}, "Did you mean `repeats`"),
])
def test_bad_final_blocks_are_refused_naming_the_key(final, needle):
    with pytest.raises(ConfigError) as err:
        _cfg(final=final)
    assert needle in str(err.value) and "study.yaml" in str(err.value)


def test_uncalibrated_design_names_both_keys():
    with pytest.raises(ConfigError, match=r"`final.folds: 5` with `final.repeats: 10`"):
        _cfg(final={"scheme": "kfold", "folds": 5, "repeats": 10})


def test_kfold_with_an_official_split_or_too_large_a_val_share_is_refused():
    with pytest.raises(ConfigError, match="train.split: official"):
        _cfg(train={"split": "official"})
    with pytest.raises(ConfigError, match=r"validation share 0.85 .* \[0, 0.8\)"):
        _cfg(train={"fractions": [0.05, 0.85, 0.1]})


def test_each_design_carries_its_factor():
    assert variance_factor("random", 10, 0.25) == pytest.approx(0.1 + 0.25)
    assert variance_factor("official", 10, 0.0) == pytest.approx(0.1)
    for (k, r), c in KFOLD_DESIGNS.items():
        assert c >= 1.0
        expected = 1 / (k * r) + c * 0.2
        assert variance_factor("kfold", k * r, 0.2, folds=k) == pytest.approx(expected)
    with pytest.raises(ConfigError, match="not a k-fold design"):
        variance_factor("kfold", 21, 0.2, folds=7)


# -- pairing on (repetition seed, fold) -----------------------------------------------------------

def _write_runs(root, accs: dict, folds: int, ratio=(200, 700)):
    """Final k-fold records: accs[(model, seed, fold)] = balanced accuracy (fraction)."""
    for (model, seed, fold), acc in accs.items():
        n_test, n_train = ratio
        store.write_record(root, {
            "run_id": f"final-isic-{model}-s{seed}f{fold}", "status": "done", "phase": "final",
            "model": model, "backbone": "resnet18", "variant": "ga" if "+ga" in model else "base",
            "dataset": "isic", "data": "isic:/d", "classes": ["a", "b", "c"], "split_seed": seed,
            "fold": fold, "folds": folds, "metrics": {"test": {"balanced_accuracy": acc}},
            "split": {"kind": "kfold", "repetition": seed, "fold": fold, "folds": folds,
                      "n_train": n_train, "n_val": 100, "n_test": n_test}})


def test_compare_pairs_on_repetition_and_fold_with_the_designs_factor(tmp_path):
    rng = np.random.default_rng(0)
    accs, diffs = {}, []
    for seed in (0, 1):
        for fold in range(5):
            base = 0.7 + 0.03 * rng.standard_normal()
            d = 0.01 + 0.01 * rng.standard_normal()
            accs["resnet18", seed, fold], accs["resnet18+ga", seed, fold] = base, base + d
            diffs.append(100 * d)
    accs.pop(("resnet18+ga", 1, 4))  # a unit with one side only is left out, and said so
    _write_runs(tmp_path, accs, folds=5)
    res = compare.compare_runs(tmp_path, settings=CompareSettings(bootstrap=0))
    row = res.table[res.table["model"] == "ga"].iloc[0]
    d = np.array(diffs[:-1])
    assert row["n_pairs"] == 9  # pairing on the seed alone would give 2
    assert row["paired_diff"] == pytest.approx(d.mean())
    factor = variance_factor("kfold", 9, 200 / 700, folds=5, repeats=2)
    assert row["se"] == pytest.approx(d.std(ddof=1) * math.sqrt(factor))
    assert sorted(zip(res.pairs["split_seed"], res.pairs["fold"])) == sorted(
        (s, f) for s in (0, 1) for f in range(5) if (s, f) != (1, 4))
    assert any("1 fold 4" in n and "only one" in n for n in res.notes)
    assert any("repeated 5-fold" in n for n in res.notes)


# -- end to end --------------------------------------------------------------------------------

@pytest.mark.slow
def test_tiny_kfold_study_runs_end_to_end_and_compare_pairs_every_fold(learnable_derm, tmp_path):
    isic, _ = learnable_derm
    cfg = parse_config({
        "name": "kf", "datasets": [{"data": isic}], "models": ["resnet18", "resnet18+ga"],
        "hparams": {"resnet18": {"lr": 0.05, "weight_decay": 0.0},
                    "resnet18+ga": {"lr": 0.05, "weight_decay": 0.0}},
        "final": {"scheme": "kfold", "folds": 5, "repeats": 1, "first_seed": 0},
        "train": {"epochs": 3, "batch_size": 16, "image_size": 32, "pretrained": False,
                  "threads": 1, "augment": "light"}})
    from medattn.training.backends import LocalBackend
    res = run_study(cfg, tmp_path, LocalBackend(progress=False))
    recs = [r for r in store.iter_records(tmp_path) if r["phase"] == "final"]
    assert len(recs) == 10
    assert [r["status"] for r in recs] == ["done"] * 10, [(r["run_id"], r["status"]) for r in recs]
    for model in ("resnet18", "resnet18+ga"):
        mine = sorted((r for r in recs if r["model"] == model), key=lambda r: r["fold"])
        assert [r["fold"] for r in mine] == list(range(5))
        spec = [s for s in final_specs(cfg, res.selection) if s.model == model]
        assert [r["split"]["train_seed"] for r in mine] == [s.train_seed for s in spec]
        assert len({r["split"]["train_seed"] for r in mine}) == 5
        tests = [set(store.read_predictions(tmp_path, r["run_id"], "test")["image_id"])
                 for r in mine]
        assert sum(map(len, tests)) == len(set().union(*tests))  # disjoint test folds ...
        pool = mine[0]["split"]["n_train"] + mine[0]["split"]["n_val"] + mine[0]["split"]["n_test"]
        assert len(set().union(*tests)) == pool  # ... that cover the pool
        for r in mine:
            assert r["split"]["kind"] == "kfold" and r["split"]["folds"] == 5
            assert r["split_sizes"]["test"] == r["split"]["n_test"] > 0
    out = compare.compare_runs(tmp_path, settings=CompareSettings(bootstrap=200))
    row = out.table[out.table["model"] == "ga"].iloc[0]
    assert row["n_pairs"] == 5 and row["boot_n_pairs"] == 5
    assert len(final_summary(store.final_runs(res.runs_dir))) >= 2


def test_report_shows_one_column_per_repetition_and_fold():
    import pandas as pd

    from medattn.report.table2_extras import pairs_display
    keys = dict(dataset="isic", set="id", backbone="resnet18", model="ga", reference="resnet18")
    kfold = pd.DataFrame([{**keys, "split_seed": s, "fold": f, "diff": s + f / 10}
                          for s in (0, 1) for f in range(3)])
    out = pairs_display(kfold)
    assert [c for c in out.columns if c.startswith("s") and c != "set"] == [
        "s0f0", "s0f1", "s0f2", "s1f0", "s1f1", "s1f2"]
    assert out["s1f2"].iloc[0] == "+1.20"
    random = kfold.assign(fold=float("nan")).drop_duplicates("split_seed")
    cols = [c for c in pairs_display(random).columns if c.startswith("s") and c != "set"]
    assert cols == ["s0", "s1"]


def test_until_decided_refuses_a_kfold_final_phase_before_training(tmp_path):
    # its threshold is calibrated for one pair per replicate and the random-split factor
    from medattn.sequential_study import run_until_decided

    with pytest.raises(ConfigError, match="final.scheme: random"):
        run_until_decided(_cfg(), tmp_path, backend=object(), settings=SequentialSettings(batch=1, max_splits=3))
    assert not any(tmp_path.iterdir())
