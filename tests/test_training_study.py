"""The study runner: search -> selection -> final runs, resumption, and the Ray backend."""

import json
import os
from pathlib import Path

import pytest

from medattn.runs import store
from medattn.training.backends import LocalBackend, RayBackend
from medattn.training.config import parse_config
from medattn.training.engine import Hooks
from medattn.training.study import run_study


class Kill(BaseException):
    pass


@pytest.fixture(scope="module")
def derm(tiny_derm):
    return tiny_derm


def _config(derm, **over):
    isic, pad = derm
    raw = {"name": "t", "datasets": [{"data": isic, "ood": [pad]}], "models": ["resnet18"],
           "search": {"lr": [0.01, 0.001], "weight_decay": [0.0], "splits": 1},
           "final": {"splits": 2},
           "train": {"epochs": 2, "batch_size": 16, "image_size": 32, "pretrained": False,
                     "threads": 1}}
    raw.update(over)
    return parse_config(raw)


@pytest.mark.slow
def test_interrupted_study_runs_only_what_is_missing(learnable_derm, tmp_path):
    # data and settings on which every run learns: each must end `done`
    cfg = _config(learnable_derm, search={"lr": [0.05, 0.02], "weight_decay": [0.0], "splits": 1},
                  train={"epochs": 3, "batch_size": 16, "image_size": 32, "pretrained": False,
                         "threads": 1, "augment": "light"})
    epochs_seen = []

    def kill_third_run(epoch, entry):
        epochs_seen.append(epoch)
        if len(epochs_seen) == 7:  # 2 runs x 3 epochs done, then epoch 1 of the third run
            raise Kill
    with pytest.raises(Kill):
        run_study(cfg, tmp_path, LocalBackend(progress=False, hooks=Hooks(kill_third_run)))
    before = {r["run_id"]: r for r in store.iter_records(tmp_path)}
    assert sorted(r["status"] for r in before.values()) == ["done", "done", "running"]
    mtimes = {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").glob("*/record.json")}

    epochs_seen.clear()
    res = run_study(cfg, tmp_path, LocalBackend(progress=False,
                                                hooks=Hooks(lambda e, _: epochs_seen.append(e))))
    # resumed the killed run at epoch 2, then trained the last one fully: nothing else re-ran
    assert epochs_seen == [2, 3, 1, 2, 3]
    finished = [r for r in before.values() if r["status"] in store.FINISHED]
    assert len(finished) == 2
    for r in finished:
        p = store.run_dir(tmp_path, r["run_id"]) / "record.json"
        assert p.stat().st_mtime_ns == mtimes[p]
    recs = res.records
    assert len(recs) == 4 and set(recs["status"]) == {"done"}
    assert sorted(recs["phase"]) == ["final", "final", "search", "search"]
    sel = res.selection.iloc[0]
    search = recs[recs["phase"] == "search"].set_index("lr")
    assert sel.lr == search["bacc_val"].idxmax()  # the better setting (first on a tie)
    assert set(recs[recs["phase"] == "final"]["lr"]) == {sel.lr}
    assert (tmp_path / "study.yaml").exists() and (tmp_path / "selection.csv").exists()

    # a third start has nothing left to do
    epochs_seen.clear()
    run_study(cfg, tmp_path, LocalBackend(progress=False,
                                          hooks=Hooks(lambda e, _: epochs_seen.append(e))))
    assert epochs_seen == []


@pytest.mark.slow
def test_ray_backend_gives_the_records_of_the_local_backend(derm, tmp_path, monkeypatch):
    ray = pytest.importorskip("ray", reason="Ray not installed (pip install 'medattn[ray]')")
    cfg = _config(derm, search={"lr": [0.01], "weight_decay": [0.0]}, final={"splits": 2},
                  train={"epochs": 1, "batch_size": 16, "image_size": 32, "pretrained": False,
                         "threads": 1})
    local = run_study(cfg, tmp_path / "local", LocalBackend(progress=False)).records
    # Workers inherit the environment of the Ray processes this test starts: they import this
    # checkout's medattn even when it is not installed (no runtime_env set-up to wait for).
    src = str(Path(__file__).resolve().parents[1] / "src")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        remote = run_study(cfg, tmp_path / "ray", RayBackend(num_cpus=1)).records
    finally:
        ray.shutdown()
    assert len(local) == len(remote) == 2
    assert list(local["run_id"]) == list(remote["run_id"])
    for rid in local["run_id"]:
        a = json.loads((store.run_dir(tmp_path / "local", rid) / "record.json").read_text())
        b = json.loads((store.run_dir(tmp_path / "ray", rid) / "record.json").read_text())
        for key in ("status", "best_epoch", "metrics", "data_fingerprint", "split_seed", "lr",
                    "classes", "ood"):
            assert a[key] == b[key], key
        for ha, hb in zip(a["history"], b["history"]):
            assert ha["val_balanced_accuracy"] == hb["val_balanced_accuracy"]
            assert ha["train_loss"] == pytest.approx(hb["train_loss"], rel=1e-5)
        pa = store.run_dir(tmp_path / "local", rid) / "predictions" / "test.csv"
        pb = store.run_dir(tmp_path / "ray", rid) / "predictions" / "test.csv"
        assert pa.read_text() == pb.read_text()


@pytest.mark.slow
def test_study_progress_counts_the_whole_study_with_its_remaining_time(derm, tmp_path, capsys):
    cfg = _config(derm, train={"epochs": 1, "batch_size": 16, "image_size": 32,
                               "pretrained": False, "threads": 1})
    run_study(cfg, tmp_path, LocalBackend(progress=True))  # stderr is not a terminal here
    err = capsys.readouterr().err
    assert "\r" not in err and "\x1b" not in err
    lines = [line for line in err.splitlines() if line.startswith("study t: ")]
    # one line per run, search and final phases on one count, each with the time left
    assert [line.split()[2] for line in lines] == ["1/4", "2/4", "3/4", "4/4"]
    for line in lines[:-1]:
        elapsed, remaining = line.split("[", 1)[1].split(",", 1)[0].split("<")
        assert remaining != "?" and remaining.count(":") == 1, line

    # started again with one final run missing: finished runs are counted but set no pace
    final = next(r for r in store.iter_records(tmp_path) if r["phase"] == "final")
    (store.run_dir(tmp_path, final["run_id"]) / "record.json").unlink()
    run_study(cfg, tmp_path, LocalBackend(progress=True))
    lines = [line for line in capsys.readouterr().err.splitlines()
             if line.startswith("study t: ")]
    assert [line.split()[2] for line in lines] == ["1/4", "2/4", "3/4", "4/4"]
    assert all("<?" in line for line in lines[:3])  # no pace from runs not trained now
    assert "<?" not in lines[3]
