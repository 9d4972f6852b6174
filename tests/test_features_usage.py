"""Table 3 end to end on the synthetic skin set, and the coarse-label trap it must not fall into.

The "models" here are simulated: their logits are written from the synthetic ground truth, so which
features they use is known by construction. Every simulated model sees only what the image shows
(ABCD features, structures, skin colour, and, for the patch-using models, the colourful patch),
never age or sex. A trained-model version runs in ``benchmarks/features_e2e.py`` (minutes of CPU).
"""

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from medattn.analysis.features.conditioning import diagnosis_strata, normalise_diagnosis
from medattn.analysis.features.summary import corrected_t, model_differences
from medattn.analysis.features.table3 import TABLE3_FEATURES
from medattn.analysis.features.usage import (
    feature_tests,
    feature_usage,
    one_image_per_group,
    prediction_matrix,
    select_runs,
)
from medattn.cli import main
from medattn.data.synthetic.derm import DermConfig, sample_metadata
from medattn.errors import ArgumentError, ConfigError, DataError

CLASSES = ["melanoma", "nevus", "other"]
# 199 permutations keep the tests quick. Table 3 adjusts each test's p over the 8 features (Holm),
# so the smallest adjusted p is 8 / 200 = 0.04: the pipeline runs here at alpha = 0.05 (with
# 199 permutations it refuses alpha = 0.01, which no feature could reach).
FAST = {"chsic": {"permutations": 199}, "cmiknn": {"permutations": 199}}
ALPHA = 0.05
RUNS = 4  # final runs (split seeds) per simulated model


def image_logits(truth: pd.DataFrame, rng: np.random.Generator, patch_weight: float = 0.0,
                 sharpness: float = 1.0):
    """Logits of a model that sees only the image: the lesion's appearance (asymmetry, border,
    colours, structures), the skin colour and, with ``patch_weight``, the colourful patch; never
    age or sex. Its output varies with the fine diagnosis, which looks different."""
    f = np.column_stack([truth["true_asymmetry"] - 0.5, truth["true_border"] - 0.5,
                         truth["true_n_colors"] / 6 - 0.4, truth["true_structures"] / 5 - 0.3,
                         truth["true_milia_like_cyst"] - 0.3, truth["true_skin_ita"] / 50 - 0.8])
    w = np.array([[3.0, -3.0, 0.0], [3.0, -3.0, 0.0], [3.0, -1.5, 0.0], [0.5, 0.0, -0.5],
                  [-1.0, 0.0, 1.5], [0.3, 0.0, -0.3]])
    logits = sharpness * (f @ w) + 0.5 * rng.standard_normal((len(truth), 3))
    logits[:, 1] += patch_weight * truth["true_patch"].to_numpy()
    return logits


def softmax(logits):
    p = np.exp(logits - logits.max(1, keepdims=True))
    return p / p.sum(1, keepdims=True)


@pytest.fixture(scope="module")
def derm(tmp_path_factory):
    from medattn.data import load_dataset
    from medattn.data.synthetic import write_derm

    out = tmp_path_factory.mktemp("derm_usage")
    spec, _ = write_derm(out, n=400, n_ood=1, seed=5, image_size=96, patch_bias=0.3, workers=1)
    return spec, load_dataset(spec)


