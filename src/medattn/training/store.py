"""The run store: one directory per run with its record, model, resume state and predictions.

Layout and record fields are fixed in ``docs/architecture.md``. Every file is written with
:func:`medattn.atomic.atomic_write` (re-exported here with ``write_json``, ``write_text`` and
``write_error``), so a kill or a crash at any moment leaves either the old or the new version,
never a torn one; files get the mode ``open()`` would give them (0644 under the usual umask).
A process works on a runs folder under :func:`lock_runs_dir` and on a run under :func:`lock_run`;
temporary files of killed writers are removed by :func:`sweep` on the next start. Failing file-system calls raise
:class:`~medattn.errors.StoreError` naming the file and the fix.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medattn.atomic import atomic_write, write_error, write_json, write_text  # noqa: F401
from medattn.atomic import json_safe as _clean  # noqa: F401  (engine's resume state)
from medattn.errors import DataError, StoreError
from medattn.training import lock

RECORD = "record.json"
MODEL = "model.safetensors"
RESUME = "resume.safetensors"
RESUME_JSON = "resume.json"
LOCK = ".lock"
SELECTION_FILE = "selection.csv"
FINISHED = ("done", "diverged")  # a run in one of these states is never trained again
STATUSES = ("running", "done", "diverged", "failed")
PHASES = ("search", "final")


def runs_root(runs_dir: str | os.PathLike) -> Path:
    return Path(runs_dir) / "runs"


def run_dir(runs_dir: str | os.PathLike, run_id: str) -> Path:
    return runs_root(runs_dir) / run_id


# ---------------------------------------------------------------------------------------------
# Locks and clean-up after kills
# ---------------------------------------------------------------------------------------------


def lock_runs_dir(runs_dir: str | os.PathLike, timeout: float = 0.0):
    """Context manager: this process alone writes ``runs_dir`` (a study, ``medattn train``);
    another one is refused with a :class:`StoreError` naming the holder's PID."""
    return lock.exclusive(Path(runs_dir) / LOCK, f"the runs folder {runs_dir}", timeout)


def lock_run(runs_dir: str | os.PathLike, run_id: str, timeout: float = 0.0):
    """Context manager: this process alone trains (or records) run ``run_id``."""
    return lock.exclusive(run_dir(runs_dir, run_id) / LOCK, f"run {run_id}", timeout)


def _unlink_temporaries(paths: Iterator[Path]) -> int:
    n = 0
    for p in paths:
        with contextlib.suppress(OSError):
            p.unlink()
            n += 1
    return n


def sweep_run(runs_dir: str | os.PathLike, run_id: str) -> int:
    """Remove temporary files a killed writer left in a run folder (hold its :func:`lock_run`)."""
    return _unlink_temporaries(run_dir(runs_dir, run_id).rglob("*.tmp"))


def sweep(runs_dir: str | os.PathLike) -> int:
    """Remove temporary files killed writers left in ``runs_dir`` and in every run folder that no
    process is using; returns how many. Call it holding :func:`lock_runs_dir`."""
    n = _unlink_temporaries(Path(runs_dir).glob(".*.tmp"))
    root = runs_root(runs_dir)
    for d in sorted(root.iterdir()) if root.is_dir() else ():
        if d.is_dir():
            with contextlib.suppress(StoreError), lock_run(runs_dir, d.name):
                n += sweep_run(runs_dir, d.name)
    return n


def discard_resume(runs_dir: str | os.PathLike, run_id: str) -> bool:
    """Delete a run's resume state (``--restart``); True if there was any."""
    found = False
    for name in (RESUME, RESUME_JSON):
        try:
            os.unlink(run_dir(runs_dir, run_id) / name)
            found = True
        except FileNotFoundError:
            pass
        except OSError as err:
            raise write_error(err, run_dir(runs_dir, run_id) / name, "delete") from None
    return found


# ---------------------------------------------------------------------------------------------
# Records
# ---------------------------------------------------------------------------------------------


def _problem(rec: Any, folder: str) -> str | None:
    """Why ``rec`` is not a usable run record (None if it is)."""
    if not isinstance(rec, dict):
        return f"holds a JSON {type(rec).__name__}, not an object"
    missing = [k for k in ("run_id", "status", "phase") if k not in rec]
    if missing:
        return f"lacks {', '.join(missing)}"
    if rec["run_id"] != folder:
        return f"its run_id {rec['run_id']!r} is not its folder's name"
    if rec["status"] not in STATUSES:
        return f"unknown status {rec['status']!r}"
    if rec["phase"] not in PHASES:
        return f"unknown phase {rec['phase']!r}"
    return None


