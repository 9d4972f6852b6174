"""The run store: one directory per run with its record, model, resume state and predictions.

Layout and record fields are fixed in ``docs/architecture.md``; every file is written atomically
(temporary file in the same directory, then :func:`os.replace`), so a kill at any moment leaves
either the old or the new version, never a torn one.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medattn.errors import DataError

RECORD = "record.json"
MODEL = "model.safetensors"
RESUME = "resume.safetensors"
RESUME_JSON = "resume.json"
FINISHED = ("done", "diverged")  # a run in one of these states is never trained again


def runs_root(runs_dir: str | os.PathLike) -> Path:
    return Path(runs_dir) / "runs"


def run_dir(runs_dir: str | os.PathLike, run_id: str) -> Path:
    return runs_root(runs_dir) / run_id


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` then move the temporary file onto ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _clean(obj: Any) -> Any:
    """JSON-safe copy: numpy scalars to Python, NaN/inf to None (JSON has no NaN)."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_json(path: str | os.PathLike, obj: Any) -> None:
    text = json.dumps(_clean(obj), indent=2, sort_keys=False)

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text + "\n")
    atomic_write(path, write)


def write_text(path: str | os.PathLike, text: str) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
    atomic_write(path, write)


def read_record(path: str | os.PathLike) -> dict[str, Any] | None:
    """The record in a run directory (or a record.json path), or None if there is none yet."""
    p = Path(path)
    p = p / RECORD if p.is_dir() else p
    if not p.exists():
        return None
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataError(f"{p}: run record is not valid JSON ({err}); delete the file to "
                        "re-run this run.") from None


def write_record(runs_dir: str | os.PathLike, record: dict[str, Any]) -> Path:
    path = run_dir(runs_dir, record["run_id"]) / RECORD
    write_json(path, record)
    return path


def iter_records(runs_dir: str | os.PathLike) -> Iterator[dict[str, Any]]:
    """All run records under ``runs_dir``, in run-id order."""
    root = runs_root(runs_dir)
    if not root.is_dir():
        return
    for d in sorted(root.iterdir()):
        rec = read_record(d) if d.is_dir() else None
        if rec is not None:
            yield rec


_SCALARS = ("run_id", "status", "phase", "model", "backbone", "variant", "dataset", "data",
            "split_seed", "lr", "weight_decay", "batch_size", "epochs", "image_size",
            "best_epoch", "data_fingerprint", "message")


def load_records(runs_dir: str | os.PathLike) -> pd.DataFrame:
    """One row per run: the record's scalar fields plus ``bacc_<set>`` per evaluated set.

    Sets are ``val``, ``test`` and ``ood-<name>``; a balanced accuracy is a fraction in [0, 1]
    (NaN where the set was not evaluated, e.g. a run that diverged with a NaN loss).
    """
    rows = []
    for rec in iter_records(runs_dir):
        row = {k: rec.get(k) for k in _SCALARS}
        row["seconds"] = (rec.get("timings") or {}).get("total_seconds")
        for name, m in (rec.get("metrics") or {}).items():
            v = m.get("balanced_accuracy")
            row[f"bacc_{name}"] = float("nan") if v is None else float(v)
        rows.append(row)
    df = pd.DataFrame(rows, columns=list(_SCALARS) + ["seconds"] if not rows else None)
    return df


def write_predictions(path: str | os.PathLike, table: pd.DataFrame) -> None:
    """Write a predictions table (columns ``row, image_id, label, pred, prob_*, logit_*``)."""
    atomic_write(path, lambda tmp: table.to_csv(tmp, index=False, float_format="%.7g"))


def read_predictions(runs_dir: str | os.PathLike, run_id: str, set_name: str) -> pd.DataFrame:
    """The predictions of one run on one set (``test`` or ``ood-<name>``)."""
    p = run_dir(runs_dir, run_id) / "predictions" / f"{set_name}.csv"
    if not p.exists():
        raise DataError(f"{p}: no predictions for set {set_name!r} in run {run_id}.")
    return pd.read_csv(p, dtype={"image_id": str})
