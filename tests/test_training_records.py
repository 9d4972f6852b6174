"""The run record: one type, data-set identity (config name vs source), best runs."""

import json

import pandas as pd
import pytest

from medattn.analysis.study_summary import final_summary
from medattn.errors import ConfigError, StoreError
from medattn.runs import store
from medattn.training.config import parse_config
from medattn.runs.records import RunRecord, best_runs
from medattn.training.study import run_study
from medattn.analysis.settings import CompareSettings


def _record(run_id, label, bacc, seed=0, model="resnet18", variant="base"):
    """A finished final run's record of data set ``label`` read from the ``isic`` source."""
    return {"run_id": run_id, "status": "done", "phase": "final", "model": model,
            "backbone": "resnet18", "variant": variant, "dataset": label, "source": "isic",
            "data": "isic:/data/isic", "split_seed": seed,
            "classes": ["melanoma", "nevus", "other"],
            "metrics": {"val": {"balanced_accuracy": bacc},
                        "test": {"balanced_accuracy": bacc}}}


def test_a_store_compares_per_config_data_set(tmp_path):
    """Records of two data sets of one source: Table 2 has a column per data set."""
    from medattn.analysis.compare import compare_runs

    for label, shift in (("derm-a", 0.0), ("derm-b", 0.2)):
        for seed in (0, 1, 2):
            for variant, gain in (("base", 0.0), ("ga", 0.05)):
                rid = f"final-{label}-{variant}-s{seed}"
                d = store.run_dir(tmp_path, rid)
                d.mkdir(parents=True)
                rec = _record(rid, label, 0.4 + shift + gain + 0.01 * seed, seed,
                              "resnet18" if variant == "base" else "resnet18+ga", variant)
                (d / store.RECORD).write_text(json.dumps(rec))
    table = compare_runs(tmp_path, settings=CompareSettings(bootstrap=0)).table
    assert sorted(table["dataset"].unique()) == ["derm-a", "derm-b"]
    assert set(table["n"]) == {3}
    means = table[table["model"] == "base"].set_index("dataset")["mean"]
    assert means["derm-a"] == pytest.approx(41.0) and means["derm-b"] == pytest.approx(61.0)


def test_record_reads_as_its_json_object_and_keeps_unknown_keys(tmp_path):
    raw = {**_record("a", "derm", 0.6), "from_the_future": {"x": 1}}
    del raw["dataset"], raw["source"]
    rec = RunRecord.from_dict(raw)
    assert rec["status"] == rec.status == "done" and rec.get("selection") is None
    assert rec.source == "isic" and rec.dataset == "isic"  # no config name: the source
    assert rec.bacc("test") == 0.6 and pd.isna(rec.bacc("ood-pad-ufes-20"))
    store.write_record(tmp_path, rec)
    back = store.read_record(store.run_dir(tmp_path, "a"))
    assert back["from_the_future"] == {"x": 1} and dict(back) == dict(rec)
    with pytest.raises(KeyError):
        rec["no_such_key"]
    with pytest.raises(StoreError, match="run record a: lacks phase"):
        RunRecord.from_dict({"run_id": "a", "status": "done"})


def test_best_run_is_chosen_on_validation_unless_asked():
    frame = pd.DataFrame({"run_id": ["r1", "r2", "r3", "r4"], "dataset": ["a", "a", "a", "b"],
                          "model": ["m"] * 4, "bacc_val": [0.6, 0.8, 0.8, 0.1],
                          "bacc_test": [0.9, 0.5, 0.7, 0.2]})
    assert list(best_runs(frame)["run_id"]) == ["r3", "r4"]  # val, ties by test
    assert list(best_runs(frame, metric="test")["run_id"]) == ["r1", "r4"]
    assert list(best_runs(frame, by=("model",))["run_id"]) == ["r3"]


@pytest.mark.slow
def test_two_datasets_of_one_source_are_two_table2_columns(tiny_derm, tmp_path):
    """The two data sets of one study read from the same source (``isic``) with different names:
    each is its own Table 2 column with its own runs (they were pooled into one column when
    records named only the source)."""
    from medattn.analysis.compare import compare_runs
    from medattn.report.table2 import wide_table
    from medattn.training.backends import LocalBackend

    isic, _ = tiny_derm
    cfg = parse_config({
        "name": "two", "models": ["resnet18", "resnet18+ga"],
        "datasets": [{"name": "derm-a", "data": isic}, {"name": "derm-b", "data": isic}],
        "search": {"lr": [0.01], "weight_decay": [0.0], "splits": 1}, "final": {"splits": 2},
        "train": {"epochs": 1, "batch_size": 16, "image_size": 32, "pretrained": False,
                  "threads": 1}})
    res = run_study(cfg, tmp_path, LocalBackend(progress=False))
    recs = list(store.iter_records(tmp_path))
    assert {(r.dataset, r.source) for r in recs} == {("derm-a", "isic"), ("derm-b", "isic")}
    summary = final_summary(store.final_runs(res.runs_dir))
    assert sorted(summary["dataset"].unique()) == ["derm-a", "derm-b"]
    assert set(summary["n"] + summary["n_diverged"]) == {2}  # per data set, not pooled

    # one epoch may leave a run at chance (diverged): counted here, since grouping is the point
    result = compare_runs(tmp_path, settings=CompareSettings(bootstrap=0, include_diverged=True))
    table = result.table[result.table["set"] == "id"]
    assert sorted(table["dataset"].unique()) == ["derm-a", "derm-b"]
    assert set(table["n"]) == {2} and set(table["n_pairs"].dropna()) == {2}  # not 4 pooled
    cols = list(wide_table(result.table).columns)
    assert len(cols) == 2 and cols[0].startswith("derm-a") and cols[1].startswith("derm-b")


def test_features_choose_per_data_set_and_never_pool_two(tmp_path, capsys):
    """Two data sets of one source: the best run per data set and model; Table 3 asks which."""
    from medattn.analysis.features.usage import feature_usage, select_runs

    for label in ("derm-a", "derm-b"):
        for seed, bacc in ((0, 0.6), (1, 0.7)):
            rid = f"final-{label}-s{seed}"
            store.write_record(tmp_path, _record(rid, label, bacc, seed))
    finals = store.final_runs(tmp_path).current
    best = select_runs(finals, best_only=True)
    assert sorted(zip(best["dataset"], best["run_id"])) == [
        ("derm-a", "final-derm-a-s1"), ("derm-b", "final-derm-b-s1")]
    assert set(select_runs(finals, datasets=["derm-b"])["dataset"]) == {"derm-b"}
    with pytest.raises(ConfigError, match="2 data sets .*dataset=NAME"):
        feature_usage(tmp_path, progress=False)
    with pytest.raises(ConfigError, match="dataset=derm-c: no finished final runs"):
        feature_usage(tmp_path, dataset="derm-c", progress=False)
    # the library names its argument, the command its flag
    from medattn.cli import main

    assert main(["features", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "give --dataset NAME (one of derm-a, derm-b)" in err and "dataset=" not in err
