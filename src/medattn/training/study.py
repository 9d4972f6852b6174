"""The paper's protocol over a grid: hyper-parameter search on a few splits, then final runs.

For every data set and model, each (learning rate, weight decay) pair of the grid is trained on
``search.splits`` splits; the pair with the highest mean validation balanced accuracy is selected
(ties: the first pair in grid order, learning rates outer, weight decays inner); then the model is
trained with it on ``final.splits`` further splits (or, with ``final.scheme: kfold``, on every
fold of ``final.repeats`` repetitions of grouped ``final.folds``-fold cross-validation). Runs
already finished are skipped, so an interrupted study is completed by running it again.
Selection waits for a complete search: a search run that failed or was lost stops the study
before it (a selection without that grid point could pick another setting), and final runs
record the selection they were trained under.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from medattn.errors import IncompleteStudyError, MedattnError
from medattn.progress import progress_bar
from medattn.runs import store
from medattn.runs.records import RunRecord
from medattn.training.backends import LocalBackend, resolve_backend
from medattn.training.config import RunSpec, StudyConfig, load_config
from medattn.training.tracking import tracker

log = logging.getLogger("medattn.train")

STUDY_FILE = "study.yaml"
SELECTION_FILE = store.SELECTION_FILE


@dataclass
class StudyResult:
    runs_dir: Path
    records: pd.DataFrame  # store.load_records of the runs directory
    selection: pd.DataFrame  # per (dataset, model): chosen lr, weight_decay and their score
    # (balanced accuracy per model: medattn.analysis.study_summary.final_summary, computed by
    # the callers above training: training never imports analysis)


def search_specs(config: StudyConfig) -> list[RunSpec]:
    """Search runs of every data set and model whose hyper-parameters are not fixed."""
    if len(config.search_lr) * len(config.search_weight_decay) == 1:
        return []  # a one-point grid needs no search
    return [config.run_spec("search", ds, m, lr, wd, seed)
            for ds in config.datasets for m in config.models if config.fixed_hparams(m) is None
            for lr in config.search_lr for wd in config.search_weight_decay
            for seed in config.search_seeds()]


def _score(rec: RunRecord) -> float | None:
    """Validation balanced accuracy of a search run; a NaN-diverged run counts as chance."""
    if rec.status in ("failed", "running"):
        return None
    val = rec.bacc("val")
    if val == val:
        return val
    return 1.0 / len(rec.classes) if rec.classes else None


def selection_note(source: str, mean_val_bacc: float, n_runs: int) -> str:
    """How a setting was chosen, in words: ``no search: one setting`` (a one-point grid),
    ``fixed in the config`` (hparams), or ``mean val bacc 73.1% over 2 runs`` (the search)."""
    if source == "grid":
        return "no search: one setting"
    if source == "fixed":
        return "fixed in the config"
    if not n_runs or mean_val_bacc != mean_val_bacc:  # NaN: nothing was scored
        return "no search runs scored"
    return (f"mean val bacc {100 * mean_val_bacc:.1f}% over {int(n_runs)} "
            f"run{'s' if int(n_runs) != 1 else ''}")


def select_hparams(config: StudyConfig, records: list[RunRecord | dict]) -> pd.DataFrame:
    """Best (lr, weight_decay) per (dataset, model); columns dataset, model, lr, weight_decay,
    mean_val_bacc, n_runs, n_diverged, source (`search`, `fixed` or `grid`), search_runs (run
    ids behind the chosen setting, space-separated) and selection_id (see :func:`_selection_id`).
    Call it only once the search is complete."""
    by_id = {r["run_id"]: RunRecord.from_dict(r) for r in records}
    rows = []
    for ds in config.datasets:
        for m in config.models:
            fixed = config.fixed_hparams(m)
            if fixed is not None or len(config.search_lr) * len(config.search_weight_decay) == 1:
                lr, wd = fixed or (config.search_lr[0], config.search_weight_decay[0])
                rows.append(dict(dataset=ds.name, model=m, lr=lr, weight_decay=wd,
                                 mean_val_bacc=float("nan"), n_runs=0, n_diverged=0,
                                 source="fixed" if fixed else "grid", search_runs=""))
                continue
            best = None
            for lr in config.search_lr:
                for wd in config.search_weight_decay:
                    ids = [config.run_spec("search", ds, m, lr, wd, s).run_id
                           for s in config.search_seeds()]
                    recs = [by_id.get(i) for i in ids]
                    scores = [_score(r) for r in recs if r is not None]
                    scores = [s for s in scores if s is not None]
                    if not scores:
                        continue
                    row = dict(dataset=ds.name, model=m, lr=lr, weight_decay=wd,
                               mean_val_bacc=sum(scores) / len(scores), n_runs=len(scores),
                               n_diverged=sum(r is not None and r.status == "diverged"
                                              for r in recs),
                               source="search", search_runs=" ".join(ids))
                    if best is None or row["mean_val_bacc"] > best["mean_val_bacc"]:
                        best = row
            if best is None:
                raise MedattnError(f"no search run of {m} on {ds.name} finished (all failed?); "
                                   f"see the records under runs/ for the errors.")
            rows.append(best)
    sel = pd.DataFrame(rows)
    sel["selection_id"] = [_selection_id(g) for g in _final_groups(config, sel)]
    return sel


def _final_groups(config: StudyConfig, selection: pd.DataFrame) -> list[list[RunSpec]]:
    by_name = {d.name: d for d in config.datasets}
    return [[config.run_spec("final", by_name[row.dataset], row.model, row.lr, row.weight_decay,
                             seed, fold) for seed, fold in config.final_units()]
            for row in selection.itertuples()]


def _selection_id(group: list[RunSpec]) -> str:
    """Names a selection by the recipe of its final runs (everything that enters their run ids
    but the split seed): equal ids, identically trained final runs; more or other final splits
    keep the id."""
    recipe = dataclasses.replace(group[0], split_seed=0,
                                 fold=0 if group[0].folds else None).run_id
    return hashlib.sha1(recipe.encode()).hexdigest()[:12]


def final_specs(config: StudyConfig, selection: pd.DataFrame) -> list[RunSpec]:
    """The final runs of a selection; each carries the selection it is trained under."""
    specs = []
    for row, group in zip(selection.to_dict("records"), _final_groups(config, selection)):
        mean = row.get("mean_val_bacc")
        info = {"id": _selection_id(group), "lr": float(row["lr"]),
                "weight_decay": float(row["weight_decay"]), "source": row.get("source"),
                "mean_val_bacc": None if mean is None or mean != mean else float(mean),
                "search_runs": str(row.get("search_runs") or "").split()}
        specs += [dataclasses.replace(s, selection=info) for s in group]
    return specs


def unfinished(specs: list[RunSpec], runs_dir: str | os.PathLike) -> list[tuple[str, str, str]]:
    """``(run_id, status, message)`` of the runs in ``specs`` that are not done or diverged
    (status ``missing`` if a run has no record; ``running`` after the backend returned means its
    process was lost)."""
    out = []
    for spec in specs:
        rec = store.read_record(store.run_dir(runs_dir, spec.run_id)) or {}
        status = rec.get("status", "missing")
        if status not in store.FINISHED:
            msg = rec.get("message") or ("lost: its process died or was stopped"
                                         if status == "running" else "")
            line = (msg.splitlines() or [""])[0]  # whole: a cut one read "...run the s)."
            out.append((spec.run_id, status, line if len(line) <= 500 else line[:497] + "..."))
    return out


def _incomplete(bad: list, total: int, phase: str, result=None) -> IncompleteStudyError:
    listed = "; ".join(f"{rid} ({status}{': ' + msg if msg else ''})"
                       for rid, status, msg in bad[:8])
    more = f"; and {len(bad) - 8} more" if len(bad) > 8 else ""
    if phase == "search":
        what = (f"{len(bad)} of {total} search run(s) did not finish, so no hyper-parameters "
                "were selected (without them the selection could pick another setting)")
    else:
        what = f"{len(bad)} of {total} final run(s) did not finish"
    return IncompleteStudyError(f"{what}: {listed}{more}. Fix the cause (each run's record.json "
                                "says more) and run the study again; finished runs are kept.",
                                runs=bad, result=result)


class StudyProgress:
    """What a study does as each of its runs is known to be finished (``on_record`` of the
    backends): one step of the whole-study progress bar, whose estimated time to completion is
    the pace of the runs trained in this session (runs finished earlier are counted, not timed),
    and, with tracking, the run logged to MLflow."""

    def __init__(self, name: str, total: int, track=None, show: bool = True):
        self.bar = progress_bar(total=total, desc=f"study {name}", unit="run", mininterval=0,
                                smoothing=0, disable=not show)
        self.track, self.seen = track, set()
        self.problems: dict[str, int] = {}

    def __call__(self, record: dict | None, trained: bool) -> None:
        run_id = (record or {}).get("run_id")
        if run_id is not None and run_id in self.seen:
            return
        self.seen.add(run_id)
        if self.track and record:
            self.track.log(record)
        if self.bar.disable:
            return
        if not trained:
            self.bar.initial += 1  # not part of this session's pace
        status = (record or {}).get("status", "lost")
        if status != "done":
            self.problems[status] = self.problems.get(status, 0) + 1
            self.bar.set_postfix_str(", ".join(f"{v} {k}" for k, v in self.problems.items()),
                                     refresh=False)
        self.bar.update(1)

    def run(self, backend, specs: list[RunSpec], runs_dir: Path, **opts) -> list[dict]:
        """``backend.run`` reporting to this; backends without ``on_record`` report at the end."""
        if "on_record" in inspect.signature(backend.run).parameters:
            return backend.run(specs, runs_dir, on_record=self, **opts)
        records = backend.run(specs, runs_dir, **opts)
        for rec in records:
            self(rec, True)
        return records

    def close(self) -> None:
        self.bar.close()


def run_study(config: StudyConfig | str | os.PathLike, runs_dir: str | os.PathLike | None = None,
              backend: str | LocalBackend | object = "local", *, data_root: str | None = None,
              restart: bool = False, tracking: str | None = None,
              final_filter: Callable[[RunSpec], bool] | None = None,
              **backend_options) -> StudyResult:
    """Run (or complete) a study; returns its records and hyper-parameter selection.

    Args:
        config: a :class:`StudyConfig`, a YAML file or a packaged config name (``demo``,
            ``paper_isic``, ``paper_camelyon17``).
        runs_dir: the run store (default ``runs/<config name>``).
        backend: ``local``, ``ray`` or a backend object.
        data_root: the folder relative data paths start from, instead of the config's.
        restart: discard the resume state of unfinished runs (finished runs are kept).
        tracking: an MLflow tracking URI (default ``$MEDATTN_TRACKING_URI``; none: no MLflow);
            the study is one experiment named after the config (``medattn.training.tracking``).
        final_filter: only the final runs it keeps are trained (and checked); a sequential
            study (:mod:`medattn.sequential_study`) trains its batches and active models this way.
        **backend_options: passed to the backend's constructor (``device``, ``progress``,
            ``jobs``; ``address``, ``num_cpus``, ``num_gpus``, ``max_retries``).

    Returns:
        The study's records, hyper-parameter selection and summary.

    Raises:
        IncompleteStudyError: search runs or final runs did not finish (see below).

    The runs folder is locked meanwhile (a second study on it is refused). Hyper-parameters are
    selected only once every search run is done or diverged; otherwise, and when final runs
    did not finish, :class:`~medattn.errors.IncompleteStudyError` lists them (its ``result`` holds
    what the final phase produced).
    """
    if not isinstance(config, StudyConfig):
        config = load_config(config, data_root=data_root)
    runs_dir = Path(runs_dir if runs_dir is not None else Path("runs") / config.name).resolve()
    try:
        runs_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise store.write_error(err, runs_dir, "create") from None
    backend = resolve_backend(backend, backend_options, "run_study")
    opts = {"restart": True} if restart else {}
    with store.lock_runs_dir(runs_dir):
        swept = store.sweep(runs_dir)
        if swept:
            log.info("removed %d temporary file(s) left by an interrupted run", swept)
        store.write_text(runs_dir / STUDY_FILE, yaml.safe_dump(config.to_dict(), sort_keys=False))
        track = tracker(tracking, config.name, runs_dir)  # a bad URI fails here, not hours later

        search = search_specs(config)
        n_final = len(config.datasets) * len(config.models) * len(config.final_units())
        log.info("study %s: %d search runs, then %d final runs", config.name, len(search),
                 n_final)
        progress = StudyProgress(config.name, len(search) + n_final, track,
                                 show=getattr(backend, "progress", True))
        try:
            return _run_phases(config, runs_dir, backend, search, progress, opts, final_filter)
        finally:
            progress.close()


def _run_phases(config: StudyConfig, runs_dir: Path, backend, search: list[RunSpec],
                progress: StudyProgress, opts: dict,
                final_filter: Callable[[RunSpec], bool] | None = None) -> StudyResult:
    if search:
        progress.run(backend, search, runs_dir, **opts)
        bad = unfinished(search, runs_dir)
        if bad:
            raise _incomplete(bad, len(search), "search")
    records = [store.read_record(store.run_dir(runs_dir, s.run_id)) for s in search]
    selection = select_hparams(config, [r for r in records if r is not None])
    store.atomic_write(runs_dir / SELECTION_FILE,  # search_runs: in the final records
                       lambda tmp: selection.drop(columns="search_runs").to_csv(tmp,
                                                                                index=False))
    for row in selection.itertuples():
        log.info("selected %s on %s: lr %g, weight decay %g (%s)", row.model, row.dataset,
                 row.lr, row.weight_decay, selection_note(row.source, row.mean_val_bacc,
                                                          row.n_runs))

    final = final_specs(config, selection)
    if final_filter is not None:
        final = [s for s in final if final_filter(s)]
        progress.bar.total = len(search) + len(final)  # the bar was sized for every final run
    log.info("study %s: %d final runs", config.name, len(final))
    progress.run(backend, final, runs_dir, **opts)
    result = StudyResult(runs_dir=runs_dir, records=store.load_records(runs_dir),
                         selection=selection)
    bad = unfinished(final, runs_dir)
    if bad:
        raise _incomplete(bad, len(final), "final", result)
    return result
