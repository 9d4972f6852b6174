"""A run's resume state: everything needed to continue after its last finished epoch.

One ``resume.safetensors`` per run holds the model, the best model so far (when it differs from
the current one), the optimizer's tensors and the torch RNG states as tensors, and the rest
(epoch, history, best epoch, optimizer and scheduler settings, AMP scaler, NumPy and Python RNG
states, timings) as JSON in the file's metadata; ``resume.json`` mirrors the progress for people.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn

from medattn.errors import DataError, StoreError
from medattn.runs import store
from medattn.runs.atomic import json_safe
from medattn.runs.tensorfile import write_tensors


@dataclass
class Progress:
    """Where a run stands after an epoch: what the resume state keeps besides the tensors."""

    epoch: int
    history: list[dict]
    best_epoch: int | None
    best_bacc: float
    timings: dict[str, Any]


@dataclass
class Trainer:
    """The objects whose state is saved and restored; ``scheduler`` may be None."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler | None
    scaler: Any  # torch.amp.GradScaler (or a disabled one): has state_dict/load_state_dict
    device: torch.device


def flat_tensors(prefix: str, sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CPU copies of a state dict's tensors, their names prefixed (the model's or a snapshot)."""
    return {f"{prefix}{k}": v.detach().to("cpu", copy=True).contiguous() for k, v in sd.items()}


def save_resume(run_dir: Path, run_id: str, fingerprint: str, trainer: Trainer,
                progress: Progress, best_state: dict[str, torch.Tensor]) -> None:
    """Write ``run_dir``'s resume state atomically (and its human-readable mirror)."""
    tensors = flat_tensors("model.", trainer.model.state_dict())
    if progress.best_epoch != progress.epoch:  # else the best weights are the current ones
        tensors.update(flat_tensors("best.", best_state))
    opt_tensors, opt_meta = _split_optimizer_state(trainer.optimizer.state_dict())
    tensors.update(opt_tensors)
    tensors["rng.torch"] = torch.get_rng_state()
    if trainer.device.type == "cuda":
        tensors["rng.cuda"] = torch.cuda.get_rng_state(trainer.device)
    state = {
        "run_id": run_id, "epoch": progress.epoch, "data_fingerprint": fingerprint,
        "history": progress.history, "best_epoch": progress.best_epoch,
        "best_bacc": progress.best_bacc, "optimizer": opt_meta,
        "scheduler": trainer.scheduler.state_dict() if trainer.scheduler else None,
        "scaler": trainer.scaler.state_dict(), "timings": progress.timings,
        "numpy_rng": _np_state_json(), "python_rng": _py_state_json(),
    }
    text = json.dumps(json_safe(state))
    # bytes through the one atomic writer: save_file's own temp file would outlive a kill
    write_tensors(run_dir / store.RESUME, tensors, {"state": text})
    # Human-readable mirror; the .safetensors file alone is authoritative (one atomic file).
    store.write_json(run_dir / store.RESUME_JSON,
                     {k: state[k] for k in ("run_id", "epoch", "best_epoch", "best_bacc",
                                            "history")})


def load_resume(run_dir: Path, run_id: str, fingerprint: str,
                trainer: Trainer) -> tuple[Progress, dict[str, torch.Tensor]] | None:
    """Restore ``trainer`` and the RNG states from ``run_dir``'s resume state, if there is one.

    Returns the progress and the best weights so far, or None without a resume state. A state
    written for another run or other data is a :class:`DataError`; an unreadable one a
    :class:`StoreError`; both say how to start afresh.
    """
    path = run_dir / store.RESUME
    if not path.exists():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            state = json.loads(f.metadata()["state"])
        state_run, state_fingerprint = state["run_id"], state["data_fingerprint"]
    except Exception as err:  # truncated, not safetensors, no state: unusable either way
        raise _unreadable(path, run_id, err) from None
    if state_run != run_id or state_fingerprint != fingerprint:
        raise DataError(f"{path}: resume state was written for other data (fingerprint "
                        f"{state_fingerprint} != {fingerprint}); delete it, or run again with "
                        "--restart, to start this run afresh.")
    try:
        tensors = load_file(str(path))
        trainer.model.load_state_dict({k[6:]: v for k, v in tensors.items()
                                       if k.startswith("model.")})
        best_state = ({k[5:]: v for k, v in tensors.items() if k.startswith("best.")}
                      or {k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        trainer.optimizer.load_state_dict(_join_optimizer_state(tensors, state["optimizer"]))
        if trainer.scheduler and state["scheduler"]:
            trainer.scheduler.load_state_dict(state["scheduler"])
        trainer.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(tensors["rng.torch"])
        if trainer.device.type == "cuda" and "rng.cuda" in tensors:
            torch.cuda.set_rng_state(tensors["rng.cuda"], trainer.device)
        np.random.set_state(_np_state_from_json(state["numpy_rng"]))
        random.setstate(_py_state_from_json(state["python_rng"]))
        progress = Progress(epoch=int(state["epoch"]), history=state["history"],
                            best_epoch=state["best_epoch"], best_bacc=state["best_bacc"],
                            timings=state["timings"])
    except Exception as err:
        raise _unreadable(path, run_id, err) from None
    return progress, best_state


def _unreadable(path: Path, run_id: str, err: Exception) -> StoreError:
    reason = (str(err).strip().splitlines() or [""])[0][:200]
    return StoreError(f"{path}: the resume state of run {run_id} is unreadable "
                      f"({type(err).__name__}: {reason}); delete it, or run again with "
                      "--restart, to start this run afresh.")


def _split_optimizer_state(sd: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """Optimizer state -> (tensors for safetensors, JSON-able rest)."""
    tensors: dict[str, torch.Tensor] = {}
    rest: dict[str, dict] = {}
    for idx, st in sd["state"].items():
        rest[str(idx)] = {}
        for key, v in st.items():
            if torch.is_tensor(v):
                tensors[f"optim.{idx}.{key}"] = v.detach().cpu().contiguous()
            else:
                rest[str(idx)][key] = v
    return tensors, {"state": rest, "param_groups": sd["param_groups"]}


def _join_optimizer_state(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {int(i): dict(v) for i, v in meta["state"].items()}
    for name, v in tensors.items():
        if name.startswith("optim."):
            _, idx, key = name.split(".", 2)
            state.setdefault(int(idx), {})[key] = v
    return {"state": state, "param_groups": meta["param_groups"]}


def _np_state_json() -> list:
    state = cast(tuple[str, np.ndarray, int, int, float], np.random.get_state(legacy=True))
    name, keys, pos, has_gauss, cached = state
    return [name, keys.tolist(), int(pos), int(has_gauss), float(cached)]


def _np_state_from_json(s: list) -> tuple:
    return (s[0], np.array(s[1], dtype=np.uint32), s[2], s[3], s[4])


def _py_state_json() -> list:
    v, internal, gauss = random.getstate()
    return [v, list(internal), gauss]


def _py_state_from_json(s: list) -> tuple:
    return (s[0], tuple(s[1]), s[2])