def write_run(runs_dir, run_id, model, spec, table, patch_weight, bacc, seed, phase="final",
              bacc_val=None):
    """A finished run on split ``seed``: predictions for a seeded 75% of the images."""
    rng = np.random.default_rng(seed)
    table = table.iloc[np.sort(rng.choice(len(table), int(0.75 * len(table)), replace=False))]
    prob = softmax(image_logits(table, rng, patch_weight))
    logits = np.log(prob)
    preds = pd.DataFrame({"row": np.arange(len(table)), "image_id": table["image_id"].to_numpy(),
                          "label": table["label"].to_numpy(), "pred": prob.argmax(1)})
    for i, c in enumerate(CLASSES):
        preds[f"prob_{c}"] = prob[:, i]
    for i, c in enumerate(CLASSES):
        preds[f"logit_{c}"] = logits[:, i]
    d = runs_dir / "runs" / run_id
    (d / "predictions").mkdir(parents=True)
    preds.to_csv(d / "predictions" / "test.csv", index=False)
    variant = model.split("+", 1)[1] if "+" in model else "base"
    record = {"run_id": run_id, "status": "done", "phase": phase, "model": model,
              "backbone": model.split("+")[0], "variant": variant, "dataset": "isic", "data": spec,
              "classes": CLASSES, "split_seed": seed, "lr": 0.05, "weight_decay": 1e-4,
              "split": {"kind": "random", "n_train": 280, "n_val": 40, "n_test": 80},
              "metrics": {"test": {"balanced_accuracy": bacc},
                          "val": {"balanced_accuracy": bacc if bacc_val is None else bacc_val}}}
    (d / "record.json").write_text(json.dumps(record))


@pytest.fixture(scope="module")
def study(derm, tmp_path_factory):
    spec, table = derm
    runs_dir = tmp_path_factory.mktemp("study")
    # resnet18+ga adds the true colourful patch to its nevus logit in every run; resnet18 never
    # does. A search run (which uses the patch) is ignored.
    for s in range(RUNS):
        write_run(runs_dir, f"ga-s{s}", "resnet18+ga", spec, table, 3.0, 0.75 + 0.01 * s, s)
        write_run(runs_dir, f"r18-s{s}", "resnet18", spec, table, 0.0, 0.70 + 0.01 * s, s)
    write_run(runs_dir, "r18-search", "resnet18", spec, table, 3.0, 0.99, 9, phase="search")
    return runs_dir


@pytest.fixture(scope="module")
def usage(study):
    return feature_usage(study, test_options=FAST, alpha=ALPHA, progress=False)


@pytest.mark.slow
def test_planted_patch_is_found_in_most_runs_and_sex_in_none(usage):
    res = usage
    t = res.table
    assert list(t.index) == [("resnet18", "diagnosis"), ("resnet18", "label"),
                             ("resnet18+ga", "diagnosis"), ("resnet18+ga", "label")]
    k_ga, n_ga = map(int, t.loc[("resnet18+ga", "diagnosis"), "Colorful patches"].rstrip(
        "†").split("/"))
    k_base, n_base = map(int, t.loc[("resnet18", "diagnosis"), "Colorful patches"].rstrip(
        "†").split("/"))
    assert n_ga == n_base == RUNS
    assert k_ga >= RUNS - 1 and k_base <= 1  # planted: most runs; not planted: few
    # Sex (independent of everything, never in the image): not beyond chance, in either
    # conditioning, over all runs of both models.
    sex = res.decisions[res.decisions["feature"] == "Sex"]
    assert sex["used"].sum() <= stats.binom.ppf(0.99, len(sex), ALPHA)
    # each test on its own agrees on the planted patch in every run
    dec = res.decisions[(res.decisions["model"] == "resnet18+ga")
                        & (res.decisions["feature"] == "Colorful patches")]
    assert (dec[["p_chsic", "p_rcot", "p_cmiknn"]] < 0.05).to_numpy().mean() > 0.9
    # one image per patient: fewer samples than predictions
    assert res.decisions["n"].max() < 300


@pytest.mark.slow
def test_effect_sizes_and_paired_differences(usage):
    res = usage
    s = res.summary.set_index(["condition", "model", "feature"])
    patch = s.loc[("diagnosis", "resnet18+ga", "Colorful patches")]
    assert patch["effect_cmiknn_low"] > 0  # CI above 0
    assert "effect_chsic_low" not in s  # z-values are evidence: no CI
    sex = s.loc[("diagnosis", "resnet18+ga", "Sex")]
    assert sex["effect_cmiknn_low"] < sex["effect_cmiknn_high"]
    assert abs(sex["z_chsic"]) < patch["z_chsic"] / 3
    assert patch["cell"] == res.table.loc[("resnet18+ga", "diagnosis"), "Colorful patches"]
    d = res.differences.set_index(["condition", "feature", "test"])
    row = d.loc[("diagnosis", "Colorful patches", "cmiknn")]
    assert (row["model"], row["reference"], row["pairs"]) == ("resnet18+ga", "resnet18", RUNS)
    assert row["verdict"] == "more" and row["p_holm"] < 0.05 and row["low"] > 0
    assert d.loc[("diagnosis", "Sex", "cmiknn"), "verdict"] == "no difference shown"
    assert set(d.index.get_level_values("test")) == {"cmiknn"}
    md = res.markdown
    assert "resnet18+ga uses Colorful patches more than resnet18" in md
    assert "Sex more" not in md and "Effect sizes: CMI (nats)" in md


