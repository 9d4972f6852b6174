"""The run store under failure: file modes, temporaries of killed writers, malformed records,
finished records, a read-only folder and a full disk. Each is a user error (exit 2, one line
naming the file and the fix), never a traceback, and nothing already written is lost."""

import contextlib
import json
import os
import shutil
import stat
import subprocess

import pytest

from medattn import cli
from medattn.errors import StoreError
from medattn.runs import store
from medattn.training.engine import Hooks, train


class Kill(BaseException):
    """Stands in for SIGKILL: not an Exception, so nothing catches it on the way out."""


@pytest.fixture(scope="module")
def derm(tiny_derm):
    return tiny_derm


SETTINGS = dict(epochs=2, batch_size=16, image_size=32, pretrained=False, threads=1)


def _train(derm, runs, **kw):
    return train("resnet18", derm[0], ood=[derm[1]], runs_dir=runs, lr=0.01, progress=False,
                 **{**SETTINGS, **kw})


def _cli_args(derm, runs, *extra):
    return ["train", "--model", "resnet18", "--data", derm[0], "--runs", str(runs), "--lr", "0.01",
            "--epochs", "2", "--batch-size", "16", "--image-size", "32", "--no-pretrained",
            "--threads", "1", *extra]


# ---------------------------------------------------------------------------------------------
# file modes and temporaries
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_store_files_are_readable_by_others_under_the_usual_umask(derm, tmp_path):
    old = os.umask(0o022)
    try:
        def kill_after_first(epoch, entry):
            if epoch == 1:
                raise Kill
        with pytest.raises(Kill):  # leaves resume state behind
            _train_with_hooks(derm, tmp_path, Hooks(on_epoch_end=kill_after_first))
        rdir = next((tmp_path / "runs").iterdir())
        resume = [rdir / store.RESUME, rdir / store.RESUME_JSON, rdir / store.RECORD]
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in resume}
        rec = _train(derm, tmp_path)
        files = [p for p in tmp_path.rglob("*") if p.is_file() and p.name != store.LOCK]
        modes.update({str(p.relative_to(tmp_path)): stat.S_IMODE(p.stat().st_mode) for p in files})
        store.write_text(tmp_path / "selection.csv", "x\n")
        modes["selection.csv"] = stat.S_IMODE((tmp_path / "selection.csv").stat().st_mode)
    finally:
        os.umask(old)
    assert rec["status"] in store.FINISHED
    names = " ".join(modes)
    for part in ("model.safetensors", "test.csv", "record.json", "resume.safetensors", ".npy"):
        assert part in names
    assert {k: v for k, v in modes.items() if v != 0o644} == {}


def _train_with_hooks(derm, runs, hooks):
    from medattn.training.config import RunSpec, TrainSettings
    from medattn.training.engine import train_run
    spec = RunSpec(phase="final", dataset="isic", data=derm[0], ood=(derm[1],), model="resnet18",
                   lr=0.01, weight_decay=0.0, split_seed=0, train=TrainSettings(**SETTINGS))
    return train_run(spec, runs, hooks=hooks, progress=False)


@pytest.mark.slow
def test_temporaries_of_a_killed_writer_are_removed_on_the_next_start(derm, tmp_path):
    rec = _train(derm, tmp_path)
    rdir = store.run_dir(tmp_path, rec["run_id"])
    # what a kill during a write leaves: a 0-byte temporary beside its target
    left = [tmp_path / ".selection.csv.123-abc.tmp", rdir / ".record.json.77-0f0f0f.tmp",
            rdir / "model.safetensors.k2j3h4.tmp", rdir / "predictions" / ".test.csv.9-a.tmp"]
    for p in left:
        p.write_bytes(b"")
    keep = tmp_path / "notes.tmp"  # not ours: a file a user put beside the runs
    keep.write_text("mine")
    again = _train(derm, tmp_path)  # finished: nothing trained, but the store is tidied
    assert again == rec
    assert [p for p in left if p.exists()] == []
    assert keep.read_text() == "mine"


# ---------------------------------------------------------------------------------------------
# records
# ---------------------------------------------------------------------------------------------


def _fake(runs, run_id, **over):
    rec = {"run_id": run_id, "status": "done", "phase": "final", "model": "resnet18",
           "backbone": "resnet18", "variant": "base", "dataset": "isic", "lr": 0.01,
           "weight_decay": 0.0, "split_seed": 0, "metrics": {"test": {"balanced_accuracy": 0.5}}}
    rec.update(over)
    store.write_record(runs, rec)
    return rec


@pytest.mark.parametrize("content, problem", [
    ("[]", "holds a JSON list"), ("{}", "lacks run_id, status, phase"),
    ('{"run_id": "x", "status": "done", "phase": "final"}', "is not its folder's name"),
    ('{"run_id": "bad", "status": "finished", "phase": "final"}', "unknown status"),
    ('{"run_id": "bad", "sta', "not valid JSON"),
    ('{"run_id": "bad", "status": "done", "phase": "final"}',
     "a done run's record lacks model, metrics, dataset"),
    ('{"run_id": "bad", "status": "done", "phase": "final", "model": null, "metrics": null, '
     '"dataset": "isic"}', "a done run's record lacks model, metrics;"),
    ('{"run_id": "bad", "status": "diverged", "phase": "search", "model": "resnet18", '
     '"dataset": "isic", "metrics": []}', "its metrics are a JSON list"),
])
def test_a_malformed_record_is_named_never_dropped(tmp_path, cli_error, content, problem):
    _fake(tmp_path, "good")
    (tmp_path / "runs" / "bad").mkdir()
    (tmp_path / "runs" / "bad" / "record.json").write_text(content)
    with pytest.raises(StoreError, match=problem):
        store.load_records(tmp_path)
    rc = cli.main(["compare", str(tmp_path)])
    cli_error(rc, 2, str(tmp_path / "runs" / "bad" / "record.json"), problem,
                    "delete that run folder")


