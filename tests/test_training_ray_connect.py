"""Joining a Ray cluster at an address where something else listens (issue 21): a silent socket,
a web server, a gRPC server that is not Ray's GCS (as Ray's client port is). Each is a one-line
error within the connect deadline that says what was found, never a hang. All on 127.0.0.1."""

import http.server
import json
import socket
import threading
import time
from concurrent import futures

import pytest

from medattn import cli
from medattn.errors import ConfigError
from medattn.training.backends import RayBackend

pytest.importorskip("ray", reason="Ray not installed (pip install 'medattn[ray]')")
grpc = pytest.importorskip("grpc", reason="grpcio comes with Ray")


@pytest.fixture
def silent():
    """A TCP socket that accepts connections (the kernel does) and never says anything."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    yield f"127.0.0.1:{s.getsockname()[1]}"
    s.close()


@pytest.fixture
def web():
    """`python -m http.server` on a free port."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _QuietHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def other_grpc():
    """A gRPC server without Ray's GCS methods, as Ray's client server (port 10001) is."""
    server = grpc.server(futures.ThreadPoolExecutor(2))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(0)


def _refused(address, timeout, *needles):
    t0 = time.monotonic()
    with pytest.raises(ConfigError) as info:
        RayBackend(address=address, connect_timeout=timeout)._init()
    took = time.monotonic() - t0
    msg = str(info.value)
    assert msg.startswith(f"address={address}: ") and "\n" not in msg  # the library's name
    for needle in needles:
        assert needle in msg, (needle, msg)
    return took, msg


@pytest.mark.slow
def test_a_silent_socket_is_given_up_at_the_deadline(silent):
    took, _ = _refused(silent, 3, "accepts connections", "no answer as a Ray cluster within 3 s",
                       "(connect_timeout)", "ray status")
    assert 2.5 < took < 15


def test_a_web_server_is_named(web):
    took, _ = _refused(web, 5, "a web (HTTP) server listens at", "give the address of the "
                       "cluster's head")
    assert took < 10


def test_a_grpc_server_that_is_not_the_gcs_points_to_the_client_port(other_grpc):
    took, msg = _refused(other_grpc, 5, "not a Ray GCS", "client server, port 10001",
                         f"ray://{other_grpc}")
    assert took < 10


@pytest.mark.slow
def test_connect_timeout_is_a_study_option_and_bounds_the_whole_attempt(tiny_derm, tmp_path,
                                                                       silent, cli_error):
    config = tmp_path / "c.yaml"
    config.write_text(json.dumps({
        "name": "t", "datasets": [{"data": tiny_derm[0]}], "models": ["resnet18"],
        "search": {"lr": [0.01], "weight_decay": [0.0]}, "final": {"splits": 1},
        "train": {"epochs": 1, "image_size": 32, "pretrained": False}}))
    t0 = time.monotonic()
    rc = cli.main(["study", str(config), "--out", str(tmp_path / "runs"), "--backend", "ray",
                   "--address", silent, "--connect-timeout", "2"])
    cli_error(rc, 2, f"--address {silent}", "within 2 s")
    assert time.monotonic() - t0 < 30
    rc = cli.main(["study", str(config), "--out", str(tmp_path / "runs"), "--backend", "ray",
                   "--address", silent, "--connect-timeout", "0"])
    cli_error(rc, 2, "--connect-timeout must be")


@pytest.mark.slow
def test_ray_init_itself_is_bounded_by_the_deadline(silent, monkeypatch):
    """Where the probe cannot tell (an address that is not host:port) or passes, a `ray.init`
    that does not return is given up at the deadline, not waited for."""
    import ray

    from medattn.training import ray_connect

    monkeypatch.setattr(ray_connect, "probe", lambda address, timeout: None)
    monkeypatch.setattr(ray, "init", lambda **kw: time.sleep(3600))
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    t0 = time.monotonic()
    with pytest.raises(ConfigError, match=r"Ray did not connect within 2 s \(connect_timeout\)"):
        RayBackend(address=silent, connect_timeout=2)._init()
    assert time.monotonic() - t0 < 10


def test_worker_log_lines_carry_no_colour_codes_when_not_on_a_terminal(monkeypatch, capsys):
    """Ray prefixes each worker line with `(_remote_train pid=...)` in colour; in a log file
    those are escape codes. The backend asks Ray for none when the output is not a terminal."""
    from ray._private import worker

    from medattn.training.ray_connect import plain_logs

    monkeypatch.delenv("RAY_COLOR_PREFIX", raising=False)
    plain_logs()  # stdout and stderr are captured here: not terminals
    import io
    out = io.StringIO()
    worker.print_worker_logs({"pid": 4242, "ip": "10.0.0.1", "localhost": "10.0.0.2",
                              "lines": ["epoch 1 done"], "is_err": False, "task_name": "t",
                              "actor_name": ""}, out)
    assert "epoch 1 done" in out.getvalue() and "pid=4242" in out.getvalue()
    assert "\x1b" not in out.getvalue()


@pytest.mark.slow
def test_ray_log_deduplication_is_off_when_plain_logs_runs_before_ray_is_imported():
    """Ray marks deduplicated lines `[repeated 2x across cluster]` in colour whatever
    RAY_COLOR_PREFIX says (seen in a CI log file); with output not on a terminal, plain_logs turns
    deduplication off, which Ray reads when it is imported."""
    import os
    import subprocess
    import sys

    code = ("from medattn.training.ray_connect import plain_logs; plain_logs(); "
            "from ray._private import ray_constants as c; print(c.RAY_DEDUP_LOGS)")
    from pathlib import Path

    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1] / "src")  # this checkout's code
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