@pytest.mark.slow
def test_outputs_legend_and_planted_truth(usage):
    res = usage
    for path in res.paths.values():
        assert path.exists() and path.stat().st_size > 0
    md = res.paths["table3_md"].read_text()
    # k/N given the fine diagnosis, in brackets given the label; the planted truth row first
    row = next(line for line in md.splitlines() if line.startswith("| resnet18+ga |"))
    cell = row.split("|")[-2].strip()
    assert cell.count("/") == 2 and "(" in cell
    assert "*planted truth* (isic)" in md and "never in the image" in md
    assert "planted (bias 0.3)" in md and "given the fine diagnosis" in md
    assert set(pd.read_csv(res.paths["table3_csv"]).columns) == {"model", "condition",
                                                                  *TABLE3_FEATURES}
    truth = json.loads(res.paths["truth"].read_text())
    assert [t["patch_planted"] for t in truth.values()] == [True]
    pv = pd.read_csv(res.paths["pvalues"])
    assert {"condition", "statistic", "effect", "n_strata", "merged_images", "split_seed"} <= set(
        pv.columns)
    dx = res.decisions[res.decisions["condition"] == "diagnosis"]
    assert (dx["n_strata"] > 3).all()  # the fine diagnoses split the 3 classes


@pytest.mark.slow
def test_results_are_resumed_and_other_rows_kept(study, usage):
    ids = ["run_id", "condition", "feature", "test"]

    def saved():
        return pd.read_csv(usage.paths["pvalues"]).sort_values(ids, ignore_index=True)

    before = saved()
    # one run per model, label only: resumed from pvalues.csv, and the other rows stay there
    best = feature_usage(study, best_only=True, conditions="label", test_options=FAST, alpha=ALPHA,
                         progress=False)
    pd.testing.assert_frame_equal(saved(), before)
    assert best.pvalues["p_value"].isin(before["p_value"]).all()
    again = feature_usage(study, test_options=FAST, alpha=ALPHA, progress=False)
    pd.testing.assert_frame_equal(again.table, usage.table)
    pd.testing.assert_frame_equal(saved(), before)


@pytest.mark.slow
def test_best_run_per_model_by_validation_or_test(study):
    res = feature_usage(study, best_only=True, conditions="label", test_options=FAST, alpha=ALPHA,
                        progress=False)
    assert list(res.table.index) == [("resnet18", "label"), ("resnet18+ga", "label")]
    assert set(res.table.loc[("resnet18+ga", "label")]) <= {"✓", "✗", "n/a"}
    assert res.table.loc[("resnet18+ga", "label"), "Colorful patches"] == "✓"
    assert "best by val balanced accuracy" in res.markdown
    rec = pd.DataFrame({"run_id": ["a", "b", "c", "d"], "status": ["done"] * 3 + ["diverged"],
                        "phase": "final", "model": "m", "dataset": "derm", "source": "isic",
                        "data": "isic:/x", "bacc_test": [0.5, 0.6, 0.7, 0.9],
                        "bacc_val": [0.8, 0.6, 0.7, 0.9]})
    assert select_runs(rec, best_only=True, select_by="val")["run_id"].tolist() == ["a"]
    assert select_runs(rec, best_only=True, select_by="test")["run_id"].tolist() == ["c"]
    assert select_runs(rec)["run_id"].tolist() == ["a", "b", "c"]
    with pytest.raises(ArgumentError, match="select_by='train'") as caught:
        select_runs(rec, best_only=True, select_by="train")
    assert caught.value.argument == "select_by"


