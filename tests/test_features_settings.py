"""The settings of the feature-usage analysis (issue 22, items 3 and 4): one frozen object that
checks itself and names the library argument, the CLI naming its flag instead, the settings
recorded beside Table 3, keyword-only entry points, and a killed analysis resuming where it
stopped."""

import dataclasses
import json
import shutil

import pandas as pd
import pytest

import medattn.analysis.features.usage_run as usage_run
from medattn.analysis.features.settings import CMIKNN_K, UsageSettings
from medattn.errors import ArgumentError
from medattn.analysis.features.table3 import TABLE3_FEATURES
from medattn.analysis.features.usage import feature_usage
from medattn.cli import _leaves, argument_flags, build_parser, main
from tests.test_features_usage import ALPHA, FAST, write_run


@pytest.mark.parametrize("changes, argument, message", [
    ({"alpha": 1.5}, "alpha", "alpha=1.5 must lie in (0, 1)"),
    ({"alpha": 0.001}, "alpha", "chsic with permutations=1000 cannot give p below alpha=0.001"),
    ({"min_per_diagnosis": 0}, "min_per_diagnosis", "min_per_diagnosis=0 must be a whole"),
    ({"min_per_diagnosis": 2.5}, "min_per_diagnosis", "min_per_diagnosis=2.5 must be a whole"),
    ({"conditions": ("label", "label")}, "conditions", "give one or both of diagnosis, label"),
    ({"conditions": ("age",)}, "conditions", "conditions='age'"),
    ({"tests": ("chsic", "kci")}, "tests", "tests=['chsic', 'kci']"),
    ({"prediction": "argmax"}, "prediction", "prediction='argmax' is not one of softmax"),
    ({"select_by": "train"}, "select_by", "select_by='train' is not one of val, test"),
    ({"patches": "paint"}, "patches", "patches='paint' is not one of auto"),
    ({"seed": -1}, "seed", "seed=-1 must be a whole number >= 0"),
    ({"best_only": "best"}, "best_only", "best_only='best' must be True or False"),
    ({"set_name": "../test"}, "set_name", "set_name='../test' must name a prediction set"),
    ({"test_options": {"cmiknn": {"k": 1.5}}}, "test_options['cmiknn']['k']",
     "test_options['cmiknn']['k']=1.5 must be a whole number >= 1 (a count) or a fraction"),
    ({"test_options": {"cmiknn": {"neighbours": 5}}}, "test_options", "has no option 'neighbours'"),
    ({"test_options": {"kci": {}}}, "test_options", "names the test 'kci'"),
    ({"test_options": {"chsic": {"permutations": 0}}},
     "test_options['chsic']['permutations']", "['permutations']=0 must be a whole number >= 1"),
])
def test_settings_refuse_bad_values_naming_the_library_argument(changes, argument, message):
    with pytest.raises(ArgumentError) as caught:
        UsageSettings(**changes)
    assert caught.value.argument == argument
    assert message in str(caught.value)
    assert "--" not in str(caught.value)  # the library names no CLI flag


def test_settings_are_frozen_copy_their_inputs_and_keep_the_old_resume_key():
    options = {"cmiknn": {"k": 10.0, "permutations": 999}}
    conditions = ["label"]
    s = UsageSettings(conditions=conditions, test_options=options)
    options["cmiknn"]["k"] = 0.5  # the caller's dict changes later: the settings do not
    conditions.append("diagnosis")
    assert s.test_options == {"cmiknn": {"k": 10, "permutations": 999}}
    assert isinstance(s.test_options["cmiknn"]["k"], int) and s.conditions == ("label",)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.alpha = 0.05
    # k given as 10.0 (the CLI's float) and as 10 test the same: the same saved rows resume
    assert s.resume_key() == UsageSettings(conditions=("label",), test_options={
        "cmiknn": {"k": 10, "permutations": 999}}).resume_key()
    # the key of the defaults is the one pvalues.csv rows carried before the settings object,
    # so an analysis interrupted before this change still resumes
    assert UsageSettings().resume_key() == "27d8adfa553c"
    # what decides which runs are shown does not change the p-values, so not the key either
    assert UsageSettings(best_only=True, select_by="test", dataset="x").resume_key() == \
        UsageSettings().resume_key()
    assert UsageSettings(seed=1).resume_key() != UsageSettings().resume_key()


def test_feature_usage_is_keyword_only_and_refuses_unknown_settings(tmp_path):
    with pytest.raises(TypeError):
        feature_usage(tmp_path, UsageSettings())  # settings only by keyword
    with pytest.raises(TypeError, match="unknown argument.*condition;"):
        feature_usage(tmp_path, condition="label")  # the old name: refused, not ignored
    with pytest.raises(ArgumentError, match="jobs=0 must be a whole number") as caught:
        feature_usage(tmp_path, jobs=0)
    assert caught.value.argument == "jobs"