def test_every_malformed_record_is_listed(tmp_path):
    _fake(tmp_path, "good")
    for name, content in (("a", "[]"), ("b", "{}")):
        (tmp_path / "runs" / name).mkdir()
        (tmp_path / "runs" / name / "record.json").write_text(content)
    with pytest.raises(StoreError, match=r"2 malformed run record\(s\).*runs/a/.*runs/b/"):
        list(store.iter_records(tmp_path))


def test_a_finished_record_is_never_overwritten_by_an_unfinished_one(tmp_path):
    rec = _fake(tmp_path, "r1")
    path = store.run_dir(tmp_path, "r1") / store.RECORD
    before = path.read_text()
    with pytest.raises(StoreError, match="already done"):
        store.write_record(tmp_path, {**rec, "status": "running", "history": [], "metrics": {}})
    assert path.read_text() == before


# ---------------------------------------------------------------------------------------------
# read-only folder and full disk: real file systems where this machine allows mounting them
# ---------------------------------------------------------------------------------------------


def _mount(path, options):
    path.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], check=True,
                       capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return False
    return True


def _umount(path):
    subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30)


@contextlib.contextmanager
def read_only_copy(src, dst):
    """``src`` copied to ``dst`` and made read-only: a read-only tmpfs where mounting works (root
    ignores file modes), file modes otherwise."""
    if os.geteuid() == 0:
        if not _mount(dst, "size=64m"):
            pytest.skip("cannot mount a tmpfs here (needed to make a folder read-only for root)")
        try:
            shutil.copytree(src, dst, dirs_exist_ok=True)
            subprocess.run(["mount", "-o", "remount,ro", str(dst)], check=True,
                           capture_output=True, timeout=30)
            yield dst
        finally:
            _umount(dst)
    else:
        shutil.copytree(src, dst)
        for p in [dst, *dst.rglob("*")]:
            p.chmod(p.stat().st_mode & ~0o222)
        try:
            yield dst
        finally:
            for p in [dst, *dst.rglob("*")]:
                p.chmod(p.stat().st_mode | 0o200)


@pytest.fixture(scope="module")
def finished(derm, tmp_path_factory):
    """A runs folder holding one finished run, as `medattn train` leaves it."""
    runs = tmp_path_factory.mktemp("finished")
    _train(derm, runs)
    return runs


def _study_yaml(derm, path):
    path.write_text(json.dumps({
        "name": "t", "datasets": [{"data": derm[0], "ood": [derm[1]]}], "models": ["resnet18"],
        "search": {"lr": [0.01], "weight_decay": [0.0]}, "final": {"splits": 2},
        "train": SETTINGS}))
    return str(path)


@pytest.mark.slow
def test_a_read_only_runs_folder_is_a_one_line_error(derm, finished, tmp_path, cli_error):
    with read_only_copy(finished, tmp_path / "ro") as ro:
        before = {p: p.read_bytes() for p in ro.rglob("*") if p.is_file()}
        rc = cli.main(_cli_args(derm, ro, "--split-seed", "1"))  # a new run: must write
        cli_error(rc, 2, str(ro), "read-only" if os.geteuid() == 0 else "permission")
        rc = cli.main(["study", _study_yaml(derm, tmp_path / "s.yaml"), "--out", str(ro)])
        cli_error(rc, 2, str(ro))
        for command in (["report", str(ro)], ["features", str(ro)],
                        ["explain", str(ro), "--n-mean", "4", "--models", "resnet18"]):
            rc = cli.main(command)
            cli_error(rc, 2, str(ro))
        assert {p: p.read_bytes() for p in ro.rglob("*") if p.is_file()} == before


def test_a_full_disk_stops_the_study_with_one_line(derm, tmp_path, cli_error,
                                                    monkeypatch):
    runs = tmp_path / "small"
    mounted = os.geteuid() == 0 and _mount(runs, "size=1m")
    if not mounted:  # simulate it: the disk fills up at the first flush
        def full(path):
            raise OSError(28, os.strerror(28))
        monkeypatch.setattr(store, "_fsync", full)
    try:
        config = _study_yaml(derm, tmp_path / "s.yaml")
        rc = cli.main(["study", config, "--out", str(runs)])
        err = cli_error(rc, 2, str(runs), "no space left on the device")
        assert "free some space" in err
        started = [d for d in (runs / "runs").iterdir() if (d / store.RECORD).exists()] \
            if (runs / "runs").exists() else []
        assert len(started) <= 1  # the study stopped at the first run, not after failing each
        assert list(runs.rglob("*.tmp")) == []
    finally:
        if mounted:
            _umount(runs)