@pytest.mark.slow
def test_worker_processes_give_the_same_pvalues(study, tmp_path):
    import shutil

    serial, parallel = tmp_path / "serial", tmp_path / "parallel"
    shutil.copytree(study, serial)
    shutil.copytree(study, parallel)
    # seed 7: settings no other test used, so nothing is resumed from an earlier pvalues.csv
    kw = dict(best_only=True, conditions=("diagnosis",), seed=7, test_options=FAST, alpha=ALPHA,
              progress=False)
    one = feature_usage(serial, **kw)
    two = feature_usage(parallel, jobs=2, **kw)
    pd.testing.assert_frame_equal(one.pvalues, two.pvalues)
    pd.testing.assert_frame_equal(pd.read_csv(one.paths["pvalues"]), pd.read_csv(two.paths["pvalues"]))
    with pytest.raises(ArgumentError, match="jobs=0 must be a whole number"):
        feature_usage(serial, jobs=0, progress=False)


def test_data_without_diagnoses_falls_back_to_the_label_with_a_note(study, tmp_path, monkeypatch):
    import shutil

    import medattn.data

    copy = tmp_path / "study"
    shutil.copytree(study, copy)
    real = medattn.data.load_dataset
    monkeypatch.setattr(medattn.data, "load_dataset",
                        lambda spec, **kw: real(spec, **kw).drop(columns="diagnosis"))
    res = feature_usage(copy, best_only=True, seed=11, test_options=FAST, alpha=ALPHA, progress=False)
    assert set(res.table.index.get_level_values("condition")) == {"label"}
    assert any("no diagnosis column" in n for n in res.notes)
    assert "no diagnosis column" in res.markdown and "given the 3-class label" in res.markdown


@pytest.mark.slow
def test_condition_diagnosis_alone_on_diagnoses_that_split_no_class(study, tmp_path, monkeypatch,
                                                                   capsys):
    # issue 21: `features --condition diagnosis` crashed (IndexError in table3.py) when the
    # diagnoses split no class; it falls back to the label with a note, as the default does.
    import shutil

    import medattn.data

    copy = tmp_path / "study"
    shutil.copytree(study, copy)
    real = medattn.data.load_dataset

    def coarse(spec, **kw):
        table = real(spec, **kw)
        return table.assign(diagnosis=table["label"].map(dict(enumerate(CLASSES))))

    monkeypatch.setattr(medattn.data, "load_dataset", coarse)
    res = feature_usage(copy, conditions=("diagnosis",), seed=13, test_options=FAST, alpha=ALPHA,
                        progress=False)
    assert set(res.table.index.get_level_values("condition")) == {"label"}
    assert "do not split any class" in res.markdown
    assert "given the 3-class label" in res.markdown
    assert main(["features", str(copy), "--runs", "best", "--condition", "diagnosis",
                 "--seed", "13"]) == 0
    assert "do not split any class" in capsys.readouterr().out


def test_runs_of_an_earlier_selection_are_left_out_with_a_note(study, tmp_path):
    import shutil

    copy = tmp_path / "study"
    shutil.copytree(study, copy)
    # the current selection asks only for resnet18: the +GA runs are superseded
    pd.DataFrame({"dataset": ["isic"], "model": ["resnet18"], "lr": [0.05],
                  "weight_decay": [1e-4]}).to_csv(copy / "selection.csv", index=False)
    res = feature_usage(copy, best_only=True, conditions="label", test_options=FAST, alpha=ALPHA,
                        progress=False)
    assert list(res.table.index) == [("resnet18", "label")]
    assert any(f"{RUNS} final run(s) trained under an earlier" in n for n in res.notes)


