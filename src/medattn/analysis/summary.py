"""Table 2's inputs: a summary CSV checked line by line, or the final runs summarised.

A *summary* has one row per (dataset, backbone, model, set) and the columns ``mean, sd, n``
(balanced accuracy in percent, sd with ddof=1); see :mod:`medattn.analysis.compare`, which
compares what this module reads.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from medattn.analysis import stats
from medattn.errors import DataError

__all__ = ["RUN_COLUMNS", "SUMMARY_COLUMNS", "read_summary", "summarize_runs"]

SUMMARY_COLUMNS = ["dataset", "backbone", "model", "set", "mean", "sd", "n"]
RUN_COLUMNS = ["run_id", "dataset", "backbone", "model", "status", "set", "bacc_pct", "included",
               "split_seed", "imputed", "fold"]


def read_summary(path: str | os.PathLike) -> pd.DataFrame:
    """Read and check a summary CSV (``SUMMARY_COLUMNS``, balanced accuracy in percent)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: summary file not found; give a CSV with columns "
                        f"{','.join(SUMMARY_COLUMNS)}.")
    try:
        df = pd.read_csv(path, dtype={"dataset": str, "backbone": str, "model": str, "set": str},
                         skipinitialspace=True, comment="#")
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as err:
        raise DataError(f"{path}: not a readable CSV ({err}).") from err
    df.columns = [str(c).strip().lower() for c in df.columns]
    # Physical line numbers of the data rows (comments and blank lines are skipped by pandas).
    text_lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    data_lines = [i for i, t in enumerate(text_lines, 1) if t.strip() and not t.lstrip().startswith("#")]
    line_of = data_lines[1:] + [len(text_lines)] * max(0, len(df) - len(data_lines) + 1)
    missing = [c for c in SUMMARY_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}; the header must be "
                        f"{','.join(SUMMARY_COLUMNS)}.")
    df = df[SUMMARY_COLUMNS].copy()
    for col in ("dataset", "backbone", "model", "set"):
        df[col] = df[col].astype(str).str.strip()
    df["model"] = df["model"].str.lower()
    df["set"] = df["set"].str.lower()
    for i, row in df.iterrows():
        line = line_of[i]
        for col in ("mean", "sd", "n"):
            try:
                float(row[col])
            except (TypeError, ValueError):
                raise DataError(f"{path}, line {line}: {col}={row[col]!r} is not a number.") from None
            if not np.isfinite(float(row[col])):
                raise DataError(f"{path}, line {line}: {col} is empty or not finite.")
        if row["set"] != "id" and row["set"] != "ood" and not row["set"].startswith("ood-"):
            raise DataError(f"{path}, line {line}: set={row['set']!r}; use 'id' (in-distribution "
                            f"test) or 'ood' / 'ood-<name>'.")
        if float(row["sd"]) < 0:
            raise DataError(f"{path}, line {line}: sd={row['sd']} is negative.")
        n = float(row["n"])
        if n < 1 or n != int(n):
            raise DataError(f"{path}, line {line}: n={row['n']} must be a positive whole number.")
    df["mean"] = df["mean"].astype(float)
    df["sd"] = df["sd"].astype(float)
    df["n"] = df["n"].astype(float).astype(int)
    dup = df.duplicated(["dataset", "backbone", "model", "set"], keep="first")
    if dup.any():
        i = int(np.flatnonzero(dup.to_numpy())[0])
        raise DataError(f"{path}, line {line_of[i]}: (dataset, backbone, model, set) appears more than "
                        f"once; keep one row per combination.")
    if len(df) and df["mean"].abs().max() <= 1.0:
        raise DataError(f"{path}: all means are <= 1; the summary must be in percent "
                        f"(multiply fractions by 100).")
    return df


def _set_name(metric_set: str) -> str | None:
    if metric_set == "test":
        return "id"
    if metric_set.startswith("ood-") or metric_set == "ood":
        return metric_set
    return None  # val and anything else is not a test set


def summarize_runs(frame: pd.DataFrame, include_diverged: bool = False,
                   info: pd.DataFrame | None = None
                   ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Summarise final runs per (dataset, backbone, model, set).

    ``frame``: one row per run as :func:`medattn.runs.store.load_records` gives; ``info``:
    :func:`medattn.analysis.paired.run_info` of the same runs (optional). Returns ``(summary,
    runs, excluded)``: the summary in percent of the included runs, the per-run values in long
    form (``run_id, dataset, backbone, model, status, set, bacc_pct, included, split_seed,
    imputed, fold``; fold: k-fold runs only; diverged runs are in it, not included unless
    ``include_diverged``) and the final runs that did not enter (``run_id, dataset, backbone,
    model, status, reason``). A diverged run that recorded no accuracy (a non-finite loss) is
    counted at chance, 1 / n_classes, on every test set (``imputed``), when ``info`` names its
    classes and sets: a model that outputs NaN predicts one class for every image.
    """
    need = {"run_id", "status", "phase", "dataset", "backbone", "variant"}
    if len(frame) and not need <= set(frame.columns):
        raise DataError(f"run records lack field(s) {sorted(need - set(frame.columns))}; they "
                        f"were not written by this version of medattn.")
    final = frame[frame["phase"] == "final"] if len(frame) else frame
    allowed = {"done", "diverged"} if include_diverged else {"done"}
    info = info.set_index("run_id") if info is not None and len(info) else None
    excluded = []
    long = []
    for _, r in final.iterrows():
        sets = {_set_name(c[5:]): r[c] for c in final.columns
                if c.startswith("bacc_") and _set_name(c[5:]) and pd.notna(r[c])}
        imputed = False
        known = info is not None and r["run_id"] in info.index
        if not sets and r["status"] == "diverged" and known:
            k = info.at[r["run_id"], "n_classes"]
            if pd.notna(k) and k > 0:
                sets = {s: 1.0 / k for s in ["id", *info.at[r["run_id"], "ood_sets"]]}
                imputed = True
        base = dict(run_id=r["run_id"], dataset=r["dataset"], backbone=r["backbone"],
                    model=r["variant"], status=r["status"])
        if r["status"] not in allowed:
            msg = r.get("message")
            msg = f": {msg}" if isinstance(msg, str) and msg else ""
            reason = {"diverged": f"diverged{msg} (use --include-diverged to include)",
                      "running": "still running or interrupted",
                      "failed": f"failed{msg or ': see record.json'}"}.get(
                r["status"], f"status {r['status']}")
            excluded.append({**base, "reason": reason})
        elif not sets:
            excluded.append({**base, "reason": "no test metrics in record"})
        if r["status"] not in ("done", "diverged"):
            continue
        seed = r.get("split_seed")
        for s, v in sets.items():
            long.append({**base, "set": s, "bacc_pct": 100.0 * float(v),
                         "included": r["status"] in allowed,
                         "split_seed": seed if pd.notna(seed) else np.nan, "imputed": imputed,
                         "fold": r.get("fold", np.nan)})
    runs = pd.DataFrame(long, columns=RUN_COLUMNS)
    excl = pd.DataFrame(excluded, columns=["run_id", "dataset", "backbone", "model", "status",
                                           "reason"])
    return _summary_of(runs[runs["included"].astype(bool)]), runs, excl


def _summary_of(runs: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for key, g in runs.groupby(["dataset", "backbone", "model", "set"], sort=False):
        mean, sd, n = stats.describe(g["bacc_pct"].to_numpy())
        rows.append(dict(zip(["dataset", "backbone", "model", "set"], key), mean=mean, sd=sd, n=n))
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
