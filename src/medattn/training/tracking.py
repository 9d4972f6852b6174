"""Runs in MLflow: each finished run's config, per-epoch metrics, final metrics and model file.

Optional (``pip install 'medattn[mlflow]'``). The run store stays the record of truth: a run is
logged from its ``record.json`` once it has finished (``done`` or ``diverged``), so MLflow shows
exactly what the records say, whichever backend trained it. A study is one MLflow experiment
(named after the study config); its runs carry the tags ``model``, ``dataset``, ``source``,
``split``, ``phase`` and ``status``. Logging is idempotent: a run already logged from the same
runs folder is skipped, so running a study again (or :func:`log_runs` on a finished folder) logs
only what is missing. Live curves stay with TensorBoard (``--tensorboard``).

The tracking URI is ``--tracking URI`` or the environment variable ``MEDATTN_TRACKING_URI``; any
URI MLflow accepts (``sqlite:///mlflow.db``, ``http://host:5000``, ``databricks``, ...). For a
SQLite store, artifacts go beside the database file (``mlartifacts/``), not into the working
directory.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from medattn.errors import ArgumentError
from medattn.runs import store

log = logging.getLogger("medattn.train")

ENV = "MEDATTN_TRACKING_URI"
TAG_RUN = "medattn.run_id"
TAG_DIR = "medattn.runs_dir"
# record history key -> MLflow metric (step = epoch); final metrics are named <set>/<metric>
EPOCH_METRICS = {k: f"epoch/{k}" for k in ("train_loss", "val_loss", "val_balanced_accuracy",
                                            "lr", "seconds")}


def tracking_uri(uri: str | None = None) -> str | None:
    """The tracking URI to use: ``uri``, else ``$MEDATTN_TRACKING_URI``, else None (no tracking)."""
    return uri or os.environ.get(ENV) or None


def flat_params(config: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """A run's config as MLflow params: nested keys joined by dots, lists as JSON, all strings."""
    out: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flat_params(value, f"{name}."))
        elif isinstance(value, (list, tuple, dict)):
            out[name] = json.dumps(value)
        else:
            out[name] = str(value)
    return out


def _metric_name(text: str) -> str:
    """MLflow names allow letters, digits, ``_ - . /`` and spaces; anything else becomes ``_``."""
    return re.sub(r"[^\w\-./ ]", "_", text)


def final_metrics(record: dict[str, Any]) -> dict[str, float]:
    """The final metrics of a record (the selected model's): per evaluated set (``val``, ``test``,
    ``ood-<name>``) ``<set>/balanced_accuracy``, ``<set>/recall_<class>`` and ``<set>/n``; plus
    ``best_epoch`` and ``total_seconds``."""
    out: dict[str, float] = {}
    for name, m in (record.get("metrics") or {}).items():
        out[f"{name}/balanced_accuracy"] = m.get("balanced_accuracy")
        for c, r in (m.get("per_class_recall") or {}).items():
            out[_metric_name(f"{name}/recall_{c}")] = r
        out[f"{name}/n"] = m.get("n")
    out["best_epoch"] = record.get("best_epoch")
    out["total_seconds"] = (record.get("timings") or {}).get("total_seconds")
    return {k: float(v) for k, v in out.items() if v is not None}


def run_tags(record: dict[str, Any], runs_dir: Path) -> dict[str, str]:
    split = record.get("split") or {}
    tags = {TAG_RUN: record["run_id"], TAG_DIR: str(runs_dir), "mlflow.runName": record["run_id"],
            "model": record.get("model"), "backbone": record.get("backbone"),
            "variant": record.get("variant"), "dataset": record.get("dataset"),
            "source": record.get("source"), "split": record.get("split_seed"),
            "split_kind": split.get("kind"), "phase": record.get("phase"),
            "status": record.get("status"),
            "medattn_version": (record.get("versions") or {}).get("medattn")}
    if record.get("message"):
        tags["mlflow.note.content"] = record["message"]
    return {k: str(v) for k, v in tags.items() if v is not None}


