"""The Ray backend against a real single-node cluster that the test starts on this machine (on a
free port, never the default one, stopped afterwards even on failure): a worker killed mid-run is
retried and the run resumes from its checkpoint; a run whose worker dies on every try is recorded
`failed` with the cause and stops the study before hyper-parameter selection. Connecting to an
address where no cluster listens fails in one line, fast."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from medattn import cli
from medattn.errors import ConfigError
from medattn.runs import lock, store
from medattn.training.backends import RayBackend

ray = pytest.importorskip("ray", reason="Ray not installed (pip install 'medattn[ray]')")
pytestmark = pytest.mark.slow

SRC = str(Path(__file__).resolve().parents[1] / "src")
# Token authentication off on both sides: a token file in ~/.ray would otherwise switch it on for
# the head only. OMP: one thread per worker on a small machine.
ENV = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
       "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def _ray_cli() -> str:
    beside = Path(sys.executable).with_name("ray")
    return str(beside) if beside.exists() else shutil.which("ray") or pytest.skip("no ray CLI")


@pytest.fixture
def cluster():
    """``ray start --head --block`` on a free port with 2 CPUs; its address. Terminating the
    blocking `ray start` stops exactly the processes it started (`ray stop` would stop every Ray
    on the machine, other users' too)."""
    port = _free_port()
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths must fit
    log = open(Path(temp) / "head.log", "w")
    head = subprocess.Popen([_ray_cli(), "start", "--head", f"--port={port}", "--num-cpus=2",
                             "--block", "--include-dashboard=false", "--disable-usage-stats",
                             f"--temp-dir={temp}"], env=ENV, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if head.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("the Ray head did not start: "
                                + (Path(temp) / "head.log").read_text()[-2000:])
                time.sleep(0.3)
        yield f"127.0.0.1:{port}"
    finally:
        head.send_signal(signal.SIGTERM)
        try:
            head.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()
        log.close()
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def derm(tiny_derm):
    return tiny_derm


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        with open(f"/proc/{pid}/status") as f:
            return "\nState:\tZ" not in f.read()
    except (ProcessLookupError, FileNotFoundError):
        return False


def _worker(runs: Path, run_id: str, not_in=()) -> int | None:
    """PID of the live worker holding the run's lock (other than ``not_in``), if any."""
    pid = lock.holder(store.run_dir(runs, run_id) / store.LOCK).get("pid")
    return pid if pid and pid not in not_in and _alive(pid) else None


def _epochs_saved(runs: Path, run_id: str) -> int:
    try:
        return json.loads((store.run_dir(runs, run_id) / store.RESUME_JSON).read_text())["epoch"]
    except (OSError, ValueError, KeyError):
        return 0


def test_a_dead_address_is_a_one_line_error_at_once(derm, tmp_path, cli_error):
    port = _free_port()  # nothing listens there
    t0 = time.monotonic()
    with pytest.raises(ConfigError, match=rf"^address=127\.0\.0\.1:{port}: cannot reach a Ray "
                                          r"cluster .*refused"):
        RayBackend(address=f"127.0.0.1:{port}", connect_timeout=5)._init()
    config = tmp_path / "c.yaml"
    config.write_text(json.dumps({
        "name": "t", "datasets": [{"data": derm[0]}], "models": ["resnet18"],
        "search": {"lr": [0.01], "weight_decay": [0.0]}, "final": {"splits": 1},
        "train": {"epochs": 1, "image_size": 32, "pretrained": False}}))
    rc = cli.main(["study", str(config), "--out", str(tmp_path / "runs"), "--backend", "ray",
                   "--address", f"127.0.0.1:{port}"])
    cli_error(rc, 2, f"--address 127.0.0.1:{port}", "cannot reach a Ray cluster")
    assert time.monotonic() - t0 < 60  # Ray alone retries for minutes


def test_a_real_cluster_passes_the_probe_and_connects_within_the_deadline(cluster):
    from medattn.training.ray_connect import probe

    probe(cluster, 10)  # Ray's GCS answers GetClusterId
    t0 = time.monotonic()
    try:
        RayBackend(address=cluster, connect_timeout=60)._init()
        assert ray.is_initialized() and ray.cluster_resources().get("CPU") == 2
    finally:
        ray.shutdown()
    assert time.monotonic() - t0 < 60


def test_killed_workers_are_retried_and_a_lost_run_stops_selection(derm, tmp_path, cluster):
    runs = tmp_path / "runs"
    config = tmp_path / "c.yaml"
    config.write_text(json.dumps({
        "name": "t", "datasets": [{"data": derm[0], "ood": [derm[1]]}], "models": ["resnet18"],
        "search": {"lr": [0.01, 0.05], "weight_decay": [0.0], "splits": 1},
        "final": {"splits": 1},
        "train": {"epochs": 4, "batch_size": 16, "image_size": 32, "pretrained": False,
                  "threads": 1}}))
    log = tmp_path / "study.log"  # a file, not a pipe: Ray's worker logs could fill a pipe
    with open(log, "w") as f:
        study = subprocess.Popen([sys.executable, "-m", "medattn.cli", "study", str(config),
                                  "--out", str(runs), "--backend", "ray", "--address", cluster,
                                  "--retries", "1"], env=ENV, stdout=f, stderr=subprocess.STDOUT,
                                 start_new_session=True)
    killed: list[int] = []
    try:
        deadline = time.monotonic() + 300
        ids = {}
        while len(ids) < 2:  # the two search runs, by learning rate
            assert time.monotonic() < deadline and study.poll() is None, log.read_text()[-3000:]
            ids = {d.name.split("-lr")[1].split("-")[0]: d.name
                   for d in (runs / "runs").glob("search-*")} if (runs / "runs").is_dir() else {}
            time.sleep(0.1)
        resumed, lost = ids["0.01"], ids["0.05"]
        state = {resumed: "wait-epoch", lost: "kill-1"}
        while any(s != "done" for s in state.values()):
            assert time.monotonic() < deadline, state
            assert study.poll() is None, log.read_text()[-3000:]
            for rid, s in state.items():
                pid = _worker(runs, rid, killed)
                if s == "wait-epoch" and pid and _epochs_saved(runs, rid) >= 1:
                    os.kill(pid, signal.SIGKILL)  # mid-run, its epoch 1 checkpointed
                    killed.append(pid)
                    state[rid] = "done"
                elif s.startswith("kill-") and pid:
                    os.kill(pid, signal.SIGKILL)  # every try of this one dies
                    killed.append(pid)
                    state[rid] = "kill-2" if s == "kill-1" else "done"
            time.sleep(0.05)
        study.wait(timeout=300)
    finally:
        if study.poll() is None:
            os.killpg(study.pid, signal.SIGKILL)
            study.wait()
    err = log.read_text()
    assert study.returncode == 1, err[-3000:]
    # one error line (Ray's own log lines about the dead workers may come after it)
    errors = [ln for ln in err.splitlines() if ln.startswith("medattn study: error: ")]
    assert len(errors) == 1, err[-3000:]
    tail = errors[0]
    assert tail.startswith("medattn study: error: 1 of 2 search run(s) did not finish")
    assert lost in tail
    assert "no hyper-parameters were selected" in tail
    assert "run the study again to resume it)" in tail  # the run's message whole, not cut
    assert "\x1b[" not in err  # Ray's coloured worker prefixes: not in a log file

    rec = store.read_record(store.run_dir(runs, resumed))  # retried, resumed after epoch 1
    assert rec["status"] in store.FINISHED and rec["timings"]["sessions"] == 2
    assert [h["epoch"] for h in rec["history"]] == [1, 2, 3, 4]
    rec = store.read_record(store.run_dir(runs, lost))
    assert rec["status"] == "failed"
    assert rec["message"].startswith("lost: the Ray worker running it died 2 time(s)")
    assert not (runs / "selection.csv").exists()
    assert not list((runs / "runs").glob("final-*"))
