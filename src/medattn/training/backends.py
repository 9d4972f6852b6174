"""Where runs execute: in this process one after another (local) or as Ray tasks (ray).

Both take a list of :class:`RunSpec` and a runs directory, skip runs that are already finished
(after checking that the data they were trained on is still the data on disk), and leave the same
files in the store; the store (a shared filesystem for a multi-node Ray cluster) is the only
channel results travel through. A run that could not finish is ``failed`` (or stays ``running``
when its process was lost) in the store; the study (``study.py``) decides what that means.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing as mp
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from medattn.data import load_task
from medattn.errors import ArgumentError, ConfigError, DataError, MedattnError
from medattn.progress import setup_console
from medattn.runs import store
from medattn.runs.records import RunRecord
from medattn.training.config import RunSpec
from medattn.training.engine import Hooks, train_run
from medattn.training.fingerprint import data_change
from medattn.training.ray_connect import connect, first_line, plain_logs

log = logging.getLogger("medattn.train")

# Called once per run of a backend's list: (record or None, trained now?). Finished runs that were
# skipped come first, with trained=False; the study's progress and MLflow tracking listen.
OnRecord = Callable[[dict | None, bool], None]


def _reporter(on_record: OnRecord | None, finished: dict[str, dict], specs: Sequence[RunSpec]
              ) -> Callable[[RunSpec, dict | None], None]:
    """Tell ``on_record`` about the finished runs now, and return what reports each trained one."""
    if on_record is None:
        return lambda spec, rec: None
    for spec in specs:
        if spec.run_id in finished:
            on_record(finished[spec.run_id], False)
    return lambda spec, rec: on_record(rec, True)


def _pending(specs: Sequence[RunSpec], runs_dir: Path, restart: bool = False
             ) -> tuple[list[RunSpec], dict[str, dict]]:
    """(runs to train, records of finished runs). Finished runs are checked against the data on
    disk; ``restart`` discards the resume state of the others."""
    todo, finished = [], {}
    for spec in specs:
        rec = store.read_record(store.run_dir(runs_dir, spec.run_id))
        if rec is not None and rec.get("status") in store.FINISHED:
            finished[spec.run_id] = rec
        else:
            todo.append(spec)
    check_data([s for s in specs if s.run_id in finished], finished)
    if restart:
        for spec in todo:
            with store.lock_run(runs_dir, spec.run_id):
                if store.discard_resume(runs_dir, spec.run_id):
                    log.info("%s: resume state discarded (restart)", spec.run_id)
    return todo, finished


def check_data(specs: Sequence[RunSpec], records: dict[str, dict]) -> None:
    """Raise :class:`DataError` if finished runs were trained on other data than is on disk now,
    saying which runs and what changed."""
    groups: dict[tuple, list[RunSpec]] = {}
    for spec in specs:
        groups.setdefault((spec.data, spec.ood), []).append(spec)
    changed: dict[str, list[str]] = {}
    for (data, ood), group in groups.items():
        task = load_task(data, list(ood))
        for spec in group:
            change = data_change(records[spec.run_id], task)
            if change:
                changed.setdefault(f"{data}: {change}", []).append(spec.run_id)
    if changed:
        n = sum(len(v) for v in changed.values())
        what = "; ".join(f"{change} [{len(ids)} run(s): {', '.join(ids[:3])}"
                         f"{' ...' if len(ids) > 3 else ''}]" for change, ids in changed.items())
        raise DataError(f"{n} finished run(s) were trained on other data than is there now: "
                        f"{what}. Restore the data, use a new runs folder, or delete these runs' "
                        "folders to retrain them.")


def record_lost(runs_dir: Path, spec: RunSpec, cause: str) -> RunRecord | None:
    """Record a run whose process died as ``failed`` with ``cause`` (a finished record is left
    alone); returns the record, or None if it could not be written."""
    try:
        with store.lock_run(runs_dir, spec.run_id):
            rec = store.read_record(store.run_dir(runs_dir, spec.run_id))
            if rec is not None and rec.get("status") in store.FINISHED:
                return rec
            rec = dataclasses.replace(rec, status="failed", message=cause) if rec else RunRecord(
                run_id=spec.run_id, status="failed", phase=spec.phase, model=spec.model,
                dataset=spec.dataset, data=spec.data, lr=spec.lr, weight_decay=spec.weight_decay,
                split_seed=spec.split_seed, fold=spec.fold, folds=spec.folds or None,
                message=cause)
            store.write_record(runs_dir, rec)
            return rec
    except MedattnError as err:
        log.error("run %s: could not record its loss: %s", spec.run_id, err)
        return None


class LocalBackend:
    """Runs on this machine: one after another in this process, or with ``jobs > 1`` in that many
    worker processes at once (each run then uses ``train.threads`` threads, 1 if unset; a small
    model on a few cores trains faster as parallel single-threaded runs than as one multi-threaded
    run). A run that fails with an unexpected error is recorded as ``failed`` and the others
    continue; user errors (:class:`MedattnError`) stop the study. ``hooks`` need ``jobs == 1``.

    Workers die with this process (however it ends); an interrupt (Ctrl-C) or a user error stops
    the workers at once and cancels the runs not yet started.
    """

    name = "local"

    def __init__(self, device: str | None = None, progress: bool = True,
                 hooks: Hooks | None = None, jobs: int = 1):
        if jobs < 1:
            raise ArgumentError(f"{{jobs}} must be >= 1, got {jobs}", "jobs")
        if hooks is not None and jobs > 1:
            raise ConfigError("hooks run in this process; use jobs=1 with hooks")
        self.device, self.progress, self.hooks, self.jobs = device, progress, hooks, jobs

    def run(self, specs: Sequence[RunSpec], runs_dir: str | os.PathLike, *,
            restart: bool = False, on_record: OnRecord | None = None) -> list[dict[str, Any]]:
        runs_dir = Path(runs_dir).resolve()
        todo, records = _pending(specs, runs_dir, restart)
        if records:
            log.info("%d of %d runs already finished; skipping them", len(records), len(specs))
        report = _reporter(on_record, records, specs)
        if self.jobs > 1 and len(todo) > 1:
            self._run_parallel(todo, runs_dir, records, report)
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
            report(spec, records[spec.run_id])
        return [records[s.run_id] for s in specs if records.get(s.run_id) is not None]

    def _run_parallel(self, todo: list[RunSpec], runs_dir: Path, records: dict,
                      report: Callable[[RunSpec, dict | None], None]) -> None:
        todo = [s if s.train.threads else
                dataclasses.replace(s, train=dataclasses.replace(s.train, threads=1))
                for s in todo]
        ctx = mp.get_context("spawn")  # fork after torch has started threads is unsafe
        pool = ProcessPoolExecutor(min(self.jobs, len(todo)), mp_context=ctx,
                                   initializer=_worker_init, initargs=(os.getpid(),))
        try:
            futures = {pool.submit(_worker_train, s.to_dict(), str(runs_dir), self.device): s
                       for s in todo}
            for fut in as_completed(futures):
                spec = futures[fut]
                try:
                    records[spec.run_id] = fut.result()
                except MedattnError:
                    raise
                except BrokenProcessPool:  # the record stays `running`: the study reports it
                    log.error("run %s lost: a worker process died (killed, or out of "
                              "memory?)", spec.run_id)
                except Exception as err:
                    log.error("run %s failed: %s: %s", spec.run_id, type(err).__name__, err)
                    rec = store.read_record(store.run_dir(runs_dir, spec.run_id))
                    if rec is not None:
                        records[spec.run_id] = rec
                report(spec, records.get(spec.run_id))
        except BaseException:
            _stop_pool(pool)
            raise
        pool.shutdown(wait=True)


def _stop_pool(pool) -> None:
    """Cancel the queued runs and kill the running ones now (their resume state is kept).
    ``shutdown`` alone would let the workers take the runs already queued to them and wait."""
    # the workers: Python >= 3.14 has pool.kill_workers(); before, only this attribute knows them
    procs = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for p in procs:
        p.kill()
    for p in procs:
        p.join(10)


def _worker_init(parent: int) -> None:
    """In each ``--jobs`` worker: leave Ctrl-C to the parent (it stops the workers), and exit as
    soon as the parent is gone, so that a killed study leaves no orphans training on."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.2)
        os._exit(1)
    threading.Thread(target=watch, name="medattn-parent-watch", daemon=True).start()