@pytest.mark.slow
def test_cli_prints_where_each_file_is(study, capsys):
    assert main(["features", str(study), "--runs", "best", "--condition", "label",
                 "--seed", "7"]) == 0
    out = capsys.readouterr().out
    for name in ("table3.md", "table3.csv", "pvalues.csv", "decisions.csv", "usage.csv",
                 "differences.csv", "truth.json"):
        assert str(study / "analysis" / "features" / name) in out
    assert main(["features", str(study), "--cmiknn-k", "1.5"]) == 2
    assert "--cmiknn-k 1.5" in capsys.readouterr().err
    # issue 21: a count no class can hold ran with every p = 1; refused with its valid range
    assert main(["features", str(study), "--runs", "best", "--condition", "label",
                 "--cmiknn-k", "1000000"]) == 2
    err = capsys.readouterr().err
    assert "option --cmiknn-k 1000000 leaves every class out" in err and "from 1 to" in err


def test_permutations_too_few_for_alpha_after_holm_are_refused(study):
    # 8 features: the smallest Holm-adjusted p is 8 / (B + 1); with B = 199 it is 0.04, so at
    # alpha = 0.01 no feature could ever be called used (an option that makes the test meaningless)
    with pytest.raises(ConfigError, match=r"chsic with permutations=199 cannot give p below alpha=0.01 "
                                          r".*at least 800 permutations"):
        feature_usage(study, test_options=FAST, alpha=0.01, progress=False)


def test_bad_inputs(tmp_path):
    with pytest.raises(DataError, match="not a study directory"):
        feature_usage(tmp_path, progress=False)
    (tmp_path / "runs").mkdir()
    with pytest.raises(DataError, match="no finished final runs"):
        feature_usage(tmp_path, progress=False)
    with pytest.raises(ArgumentError, match="conditions='age'"):
        feature_usage(tmp_path, conditions=("age",), progress=False)


@pytest.mark.slow
def test_image_only_model_is_not_flagged_for_age_given_the_diagnosis():
    # The trap: inside "other", keratoses (patients ~68) and dermatofibromas (~36) look different,
    # so a model that sees only the image predicts differently for them; given the coarse label,
    # its prediction then depends on age. Repeated draws of the synthetic set (metadata only, the
    # same values write_derm writes), one image per patient, the library's tests at alpha = 0.01.
    draws, alpha = 20, 0.01
    cfg = DermConfig()  # the generator's defaults (age_bias 0.8)
    used = {"diagnosis": 0, "label": 0}
    chsic_label = 0
    for d in range(draws):
        truth = sample_metadata(800, seed=100 + d, cfg=cfg).groupby("patient_id").head(1)
        y = softmax(image_logits(truth, np.random.default_rng(d), sharpness=2.5))[:, :2]
        rows = feature_tests(truth[["age_approx"]].to_numpy(float), y, truth["label"].to_numpy(),
                             normalise_diagnosis(truth["true_diagnosis"]),
                             seeds=[3 * d, 3 * d + 1, 3 * d + 2], options=FAST)
        for cond in used:
            rejections = sum(r["p_value"] < alpha for r in rows if r["condition"] == cond)
            used[cond] += rejections >= 2
        chsic_label += next(r["p_value"] < alpha for r in rows
                            if r["condition"] == "label" and r["test"] == "chsic")
    assert used["diagnosis"] <= stats.binom.ppf(0.99, draws, alpha)  # not beyond alpha
    assert used["label"] >= 0.8 * draws  # the same draws, the trap: age looks "used"
    assert chsic_label >= 0.8 * draws


def test_diagnosis_strata_merge_small_diagnoses_into_their_class_and_count_them():
    label = np.array([0] * 30 + [2] * 33)
    dx = np.array(["mel"] * 30 + ["sk"] * 15 + ["df"] * 12 + ["vasc"] * 4 + ["scar"] * 1 + [None],
                  dtype=object)
    s = diagnosis_strata(label, dx, min_size=10)
    assert len(s.z) == len(label)  # nothing dropped
    assert set(s.z) == {"0:mel", "2:sk", "2:*"}
    # vasc, scar and the missing one form a rest of 6 < 10, so the smallest kept (df) joins it
    assert (s.z == "2:*").sum() == 18 and s.merged_images == 18 and s.merged_diagnoses == 4
    assert s.n_strata == 3
    one = diagnosis_strata(label, dx, min_size=100)  # every class becomes one stratum
    assert set(one.z) == {"0:*", "2:*"}
    assert list(normalise_diagnosis(["  Seborrheic  Keratosis", "", None, np.nan])) == [
        "seborrheic keratosis", None, None, None]


