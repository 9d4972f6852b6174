"""The run store: one directory per run with its record, model, resume state and predictions.

Layout and record fields are fixed in ``docs/architecture.md``. Every file is written with
:func:`medattn.runs.atomic.atomic_write` (re-exported here with ``write_json``, ``write_text`` and
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
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medattn.runs.atomic import atomic_write, write_error, write_json, write_text  # noqa: F401
from medattn.errors import DataError, StoreError
from medattn.runs import lock
from medattn.runs.records import FRAME_COLUMNS, RunRecord

RECORD = "record.json"
MODEL = "model.safetensors"
RESUME = "resume.safetensors"
RESUME_JSON = "resume.json"
LOCK = ".lock"
SELECTION_FILE = "selection.csv"
PLAN_FILE = "plan.json"  # `medattn plan`: the design chosen before the study (analysis.plan)
FINISHED = ("done", "diverged")  # a run in one of these states is never trained again
STATUSES = ("running", "done", "diverged", "failed")
PHASES = ("search", "final")
FINISHED_NEEDS = ("model", "metrics")  # and a dataset (or data): a finished run's record lacks none


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


# Temporary files a killed writer can leave: ``.<name>.<pid>-<hex>.tmp`` (every file goes through
# medattn.runs.atomic). In a runs folder itself only hidden ones: a user's own ``notes.tmp`` there is
# left alone.
TEMPORARIES = ("*.tmp",)
TOP_TEMPORARIES = (".*.tmp",)


def _temporaries(folder: Path, recursive: bool) -> Iterator[Path]:
    for pattern in TEMPORARIES if recursive else TOP_TEMPORARIES:
        for p in (folder.rglob(pattern) if recursive else folder.glob(pattern)):
            if p.is_file() and not p.is_symlink():
                yield p


def sweep_run(runs_dir: str | os.PathLike, run_id: str) -> int:
    """Remove temporary files a killed writer left in a run folder (hold its :func:`lock_run`)."""
    return _unlink_temporaries(_temporaries(run_dir(runs_dir, run_id), recursive=True))


def sweep(runs_dir: str | os.PathLike) -> int:
    """Remove temporary files killed writers left in ``runs_dir`` and in every run folder that no
    process is using; returns how many. Call it holding :func:`lock_runs_dir`."""
    n = _unlink_temporaries(_temporaries(Path(runs_dir), recursive=False))
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
    if rec["status"] in FINISHED:  # what every table reads of a finished run
        missing = [k for k in FINISHED_NEEDS if rec.get(k) is None]  # written as null, too
        if not any(rec.get(k) for k in ("dataset", "data")):
            missing.append("dataset")
        if missing:
            return f"a {rec['status']} run's record lacks {', '.join(missing)}"
        if not isinstance(rec["model"], str) or not rec["model"]:
            return f"its model {rec['model']!r} is not a model name"
        if not isinstance(rec["metrics"], dict):
            return f"its metrics are a JSON {type(rec['metrics']).__name__}, not an object"
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


def read_record(path: str | os.PathLike) -> RunRecord | None:
    """The record in a run directory (or a record.json path), or None if there is none yet.

    A malformed record (not JSON, not an object, missing ``run_id``/``status``/``phase``, a
    ``run_id`` other than its folder's name, or a finished run's record without ``model``,
    ``metrics`` and ``dataset``/``data``) raises :class:`StoreError` naming it.
    """
    p = Path(path)
    p = p / RECORD if p.is_dir() else p
    rec, problem = _read(p)
    if problem:
        raise StoreError(f"{p}: malformed run record: {problem}; {_fix([p.parent])}")
    return None if rec is None else RunRecord.from_dict(rec)


def write_record(runs_dir: str | os.PathLike, record: RunRecord | Mapping[str, Any], *,
                 replace_finished: bool = False) -> Path:
    """Write a run's record (a :class:`RunRecord` or its JSON object); a finished
    (``done``/``diverged``) record is never replaced by an unfinished one unless
    ``replace_finished``."""
    record = RunRecord.from_dict(record)
    path = run_dir(runs_dir, record["run_id"]) / RECORD
    if not replace_finished and record.get("status") not in FINISHED:
        old, _ = _read(path)
        if old is not None and old.get("status") in FINISHED:
            raise StoreError(f"{path}: run {record['run_id']} is already {old['status']}; a "
                             "finished record is not overwritten.")
    write_json(path, record)
    return path


def iter_records(runs_dir: str | os.PathLike) -> Iterator[RunRecord]:
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
            yield RunRecord.from_dict(rec)
    if bad:
        listed = "; ".join(f"{d / RECORD}: {why}" for d, why in bad[:5])
        more = f" (and {len(bad) - 5} more)" if len(bad) > 5 else ""
        raise StoreError(f"{len(bad)} malformed run record(s): {listed}{more}; "
                         f"{_fix([d for d, _ in bad])}")


def records_frame(records: list[RunRecord]) -> pd.DataFrame:
    """One row per record (:meth:`RunRecord.row`): the scalar fields plus ``bacc_<set>``."""
    return pd.DataFrame([r.row() for r in records], columns=None if records else FRAME_COLUMNS)


def load_records(runs_dir: str | os.PathLike) -> pd.DataFrame:
    """One row per run (:meth:`RunRecord.row`), plus ``superseded``.

    Columns: the record's scalar fields (``dataset`` is the study config's name of the data set,
    ``source`` the data source), ``seconds``, ``selection_id`` (of the hyper-parameter selection
    a final run was trained under), ``bacc_<set>`` per evaluated set (``val``, ``test``,
    ``ood-<name>``; a fraction in [0, 1], NaN where the set was not evaluated, e.g. a run that
    diverged with a NaN loss) and ``superseded`` (True for a final run that the study's current
    ``selection.csv`` no longer asks for; see :func:`final_runs`).
    """
    return _load(runs_dir)[1]


def _load(runs_dir: str | os.PathLike) -> tuple[list[RunRecord], pd.DataFrame]:
    records = list(iter_records(runs_dir))
    df = records_frame(records)
    reasons = _superseded(df, runs_dir)
    df["superseded"] = [r is not None for r in reasons]
    df.attrs["superseded_reason"] = {rid: r for rid, r in zip(df["run_id"], reasons) if r}
    return records, df


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
        cur = current.get((str(r["dataset"]), str(r["model"])))
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
    different data (different ``data_fingerprint``). ``records``: the :class:`RunRecord` of
    each current run, by run id (histories, confusion matrices, classes, splits).
    """

    current: pd.DataFrame
    superseded: pd.DataFrame
    warnings: list[str] = field(default_factory=list)
    records: dict[str, RunRecord] = field(default_factory=dict)

    def done(self, include_diverged: bool = False) -> pd.DataFrame:
        """Current final runs that finished (``done``; also ``diverged`` if asked)."""
        ok = ("done", "diverged") if include_diverged else ("done",)
        return self.current[self.current["status"].isin(ok)] if len(self.current) else self.current


def final_runs(runs_dir: str | os.PathLike) -> FinalRuns:
    """Final runs of ``runs_dir``: those of the current selection, the superseded ones, and
    warnings about mixed data (see :class:`FinalRuns`)."""
    records, df = _load(runs_dir)
    fin = df[df["phase"] == "final"] if len(df) else df
    sup = fin[fin["superseded"]].copy() if len(fin) else fin.copy()
    sup["reason"] = [df.attrs["superseded_reason"].get(r) for r in sup["run_id"]]
    current = fin[~fin["superseded"]] if len(fin) else fin
    ids = set(current["run_id"]) if len(current) else set()
    return FinalRuns(current.reset_index(drop=True), sup.reset_index(drop=True),
                     fingerprint_warnings(current),
                     {r.run_id: r for r in records if r.run_id in ids})


def fingerprint_warnings(records: pd.DataFrame) -> list[str]:
    """One line per data set whose runs in ``records`` have more than one ``data_fingerprint``."""
    out = []
    if records.empty or "data_fingerprint" not in records:
        return out
    for ds, g in records.groupby("dataset", sort=False):
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
