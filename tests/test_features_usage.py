"""Table 3 end to end on the synthetic skin set.

The "models" here are simulated: their logits are written from the synthetic ground truth, so which
features they use is known by construction (a model that adds the true colourful patch to its nevus
logit uses the patch; one that does not, does not; none uses sex). A trained-model version runs in
``benchmarks/features_e2e.py`` (minutes of CPU).
"""

import json

import numpy as np
import pandas as pd
import pytest

from medattn.analysis.features.usage import (
    TABLE3_FEATURES,
    feature_usage,
    one_image_per_group,
    prediction_matrix,
    select_runs,
)
from medattn.errors import ConfigError, DataError

CLASSES = ["melanoma", "nevus", "other"]
# 199 permutations keep the tests quick; 1 / 200 still resolves decisions at p < 0.01.
FAST = {"chsic": {"permutations": 199}, "cmiknn": {"permutations": 199}}


@pytest.fixture(scope="module")
def derm(tmp_path_factory):
    from medattn.data import load_dataset
    from medattn.data.synthetic import write_derm

    out = tmp_path_factory.mktemp("derm_usage")
    spec, _ = write_derm(out, n=400, n_ood=1, seed=5, image_size=96, patch_bias=0.3, workers=1)
    return spec, load_dataset(spec)


def write_run(runs_dir, run_id, model, spec, table, patch_weight, bacc, seed, phase="final"):
    """A finished run whose predictions use the true patch with weight ``patch_weight``."""
    rng = np.random.default_rng(seed)
    logits = 2.0 * np.eye(3)[table["label"].to_numpy()] + rng.standard_normal((len(table), 3))
    logits[:, 1] += patch_weight * table["true_patch"].to_numpy()
    prob = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    preds = pd.DataFrame({"row": np.arange(len(table)), "image_id": table["image_id"],
                          "label": table["label"], "pred": prob.argmax(1)})
    for i, c in enumerate(CLASSES):
        preds[f"prob_{c}"] = prob[:, i]
    for i, c in enumerate(CLASSES):
        preds[f"logit_{c}"] = logits[:, i]
    d = runs_dir / "runs" / run_id
    (d / "predictions").mkdir(parents=True)
    preds.to_csv(d / "predictions" / "test.csv", index=False)
    record = {"run_id": run_id, "status": "done", "phase": phase, "model": model,
              "backbone": model.split("+")[0], "variant": "base", "dataset": "isic", "data": spec,
              "classes": CLASSES, "split_seed": seed, "metrics": {
                  "test": {"balanced_accuracy": bacc}, "val": {"balanced_accuracy": bacc}}}
    (d / "record.json").write_text(json.dumps(record))


@pytest.fixture(scope="module")
def study(derm, tmp_path_factory):
    spec, table = derm
    runs_dir = tmp_path_factory.mktemp("study")
    # resnet18 uses the patch strongly; resnet18+ga does not. A worse resnet18 run that does not
    # use the patch must not be chosen as "best"; a search run is ignored.
    write_run(runs_dir, "r18-s0", "resnet18", spec, table, 3.0, 0.80, 0)
    write_run(runs_dir, "r18-s1", "resnet18", spec, table, 0.0, 0.70, 1)
    write_run(runs_dir, "ga-s0", "resnet18+ga", spec, table, 0.0, 0.75, 2)
    write_run(runs_dir, "ga-search", "resnet18+ga", spec, table, 3.0, 0.99, 3, phase="search")
    return runs_dir


def test_planted_patch_is_found_and_sex_is_not(study):
    res = feature_usage(study, test_options=FAST, progress=False)
    assert list(res.table.index) == ["resnet18", "resnet18+ga"]
    assert res.table.loc["resnet18", "Colorful patches"] == "✓"
    assert res.table.loc["resnet18+ga", "Colorful patches"] == "✗"
    assert (res.table["Sex"] == "✗").all()
    # each test separately agrees on the planted patch
    pv = res.pvalues.set_index(["run_id", "feature", "test"])["p_value"]
    for test in ("chsic", "rcot", "cmiknn"):
        assert pv[("r18-s0", "Colorful patches", test)] < 0.01
    for path in res.paths.values():
        assert path.exists()
    # one image per patient: fewer samples than predictions, all of distinct patients
    assert res.decisions["n"].max() < 400
    md = res.paths["table3_md"].read_text()
    assert "| resnet18 |" in md and "p < 0.01" in md
    assert set(pd.read_csv(res.paths["table3_csv"]).columns) == {"model", *TABLE3_FEATURES}


