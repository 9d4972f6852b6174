"""A torch / torchvision pair that cannot run together is caught at the CLI's start, in one
message with the pip line that fixes it (issue 26, item 7). The mismatch is simulated: PyTorch's
CPU index cannot be reached from the test machines."""

import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
import torchvision

from medattn import cli
from medattn.install_check import CPU_INDEX, InstallError, check_torch_install, fix_command

SRC = str(Path(__file__).resolve().parents[1] / "src")


def test_matching_install_passes():
    check_torch_install()  # the environment the tests run in works


def test_cpu_torch_with_cuda_torchvision_is_caught(monkeypatch):
    monkeypatch.setattr(torch, "__version__", "2.13.0+cpu")
    monkeypatch.setattr(torchvision, "__version__", "0.28.0+cu130")
    with pytest.raises(InstallError) as err:
        check_torch_install()
    msg = str(err.value)
    assert "torch 2.13.0+cpu" in msg and "torchvision 0.28.0+cu130" in msg
    assert f"pip install --force-reinstall torch torchvision --index-url {CPU_INDEX}" in msg


def test_broken_nms_operator_is_caught(monkeypatch):
    def nms(*a, **k):
        raise RuntimeError("operator torchvision::nms does not exist")

    fake = types.SimpleNamespace(__version__="0.29.1", ops=types.SimpleNamespace(nms=nms))
    monkeypatch.setattr(torch, "__version__", "2.14.1")
    monkeypatch.setitem(sys.modules, "torchvision", fake)
    with pytest.raises(InstallError, match="torchvision::nms does not exist") as err:
        check_torch_install()
    assert fix_command("2.14.1") in str(err.value)


def test_cli_reports_the_mismatch_before_the_command_runs(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(torch, "__version__", "2.13.0+cpu")
    monkeypatch.setattr(torchvision, "__version__", "0.28.0")  # PyPI's CUDA build, untagged
    called = []
    monkeypatch.setattr("medattn.demo.run_demo", lambda *a, **k: called.append(a))
    rc = cli.main(["demo", "--quick", "--out", str(tmp_path / "d")])
    err = capsys.readouterr().err
    assert rc == InstallError.exit_code and not called
    assert err.count("\n") == 1 and "--index-url" in err and "Traceback" not in err


@pytest.mark.slow
def test_import_failure_in_a_fresh_process_is_one_message(tmp_path):
    """The failure as users saw it: ``import torchvision`` raising the nms RuntimeError."""
    fake = tmp_path / "torchvision"
    fake.mkdir()
    (fake / "__init__.py").write_text(
        'raise RuntimeError("operator torchvision::nms does not exist")\n')
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), SRC])}
    proc = subprocess.run([sys.executable, "-m", "medattn.cli", "demo", "--quick", "--out",
                           str(tmp_path / "demo")], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == InstallError.exit_code, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert "torchvision::nms does not exist" in proc.stderr
    assert "pip install --force-reinstall torch torchvision" in proc.stderr
    assert not (tmp_path / "demo").exists()
