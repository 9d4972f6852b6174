"""Processes against one runs folder: a second study or train is refused naming the holder's PID,
`--jobs N` workers die with their parent, and Ctrl-C stops the workers and cancels queued runs.

These start real `medattn` processes (each imports torch), so they are marked slow."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from medattn.errors import StoreError
from medattn.runs import lock, store
from medattn.training.config import RunSpec, TrainSettings
from medattn.training.engine import train_run

SRC = str(Path(__file__).resolve().parents[1] / "src")
ENV = {**os.environ, "PYTHONPATH": SRC, "PYTHONFAULTHANDLER": "1", "OMP_NUM_THREADS": "1",
       "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
TRAIN = {"batch_size": 16, "image_size": 32, "pretrained": False, "threads": 1}


@pytest.fixture(scope="module")
def derm(tiny_derm):
    return tiny_derm


def _config(derm, path, lrs, epochs):
    path.write_text(json.dumps({
        "name": "t", "datasets": [{"data": derm[0], "ood": [derm[1]]}], "models": ["resnet18"],
        "search": {"lr": lrs, "weight_decay": [0.0], "splits": 1}, "final": {"splits": 1},
        "train": {**TRAIN, "epochs": epochs}}))
    return str(path)


def _default_sigint() -> None:
    # A test runner started in the background of a non-interactive shell (`pytest &`, nohup)
    # ignores SIGINT, and a child inherits that: the study would never see the Ctrl-C below.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(*args):
    return subprocess.Popen([sys.executable, "-m", "medattn.cli", *args], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=_default_sigint)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        with open(f"/proc/{pid}/status") as f:
            return "\nState:\tZ" not in f.read()  # a zombie nobody reaped is dead
    except (ProcessLookupError, FileNotFoundError):
        return False
    except PermissionError:
        return True


def _holders(runs: Path, exclude: int) -> dict[str, int]:
    """Run id -> PID of the live process (other than ``exclude``) holding the run's lock file."""
    out = {}
    for f in (runs / "runs").glob("*/.lock") if (runs / "runs").is_dir() else ():
        pid = lock.holder(f).get("pid")
        if pid and pid != exclude and _alive(pid):
            out[f.parent.name] = pid
    return out


def _wait(condition, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _training(runs: Path, parent: int) -> dict | None:
    """Two workers hold a run each and have started training it (its record is written)."""
    holders = _holders(runs, parent)
    started = all((runs / "runs" / rid / store.RECORD).exists() for rid in holders)
    return holders if len(holders) == 2 and started else None


def _stop(proc, pids=()):
    """Clean-up of what a test started: its process group, and workers it saw."""
    for pid in pids:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)


@pytest.mark.slow
def test_a_run_locked_by_another_process_is_refused_naming_its_pid(derm, tmp_path):
    spec = RunSpec(phase="final", dataset="isic", data=derm[0], ood=(derm[1],),
                   model="resnet18", lr=0.01, weight_decay=0.0, split_seed=0,
                   train=TrainSettings(epochs=1, **TRAIN))
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from medattn.runs import store\n"
         "with store.lock_run(sys.argv[1], sys.argv[2]):\n print('locked', flush=True)\n"
         " time.sleep(60)", str(tmp_path), spec.run_id],
        env=ENV, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(StoreError, match=rf"run {spec.run_id} is in use by process "
                                             rf"{holder.pid}\b"):
            train_run(spec, tmp_path, progress=False)
        assert store.read_record(store.run_dir(tmp_path, spec.run_id)) is None  # untouched
    finally:
        holder.kill()
        holder.wait()
    rec = train_run(spec, tmp_path, progress=False)  # the holder is gone: so is its lock
    assert rec["status"] in store.FINISHED


@pytest.mark.slow
def test_a_second_study_on_the_same_folder_is_refused(derm, tmp_path):
    runs = tmp_path / "runs"
    config = _config(derm, tmp_path / "c.yaml", [0.01, 0.05], epochs=3)
    first = _start("study", config, "--out", str(runs))
    try:
        _wait(lambda: lock.holder(runs / ".lock").get("pid") == first.pid, 120,
              "the first study to lock the folder")
        second = _start("study", config, "--out", str(runs))
        out, err = second.communicate(timeout=120)
        assert second.returncode == 2, err
        assert f"the runs folder {runs} is in use by process {first.pid}" in err, err
        assert "Traceback" not in err
        out, err = first.communicate(timeout=600)
        assert first.returncode == 0, err
    finally:
        _stop(first)
    records = list(store.iter_records(runs))
    assert len(records) == 3 and {r["status"] for r in records} <= set(store.FINISHED)
    assert all(r["timings"]["sessions"] == 1 for r in records)  # each trained once, by one study


@pytest.mark.slow
def test_jobs_workers_die_with_their_killed_parent(derm, tmp_path):
    runs = tmp_path / "runs"
    config = _config(derm, tmp_path / "c.yaml", [0.01, 0.05], epochs=30)
    study = _start("study", config, "--out", str(runs), "--jobs", "2")
    workers = {}
    try:
        workers = _wait(lambda: _training(runs, study.pid), 180,
                        "two workers to start training")
        os.kill(study.pid, signal.SIGKILL)
        _wait(lambda: not any(_alive(p) for p in workers.values()), 10,
              f"the workers {sorted(workers.values())} to die with their parent")
    finally:
        _stop(study, workers.values())
    for rid in workers:  # killed mid-run: resumable, not finished
        assert store.read_record(store.run_dir(runs, rid))["status"] == "running"


@pytest.mark.slow
def test_ctrl_c_stops_workers_and_cancels_queued_runs(derm, tmp_path):
    runs = tmp_path / "runs"
    config = _config(derm, tmp_path / "c.yaml", [0.01, 0.02, 0.05, 0.1], epochs=30)
    study = _start("study", config, "--out", str(runs), "--jobs", "2")
    workers = {}
    try:
        workers = _wait(lambda: _training(runs, study.pid), 180,
                        "two workers to start training")
        os.killpg(study.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        try:
            out, err = study.communicate(timeout=60)
        except subprocess.TimeoutExpired:  # show where it hangs: faulthandler dumps every thread
            os.kill(study.pid, signal.SIGABRT)
            raise AssertionError("the study did not exit after Ctrl-C:\n"
                                 + study.communicate(timeout=30)[1][-6000:]) from None
        assert study.returncode == 130, err
        assert "interrupted" in err and "Traceback" not in err
        _wait(lambda: not any(_alive(p) for p in workers.values()), 10, "the workers to stop")
    finally:
        _stop(study, workers.values())
    started = sorted(d.name for d in (runs / "runs").iterdir())
    assert started == sorted(workers)  # the two queued runs never started
    assert {store.read_record(runs / "runs" / r)["status"] for r in started} == {"running"}
