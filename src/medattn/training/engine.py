"""One training run: train on a split, select on validation, evaluate on test and OOD sets.

The protocol (see ``docs/training.md``): SGD with momentum 0.9, cross-entropy, a cosine learning
rate schedule stepped once per epoch, a fixed epoch budget, and model selection on the validation
balanced accuracy (the first epoch reaching the maximum wins a tie). Each epoch ends by saving the
full training state (model, best model, optimizer, scheduler, AMP scaler, RNG states) to
``resume.safetensors``; a run started again continues after its last finished epoch. Every epoch
re-seeds all generators from (seed, epoch), so a resumed run is identical to an uninterrupted one.

Over 400 lines because it is one job, a run's life (set up, train, select, evaluate, finish),
whose steps share the state of ``_Run``. What the resume state holds and how it is written is in
:mod:`medattn.training.resume`; the data fingerprint and what changed since a run was trained in
:mod:`medattn.training.fingerprint`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import platform
import random
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

import medattn
from medattn.data import (ImageCache, ImageDataset, build_transform, kfold_split, load_task,
                          make_split, official_split)
from medattn.errors import ArgumentError, ConfigError, DataError, MedattnError
from medattn.progress import progress_bar
from medattn.runs import store
from medattn.training.config import AUGMENT, RunSpec, TrainSettings, parse_pretrained
from medattn.training.fingerprint import data_change, data_fingerprint, data_summary
from medattn.training.metrics import summarize
from medattn.training.precision import Precision
from medattn.training.resume import Progress, Trainer, flat_tensors, load_resume, save_resume
from medattn.training.tracking import tracker

log = logging.getLogger("medattn.train")


@dataclass
class Hooks:
    """Optional callbacks, e.g. for tests or custom logging.

    ``on_epoch_end(epoch, entry)`` runs after an epoch's state is saved (epochs count from 1);
    ``on_step(epoch, step)`` runs after each optimizer step.
    """

    on_epoch_end: Callable[[int, dict], None] | None = None
    on_step: Callable[[int, int], None] | None = None


def train_run(spec: RunSpec | dict, runs_dir: str | os.PathLike, *, device: str | None = None,
              hooks: Hooks | None = None, progress: bool = True,
              restart: bool = False) -> dict[str, Any]:
    """Run (or resume, or skip if finished) one run and return its record.

    The run is locked for the duration (:func:`store.lock_run`): a second process is refused
    with a :class:`~medattn.errors.StoreError` naming the holder. A finished run (status ``done``
    or ``diverged``) is returned as stored without any work, once its data fingerprint is checked
    against the data now on disk (a :class:`DataError` says what changed). ``restart`` discards an
    unfinished run's resume state first. An exception marks the record ``failed`` (with the
    message) and propagates; an interrupt (KeyboardInterrupt) leaves it ``running`` with its
    resume state, to be continued later.
    """
    spec = RunSpec.from_dict(spec) if isinstance(spec, dict) else spec
    runs_dir = Path(runs_dir)
    with store.lock_run(runs_dir, spec.run_id):
        store.sweep_run(runs_dir, spec.run_id)
        old = store.read_record(store.run_dir(runs_dir, spec.run_id))
        if old is not None and old.get("status") in store.FINISHED:
            change = data_change(old, load_task(spec.data, list(spec.ood)))
            if change:
                raise DataError(f"run {spec.run_id} finished on other data than is there now "
                                f"({change}); restore the data, use a new runs folder, or "
                                f"delete {store.run_dir(runs_dir, spec.run_id)} to retrain it.")
            return old
        if restart and store.discard_resume(runs_dir, spec.run_id):
            log.info("%s: resume state discarded (restart)", spec.run_id)
        threads = spec.train.threads
        prev_threads = torch.get_num_threads()
        if threads:
            torch.set_num_threads(threads)
        run = _Run(spec, runs_dir, device=device, hooks=hooks or Hooks(), progress=progress)
        try:
            return run.execute()
        except Exception as err:
            if isinstance(err, MedattnError) and not run.record.get("history") and not (
                    store.run_dir(runs_dir, spec.run_id) / store.RESUME).exists():
                # a user error before the first epoch (bad weights, data, option): no work to
                # keep, and no `failed` run for a study or the comparison to report
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(store.run_dir(runs_dir, spec.run_id) / store.RECORD)
                raise
            run.record.update(status="failed", message=f"{type(err).__name__}: {err}",
                              traceback=traceback.format_exc(limit=20))
            try:
                store.write_record(runs_dir, run.record)
            except MedattnError as write_err:  # e.g. the disk that made the run fail is full
                log.error("%s: could not record the failure: %s", spec.run_id, write_err)
            raise
        finally:
            if threads:
                torch.set_num_threads(prev_threads)


def train(model: str, data: str, *, ood: tuple[str, ...] | list[str] = (),
          runs_dir: str | os.PathLike = "runs/train", lr: float = 1e-3, weight_decay: float = 0.0,
          split_seed: int = 0, phase: str = "final", dataset: str | None = None,
          model_options: dict | None = None, device: str | None = None, progress: bool = True,
          restart: bool = False, tracking: str | None = None, **settings) -> dict[str, Any]:
    """One run of ``model`` on split ``split_seed`` of ``data`` (``source:PATH``), evaluated on
    the test set and each ``ood`` spec; ``settings`` are :class:`TrainSettings` fields (epochs,
    batch_size, image_size, pretrained (True, False, ``"timm"`` or a weight file), ...). Returns
    the run record (see ``docs/training.md``). Holds ``runs_dir``'s lock meanwhile; ``restart``
    discards the run's resume state first. ``tracking``: an MLflow tracking URI (default
    ``$MEDATTN_TRACKING_URI``) that receives the finished run, in the experiment named after the
    runs folder."""
    known = {f.name for f in fields(TrainSettings)}
    bad = sorted(set(settings) - known)
    if bad:
        raise ConfigError(f"unknown training setting(s) {bad}; known: {sorted(known)}")
    if ":" not in data:
        raise ArgumentError(f"{{data}}={data!r}: expected source:PATH, e.g. isic:data/isic", "data")
    if "pretrained" in settings:
        settings["pretrained"] = parse_pretrained(settings["pretrained"], "--pretrained")
    absolute = lambda sp: f"{sp.split(':', 1)[0]}:{os.path.abspath(sp.split(':', 1)[1])}"  # noqa: E731
    spec = RunSpec(phase=phase, dataset=dataset or data.split(":", 1)[0], data=absolute(data),
                   model=model, lr=float(lr), weight_decay=float(weight_decay),
                   split_seed=int(split_seed), ood=tuple(absolute(o) for o in ood),
                   model_options=tuple(sorted((model_options or {}).items())),
                   train=TrainSettings(**settings))
    track = tracker(tracking, Path(runs_dir).resolve().name, runs_dir)
    with store.lock_runs_dir(runs_dir):
        store.sweep(runs_dir)
        record = train_run(spec, runs_dir, device=device, progress=progress, restart=restart)
    if track:
        track.log(record)
    return record


# ---------------------------------------------------------------------------------------------


def _epoch_seed(seed: int, epoch: int) -> int:
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _worker_init(worker_id: int) -> None:  # torch seeds `random` and torch in workers, not NumPy
    np.random.seed(torch.initial_seed() % 2**32)


def versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "medattn": medattn.__version__,
           "torch": torch.__version__, "numpy": np.__version__}
    for mod in ("torchvision", "timm", "safetensors"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:  # pragma: no cover - optional
            pass
    return out


class _Run:
    # Data, model and optimisation: built by _setup, which every other step follows (loading data
    # and weights can fail with a user error, which train_run treats differently from a failure
    # in training).
    task: Any
    model: nn.Module
    precision: Precision
    train_set: Subset
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler | None
    scaler: Any  # torch.amp.GradScaler, disabled unless float16

    def __init__(self, spec: RunSpec, runs_dir: Path, *, device: str | None, hooks: Hooks,
                 progress: bool):
        self.spec, self.runs_dir, self.hooks, self.progress = spec, runs_dir, hooks, progress
        self.dir = store.run_dir(runs_dir, spec.run_id)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.cuda = self.device.type == "cuda"
        self.record: dict[str, Any] = {"run_id": spec.run_id, "status": "running",
                                       "phase": spec.phase, "model": spec.model}
        self.classes: list[str] = []
        self.split: dict[str, np.ndarray] = {}
        self.fingerprint = ""
        self.eval_sets: dict[str, Any] = {}
        self.eval_tables: dict[str, Any] = {}
        # Progress of the run: the best epoch so far and its weights (set once the model
        # exists, replaced by _load_state on resume), and the time spent.
        self.best_state: dict[str, torch.Tensor] = {}
        self.best_epoch: int | None = None
        self.best_bacc = -1.0
        self.timings: dict[str, Any] = {"train_seconds": 0.0, "data_seconds": 0.0,
                                        "step_seconds": 0.0, "eval_seconds": 0.0,
                                        "train_images": 0, "sessions": 0}

    # -- set-up --------------------------------------------------------------------------------

    def _setup(self) -> None:
        # start-up time: the zoo imports timm, which importing medattn.training (the report's
        # selection note) does not need; tests also replace medattn.models.create_model
        from medattn.models import create_model, parse_model_name

        s, t = self.spec, self.spec.train
        self.task = task = load_task(s.data, list(s.ood))
        self.classes = list(task.classes)
        if t.split == "official":  # the data set's own partition: runs differ only by seed
            self.split = official_split(task.table)
        elif s.folds:  # fold `fold` of repetition `split_seed`, validation from the other folds
            self.split = kfold_split(task.table, s.split_seed, s.folds, s.fold,
                                     val_fraction=t.fractions[1])
        else:
            self.split = make_split(task.table, s.split_seed, fractions=tuple(t.fractions))
        for part in ("train", "val", "test"):
            if len(self.split[part]) == 0:
                raise DataError(f"{s.data}: the {part} part of split {s.split_seed}"
                                f"{f' fold {s.fold}' if s.folds else ''} is empty; "
                                "the data set is too small for the split fractions.")
        self.fingerprint = data_fingerprint(task.table, task.ood)
        mspec = parse_model_name(s.model)
        self.record.update(
            backbone=mspec.backbone, variant=mspec.variant, dataset=s.dataset, source=task.name,
            data=s.data,
            ood={name: str(tb.attrs.get("spec") or s.data) for name, tb in task.ood.items()},
            classes=self.classes, split_seed=s.split_seed, lr=s.lr, weight_decay=s.weight_decay,
            batch_size=t.batch_size, epochs=t.epochs, image_size=t.image_size, history=[],
            best_epoch=None, metrics={}, data_fingerprint=self.fingerprint, versions=versions(),
            timings={}, config={**s.to_dict(), "device": str(self.device)}, message="",
            split_sizes={k: int(len(v)) for k, v in self.split.items()},
            split={"kind": "kfold" if s.folds else t.split,
                   "fractions": list(t.fractions) if t.split == "random" else None,
                   **({"repetition": s.split_seed, "fold": s.fold, "folds": s.folds,
                       "train_seed": s.train_seed} if s.folds else {}),
                   **{f"n_{k}": int(len(v)) for k, v in self.split.items()}},
            fold=s.fold, folds=s.folds or None,
            data_summary=data_summary(task.table, task.ood), selection=s.selection,
            worker={"host": platform.node(), "pid": os.getpid()})

        seed_everything(s.train_seed)  # model initialisation depends only on the seed
        self.model = create_model(s.model, num_classes=len(self.classes), pretrained=t.pretrained,
                                  **dict(s.model_options))
        cfg = getattr(self.model, "pretrained_cfg", None) or {}
        mean = tuple(cfg.get("mean", (0.485, 0.456, 0.406)))
        std = tuple(cfg.get("std", (0.229, 0.224, 0.225)))
        self.precision = Precision.resolve(t.amp, t.channels_last, self.device)
        self.precision.prepare(self.model)
        self.record["config"]["precision"] = self.precision.name

        cache = None
        if t.cache:
            cache = ImageCache(self.runs_dir / "cache", short_side=_cache_side(t.image_size))
        train_tf = build_transform(True, t.image_size, mean, std, **AUGMENT[t.augment])
        eval_tf = build_transform(False, t.image_size, mean, std)
        self.train_set = Subset(ImageDataset(task.table, train_tf, cache=cache), self.split["train"])
        full_eval = ImageDataset(task.table, eval_tf, cache=cache)
        self.eval_sets = {"val": Subset(full_eval, self.split["val"]),
                          "test": Subset(full_eval, self.split["test"])}
        for name, table in task.ood.items():
            self.eval_sets[f"ood-{name}"] = ImageDataset(table, eval_tf, cache=cache)
        self.eval_tables = {"test": task.table, **{f"ood-{n}": tb for n, tb in task.ood.items()}}

        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=s.lr, momentum=t.momentum,
                                         weight_decay=s.weight_decay)
        self.scheduler = (torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, t.epochs)
                          if t.schedule == "cosine" else None)
        self.scaler = self.precision.grad_scaler()
        if self.cuda:
            torch.backends.cudnn.benchmark = False
            torch.backends.cudnn.deterministic = True

    def _loader(self, ds, *, train: bool, epoch: int = 0) -> DataLoader:
        t = self.spec.train
        gen = torch.Generator().manual_seed(_epoch_seed(self.spec.train_seed, epoch))
        return DataLoader(ds, batch_size=t.batch_size, shuffle=train, generator=gen,
                          drop_last=train and len(ds) > t.batch_size,  # no size-1 BatchNorm batch
                          num_workers=t.num_workers, worker_init_fn=_worker_init,
                          pin_memory=self.cuda, persistent_workers=False)

    # -- resume state --------------------------------------------------------------------------

    def _save_state(self, epoch: int) -> None:
        save_resume(self.dir, self.spec.run_id, self.fingerprint, self._trainer(),
                    Progress(epoch, self.record["history"], self.best_epoch, self.best_bacc,
                             self.timings), self.best_state)

    def _load_state(self) -> int:
        """Restore the resume state if any; returns the number of finished epochs."""
        loaded = load_resume(self.dir, self.spec.run_id, self.fingerprint, self._trainer())
        if loaded is None:
            return 0
        progress, self.best_state = loaded
        self.record["history"] = progress.history
        self.best_epoch, self.best_bacc = progress.best_epoch, progress.best_bacc
        self.timings = progress.timings
        log.info("%s: resuming after epoch %d", self.spec.run_id, progress.epoch)
        return progress.epoch

    def _trainer(self) -> Trainer:
        return Trainer(self.model, self.optimizer, self.scheduler, self.scaler, self.device)

    # -- loops ---------------------------------------------------------------------------------

    def _train_epoch(self, epoch: int) -> tuple[float, int]:
        """One epoch; returns (mean training loss, step at which the loss became non-finite or -1)."""
        self.model.train()
        loader = self._loader(self.train_set, train=True, epoch=epoch)
        total, count, bad_step = 0.0, 0, -1
        bar = progress_bar(total=len(loader), desc=f"epoch {epoch}/{self.spec.train.epochs}",
                           leave=False, disable=not self.progress, unit="batch")
        t_wait = time.perf_counter()
        for step, (x, y, _) in enumerate(loader):
            t0 = time.perf_counter()
            self.timings["data_seconds"] += t0 - t_wait
            x, y = self.precision.batch(x), y.to(self.device, non_blocking=True)
            with self.precision.autocast():
                loss = nn.functional.cross_entropy(self.model(x), y)
            if not torch.isfinite(loss):
                bad_step = step
                break
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            total += float(loss.detach()) * len(y)
            count += len(y)
            self.timings["train_images"] += len(y)
            bar.update(1)
            bar.set_postfix(loss=f"{total / count:.4f}")
            if self.hooks.on_step:
                self.hooks.on_step(epoch, step)
            t_wait = time.perf_counter()
            self.timings["step_seconds"] += t_wait - t0
        bar.close()
        return (total / count if count else float("nan")), bad_step

    @torch.no_grad()
    def _predict(self, ds) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Logits (N, K) float32, labels (N,), row positions (N,) of a set."""
        self.model.eval()
        logits, labels, rows = [], [], []
        for x, y, r in self._loader(ds, train=False):
            with self.precision.autocast():
                out = self.model(self.precision.batch(x))
            logits.append(out.float().cpu())
            labels.append(y)
            rows.append(torch.as_tensor(r))
        k = len(self.classes)
        if not logits:
            return np.zeros((0, k), np.float32), np.zeros(0, int), np.zeros(0, int)
        return (torch.cat(logits).numpy(), torch.cat(labels).numpy().astype(int),
                torch.cat(rows).numpy().astype(int))

    def _validate(self) -> tuple[float, float]:
        logits, labels, _ = self._predict(self.eval_sets["val"])
        loss = float(nn.functional.cross_entropy(torch.from_numpy(logits),
                                                 torch.from_numpy(labels)))
        bacc = summarize(labels, logits.argmax(1), self.classes)["balanced_accuracy"]
        return loss, bacc

    # -- the run -------------------------------------------------------------------------------

    def execute(self) -> dict[str, Any]:
        t_start = time.perf_counter()
        s, t = self.spec, self.spec.train
        self._setup()
        self.record["status"] = "running"
        store.write_record(self.runs_dir, self.record)
        self.best_state = flat_tensors("", self.model.state_dict())
        done = self._load_state()
        self.timings["sessions"] += 1
        writer = self._tensorboard()
        diverged_msg = ""
        for epoch in range(done + 1, t.epochs + 1):
            seed_everything(_epoch_seed(s.train_seed, epoch))
            e0 = time.perf_counter()
            train_loss, bad_step = self._train_epoch(epoch)
            e1 = time.perf_counter()
            self.timings["train_seconds"] += e1 - e0
            if bad_step >= 0:
                diverged_msg = f"training loss became non-finite at epoch {epoch}, step {bad_step}"
                break
            val_loss, val_bacc = self._validate()
            self.timings["eval_seconds"] += time.perf_counter() - e1
            lr = self.optimizer.param_groups[0]["lr"]
            if self.scheduler:
                self.scheduler.step()
            entry = {"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss,
                     "val_balanced_accuracy": val_bacc, "lr": lr,
                     "seconds": time.perf_counter() - e0}
            self.record["history"].append(entry)
            if val_bacc > self.best_bacc:  # strict: ties keep the earlier epoch
                self.best_bacc, self.best_epoch = val_bacc, epoch
                self.best_state = flat_tensors("", self.model.state_dict())
            self._save_state(epoch)
            log.info("%s | epoch %d/%d | train loss %.4f | val loss %.4f | val bacc %.4f%s | "
                     "lr %.2e | %.1fs", s.run_id, epoch, t.epochs, train_loss, val_loss, val_bacc,
                     " *" if self.best_epoch == epoch else "", lr, entry["seconds"])
            if writer:
                for key in ("train_loss", "val_loss", "val_balanced_accuracy", "lr"):
                    writer.add_scalar(key, entry[key], epoch)
                writer.flush()
            if self.hooks.on_epoch_end:
                self.hooks.on_epoch_end(epoch, entry)
        if writer:
            writer.close()
        return self._finish(diverged_msg, t_start)

    def _finish(self, diverged_msg: str, t_start: float) -> dict[str, Any]:
        rec = self.record
        rec["best_epoch"] = self.best_epoch
        if diverged_msg:
            rec.update(status="diverged", message=diverged_msg, metrics={})
        else:
            self.model.load_state_dict(self.best_state)
            from medattn.models import save_checkpoint  # start-up time: see _setup
            save_checkpoint(self.model, self.dir / store.MODEL,  # atomic itself
                            {"classes": self.classes, "num_classes": len(self.classes),
                             "run_id": self.spec.run_id, "best_epoch": self.best_epoch,
                             "image_size": self.spec.train.image_size})
            e0 = time.perf_counter()
            metrics = {}
            for name, ds in self.eval_sets.items():
                logits, labels, rows = self._predict(ds)
                metrics[name] = summarize(labels, logits.argmax(1), self.classes)
                if name != "val":
                    self._write_predictions(name, logits, labels, rows)
            self.timings["eval_seconds"] += time.perf_counter() - e0
            rec["metrics"] = metrics
            chance = 1.0 / len(self.classes)
            val_bacc = metrics["val"]["balanced_accuracy"]
            if not val_bacc > chance + self.spec.train.chance_margin:
                rec.update(status="diverged",
                           message=f"selected model is at chance level on val: balanced accuracy "
                                   f"{val_bacc:.4f} <= 1/{len(self.classes)} + "
                                   f"{self.spec.train.chance_margin}")
            else:
                rec.update(status="done", message="")
        tm = self.timings
        tm["total_seconds"] = tm.get("total_seconds", 0.0) + time.perf_counter() - t_start
        tm["images_per_second"] = (tm["train_images"] / tm["train_seconds"]
                                   if tm["train_seconds"] else None)
        busy = tm["data_seconds"] + tm["step_seconds"]
        tm["data_wait_share"] = tm["data_seconds"] / busy if busy else None
        rec["timings"] = tm
        store.write_record(self.runs_dir, rec)
        for name in (store.RESUME, store.RESUME_JSON):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.dir / name)
        log.info("%s: %s%s", self.spec.run_id, rec["status"],
                 f" ({rec['message']})" if rec["message"] else
                 "".join(f" | {k} bacc {m['balanced_accuracy']:.4f}"
                         for k, m in rec["metrics"].items()))
        return rec

    def _write_predictions(self, name: str, logits: np.ndarray, labels: np.ndarray,
                           rows: np.ndarray) -> None:
        table = self.eval_tables[name]
        probs = torch.softmax(torch.from_numpy(logits), 1).numpy()
        df = pd.DataFrame({"row": rows, "image_id": table["image_id"].to_numpy()[rows],
                           "label": labels, "pred": logits.argmax(1)})
        for i, c in enumerate(self.classes):
            df[f"prob_{c}"] = probs[:, i]
        for i, c in enumerate(self.classes):
            df[f"logit_{c}"] = logits[:, i]
        store.write_predictions(self.dir / "predictions" / f"{name}.csv", df)

    def _tensorboard(self):
        if not self.spec.train.tensorboard:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter  # optional: medattn[tensorboard]
        except ImportError:
            raise MedattnError("train.tensorboard is on but TensorBoard is not installed: "
                               "pip install 'medattn[tensorboard]' or turn it off.") from None
        return SummaryWriter(str(self.dir / "tensorboard"), purge_step=len(self.record["history"]) + 1)


def _cache_side(image_size: int) -> int:
    """Short side of cached images: the eval resize side (image_size / 0.875, as timm uses)."""
    return int(math.ceil(image_size / 0.875))