def _read(p: Path) -> tuple[dict | None, str | None]:
    """(record, None), (None, None) if absent, or (None, problem)."""
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None, None
    except OSError as err:
        raise write_error(err, p, "read") from None
    try:
        rec = json.loads(text)
    except ValueError as err:
        return None, f"not valid JSON ({err})"
    problem = _problem(rec, p.parent.name)
    return (None, problem) if problem else (rec, None)


def _fix(paths: list[Path]) -> str:
    return (f"delete {'that run folder' if len(paths) == 1 else 'those run folders'} to re-run "
            f"{'it' if len(paths) == 1 else 'them'}, or restore the file(s) from a backup.")


def read_record(path: str | os.PathLike) -> dict[str, Any] | None:
    """The record in a run directory (or a record.json path), or None if there is none yet.

    A malformed record (not JSON, not an object, missing ``run_id``/``status``/``phase``, or a
    ``run_id`` other than its folder's name) raises :class:`StoreError` naming it.
    """
    p = Path(path)
    p = p / RECORD if p.is_dir() else p
    rec, problem = _read(p)
    if problem:
        raise StoreError(f"{p}: malformed run record: {problem}; {_fix([p.parent])}")
    return rec


def write_record(runs_dir: str | os.PathLike, record: dict[str, Any], *,
                 replace_finished: bool = False) -> Path:
    """Write a run's record; a finished (``done``/``diverged``) record is never replaced by an
    unfinished one unless ``replace_finished``."""
    path = run_dir(runs_dir, record["run_id"]) / RECORD
    if not replace_finished and record.get("status") not in FINISHED:
        old, _ = _read(path)
        if old is not None and old.get("status") in FINISHED:
            raise StoreError(f"{path}: run {record['run_id']} is already {old['status']}; a "
                             "finished record is not overwritten.")
    write_json(path, record)
    return path


def iter_records(runs_dir: str | os.PathLike) -> Iterator[dict[str, Any]]:
    """All run records under ``runs_dir``, in run-id order. Malformed ones are never skipped:
    after the others, one :class:`StoreError` lists them all."""
    root = runs_root(runs_dir)
    if not root.is_dir():
        return
    bad = []
    for d in sorted(root.iterdir()):
        if not d.is_dir():
            continue
        rec, problem = _read(d / RECORD)
        if problem:
            bad.append((d, problem))
        elif rec is not None:
            yield rec
    if bad:
        listed = "; ".join(f"{d / RECORD}: {why}" for d, why in bad[:5])
        more = f" (and {len(bad) - 5} more)" if len(bad) > 5 else ""
        raise StoreError(f"{len(bad)} malformed run record(s): {listed}{more}; "
                         f"{_fix([d for d, _ in bad])}")


_SCALARS = ("run_id", "status", "phase", "model", "backbone", "variant", "dataset", "data",
            "split_seed", "lr", "weight_decay", "batch_size", "epochs", "image_size",
            "best_epoch", "data_fingerprint", "message")


def load_records(runs_dir: str | os.PathLike) -> pd.DataFrame:
    """One row per run: the record's scalar fields plus ``bacc_<set>`` per evaluated set.

    Sets are ``val``, ``test`` and ``ood-<name>``; a balanced accuracy is a fraction in [0, 1]
    (NaN where the set was not evaluated, e.g. a run that diverged with a NaN loss). Also
    ``dataset_label`` (the study config's name of the data set), ``selection_id`` (of the
    hyper-parameter selection a final run was trained under) and ``superseded`` (True for a final
    run that the study's current ``selection.csv`` no longer asks for; see :func:`final_runs`).
    """
    rows = []
    for rec in iter_records(runs_dir):
        row = {k: rec.get(k) for k in _SCALARS}
        row["seconds"] = (rec.get("timings") or {}).get("total_seconds")
        row["dataset_label"] = rec.get("dataset_label") or rec.get("dataset")
        row["selection_id"] = (rec.get("selection") or {}).get("id")
        for name, m in (rec.get("metrics") or {}).items():
            v = (m or {}).get("balanced_accuracy")
            row[f"bacc_{name}"] = float("nan") if v is None else float(v)
        rows.append(row)
    cols = list(_SCALARS) + ["seconds", "dataset_label", "selection_id"]
    df = pd.DataFrame(rows, columns=cols if not rows else None)
    reasons = _superseded(df, runs_dir)
    df["superseded"] = [r is not None for r in reasons]
    df.attrs["superseded_reason"] = {rid: r for rid, r in zip(df["run_id"], reasons) if r}
    return df