@pytest.mark.parametrize("flags, shown", [
    (["--min-per-diagnosis", "0"], "--min-per-diagnosis 0 must be a whole number >= 1"),
    (["--alpha", "1.5"], "--alpha 1.5 must lie in (0, 1)"),
    (["--alpha", "0.001"], "cannot give p below --alpha 0.001 after Holm's"),
    (["--cmiknn-k", "0"], "--cmiknn-k 0.0 must be a whole number >= 1 (a count)"),
    (["--seed", "-3"], "--seed -3 must be a whole number >= 0"),
    (["--jobs", "0"], "--jobs 0 must be a whole number >= 1"),
])
def test_cli_names_its_flag_where_the_library_names_its_argument(tmp_path, capsys, flags, shown):
    (tmp_path / "runs").mkdir()
    assert main(["features", str(tmp_path), *flags]) == 2
    err = capsys.readouterr().err
    assert shown in err
    assert not any(f"{argument}=" in err for argument in FEATURES_FLAGS)


def _features_flags() -> dict[str, str]:
    leaf = next(p for p in _leaves(build_parser()) if p.prog == "medattn features")
    return argument_flags(leaf)


FEATURES_FLAGS = _features_flags()


def test_every_settings_field_has_the_flag_that_sets_it():
    fields = {f.name for f in dataclasses.fields(UsageSettings)} - {"tests", "test_options"}
    flags = {a: FEATURES_FLAGS[a] for a in fields | {"jobs", CMIKNN_K}}
    assert flags["best_only"] == "--runs" and flags["one_per_group"] == "--all-images"
    assert flags[CMIKNN_K] == "--cmiknn-k" and flags["set_name"] == "--set"
    assert all(f.startswith("--") for f in flags.values())


@pytest.fixture(scope="module")
def small_study(tmp_path_factory):
    from medattn.data import load_dataset
    from medattn.data.synthetic import write_derm

    spec, _ = write_derm(tmp_path_factory.mktemp("derm_small"), n=160, n_ood=1, seed=8,
                         image_size=64, patch_bias=0.3, workers=1)
    table = load_dataset(spec)
    runs_dir = tmp_path_factory.mktemp("small_study")
    for s in range(3):
        write_run(runs_dir, f"r18-s{s}", "resnet18", spec, table, 0.0, 0.7 + 0.01 * s, s)
    return runs_dir


SETTINGS = UsageSettings(conditions=("label",), test_options=FAST, alpha=ALPHA, seed=21)


@pytest.mark.slow
def test_a_killed_analysis_resumes_after_its_last_saved_run(small_study, tmp_path, monkeypatch):
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    shutil.copytree(small_study, killed)
    shutil.copytree(small_study, whole)
    real, calls = usage_run.tests_job, []

    def dies_in_the_second_run(*args):
        calls.append(1)
        if len(calls) > len(TABLE3_FEATURES):  # the first feature of the second run
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(usage_run, "tests_job", dies_in_the_second_run)
    with pytest.raises(KeyboardInterrupt):
        feature_usage(killed, settings=SETTINGS, progress=False)
    saved = pd.read_csv(killed / "analysis" / "features" / "pvalues.csv", dtype={"run_id": str})
    assert set(saved["run_id"]) == {"r18-s0"}  # the finished run was saved before the kill
    assert len(saved) == len(TABLE3_FEATURES) * len(SETTINGS.tests)
    assert (saved["key"] == SETTINGS.resume_key()).all()

    calls.clear()
    monkeypatch.setattr(usage_run, "tests_job", lambda *a: calls.append(1) or real(*a))
    resumed = feature_usage(killed, settings=SETTINGS, progress=False)
    assert len(calls) == 2 * len(TABLE3_FEATURES)  # only the two runs not saved are tested
    fresh = feature_usage(whole, settings=SETTINGS, progress=False)
    cols = ["run_id", "feature", "test", "p_value", "statistic", "n"]
    pd.testing.assert_frame_equal(resumed.pvalues[cols], fresh.pvalues[cols])
    pd.testing.assert_frame_equal(resumed.table, fresh.table)


@pytest.mark.slow
def test_settings_are_recorded_beside_table3_and_on_the_result(small_study, tmp_path):
    copy = tmp_path / "study"
    shutil.copytree(small_study, copy)
    result = feature_usage(copy, settings=SETTINGS, progress=False)
    assert result.settings == SETTINGS
    path = result.paths["settings"]
    assert path == copy / "analysis" / "features" / "settings.json"
    record = json.loads(path.read_text())
    assert UsageSettings(**record["settings"]) == SETTINGS  # the file gives the settings back
    assert record["resume_key"] == SETTINGS.resume_key()
    assert record["runs"] == ["r18-s0", "r18-s1", "r18-s2"]
    # the keyword shorthand builds the same settings
    again = feature_usage(copy, conditions=("label",), test_options=FAST, alpha=ALPHA, seed=21,
                          progress=False)
    assert again.settings == SETTINGS
    pd.testing.assert_frame_equal(again.table, result.table)
