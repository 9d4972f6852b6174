"""Where runs execute: in this process one after another (local) or as Ray tasks (ray).

Both take a list of :class:`RunSpec` and a runs directory, skip runs that are already finished,
and leave the same files in the store; the store (a shared filesystem for a multi-node Ray
cluster) is the only channel results travel through.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from medattn.errors import ConfigError, MedattnError
from medattn.training import store
from medattn.training.config import RunSpec
from medattn.training.engine import Hooks, train_run

log = logging.getLogger("medattn.train")


def _pending(specs: Sequence[RunSpec], runs_dir: Path) -> tuple[list[RunSpec], dict[str, dict]]:
    todo, finished = [], {}
    for spec in specs:
        rec = store.read_record(store.run_dir(runs_dir, spec.run_id))
        if rec is not None and rec.get("status") in store.FINISHED:
            finished[spec.run_id] = rec
        else:
            todo.append(spec)
    return todo, finished


class LocalBackend:
    """Runs on this machine: one after another in this process, or with ``jobs > 1`` in that many
    worker processes at once (each run then uses ``train.threads`` threads, 1 if unset; a small
    model on a few cores trains faster as parallel single-threaded runs than as one multi-threaded
    run). A run that fails with an unexpected error is recorded as ``failed`` and the others
    continue; user errors (:class:`MedattnError`) stop the study. ``hooks`` need ``jobs == 1``."""

    name = "local"

    def __init__(self, device: str | None = None, progress: bool = True,
                 hooks: Hooks | None = None, jobs: int = 1):
        if jobs < 1:
            raise ConfigError(f"jobs must be >= 1, got {jobs}")
        if hooks is not None and jobs > 1:
            raise ConfigError("hooks run in this process; use jobs=1 with hooks")
        self.device, self.progress, self.hooks, self.jobs = device, progress, hooks, jobs

    def run(self, specs: Sequence[RunSpec], runs_dir: str | os.PathLike) -> list[dict[str, Any]]:
        runs_dir = Path(runs_dir).resolve()
        todo, records = _pending(specs, runs_dir)
        if records:
            log.info("%d of %d runs already finished; skipping them", len(records), len(specs))
        if self.jobs > 1 and len(todo) > 1:
            self._run_parallel(todo, runs_dir, records)
        for i, spec in enumerate(todo if self.jobs == 1 or len(todo) == 1 else [], 1):
            log.info("run %d/%d: %s", i, len(todo), spec.run_id)
            try:
                records[spec.run_id] = train_run(spec, runs_dir, device=self.device,
                                                 hooks=self.hooks, progress=self.progress)
            except MedattnError:
                raise
            except Exception as err:  # recorded as failed by train_run; keep going
                log.error("run %s failed: %s: %s", spec.run_id, type(err).__name__, err)
                records[spec.run_id] = store.read_record(store.run_dir(runs_dir, spec.run_id))
        return [records[s.run_id] for s in specs if records.get(s.run_id) is not None]

    def _run_parallel(self, todo: list[RunSpec], runs_dir: Path, records: dict) -> None:
        import dataclasses
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        todo = [s if s.train.threads else
                dataclasses.replace(s, train=dataclasses.replace(s.train, threads=1))
                for s in todo]
        ctx = mp.get_context("spawn")  # fork after torch has started threads is unsafe
        with ProcessPoolExecutor(min(self.jobs, len(todo)), mp_context=ctx) as pool, \
                tqdm(total=len(todo), desc="runs", unit="run", disable=not self.progress) as bar:
            futures = {pool.submit(_worker_train, s.to_dict(), str(runs_dir), self.device): s
                       for s in todo}
            for fut in as_completed(futures):
                spec = futures[fut]
                try:
                    records[spec.run_id] = fut.result()
                except MedattnError:
                    for f in futures:
                        f.cancel()
                    raise
                except Exception as err:
                    log.error("run %s failed: %s: %s", spec.run_id, type(err).__name__, err)
                    rec = store.read_record(store.run_dir(runs_dir, spec.run_id))
                    if rec is not None:
                        records[spec.run_id] = rec
                bar.update(1)


def _worker_train(spec: dict, runs_dir: str, device: str | None) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return train_run(spec, runs_dir, device=device, progress=False)


def _remote_train(spec: dict, runs_dir: str) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return train_run(spec, runs_dir, progress=False)


class RayBackend:
    """Each run is one Ray task asking for ``num_cpus`` CPUs and ``num_gpus`` GPUs.

    ``address`` joins an existing cluster (``auto`` or ``host:port``); without it a local Ray
    instance is started, unless one is already initialised in this process. The runs directory
    must be visible at the same path on every node.
    """

    name = "ray"

    def __init__(self, address: str | None = None, num_cpus: float = 1.0,
                 num_gpus: float | None = None):
        self.address, self.num_cpus, self.num_gpus = address, num_cpus, num_gpus

    def _init(self):
        try:
            import ray
        except ImportError:
            raise ConfigError("--backend ray needs Ray: pip install 'medattn[ray]'.") from None
        if not ray.is_initialized():
            if self.address:  # a cluster's nodes must have medattn installed
                ray.init(address=self.address, log_to_driver=True)
                return ray
            # A local instance inherits this environment: its workers import this medattn even
            # when it is not installed (PYTHONPATH=src). Faster than a runtime_env set-up.
            src = str(Path(__file__).resolve().parents[2])
            old = os.environ.get("PYTHONPATH")
            os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (src, old) if p)
            try:
                ray.init(include_dashboard=False, log_to_driver=True)
            finally:
                if old is None:
                    os.environ.pop("PYTHONPATH", None)
                else:
                    os.environ["PYTHONPATH"] = old
        return ray

    def run(self, specs: Sequence[RunSpec], runs_dir: str | os.PathLike) -> list[dict[str, Any]]:
        runs_dir = Path(runs_dir).resolve()
        todo, records = _pending(specs, runs_dir)
        if todo:
            ray = self._init()
            gpus = self.num_gpus
            if gpus is None:  # one GPU per run when the cluster has GPUs
                gpus = 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0
            task = ray.remote(num_cpus=self.num_cpus, num_gpus=gpus, max_retries=0)(_remote_train)
            refs = {task.remote(s.to_dict(), str(runs_dir)): s for s in todo}
            with tqdm(total=len(refs), desc="runs (ray)", unit="run") as bar:
                pending = list(refs)
                while pending:
                    ready, pending = ray.wait(pending, num_returns=1)
                    spec = refs[ready[0]]
                    try:
                        records[spec.run_id] = ray.get(ready[0])
                    except Exception as err:  # the worker recorded the failure
                        cause = getattr(err, "cause", None)
                        if isinstance(cause, MedattnError):
                            raise cause from None
                        log.error("run %s failed: %s", spec.run_id, err)
                        rec = store.read_record(store.run_dir(runs_dir, spec.run_id))
                        if rec is not None:
                            records[spec.run_id] = rec
                    bar.update(1)
        return [records[s.run_id] for s in specs if records.get(s.run_id) is not None]


def get_backend(name: str, **kw) -> LocalBackend | RayBackend:
    """``local`` or ``ray`` (keyword arguments go to the backend's constructor)."""
    if name == "local":
        return LocalBackend(**{k: v for k, v in kw.items()
                               if k in ("device", "progress", "hooks", "jobs")})
    if name == "ray":
        return RayBackend(**{k: v for k, v in kw.items() if k in ("address", "num_cpus",
                                                                  "num_gpus")})
    raise ConfigError(f"unknown backend {name!r}; use `local` or `ray`.")