def read_selection(runs_dir: str | os.PathLike) -> pd.DataFrame | None:
    """The study's current hyper-parameter selection (``selection.csv``), or None."""
    p = Path(runs_dir) / SELECTION_FILE
    if not p.is_file():
        return None
    try:
        sel = pd.read_csv(p)
    except OSError as err:
        raise write_error(err, p, "read") from None
    except (ValueError, pd.errors.ParserError) as err:
        raise StoreError(f"{p}: unreadable ({err}); run the study again to rewrite it.") from None
    if not {"dataset", "model", "lr", "weight_decay"} <= set(sel.columns):
        raise StoreError(f"{p}: lacks the columns dataset, model, lr, weight_decay; run the "
                         "study again to rewrite it.")
    return sel


def _num(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def _superseded(df: pd.DataFrame, runs_dir: str | os.PathLike) -> list[str | None]:
    """Per row: why a final run is not one of the current selection's (None if it is)."""
    sel = read_selection(runs_dir) if len(df) else None
    if sel is None:
        return [None] * len(df)
    current = {(str(r["dataset"]), str(r["model"])): r for _, r in sel.iterrows()}
    out: list[str | None] = []
    for _, r in df.iterrows():
        if r["phase"] != "final":
            out.append(None)
            continue
        cur = current.get((str(r["dataset_label"]), str(r["model"])))
        if cur is None:
            out.append("superseded: its data set and model are not in the current selection "
                       f"({SELECTION_FILE})")
            continue
        if isinstance(r["selection_id"], str) and isinstance(cur.get("selection_id"), str):
            same = r["selection_id"] == cur["selection_id"]
        else:  # records or selection from before selections had ids
            same = (np.isclose(_num(r["lr"]), _num(cur["lr"]))
                    and np.isclose(_num(r["weight_decay"]), _num(cur["weight_decay"])))
        out.append(None if same else (
            f"superseded: trained with lr {_num(r['lr']):g}, weight decay "
            f"{_num(r['weight_decay']):g} under an earlier selection; the current one is lr "
            f"{_num(cur['lr']):g}, weight decay {_num(cur['weight_decay']):g}"))
    return out


@dataclass
class FinalRuns:
    """The final runs of a runs folder, split by the current hyper-parameter selection.

    ``current``: :func:`load_records` rows of the final runs the current selection asks for (every
    status). ``superseded``: final runs trained under an earlier selection, with a ``reason``
    column. ``warnings``: one line per data set whose current final runs were trained on
    different data (different ``data_fingerprint``).
    """

    current: pd.DataFrame
    superseded: pd.DataFrame
    warnings: list[str] = field(default_factory=list)


def final_runs(runs_dir: str | os.PathLike) -> FinalRuns:
    """Final runs of ``runs_dir``: those of the current selection, the superseded ones, and
    warnings about mixed data (see :class:`FinalRuns`)."""
    df = load_records(runs_dir)
    fin = df[df["phase"] == "final"] if len(df) else df
    sup = fin[fin["superseded"]].copy() if len(fin) else fin.copy()
    sup["reason"] = [df.attrs["superseded_reason"].get(r) for r in sup["run_id"]]
    current = fin[~fin["superseded"]] if len(fin) else fin
    return FinalRuns(current.reset_index(drop=True), sup.reset_index(drop=True),
                     fingerprint_warnings(current))


def fingerprint_warnings(records: pd.DataFrame) -> list[str]:
    """One line per data set whose runs in ``records`` have more than one ``data_fingerprint``."""
    out = []
    if records.empty or "data_fingerprint" not in records:
        return out
    key = "dataset_label" if "dataset_label" in records else "dataset"
    for ds, g in records.groupby(key, sort=False):
        counts = g["data_fingerprint"].dropna().value_counts()
        if len(counts) > 1:
            versions = ", ".join(f"{fp} ({n} runs)" for fp, n in counts.items())
            out.append(f"data set {ds}: its final runs were trained on {len(counts)} different "
                       f"versions of the data (fingerprints {versions}); their results are not "
                       "comparable. Retrain the runs of the outdated data.")
    return out


# ---------------------------------------------------------------------------------------------
# Predictions
# ---------------------------------------------------------------------------------------------


def write_predictions(path: str | os.PathLike, table: pd.DataFrame) -> None:
    """Write a predictions table (columns ``row, image_id, label, pred, prob_*, logit_*``)."""
    atomic_write(path, lambda tmp: table.to_csv(tmp, index=False, float_format="%.7g"))


def read_predictions(runs_dir: str | os.PathLike, run_id: str, set_name: str) -> pd.DataFrame:
    """The predictions of one run on one set (``test`` or ``ood-<name>``)."""
    p = run_dir(runs_dir, run_id) / "predictions" / f"{set_name}.csv"
    if not p.exists():
        raise DataError(f"{p}: no predictions for set {set_name!r} in run {run_id}.")
    return pd.read_csv(p, dtype={"image_id": str})
