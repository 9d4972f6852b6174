"""The plan of a feature-usage analysis: which runs it tests (:func:`select_runs`), where it
writes, and which of their p-values an earlier call with the same settings already saved
(:func:`plan_usage`)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from medattn.analysis.features.settings import SELECT_BY, UsageSettings, argument_error
from medattn.errors import DataError
from medattn.runs.records import best_runs
from medattn.runs.store import final_runs

SKIN_SOURCES = ("isic", "ham10000", "pad-ufes-20")


@dataclass
class UsagePlan:
    """What :func:`~.usage.feature_usage` tests: the chosen runs, the output folder and the rows
    of ``pvalues.csv`` saved under the same settings (``previous``: resumed)."""

    runs_dir: Path
    out_dir: Path
    chosen: pd.DataFrame  # select_runs rows: the runs tested, in table order
    key: str  # UsageSettings.resume_key
    previous: pd.DataFrame | None  # pvalues.csv rows with this key, None without any
    notes: list[str] = field(default_factory=list)  # runs left out, and why

    @property
    def pvalues_path(self) -> Path:
        return self.out_dir / "pvalues.csv"

    def resumed(self, run_id: str) -> pd.DataFrame | None:
        """The saved rows of one run (None without any)."""
        if self.previous is None:
            return None
        return self.previous[self.previous["run_id"] == run_id]


def select_runs(records: pd.DataFrame, *, best_only: bool = False, select_by: str = "val",
                datasets: list[str] | None = None) -> pd.DataFrame:
    """Finished final runs on skin data (by their ``source``) of ``datasets`` (default all); with
    ``best_only`` the one per data set and model with the highest balanced accuracy on
    ``select_by`` (``val`` or ``test``; :func:`medattn.runs.records.best_runs`).

    ``records``: :func:`medattn.runs.store.final_runs` rows."""
    if select_by not in SELECT_BY:
        raise argument_error("select_by", f"select_by={select_by!r} is not one of "
                            f"{', '.join(SELECT_BY)}")
    if records.empty:
        return records
    rec = records[(records["status"] == "done") & (records["phase"] == "final")]
    rec = rec[rec["source"].isin(SKIN_SOURCES)]
    if datasets:
        unknown = sorted(set(datasets) - set(rec["dataset"]))
        if unknown:
            raise argument_error("dataset", f"dataset={', '.join(unknown)}: no finished final "
                                "runs on skin data; available: "
                                f"{', '.join(sorted(set(rec['dataset'])))}")
        rec = rec[rec["dataset"].isin(datasets)]
    if not best_only or rec.empty:
        return rec.sort_values(["dataset", "model", "run_id"])
    if f"bacc_{select_by}" not in rec:
        raise DataError(f"features: no run has a balanced accuracy on {select_by!r}")
    return best_runs(rec, ("dataset", "model"), select_by)


def plan_usage(runs_dir: str | os.PathLike, settings: UsageSettings) -> UsagePlan:
    """The runs of ``runs_dir`` that ``settings`` select, from one data set, with the p-values
    saved for them before. DataError when there is nothing to test, saying why."""
    runs_dir = Path(runs_dir)
    if not (runs_dir / "runs").is_dir():
        raise DataError(f"{runs_dir}: not a study directory (no runs/ inside); give the RUNS_DIR "
                        f"of `medattn study` (its --out) or `medattn train` (its --runs)")
    finals = final_runs(runs_dir)  # of the current hyper-parameter selection
    chosen = select_runs(finals.current, best_only=settings.best_only,
                         select_by=settings.select_by,
                         datasets=[settings.dataset] if settings.dataset else None)
    _one_dataset(chosen)
    if chosen.empty:
        raise _nothing_to_test(runs_dir, finals.current)
    notes = list(finals.warnings)
    if len(finals.superseded):
        notes.append(f"{len(finals.superseded)} final run(s) trained under an earlier "
                     "hyper-parameter selection are left out (superseded)")
    out_dir = runs_dir / "analysis" / "features"
    key = settings.resume_key()
    return UsagePlan(runs_dir, out_dir, chosen, key, _saved_rows(out_dir / "pvalues.csv", key),
                     notes)


def _one_dataset(chosen: pd.DataFrame) -> None:
    """Table 3 describes the runs of one data set: runs of two (say ISIC with two label sets, or
    ISIC and HAM10000) would be pooled as if they were more runs of each model."""
    names = list(dict.fromkeys(chosen["dataset"]))
    if len(names) > 1:
        raise argument_error("dataset", f"the final runs come from {len(names)} data sets "
                            f"({', '.join(names)}); Table 3 describes one at a time: give "
                            f"dataset=NAME (one of {', '.join(names)}).")


def _nothing_to_test(runs_dir: Path, current: pd.DataFrame) -> DataError:
    """Why no run can be tested: every final run diverged (say which), or none is on skin data."""
    div = current[(current["status"] == "diverged") & (current["phase"] == "final")] \
        if len(current) else current
    if len(div) and not (current["status"] == "done").any():
        return DataError(
            f"{runs_dir}: every final run diverged ({len(div)}: "
            f"{', '.join(div['run_id'].astype(str).head(3))}"
            f"{', ...' if len(div) > 3 else ''}); feature usage needs runs that finished. "
            f"Their records say why (`medattn report {runs_dir}` lists them); train again "
            f"with a smaller learning rate.")
    return DataError(f"{runs_dir}: no finished final runs on skin-lesion data "
                     f"({', '.join(SKIN_SOURCES)}); feature usage needs them")


def _saved_rows(path: Path, key: str) -> pd.DataFrame | None:
    """Rows of ``pvalues.csv`` saved under ``key`` (None: no file, or one written before rows had
    a key and a condition, which cannot be resumed)."""
    if not path.exists():
        return None
    saved = pd.read_csv(path, dtype={"run_id": str, "key": str})
    if not {"key", "condition"} <= set(saved):
        return None
    return saved[saved["key"] == key]
