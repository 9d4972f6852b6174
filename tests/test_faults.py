"""Faults of issue 21: a kill during the resume-state write, checkpoints that must be identical,
temporary files of libraries. The kill test starts a real `medattn train` process."""

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from medattn.runs import store
from medattn.training.config import RunSpec, TrainSettings
from medattn.training.engine import train_run

SRC = str(Path(__file__).resolve().parents[1] / "src")
ENV = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
       "OPENBLAS_NUM_THREADS": "1"}


def _temporaries(runs: Path) -> list[Path]:
    """Every temporary a writer can leave in a run folder: ours and a library's."""
    return [p for p in (runs / "runs").rglob("*")
            if p.is_file() and (p.name.endswith(".tmp") or p.name.startswith(".tmp"))]


def _train_cmd(derm, runs: Path, epochs: int) -> list[str]:
    return [sys.executable, "-m", "medattn.cli", "train", "--model", "resnet18", "--data", derm[0],
            "--runs", str(runs), "--epochs", str(epochs), "--batch-size", "16", "--image-size",
            "32", "--no-pretrained", "--threads", "1", "-q"]


def _being_written(runs: Path) -> list[Path]:
    """Temporaries that already hold data (over 1 MB: the resume state's or the model's bytes,
    not the empty placeholder the atomic writer creates first)."""
    out = []
    for p in _temporaries(runs) if (runs / "runs").is_dir() else []:
        try:
            if p.stat().st_size > 1 << 20:
                out.append(p)
        except FileNotFoundError:  # renamed meanwhile
            pass
    return out


def _kill_during_a_write(cmd: list[str], runs: Path) -> list[Path]:
    """Start ``cmd``, SIGKILL its process group as soon as a large file is being written in a
    run folder, and return the temporaries the kill left (empty if the write finished first)."""
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    seen: list[Path] = []
    try:
        deadline = time.monotonic() + 240
        while not seen and proc.poll() is None and time.monotonic() < deadline:
            seen = _being_written(runs)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        _, err = proc.communicate(timeout=60)
    assert seen, f"no temporary file seen while training (exit {proc.returncode}): {err[-2000:]}"
    assert proc.returncode == -signal.SIGKILL
    return _temporaries(runs)