class MlflowTracker:
    """Logs finished runs of one runs folder into one MLflow experiment.

    ``uri``: the tracking URI; ``experiment``: the experiment name (created if absent);
    ``runs_dir``: the runs folder the records come from (tagged, so that two folders' runs with
    equal ids stay apart). Raises :class:`ConfigError` when MLflow is missing or the URI unusable.
    """

    def __init__(self, uri: str, experiment: str, runs_dir: str | os.PathLike):
        try:
            from mlflow.tracking import MlflowClient  # optional dependency: medattn[mlflow]
        except ImportError:
            raise ArgumentError(f"tracking to {uri!r} ({{tracking}} or ${ENV}) needs MLflow: pip "
                                f"install 'medattn[mlflow]', or unset {ENV}.", "tracking") from None
        self.uri, self.runs_dir = uri, Path(runs_dir).resolve()
        self._failed = False
        try:
            self.client = MlflowClient(tracking_uri=uri)
            exp = self.client.get_experiment_by_name(experiment)
            self.experiment_id = (exp.experiment_id if exp is not None else
                                  self.client.create_experiment(experiment, _artifact_root(uri)))
            self.logged = self._existing()
        except Exception as err:  # MLflow raises many kinds (connection, SQL, REST)
            raise ArgumentError(f"MLflow tracking URI {uri!r} ({{tracking}} or ${ENV}) cannot be "
                                f"used: {type(err).__name__}: {_first_line(err)}",
                                "tracking") from None

    def _existing(self) -> dict[str, str]:
        """run id -> MLflow run id of this folder's runs already logged completely; incomplete
        ones (a crash while logging) are deleted, to be logged again."""
        done, token = {}, None
        while True:
            page = self.client.search_runs([self.experiment_id], max_results=1000,
                                           page_token=token)
            for run in page:
                if run.data.tags.get(TAG_DIR) != str(self.runs_dir):
                    continue
                if run.info.status == "FINISHED":
                    done[run.data.tags.get(TAG_RUN)] = run.info.run_id
                else:
                    self.client.delete_run(run.info.run_id)
            token = page.token
            if not token:
                return done

    def log(self, record: dict[str, Any]) -> str | None:
        """Log one run (if finished and not logged yet); returns its MLflow run id, or None.

        A logging failure is reported once as a warning and does not stop the caller: the run
        store is unaffected, and the next study start logs what is missing.
        """
        if record is None or record.get("status") not in store.FINISHED:
            return None
        if record["run_id"] in self.logged:
            return self.logged[record["run_id"]]
        try:
            mlflow_id = self._log(record)
        except Exception as err:  # tracking must never lose a study's work
            if not self._failed:
                log.warning("MLflow: could not log run %s to %s (%s: %s); the run store is "
                            "unaffected, and running the command again logs what is missing",
                            record["run_id"], self.uri, type(err).__name__, _first_line(err))
            self._failed = True
            return None
        self.logged[record["run_id"]] = mlflow_id
        return mlflow_id

    def log_many(self, records: Iterable[dict[str, Any]]) -> list[str]:
        return [i for i in (self.log(r) for r in records) if i is not None]

    def _log(self, record: dict[str, Any]) -> str:
        from mlflow.entities import Metric, Param  # optional dependency (present: __init__ ran)

        rdir = store.run_dir(self.runs_dir, record["run_id"])
        rec_file = rdir / store.RECORD
        end = int((rec_file.stat().st_mtime if rec_file.exists() else time.time()) * 1000)
        total = (record.get("timings") or {}).get("total_seconds") or 0.0
        start = end - int(1000 * total)
        run = self.client.create_run(self.experiment_id, start_time=start,
                                     tags=run_tags(record, self.runs_dir))
        rid = run.info.run_id
        params = [Param(k, v) for k, v in flat_params(record.get("config") or {}).items()]
        metrics, t = [], start
        for entry in record.get("history") or []:
            t += int(1000 * (entry.get("seconds") or 0))
            metrics += [Metric(name, float(entry[key]), t, int(entry["epoch"]))
                        for key, name in EPOCH_METRICS.items() if _finite(entry.get(key))]
        metrics += [Metric(k, v, end, 0) for k, v in final_metrics(record).items()]
        for i in range(0, max(len(params), len(metrics)), 100):  # MLflow's batch limits
            self.client.log_batch(rid, metrics=metrics[i:i + 100], params=params[i:i + 100])
        for name in (store.MODEL, store.RECORD):
            if (rdir / name).exists():
                self.client.log_artifact(rid, str(rdir / name))
        if (rdir / "predictions").is_dir():
            self.client.log_artifacts(rid, str(rdir / "predictions"), "predictions")
        self.client.set_terminated(rid, "FINISHED", end_time=end)
        return rid


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [""])[0][:300]


def _artifact_root(uri: str) -> str | None:
    """Artifacts of a SQLite store beside its database (MLflow's default is the working dir)."""
    if not uri.startswith("sqlite:///"):
        return None
    db = Path(uri[len("sqlite:///"):]).expanduser().resolve()
    return (db.parent / "mlartifacts").as_uri()


def tracker(uri: str | None, experiment: str, runs_dir: str | os.PathLike
            ) -> MlflowTracker | None:
    """An :class:`MlflowTracker` when a URI is given or ``$MEDATTN_TRACKING_URI`` is set, else
    None."""
    uri = tracking_uri(uri)
    return MlflowTracker(uri, experiment, runs_dir) if uri else None


def experiment_name(runs_dir: str | os.PathLike) -> str:
    """A runs folder's experiment: its study's name (``study.yaml``), else the folder's name."""
    p = Path(runs_dir).resolve()
    study = p / "study.yaml"
    if study.is_file():
        name = (yaml.safe_load(study.read_text(encoding="utf-8")) or {}).get("name")
        if name:
            return str(name)
    return p.name


def log_runs(runs_dir: str | os.PathLike, uri: str | None = None,
             experiment: str | None = None) -> dict[str, str]:
    """Log every finished run of a runs folder not logged yet (e.g. a study trained without
    tracking); returns run id -> MLflow run id of all its logged runs."""
    uri = tracking_uri(uri)
    if not uri:
        raise ArgumentError(f"no tracking URI: give one ({{uri}}) or set ${ENV}.", "uri")
    t = MlflowTracker(uri, experiment or experiment_name(runs_dir), runs_dir)
    t.log_many(store.iter_records(runs_dir))
    return dict(t.logged)
