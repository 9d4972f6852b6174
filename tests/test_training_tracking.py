"""MLflow tracking against a real tracking store (SQLite in a temporary folder), and that
medattn works without MLflow."""

import hashlib
import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest

from medattn.errors import ConfigError
from medattn.runs import store
from medattn.training.backends import LocalBackend
from medattn.training.config import parse_config
from medattn.training.study import run_study
from medattn.training.tracking import ENV, MlflowTracker, tracker

needs_mlflow = pytest.mark.skipif(importlib.util.find_spec("mlflow") is None,
                                  reason="MLflow not installed (pip install 'medattn[mlflow]')")


@pytest.fixture
def derm(tiny_derm, one_thread):
    return tiny_derm


@pytest.fixture(scope="module")
def mlflow_uri(tmp_path_factory):
    """One SQLite store for the module (creating its tables takes seconds); tests use their own
    experiments."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


def _two_run_study(derm, runs=2, epochs=2):
    isic, pad = derm
    return parse_config({
        "name": "tracked", "datasets": [{"data": isic, "ood": [pad]}], "models": ["resnet18"],
        "search": {"lr": [0.01], "weight_decay": [0.0]}, "final": {"splits": runs},
        "train": {"epochs": epochs, "batch_size": 16, "image_size": 32, "pretrained": False,
                  "threads": 1}})


def _sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@needs_mlflow
@pytest.mark.slow
def test_a_study_in_mlflow_equals_its_run_records(derm, mlflow_uri, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    uri = mlflow_uri
    monkeypatch.setenv(ENV, uri)  # the environment variable alone switches tracking on
    runs = tmp_path / "runs"
    res = run_study(_two_run_study(derm), runs, LocalBackend(progress=False))
    assert len(res.records) == 2

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("tracked")  # the study is one experiment
    logged = client.search_runs([exp.experiment_id])
    assert len(logged) == 2
    db_dir = Path(uri[len("sqlite:///"):]).parent  # artifacts beside the database
    assert exp.artifact_location.startswith((db_dir / "mlartifacts").as_uri())
    for run in logged:
        rec = json.loads((store.run_dir(runs, run.data.tags["medattn.run_id"])
                          / "record.json").read_text())
        assert run.info.status == "FINISHED" and run.info.run_name == rec["run_id"]
        tags = run.data.tags
        assert (tags["model"], tags["dataset"], tags["split"], tags["phase"], tags["status"]) == (
            rec["model"], rec["dataset"], str(rec["split_seed"]), rec["phase"],
            rec["status"])
        # params: the run's whole config, nested keys joined by dots
        params = run.data.params
        assert params["model"] == rec["model"] and float(params["lr"]) == rec["lr"]
        assert int(params["train.epochs"]) == rec["epochs"] == 2
        assert params["train.pretrained"] == "False" and params["device"] == "cpu"
        assert json.loads(params["ood"]) == rec["config"]["ood"]
        n_config = sum(len(v) if isinstance(v, dict) and v else 1 for v in rec["config"].values())
        assert len(params) == n_config
        # metrics per epoch: one point per epoch, at step = epoch, equal to the record's history
        for key in ("train_loss", "val_loss", "val_balanced_accuracy", "lr", "seconds"):
            hist = sorted((m.step, m.value) for m in client.get_metric_history(
                run.info.run_id, f"epoch/{key}"))
            assert hist == [(e["epoch"], pytest.approx(e[key], rel=1e-12))
                            for e in rec["history"]]
        # final metrics of every evaluated set
        assert set(rec["metrics"]) == {"val", "test", "ood-pad-ufes-20"}
        for set_name, m in rec["metrics"].items():
            assert run.data.metrics[f"{set_name}/balanced_accuracy"] == pytest.approx(
                m["balanced_accuracy"], rel=1e-12)
            assert run.data.metrics[f"{set_name}/n"] == m["n"]
            assert set(m["per_class_recall"]) == set(rec["classes"])
            for c, r in m["per_class_recall"].items():
                if r is None or r != r:  # a class absent from this set: no recall, none logged
                    assert f"{set_name}/recall_{c}" not in run.data.metrics
                    continue
                assert run.data.metrics[f"{set_name}/recall_{c}"] == pytest.approx(r, rel=1e-12)
        assert run.data.metrics["best_epoch"] == rec["best_epoch"]
        # artifacts: the model file (byte for byte), the record and the predictions
        names = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"model.safetensors", "record.json", "predictions"} <= names
        preds = {a.path for a in client.list_artifacts(run.info.run_id, "predictions")}
        assert preds == {"predictions/test.csv", "predictions/ood-pad-ufes-20.csv"}
        local = client.download_artifacts(run.info.run_id, "model.safetensors", str(tmp_path))
        assert _sha(local) == _sha(store.run_dir(runs, rec["run_id"]) / "model.safetensors")

    # a second start trains nothing and logs nothing twice
    run_study(_two_run_study(derm), runs, LocalBackend(progress=False))
    assert len(client.search_runs([exp.experiment_id])) == 2
    # the same run ids from another runs folder are other runs (a copy: nothing to train)
    monkeypatch.delenv(ENV)
    shutil.copytree(runs, tmp_path / "other")
    run_study(_two_run_study(derm), tmp_path / "other", LocalBackend(progress=False),
              tracking=uri)
    again = client.search_runs([exp.experiment_id])
    assert len(again) == 4
    assert len({r.data.tags["medattn.run_id"] for r in again}) == 2


@pytest.mark.slow
@needs_mlflow
def test_a_run_left_half_logged_is_logged_again(derm, mlflow_uri, tmp_path):
    from mlflow.tracking import MlflowClient

    uri = mlflow_uri
    runs = tmp_path / "runs"
    run_study(_two_run_study(derm, 1, 1), runs, LocalBackend(progress=False))  # no tracking
    recs = list(store.iter_records(runs))
    t = MlflowTracker(uri, "half", runs)
    client = MlflowClient(uri)
    # a crash between creating the MLflow run and finishing it leaves it RUNNING
    client.create_run(t.experiment_id, tags={"medattn.run_id": recs[0]["run_id"],
                                             "medattn.runs_dir": str(runs.resolve())})
    t = MlflowTracker(uri, "half", runs)
    assert t.logged == {}  # the incomplete run does not count as logged, and is removed
    assert len(t.log_many(recs)) == 1
    runs_now = client.search_runs([t.experiment_id])
    assert [r.info.status for r in runs_now] == ["FINISHED"]
    assert MlflowTracker(uri, "half", runs).logged == {recs[0]["run_id"]: runs_now[0].info.run_id}


def test_medattn_works_without_mlflow(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    for name in [m for m in sys.modules if m == "mlflow" or m.startswith("mlflow.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow now raises ImportError
    monkeypatch.setitem(sys.modules, "mlflow.tracking", None)
    assert tracker(None, "x", tmp_path) is None  # no URI: no tracking, MLflow never imported
    with pytest.raises(ConfigError, match=r"pip install 'medattn\[mlflow\]'"):
        tracker("sqlite:///x.db", "x", tmp_path)
    monkeypatch.setenv(ENV, "sqlite:///x.db")
    with pytest.raises(ConfigError, match=ENV):
        tracker(None, "x", tmp_path)


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None,
                    reason="TensorBoard not installed (pip install 'medattn[tensorboard]')")
@pytest.mark.slow
def test_tensorboard_scalars_equal_the_history(derm, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from medattn.training import train

    isic, _ = derm
    rec = train("resnet18", isic, runs_dir=tmp_path, epochs=2, image_size=32, batch_size=16,
                threads=1, pretrained=False, tensorboard=True, progress=False)
    events = EventAccumulator(str(store.run_dir(tmp_path, rec["run_id"]) / "tensorboard"))
    events.Reload()
    for key in ("train_loss", "val_loss", "val_balanced_accuracy", "lr"):
        got = [(e.step, e.value) for e in events.Scalars(key)]
        assert got == [(h["epoch"], pytest.approx(h[key], rel=1e-6)) for h in rec["history"]]