def test_all_runs_give_shares_and_results_are_resumed(study):
    res = feature_usage(study, runs="all", test_options=FAST, progress=False)
    assert res.table.loc["resnet18", "Colorful patches"] == "1/2"
    assert res.table.loc["resnet18+ga", "Colorful patches"] == "0/1"
    before = pd.read_csv(res.paths["pvalues"])
    again = feature_usage(study, runs="all", test_options=FAST, progress=False)  # resumed from pvalues.csv
    pd.testing.assert_frame_equal(again.table, res.table)
    assert len(pd.read_csv(res.paths["pvalues"])) == len(before)


def test_worker_processes_give_the_same_pvalues(study, tmp_path):
    import shutil

    serial, parallel = tmp_path / "serial", tmp_path / "parallel"
    shutil.copytree(study, serial)
    shutil.copytree(study, parallel)
    # seed 7: settings no other test used, so nothing is resumed from an earlier pvalues.csv
    one = feature_usage(serial, runs="all", seed=7, test_options=FAST, progress=False)
    two = feature_usage(parallel, runs="all", seed=7, test_options=FAST, jobs=2, progress=False)
    pd.testing.assert_frame_equal(one.pvalues, two.pvalues)
    pd.testing.assert_frame_equal(pd.read_csv(one.paths["pvalues"]), pd.read_csv(two.paths["pvalues"]))
    with pytest.raises(ConfigError, match="--jobs 0"):
        feature_usage(serial, jobs=0, progress=False)


def test_one_image_per_group_is_seeded_and_keeps_ungrouped_images():
    preds = pd.DataFrame({"image_id": [f"i{k}" for k in range(6)], "label": 0})
    group = pd.Series(["p1", "p1", "p2", "p2", "p2", None], index=preds["image_id"])
    kept = one_image_per_group(preds, group, seed=3)
    assert len(kept) == 3 and "i5" in set(kept["image_id"])
    assert group[kept["image_id"]].dropna().is_unique
    pd.testing.assert_frame_equal(kept, one_image_per_group(preds, group, seed=3))
    seen = {tuple(one_image_per_group(preds, group, seed=s)["image_id"]) for s in range(20)}
    assert len(seen) > 1  # the choice within a group is random


def test_prediction_representations():
    preds = pd.DataFrame({"pred": [0, 2, 1], **{f"prob_{c}": [0.5, 0.2, 0.3] for c in CLASSES},
                          **{f"logit_{c}": [1.0, 2.0, 3.0] for c in CLASSES}})
    assert prediction_matrix(preds, CLASSES, "softmax").shape == (3, 2)
    assert prediction_matrix(preds, CLASSES, "logits").shape == (3, 3)
    np.testing.assert_array_equal(prediction_matrix(preds, CLASSES, "class"), [[1, 0], [0, 0], [0, 1]])
    with pytest.raises(ConfigError, match="prediction"):
        prediction_matrix(preds, CLASSES, "argmax")


def test_best_run_selection_and_bad_inputs(tmp_path):
    rec = pd.DataFrame({"run_id": ["a", "b", "c"], "status": ["done", "done", "diverged"],
                        "phase": "final", "model": "m", "data": "isic:/x",
                        "bacc_test": [0.5, 0.6, 0.9], "bacc_val": [0.5, 0.6, 0.9]})
    assert select_runs(rec, "best")["run_id"].tolist() == ["b"]
    with pytest.raises(ConfigError, match="--runs"):
        select_runs(rec, "median")
    with pytest.raises(DataError, match="not a study directory"):
        feature_usage(tmp_path, progress=False)
    (tmp_path / "runs").mkdir()
    with pytest.raises(DataError, match="no finished final runs"):
        feature_usage(tmp_path, progress=False)
