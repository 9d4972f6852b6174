"""The paper's protocol over a grid: hyper-parameter search on a few splits, then final runs.

For every data set and model, each (learning rate, weight decay) pair of the grid is trained on
``search.splits`` splits; the pair with the highest mean validation balanced accuracy is selected
(ties: the first pair in grid order, learning rates outer, weight decays inner); then the model is
trained with it on ``final.splits`` further splits. Runs already finished are skipped, so an
interrupted study is completed by running it again.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from medattn.errors import MedattnError
from medattn.training import store
from medattn.training.backends import LocalBackend, get_backend
from medattn.training.config import RunSpec, StudyConfig, load_config

log = logging.getLogger("medattn.train")

STUDY_FILE = "study.yaml"
SELECTION_FILE = "selection.csv"


@dataclass
class StudyResult:
    runs_dir: Path
    records: pd.DataFrame  # store.load_records of the runs directory
    selection: pd.DataFrame  # per (dataset, model): chosen lr, weight_decay and their score
    summary: pd.DataFrame  # per (dataset, model, set): mean/std balanced accuracy of final runs


def search_specs(config: StudyConfig) -> list[RunSpec]:
    """Search runs of every data set and model whose hyper-parameters are not fixed."""
    if len(config.search_lr) * len(config.search_weight_decay) == 1:
        return []  # a one-point grid needs no search
    return [config.run_spec("search", ds, m, lr, wd, seed)
            for ds in config.datasets for m in config.models if config.fixed_hparams(m) is None
            for lr in config.search_lr for wd in config.search_weight_decay
            for seed in config.search_seeds()]


def _score(rec: dict) -> float | None:
    """Validation balanced accuracy of a search run; a NaN-diverged run counts as chance."""
    if rec.get("status") == "failed" or rec.get("status") == "running":
        return None
    val = (rec.get("metrics") or {}).get("val")
    if val and val.get("balanced_accuracy") is not None:
        return float(val["balanced_accuracy"])
    return 1.0 / len(rec["classes"]) if rec.get("classes") else None


def select_hparams(config: StudyConfig, records: list[dict]) -> pd.DataFrame:
    """Best (lr, weight_decay) per (dataset, model); columns dataset, model, lr, weight_decay,
    mean_val_bacc, n_runs, n_diverged, source (`search`, `fixed` or `grid`)."""
    by_id = {r["run_id"]: r for r in records}
    rows = []
    for ds in config.datasets:
        for m in config.models:
            fixed = config.fixed_hparams(m)
            if fixed is not None or len(config.search_lr) * len(config.search_weight_decay) == 1:
                lr, wd = fixed or (config.search_lr[0], config.search_weight_decay[0])
                rows.append(dict(dataset=ds.name, model=m, lr=lr, weight_decay=wd,
                                 mean_val_bacc=float("nan"), n_runs=0, n_diverged=0,
                                 source="fixed" if fixed else "grid"))
                continue
            best = None
            for lr in config.search_lr:
                for wd in config.search_weight_decay:
                    recs = [by_id.get(config.run_spec("search", ds, m, lr, wd, s).run_id)
                            for s in config.search_seeds()]
                    scores = [_score(r) for r in recs if r is not None]
                    scores = [s for s in scores if s is not None]
                    if not scores:
                        continue
                    row = dict(dataset=ds.name, model=m, lr=lr, weight_decay=wd,
                               mean_val_bacc=sum(scores) / len(scores), n_runs=len(scores),
                               n_diverged=sum(r.get("status") == "diverged" for r in recs if r),
                               source="search")
                    if best is None or row["mean_val_bacc"] > best["mean_val_bacc"]:
                        best = row
            if best is None:
                raise MedattnError(f"no search run of {m} on {ds.name} finished (all failed?); "
                                   f"see the records under runs/ for the errors.")
            rows.append(best)
    return pd.DataFrame(rows)


def final_specs(config: StudyConfig, selection: pd.DataFrame) -> list[RunSpec]:
    specs = []
    by_name = {d.name: d for d in config.datasets}
    for row in selection.itertuples():
        for seed in config.final_seeds():
            specs.append(config.run_spec("final", by_name[row.dataset], row.model, row.lr,
                                         row.weight_decay, seed))
    return specs


def summarize_final(records: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation (ddof=1) of balanced accuracy over finished final runs, per
    data set, model and set; diverged runs are counted apart, never averaged in."""
    if records.empty:
        return pd.DataFrame()
    fin = records[records["phase"] == "final"]
    rows = []
    for (ds, model), g in fin.groupby(["dataset", "model"], sort=False):
        done = g[g["status"] == "done"]
        for col in [c for c in g.columns if c.startswith("bacc_") and c != "bacc_val"]:
            vals = done[col].dropna()
            rows.append(dict(dataset=ds, model=model, set=col[5:], mean=vals.mean(),
                             std=vals.std(ddof=1) if len(vals) > 1 else float("nan"),
                             n=len(vals), n_diverged=int((g["status"] == "diverged").sum()),
                             n_failed=int((g["status"] == "failed").sum())))
    return pd.DataFrame(rows)


def run_study(config: StudyConfig | str | os.PathLike, runs_dir: str | os.PathLike | None = None,
              backend: str | LocalBackend | object = "local", *, data_root: str | None = None,
              **backend_options) -> StudyResult:
    """Run (or complete) a study; returns its records, hyper-parameter selection and summary.

    ``config`` is a :class:`StudyConfig`, a YAML file or a packaged config name (``demo``,
    ``paper_isic``, ``paper_camelyon17``); ``runs_dir`` defaults to ``runs/<config name>``;
    ``backend`` is ``local``, ``ray`` or a backend object; ``backend_options`` go to its
    constructor (``device``, ``progress``; ``address``, ``num_cpus``, ``num_gpus``).
    """
    if not isinstance(config, StudyConfig):
        config = load_config(config, data_root=data_root)
    runs_dir = Path(runs_dir if runs_dir is not None else Path("runs") / config.name).resolve()
    runs_dir.mkdir(parents=True, exist_ok=True)
    if isinstance(backend, str):
        backend = get_backend(backend, **backend_options)
    store.write_text(runs_dir / STUDY_FILE, yaml.safe_dump(config.to_dict(), sort_keys=False))

    search = search_specs(config)
    log.info("study %s: %d search runs", config.name, len(search))
    records = backend.run(search, runs_dir) if search else []
    selection = select_hparams(config, records)
    store.atomic_write(runs_dir / SELECTION_FILE, lambda tmp: selection.to_csv(tmp, index=False))
    for row in selection.itertuples():
        log.info("selected %s on %s: lr %g, weight decay %g (mean val bacc %.4f over %d runs)",
                 row.model, row.dataset, row.lr, row.weight_decay, row.mean_val_bacc, row.n_runs)

    final = final_specs(config, selection)
    log.info("study %s: %d final runs", config.name, len(final))
    backend.run(final, runs_dir)
    records_df = store.load_records(runs_dir)
    return StudyResult(runs_dir=runs_dir, records=records_df, selection=selection,
                       summary=summarize_final(records_df))
