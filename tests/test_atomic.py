"""Every writer of medattn goes through the one atomic_write: its files are 0644 under umask 022,
and a crash while a file is written leaves the previous version intact and no temporary file."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medattn.runs import atomic
from medattn.errors import StoreError


class Crash(Exception):
    """Stands for a kill in the middle of a write."""


@pytest.fixture
def umask022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _crash_after_writing(monkeypatch):
    """Make atomic_write fail after the writer filled its temporary file and before the move: the
    moment a kill does the most harm. A writer that bypasses atomic_write does not crash."""
    def boom(path):
        assert Path(path).stat().st_size > 0  # the temporary file was written
        raise Crash(path)
    monkeypatch.setattr(atomic, "_fsync", boom)


def _leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


# One entry per writer: (name, write(path) -> the file written). Each writes twice; the second
# write crashes and must leave the first one's bytes.
def _store_json(path: Path) -> Path:
    from medattn.runs import store

    return store.write_json(path / "record.json", {"x": float(len(list(path.iterdir())))})


def _store_predictions(path: Path) -> Path:
    from medattn.runs import store

    out = path / "predictions" / "test.csv"
    store.write_predictions(out, pd.DataFrame({"row": [0, 1], "pred": [1, len(list(path.rglob("*")))]}))
    return out


def _weights(path: Path) -> Path:
    import torch

    from medattn.models.weights import save_checkpoint

    model = torch.nn.Linear(3, 2)
    with torch.no_grad():
        model.weight.fill_(float(len(list(path.iterdir()))))
    return save_checkpoint(model, path / "model.safetensors")


def _compare(path: Path) -> Path:
    from medattn.report.table2 import run_compare

    fmt = "csv" if (path / "table2.out").exists() else "json"
    run_compare(summary="paper", fmt=fmt, out=str(path / "table2.out"))
    return path / "table2.out"


def _latex_table(path: Path) -> Path:
    from medattn.report.tables import write_table

    n = len(list(path.iterdir()))
    return write_table(path, "t", pd.DataFrame({"a": [n, n + 1]}))[0]


def _report(path: Path) -> Path:
    from medattn.report import build_report

    runs = path / "study"
    (runs / "runs").mkdir(parents=True, exist_ok=True)
    (runs / "study.yaml").write_text(f"name: s{len(list(runs.rglob('*')))}\n")
    return build_report(runs, parameters=False).html


def _overlay(path: Path) -> Path:
    from medattn.explain.grid import save_overlay

    out = path / "map.png"
    eye = np.eye(8)
    save_overlay(out, None, eye[::-1] if out.exists() else eye)
    return out


def _demo_summary(path: Path) -> Path:
    import contextlib
    import io
    import types

    from medattn import demo

    k = len(list(path.iterdir()))
    summ = pd.DataFrame({"dataset": ["d"], "model": ["resnet18"], "set": ["test"],
                         "mean_pct": [50.0 + k], "sd_pct": [1.0], "n": [2], "n_diverged": [0]})
    sel = pd.DataFrame({"dataset": ["d"], "model": ["resnet18"], "lr": [1e-3],
                        "weight_decay": [0.0], "mean_val_bacc": [0.5], "n_runs": [2],
                        "source": ["search"]})
    ctx = types.SimpleNamespace(result=types.SimpleNamespace(selection=sel), summary=summ,
                                out=path, files={})
    with contextlib.redirect_stdout(io.StringIO()):
        demo.write_summary(ctx)
    return path / "summary.csv"


def _feature_cache(path: Path) -> Path:
    from medattn.analysis.features.extract import _write_cache

    out = path / "features.csv"
    _write_cache(out, {"a": {"asymmetry": float(out.exists())}}, key="k")
    return out


def _feature_tables(path: Path) -> Path:
    from medattn.analysis.features.usage_run import write_csv

    out = path / "decisions.csv"
    write_csv(out, pd.DataFrame({"used": [out.exists()]}))
    return out


def _synthetic_metadata(path: Path) -> Path:
    from medattn.data.synthetic.derm import _write_csv

    out = path / "metadata.csv"
    _write_csv(out, ["isic_id", "age_approx"], [{"isic_id": "ISIC_0000000",
                                                  "age_approx": 40 + out.exists()}])
    return out


def _synthetic_truth(path: Path) -> Path:
    from medattn.data.synthetic.derm import TRUTH_FILE, DermConfig, _write_truth

    _write_truth(path, DermConfig(), seed=int((path / TRUTH_FILE).exists()))
    return path / TRUTH_FILE


WRITERS = {"store json": _store_json, "store predictions": _store_predictions,
           "checkpoint": _weights, "compare --out": _compare, "report table": _latex_table,
           "report": _report, "explain overlay": _overlay, "demo summary": _demo_summary,
           "feature cache": _feature_cache, "feature tables": _feature_tables,
           "synthetic metadata": _synthetic_metadata, "synthetic truth": _synthetic_truth}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(WRITERS))
def test_writer_is_atomic_and_readable(name, tmp_path, umask022, monkeypatch):
    write = WRITERS[name]
    first = write(tmp_path)
    assert _mode(first) == 0o644, f"{name} wrote {first} with mode {oct(_mode(first))}"
    before = first.read_bytes()
    with monkeypatch.context() as m:
        _crash_after_writing(m)
        with pytest.raises(Crash):
            write(tmp_path)
    assert first.read_bytes() == before, f"{name}: a crashed write changed {first}"
    assert not _leftovers(tmp_path), f"{name} left {_leftovers(tmp_path)}"
    second = write(tmp_path)  # and a later write does replace it
    assert second == first and second.read_bytes() != before and _mode(second) == 0o644


def test_image_cache_entry_is_readable_and_never_torn(tmp_path, umask022, monkeypatch):
    from PIL import Image

    from medattn.data.cache import ImageCache

    src = tmp_path / "img.png"
    Image.new("RGB", (40, 30), (10, 200, 30)).save(src)
    cache = ImageCache(tmp_path / "cache", short_side=16)
    real_save = np.save

    def torn(f, arr, **kw):  # half an entry, then the kill
        real_save(f, arr[: len(arr) // 2], **kw)
        raise Crash()
    monkeypatch.setattr(np, "save", torn)
    with pytest.raises(Crash):
        cache.get_array(str(src))
    assert not cache.entry(str(src)).exists() and not _leftovers(tmp_path / "cache")
    monkeypatch.setattr(np, "save", real_save)
    arr = cache.get_array(str(src))
    assert arr.shape[0] == 16 and _mode(cache.entry(str(src))) == 0o644


def test_atomic_write_reports_a_failing_folder_as_store_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match=str(blocker / "out.txt")):
        atomic.write_text(blocker / "out.txt", "y")  # its parent is a file


def test_write_text_keeps_bytes_and_text(tmp_path, umask022):
    atomic.write_text(tmp_path / "a.bin", b"\x00\xff")
    atomic.write_text(tmp_path / "a.txt", "é\n")
    assert (tmp_path / "a.bin").read_bytes() == b"\x00\xff"
    assert (tmp_path / "a.txt").read_bytes() == "é\n".encode()
