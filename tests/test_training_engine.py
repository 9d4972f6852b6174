"""One run end to end on tiny synthetic data: record, predictions, model, resume, divergence."""

import dataclasses
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from medattn.runs import store
from medattn.training.config import RunSpec, TrainSettings
from medattn.training.engine import Hooks, train_run

RECORD_KEYS = {"run_id", "status", "phase", "model", "backbone", "variant", "dataset", "data", "ood",
               "classes", "split_seed", "lr", "weight_decay", "batch_size", "epochs", "image_size",
               "history", "best_epoch", "metrics", "data_fingerprint", "versions", "timings",
               "config", "message"}


class Kill(BaseException):
    """Stands in for SIGKILL: not an Exception, so nothing catches it on the way out."""


@pytest.fixture(scope="module")
def derm(tiny_derm):
    return tiny_derm


def _spec(derm, **train):
    isic, pad = derm
    settings = dict(epochs=3, batch_size=16, image_size=32, pretrained=False, threads=1)
    settings.update(train)
    return RunSpec(phase="final", dataset="isic", data=isic, ood=(pad,), model="resnet18",
                   lr=0.01, weight_decay=1e-4, split_seed=0, train=TrainSettings(**settings))


@pytest.mark.slow
def test_run_end_to_end_writes_the_contracted_store(learnable_derm, tmp_path):
    from medattn.data import load_task
    from medattn.models import create_model

    # data and settings on which the run learns: it must end `done`, above chance
    spec = dataclasses.replace(_spec(learnable_derm, augment="light"), lr=0.05)
    rec = train_run(spec, tmp_path, progress=False)
    rdir = store.run_dir(tmp_path, spec.run_id)
    assert RECORD_KEYS <= set(rec)
    assert rec == json.loads((rdir / "record.json").read_text())
    assert rec["status"] == "done" and rec["message"] == "" and rec["backbone"] == "resnet18"
    assert rec["variant"] == "base" and rec["classes"] == ["melanoma", "nevus", "other"]
    assert [h["epoch"] for h in rec["history"]] == [1, 2, 3]
    baccs = [h["val_balanced_accuracy"] for h in rec["history"]]
    assert rec["best_epoch"] == 1 + baccs.index(max(baccs))  # first epoch reaching the maximum
    assert set(rec["metrics"]) == {"val", "test", "ood-pad-ufes-20"}
    assert rec["metrics"]["val"]["balanced_accuracy"] == pytest.approx(max(baccs))
    assert max(baccs) > 1 / 3 + spec.train.chance_margin  # what `done` means
    assert not (rdir / "resume.safetensors").exists() and not (rdir / "resume.json").exists()

    task = load_task(spec.data, spec.ood)
    for set_name, table in (("test", task.table), ("ood-pad-ufes-20", task.ood["pad-ufes-20"])):
        pred = pd.read_csv(rdir / "predictions" / f"{set_name}.csv", dtype={"image_id": str})
        k = [f"prob_{c}" for c in rec["classes"]]
        lg = [f"logit_{c}" for c in rec["classes"]]
        assert list(pred.columns) == ["row", "image_id", "label", "pred"] + k + lg
        m = rec["metrics"][set_name]
        assert len(pred) == m["n"] == np.sum(m["confusion_matrix"])
        assert (pred["image_id"].to_numpy() == table["image_id"].to_numpy()[pred["row"]]).all()
        assert (pred["label"].to_numpy() == table["label"].to_numpy()[pred["row"]]).all()
        assert (pred["pred"] == pred[lg].to_numpy().argmax(1)).all()
        soft = torch.softmax(torch.tensor(pred[lg].to_numpy()), 1).numpy()
        np.testing.assert_allclose(pred[k].to_numpy(), soft, atol=1e-5)
    # the saved model is the evaluated one: it reproduces the stored test logits
    pred = pd.read_csv(rdir / "predictions" / "test.csv")
    model = create_model("resnet18", 3, weights=rdir / "model.safetensors").eval()
    from medattn.data import ImageCache, ImageDataset, build_transform
    from medattn.training.engine import _cache_side
    cfg = model.pretrained_cfg
    ds = ImageDataset(task.table, build_transform(False, 32, cfg["mean"], cfg["std"]),
                      cache=ImageCache(tmp_path / "cache", _cache_side(32)))
    x = torch.stack([ds[int(r)][0] for r in pred["row"][:4]])
    with torch.no_grad():
        np.testing.assert_allclose(model(x).numpy(), pred[[f"logit_{c}" for c in rec["classes"]]]
                                   .to_numpy()[:4], rtol=1e-4, atol=1e-4)

    # finished runs are never trained again
    mtime = (rdir / "record.json").stat().st_mtime_ns
    calls = []
    again = train_run(spec, tmp_path, hooks=Hooks(on_step=lambda e, s: calls.append(s)),
                      progress=False)
    assert again == rec and calls == [] and (rdir / "record.json").stat().st_mtime_ns == mtime
    row = store.load_records(tmp_path).iloc[0]
    assert row["bacc_test"] == rec["metrics"]["test"]["balanced_accuracy"]