@pytest.mark.slow
def test_a_kill_during_the_resume_state_write_leaves_nothing_on_the_next_start(tiny_derm,
                                                                              tmp_path):
    """SIGKILL of `medattn train` while it writes the resume state (or another file); the next
    start removes whatever temporary the kill left."""
    runs = tmp_path / "runs"
    left: list[Path] = []
    for _ in range(4):  # the write may finish between seeing its file and the kill: try again
        left = _kill_during_a_write(_train_cmd(tiny_derm, runs, 40), runs)
        if left:
            break
    assert left, "no kill hit a write in 4 tries"
    # the next start in that runs folder (here a cheap other run) cleans up before it trains
    again = subprocess.run(_train_cmd(tiny_derm, runs, 1), env=ENV, capture_output=True,
                           text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert _temporaries(runs) == [], f"left by the kill {left}, still there after the rerun"
    for p in (runs / "runs").rglob("*"):
        if p.is_file() and p.name != ".lock":
            assert stat.S_IMODE(p.stat().st_mode) == 0o644, p


@pytest.mark.slow
def test_leftover_temporaries_are_removed_on_start(tiny_derm, tmp_path):
    """A killed writer's `.<name>.<pid>-<hex>.tmp` files (0600, as large as the resume state) are
    removed by the start-up clean-up; files of other shapes are not medattn's and stay."""
    spec = RunSpec(phase="final", dataset="isic", data=tiny_derm[0], model="resnet18", lr=0.01,
                   weight_decay=0.0, split_seed=0,
                   train=TrainSettings(epochs=1, batch_size=16, image_size=32, pretrained=False,
                                       threads=1))
    rec = train_run(spec, tmp_path, progress=False)
    rdir = store.run_dir(tmp_path, rec["run_id"])
    left = [rdir / ".state.safetensors.123-ab3xz9.tmp", tmp_path / ".study.yaml.77-qq1w2e.tmp"]
    for p in left:
        p.write_bytes(b"\0" * 1024)
        p.chmod(0o600)
    keep = [tmp_path / "tmp123456", rdir / "notes.tmpx", tmp_path / ".tmpAb3xZ9",
            tmp_path / "notes.tmp"]  # not of that shape (or not hidden at the top): not ours
    for p in keep:
        p.write_text("mine")
    assert train_run(spec, tmp_path, progress=False) == rec  # finished: only tidied
    assert left[0].exists() is False
    with store.lock_runs_dir(tmp_path):  # what a study and `medattn train` do on start
        assert store.sweep(tmp_path) == 1
    assert [p for p in left if p.exists()] == []
    assert all(p.read_text() == "mine" for p in keep)


@pytest.mark.slow
def test_identical_runs_write_byte_identical_model_files(tiny_derm, tmp_path):
    """Two runs of the same spec in two processes give the same model.safetensors bytes (the
    library's metadata order differs from process to process; medattn writes it sorted)."""
    outs = []
    for i in range(2):
        runs = tmp_path / f"r{i}"
        done = subprocess.run(_train_cmd(tiny_derm, runs, 1), env=ENV, capture_output=True,
                              text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        (model,) = (runs / "runs").glob("*/model.safetensors")
        outs.append(model.read_bytes())
    assert outs[0] == outs[1]


def _deny_creating_in(folder: Path, monkeypatch) -> None:
    """``folder`` as a user who may not write it sees it: creating a file there fails with
    EACCES (the tests run as root, whom file modes do not stop); everything else is real."""
    real = os.open

    def fake_open(path, flags, *args, **kw):
        if flags & os.O_CREAT and Path(path).absolute().parent == folder.absolute():
            raise PermissionError(13, os.strerror(13), str(path))
        return real(path, flags, *args, **kw)
    monkeypatch.setattr(os, "open", fake_open)


@pytest.mark.parametrize("command", ["study", "train"])
def test_a_read_only_empty_out_folder_reports_permission_denied(tiny_derm, tmp_path,
                                                                 monkeypatch, cli_error, command):
    """The lock file's create fails with EACCES; the read-only open of the (missing) file tried
    next must not replace that with "No such file or directory"."""
    from medattn import cli

    ro = tmp_path / "ro"
    ro.mkdir()
    config = tmp_path / "c.yaml"
    config.write_text(f"name: t\ndatasets: [{{data: '{tiny_derm[0]}'}}]\nmodels: [resnet18]\n")
    _deny_creating_in(ro, monkeypatch)
    args = (["study", str(config), "--out", str(ro)] if command == "study" else
            ["train", "--model", "resnet18", "--data", tiny_derm[0], "--runs", str(ro),
             "--no-pretrained", "-q"])
    line = cli_error(cli.main(args), 2, str(ro / ".lock"), "permission denied",
                     "make the folder writable")
    assert "No such file" not in line
    assert list(ro.iterdir()) == []


@pytest.mark.parametrize("name", ["../../ESCAPED", "/tmp/medattn-escaped", "a/b", "..", "x y"])
def test_a_study_name_that_is_not_a_plain_name_is_refused(tiny_derm, tmp_path, monkeypatch,
                                                          cli_error, name):
    """The study name names the default runs folder: one that holds a path would write
    study.yaml, selection.csv, runs/ and cache/ outside the working folder."""
    import json

    from medattn import cli

    work = tmp_path / "a" / "b" / "work"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    config = work / "c.yaml"
    config.write_text(json.dumps({  # a study that would run: only the name can stop it
        "name": name, "datasets": [{"data": tiny_derm[0]}], "models": ["resnet18"],
        "search": {"lr": [0.01], "weight_decay": [0.0], "splits": 1}, "final": {"splits": 1},
        "train": {"epochs": 1, "batch_size": 16, "image_size": 32, "pretrained": False,
                  "threads": 1}}))
    before = sorted(tmp_path.rglob("*"))
    line = cli_error(cli.main(["study", str(config)]), 2, str(config), "`name`",
                     "may only hold letters, digits, '-' and '_'")
    assert repr(name) in line
    assert sorted(tmp_path.rglob("*")) == before  # nothing written anywhere
    assert not Path("/tmp/medattn-escaped").exists()


def test_a_config_file_name_with_other_characters_gives_a_plain_study_name(tmp_path):
    from medattn.training.config import load_config

    config = tmp_path / "my study.v2.yaml"
    config.write_text("datasets: [{data: 'isic:data'}]\nmodels: [resnet18]\n")
    assert load_config(str(config)).name == "my_study_v2"


def test_an_unfinished_run_is_reported_with_its_whole_message(tmp_path):
    """The Ray give-up message ends with what to do; the study's summary cut it at 200
    characters ("...run the s).")."""
    from medattn.training.backends import record_lost
    from medattn.training.study import unfinished

    spec = RunSpec(phase="search", dataset="isic", data="isic:/nowhere", model="resnet18",
                   lr=0.01, weight_decay=0.0, split_seed=0)
    cause = ("lost: the Ray worker running it died 4 time(s) (last: WorkerCrashedError: "
             + "The worker died unexpectedly while executing this task. " * 3
             + "); run the study again to resume it")
    record_lost(tmp_path, spec, cause)
    ((rid, status, msg),) = unfinished([spec], tmp_path)
    assert (rid, status) == (spec.run_id, "failed")
    assert msg == cause


def _minimal_done(runs: Path, run_id: str) -> Path:
    path = runs / "runs" / run_id / "record.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"run_id": run_id, "status": "done", "phase": "search"}))
    return path


def test_a_finished_record_without_its_fields_stops_every_command(tiny_derm, tmp_path,
                                                                  cli_error):
    """A record with only run_id/status/phase passed `study` as a finished run (n=1, no
    metrics); every command now names it as malformed."""
    import json

    from medattn import cli
    from medattn.training.config import load_config
    from medattn.training.study import search_specs

    config = tmp_path / "c.yaml"
    config.write_text(json.dumps({
        "name": "t", "datasets": [{"data": tiny_derm[0]}], "models": ["resnet18"],
        "search": {"lr": [0.01, 0.05], "weight_decay": [0.0], "splits": 1},
        "final": {"splits": 1}, "train": {"epochs": 1, "batch_size": 16, "image_size": 32,
                                          "pretrained": False, "threads": 1}}))
    runs = tmp_path / "runs"
    specs = search_specs(load_config(str(config)))
    bad = _minimal_done(runs, specs[0].run_id)
    for command in (["study", str(config), "--out", str(runs)], ["compare", str(runs)],
                    ["report", str(runs)], ["features", str(runs)], ["explain", str(runs)]):
        rc = cli.main(command)
        cli_error(rc, 2, str(bad), "malformed run record", "lacks model, metrics, dataset")
    assert not (runs / "selection.csv").exists()


def test_a_plugin_that_fails_to_import_is_reported_not_guessed_at(tmp_path, monkeypatch,
                                                                  cli_error):
    """`study` with a plugin module that raises on import added "Did you mean resnet18 or
    resnet18+se?" to the error; it reports the import error alone (every time)."""
    from medattn import cli
    from medattn.models import registry

    (tmp_path / "broken_plugin.py").write_text("raise ImportError('needs the package foo')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("MEDATTN_PLUGINS", "broken_plugin")
    monkeypatch.setitem(registry._state, "plugins", None)
    config = tmp_path / "c.yaml"
    config.write_text("name: t\ndatasets: [{data: 'isic:data'}]\nmodels: [resnet18+se]\n")
    for _ in range(2):  # the second lookup must not pass with the plugin silently missing
        line = cli_error(cli.main(["study", str(config)]), 2, "`models[0]`",
                         "'broken_plugin' failed to import", "needs the package foo")
        assert "Did you mean" not in line