def _worker_train(spec: dict, runs_dir: str, device: str | None) -> dict:
    setup_console()  # quiet mode travels in the environment
    return train_run(spec, runs_dir, device=device, progress=False)


def _remote_train(spec: dict, runs_dir: str) -> dict:
    setup_console()  # quiet mode travels in the environment
    return train_run(spec, runs_dir, progress=False)


def _first_line(err: BaseException) -> str:
    return first_line(err, 160)


class RayBackend:
    """Each run is one Ray task asking for ``num_cpus`` CPUs and ``num_gpus`` GPUs.

    ``address`` joins an existing cluster (``auto`` or ``host:port``); without it a local Ray
    instance is started, unless one is already initialised in this process. The runs directory
    must be visible at the same path on every node. A task whose worker dies (killed, out of
    memory, node lost) is retried up to ``max_retries`` times and resumes from its last epoch;
    after that the run is recorded ``failed`` with the cause. Connecting gives up after
    ``connect_timeout`` seconds with a :class:`ConfigError`.
    """

    name = "ray"

    def __init__(self, address: str | None = None, num_cpus: float = 1.0,
                 num_gpus: float | None = None, max_retries: int = 3,
                 connect_timeout: float = 20.0):
        if max_retries < 0:
            raise ArgumentError(f"{{max_retries}} must be >= 0, got {max_retries}", "max_retries")
        if not connect_timeout > 0 or connect_timeout == float("inf"):
            raise ArgumentError(f"{{connect_timeout}} must be a number of seconds > 0, got "
                                f"{connect_timeout}", "connect_timeout")
        self.address, self.num_cpus, self.num_gpus = address, num_cpus, num_gpus
        self.max_retries, self.connect_timeout = int(max_retries), float(connect_timeout)

    def _init(self):
        plain_logs()  # before the import: Ray reads its log-deduplication setting then
        try:
            import ray  # optional dependency: medattn[ray]
        except ImportError:
            raise ArgumentError("{backend} ray needs Ray: pip install 'medattn[ray]'.",
                                "backend") from None
        if not ray.is_initialized():
            if self.address:  # a cluster's nodes must have medattn installed
                connect(ray, self.address, self.connect_timeout)
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

    def run(self, specs: Sequence[RunSpec], runs_dir: str | os.PathLike, *,
            restart: bool = False, on_record: OnRecord | None = None) -> list[dict[str, Any]]:
        runs_dir = Path(runs_dir).resolve()
        todo, records = _pending(specs, runs_dir, restart)
        report = _reporter(on_record, records, specs)
        if not todo:
            return [records[s.run_id] for s in specs if records.get(s.run_id) is not None]
        ray = self._init()
        gpus = self.num_gpus
        if gpus is None:  # one GPU per run when the cluster has GPUs
            gpus = 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0
        # Only a dead worker is retried; an exception in the run is recorded by the run itself.
        task = ray.remote(num_cpus=self.num_cpus, num_gpus=gpus, max_retries=self.max_retries,
                          retry_exceptions=False)(_remote_train)
        refs = {task.remote(s.to_dict(), str(runs_dir)): s for s in todo}
        pending = list(refs)
        try:
            while pending:
                ready, pending = ray.wait(pending, num_returns=1)
                spec = refs[ready[0]]
                rec = self._result(ray, ready[0], spec, runs_dir)
                if rec is not None:
                    records[spec.run_id] = rec
                report(spec, rec)
        except BaseException:
            for ref in pending:  # stop now; the runs keep their resume state
                try:
                    ray.cancel(ref, force=True)
                except Exception:  # noqa: BLE001 - already finished or gone
                    pass
            raise
        return [records[s.run_id] for s in specs if records.get(s.run_id) is not None]

    def _result(self, ray, ref, spec: RunSpec, runs_dir: Path) -> dict | None:
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as err:  # the run raised; it recorded `failed`
            cause = getattr(err, "cause", None)
            if isinstance(cause, MedattnError):
                raise cause from None
            log.error("run %s failed: %s", spec.run_id, _first_line(cause or err))
            return store.read_record(store.run_dir(runs_dir, spec.run_id))
        except ray.exceptions.RayError as err:  # its worker died on every try
            cause = (f"lost: the Ray worker running it died {self.max_retries + 1} time(s) "
                     f"(last: {type(err).__name__}: {_first_line(err)}); run the study again "
                     "to resume it")
            log.error("run %s %s", spec.run_id, cause)
            return record_lost(runs_dir, spec, cause)


def resolve_backend(backend, options: dict, caller: str, hint: str = ""):
    """``backend`` itself, or the backend a name (``local``, ``ray``) makes with ``options``.
    Options given with a backend object are refused: they would be dropped silently, and a
    mistyped setting would read as one. ``caller`` and ``hint`` complete the message."""
    if isinstance(backend, str):
        return get_backend(backend, **options)
    if options:
        raise TypeError(f"{caller}() got {', '.join(sorted(options))}: keyword options go to a "
                        f"backend named by string ('local' or 'ray'), not to a backend object"
                        f"{hint}")
    return backend


def get_backend(name: str, **kw) -> LocalBackend | RayBackend:
    """``local`` or ``ray`` (keyword arguments go to the backend's constructor)."""
    if name == "local":
        return LocalBackend(**{k: v for k, v in kw.items()
                               if k in ("device", "progress", "hooks", "jobs")})
    if name == "ray":
        return RayBackend(**{k: v for k, v in kw.items()
                             if k in ("address", "num_cpus", "num_gpus", "max_retries",
                                      "connect_timeout")})
    raise ConfigError(f"unknown backend {name!r}; use `local` or `ray`.")