def test_corrected_t_matches_scipy_and_differences_join_on_split_seed():
    v = np.array([0.3, 0.1, 0.25, 0.4, 0.05])
    ref = stats.ttest_1samp(v, 0.0)
    got = corrected_t(v, ratio=0.0)
    assert got["t"] == pytest.approx(ref.statistic) and got["p"] == pytest.approx(ref.pvalue)
    low, high = ref.confidence_interval()
    assert (got["low"], got["high"]) == pytest.approx((low, high))
    wide = corrected_t(v, ratio=0.2 / 0.7)
    assert wide["p"] > got["p"] and wide["low"] < got["low"]  # overlap widens the interval
    dec = pd.DataFrame({"model": ["b"] * 3 + ["v"] * 3, "split_seed": [0, 1, 2, 2, 1, 0],
                        "condition": "label", "feature": "A",
                        "effect_cmiknn": [1.0, 2.0, 3.0, 3.5, 2.5, 1.5]})
    models = pd.DataFrame({"model": ["b", "v"], "backbone": "r", "variant": ["base", "ga"]})
    diff = model_differences(dec, models, ["cmiknn"], ratio=0.0).iloc[0]
    assert diff["difference"] == pytest.approx(0.5) and diff["pairs"] == 3
    assert np.isnan(diff["p"]) and diff["verdict"] == "no difference shown"  # no spread


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
    with pytest.raises(ConfigError, match="kind='argmax'"):
        prediction_matrix(preds, CLASSES, "argmax")


@pytest.mark.slow
def test_report_shows_table3_with_k_of_n_effects_truth_and_pvalues(study, tmp_path):
    import re

    from medattn.report import build_report

    # resumed; other tests wrote
    usage = feature_usage(study, test_options=FAST, alpha=ALPHA, progress=False)
    html = build_report(study, out=tmp_path / "report", parameters=False).html.read_text()
    t3 = html.split('<section id="table3">')[1].split("</section>")[0]
    text = re.sub(r"<[^>]+>", " ", t3)
    cell = usage.table.loc[("resnet18+ga", "diagnosis"), "Colorful patches"]
    label_cell = usage.table.loc[("resnet18+ga", "label"), "Colorful patches"]
    assert f"{cell} ({label_cell})" in text  # k/N given the diagnosis (given the label)
    assert "planted truth (isic)" in text and "never in the image" in text
    assert "given the fine diagnosis" in text
    assert t3.count("data:image/png;base64,") == 1  # the effect-size figure
    assert "median_p_cmiknn" in text and "used (k/N)" in text
    assert "ResNet18 +GA" in text and "more" in text  # the significant difference, by label
    md = (tmp_path / "report" / "report.md").read_text()
    assert "figures/table3-effects.png" in md


def test_report_table3_keeps_cells_where_no_test_could_run(tmp_path):
    from medattn.report.features import table3_section

    folder = tmp_path / "features"
    folder.mkdir()
    rows = [{"model": "resnet18", "condition": c, **{f: "0/3" for f in TABLE3_FEATURES}}
            for c in ("diagnosis", "label")]
    rows[0]["D"] = "n/a"  # no test could run: a text cell, not a missing number
    pd.DataFrame(rows).to_csv(folder / "table3.csv", index=False)
    section = table3_section(folder, "hint")
    frame = section.blocks[0].frame
    assert frame.loc["ResNet18 Base", "D"] == "n/a (0/3)"  # rows by the registry's label
    assert frame.loc["ResNet18 Base", "A"] == "0/3 (0/3)"