def _kill_at(epoch, step=None):
    def at_step(e, s):
        if step is not None and (e, s) == (epoch, step):
            raise Kill
    def at_end(e, entry):
        if step is None and e == epoch:
            raise Kill
    return Hooks(on_epoch_end=at_end, on_step=at_step)


@pytest.mark.slow
def test_killed_run_resumes_to_the_uninterrupted_result(derm, tmp_path):
    spec = _spec(derm, epochs=2)
    ref = train_run(spec, tmp_path / "a", progress=False)

    b = tmp_path / "b"
    with pytest.raises(Kill):  # killed right after epoch 1 was saved
        train_run(spec, b, hooks=_kill_at(1), progress=False)
    rdir = store.run_dir(b, spec.run_id)
    assert store.read_record(rdir)["status"] == "running"
    assert json.loads((rdir / "resume.json").read_text())["epoch"] == 1
    with pytest.raises(Kill):  # killed in the middle of epoch 2, after resuming
        train_run(spec, b, hooks=_kill_at(2, step=1), progress=False)
    assert json.loads((rdir / "resume.json").read_text())["epoch"] == 1
    rec = train_run(spec, b, progress=False)

    # the start killed mid-epoch saved nothing: its epoch was redone by the third start
    assert rec["timings"]["sessions"] == 2
    for key in ("status", "best_epoch", "metrics", "history"):
        if key == "history":
            strip = lambda h: [{k: v for k, v in e.items() if k != "seconds"} for e in h]  # noqa
            assert strip(rec[key]) == strip(ref[key])
        else:
            assert rec[key] == ref[key], key
    for name in ("test.csv", "ood-pad-ufes-20.csv"):
        pa = (store.run_dir(tmp_path / "a", spec.run_id) / "predictions" / name).read_text()
        assert (rdir / "predictions" / name).read_text() == pa
    wa = load_file(store.run_dir(tmp_path / "a", spec.run_id) / "model.safetensors")
    wb = load_file(rdir / "model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_nan_loss_is_recorded_as_diverged(derm, tmp_path):
    spec = dataclasses.replace(_spec(derm, epochs=2), lr=1e30)
    rec = train_run(spec, tmp_path, progress=False)
    assert rec["status"] == "diverged"
    assert "non-finite" in rec["message"] and rec["metrics"] == {}
    assert not (store.run_dir(tmp_path, spec.run_id) / "model.safetensors").exists()
    df = store.load_records(tmp_path)
    assert df.loc[0, "status"] == "diverged" and "bacc_test" not in df.columns
    # and it is finished: not trained again
    assert train_run(spec, tmp_path, hooks=_kill_at(1, 0), progress=False) == rec


def test_chance_level_selection_is_recorded_as_diverged(derm, tmp_path):
    # With a margin of 1, every balanced accuracy counts as chance level: the rule, not luck.
    rec = train_run(_spec(derm, epochs=1, chance_margin=1.0), tmp_path, progress=False)
    assert rec["status"] == "diverged" and "chance level" in rec["message"]
    assert set(rec["metrics"]) == {"val", "test", "ood-pad-ufes-20"}  # still evaluated, reported
    assert math.isfinite(rec["metrics"]["test"]["balanced_accuracy"])


def test_failing_run_is_recorded_as_failed(derm, tmp_path, monkeypatch):
    from medattn.errors import MedattnError
    from medattn.training import engine

    def crash(self, epoch):  # not the user's error: a bug, a CUDA error, ...
        raise RuntimeError("nope")
    monkeypatch.setattr(engine._Run, "_train_epoch", crash)
    spec = _spec(derm)
    with pytest.raises(RuntimeError):
        train_run(spec, tmp_path, progress=False)
    rec = store.read_record(store.run_dir(tmp_path, spec.run_id))
    assert rec["status"] == "failed" and "nope" in rec["message"]
    # a user error (an unknown model) before the first epoch leaves no run behind
    bad = dataclasses.replace(_spec(derm), model="resnet18+nope")
    with pytest.raises(MedattnError, match="nope"):
        train_run(bad, tmp_path, progress=False)
    assert store.read_record(store.run_dir(tmp_path, bad.run_id)) is None
