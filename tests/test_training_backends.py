"""LocalBackend with ``jobs > 1``: the runs train at the same time in worker processes, their
records, predictions and weights equal those of one-after-another training, and a run that
crashes is reported as failed while the others finish."""

import os
import threading
import time

import pytest
from safetensors.torch import load_file

from medattn.runs import lock, store
from medattn.training.backends import LocalBackend
from medattn.training.config import RunSpec, TrainSettings

# spawned workers import torch: slow on a loaded machine, and CI runs slow tests too
pytestmark = pytest.mark.slow

TRAIN = dict(epochs=1, batch_size=16, image_size=32, pretrained=False, threads=1)


def _specs(derm) -> list[RunSpec]:
    """Two runs that train, and one that crashes in its first step: with batch size 1, ResNet18's
    last BatchNorm sees one value per channel at 32 px (torch raises a ValueError)."""
    isic, pad = derm
    good = [RunSpec(phase="final", dataset="isic", data=isic, ood=(pad,), model="resnet18",
                    lr=0.01, weight_decay=0.0, split_seed=s, train=TrainSettings(**TRAIN))
            for s in (0, 1)]
    bad = RunSpec(phase="final", dataset="isic", data=isic, ood=(pad,), model="resnet18",
                  lr=0.01, weight_decay=0.0, split_seed=2,
                  train=TrainSettings(**{**TRAIN, "batch_size": 1}))
    return [*good, bad]


def _live_holders(runs_dir) -> set[int]:
    """PIDs of the processes that hold a run's lock now (the lock file names its holder; a lock
    file whose holder exited says nothing about who holds it now, so each PID is checked)."""
    pids = set()
    for f in (runs_dir / "runs").glob(f"*/{store.LOCK}"):
        pid = lock.holder(f).get("pid")
        if pid and os.path.exists(f"/proc/{pid}") and not _zombie(pid):
            pids.add(pid)
    return pids


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as f:
            return "\nState:\tZ" in f.read()
    except FileNotFoundError:
        return True


def test_jobs_train_at_once_in_workers_equal_serial_runs_and_report_a_crash(tiny_derm, tmp_path):
    specs = _specs(tiny_derm)
    good, bad = specs[:2], specs[2]

    serial = LocalBackend(progress=False, jobs=1).run(specs, tmp_path / "serial")

    # the parallel study in a thread; this one watches who holds the runs meanwhile
    parallel_dir = (tmp_path / "parallel").resolve()
    result, seen, reported = {}, [], []

    def study():
        try:
            result["records"] = LocalBackend(progress=False, jobs=2).run(
                specs, parallel_dir, on_record=lambda rec, trained: reported.append(
                    (rec["run_id"], rec["status"], trained)))
        except BaseException as err:  # noqa: BLE001 - re-raised below, in the test's thread
            result["error"] = err
    thread = threading.Thread(target=study)
    thread.start()
    while thread.is_alive():
        holders = _live_holders(parallel_dir) if (parallel_dir / "runs").is_dir() else set()
        seen.append(holders)
        time.sleep(0.05)
    thread.join()
    if "error" in result:
        raise result["error"]

    # two worker processes (not this one) held a run each at the same moment
    assert any(len(h) == 2 and os.getpid() not in h for h in seen), seen
    records = {r["run_id"]: r for r in result["records"]}
    assert set(records) == {s.run_id for s in specs}
    workers = {records[s.run_id]["worker"]["pid"] for s in good}
    assert len(workers) == 2 and os.getpid() not in workers

    # the crash: recorded failed with torch's message, in both modes, the others finished
    for recs in ({r["run_id"]: r for r in serial}, records):
        assert recs[bad.run_id]["status"] == "failed"
        assert "ValueError" in recs[bad.run_id]["message"]
        assert "Expected more than 1 value per channel" in recs[bad.run_id]["message"]
        assert all(recs[s.run_id]["status"] in store.FINISHED for s in good)
    assert sorted(reported) == sorted((rid, rec["status"], True) for rid, rec in records.items())

    # deterministic: the same records, predictions and weights as one run after another
    for spec in good:
        a = store.read_record(store.run_dir(tmp_path / "serial", spec.run_id))
        b = records[spec.run_id]
        assert a["worker"]["pid"] == os.getpid()
        for key in ("status", "best_epoch", "metrics", "data_fingerprint", "split", "classes"):
            assert a[key] == b[key], key
        for ha, hb in zip(a["history"], b["history"], strict=True):
            assert ha["val_balanced_accuracy"] == hb["val_balanced_accuracy"]
            assert ha["train_loss"] == pytest.approx(hb["train_loss"], rel=1e-6)
        da, db = (store.run_dir(d, spec.run_id) for d in (tmp_path / "serial", parallel_dir))
        for name in ("test.csv", "ood-pad-ufes-20.csv"):
            assert (da / "predictions" / name).read_text() == (db / "predictions" / name).read_text()
        wa, wb = load_file(da / store.MODEL), load_file(db / store.MODEL)
        assert wa.keys() == wb.keys() and all((wa[k] == wb[k]).all() for k in wa)

    # a second start trains nothing: finished runs are skipped
    again = LocalBackend(progress=False, jobs=2).run(good, parallel_dir)
    assert [r["timings"]["sessions"] for r in again] == [1, 1]
