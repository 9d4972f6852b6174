"""Weights in and out: timm's pretrained weights, and medattn checkpoints (safetensors, no pickle).

* :func:`create_timm` builds a timm model, with ``pretrained=True`` through timm's hub loader; offline it
  fails with a :class:`~medattn.errors.WeightsError` that says how to pass a local file instead.
* :func:`load_timm_file` loads a local timm-format file (e.g. ``model.safetensors`` from
  ``https://huggingface.co/timm/<architecture>.<tag>``) into a freshly built timm model; the
  classifier of the file (1000 or 21843 classes) is dropped, every other tensor must match.
* :func:`save_checkpoint` / :func:`load_checkpoint`: a full model as ``.safetensors`` with metadata
  (``model``, ``num_classes``, ``classes``, ``options``, ... each value JSON-encoded), written
  atomically. ``.pth`` files are read only with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

import huggingface_hub.constants as hf
import timm
import torch
from huggingface_hub import try_to_load_from_cache
from safetensors import safe_open
from timm.models.vision_transformer import checkpoint_filter_fn
from torch import nn

from medattn.errors import WeightsError
from medattn.runs.tensorfile import write_tensors

__all__ = ["create_timm", "load_timm_file", "save_checkpoint", "load_checkpoint", "read_state_dict"]

FORMAT = "medattn-checkpoint/1"


def _hub_hint(timm_name: str) -> str:
    return (f"download https://huggingface.co/timm/{timm_name}/resolve/main/model.safetensors on a machine "
            f"with internet and pass it as pretrained=PATH (CLI: --pretrained PATH; study config: "
            f"train.pretrained: PATH), or set HF_HOME to a Hugging Face cache that holds "
            f"timm/{timm_name}")


def _hub_reachable(timeout: float = 3.0) -> bool:
    """False when offline mode is set or huggingface.co cannot be connected to (behind a proxy we
    cannot tell, so we let the hub client try)."""
    if hf.HF_HUB_OFFLINE:
        return False
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "HF_ENDPOINT")):
        return True
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _cached_file(timm_name: str) -> str | None:
    """Path of timm's weight file for ``timm_name`` in the local Hugging Face cache, or None."""
    for filename in ("model.safetensors", "pytorch_model.bin"):
        path = try_to_load_from_cache(f"timm/{timm_name}", filename)
        if isinstance(path, str):
            return path
    return None


def create_timm(timm_name: str, pretrained: bool = False, **kwargs) -> nn.Module:
    """``timm.create_model`` with hub failures turned into a WeightsError that says what to do."""
    if not pretrained:
        return timm.create_model(timm_name, pretrained=False, **kwargs)
    if not _hub_reachable():
        # the hub client retries for about a minute before it gives up; answer at once instead,
        # from the local Hugging Face cache when the file is there
        cached = _cached_file(timm_name)
        if cached is None:
            raise WeightsError(f"no pretrained weights for timm {timm_name!r}: huggingface.co is not "
                               f"reachable and the file is not in the local cache; {_hub_hint(timm_name)}")
        model = timm.create_model(timm_name, pretrained=False, **kwargs)
        load_timm_file(model, cached, timm_name)
        return model
    try:
        return timm.create_model(timm_name, pretrained=True, **kwargs)
    except (RuntimeError, ValueError) as err:
        if "size mismatch" in str(err) or "Unknown model" in str(err):
            raise
        raise WeightsError(f"could not get pretrained weights for timm {timm_name!r} ({err}); "
                           f"{_hub_hint(timm_name)}") from err
    except Exception as err:  # network, hub and cache errors come in many classes
        raise WeightsError(f"could not download pretrained weights for timm {timm_name!r} "
                           f"({type(err).__name__}: {err}); offline? {_hub_hint(timm_name)}") from err


def read_state_dict(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[dict, dict]:
    """Read ``(tensors, raw string metadata)`` from ``.safetensors`` or a ``.pth``/``.pt``/``.bin``
    (``weights_only=True``). Raises WeightsError naming the file when it cannot be read."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weight file {str(path)!r} does not exist")
    if path.suffix == ".safetensors":
        try:
            with safe_open(str(path), framework="pt", device=str(map_location)) as f:
                meta = dict(f.metadata() or {})
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as err:
            raise WeightsError(f"{str(path)!r} is not a readable .safetensors file (truncated or another "
                               f"format?): {err}") from err
        return tensors, meta
    try:
        obj = torch.load(str(path), map_location=map_location, weights_only=True)
    except Exception as err:
        raise WeightsError(f"{str(path)!r} cannot be read as a PyTorch weight file with weights_only=True "
                           f"(truncated, not a state dict, or it needs pickle, which medattn refuses; "
                           f"convert it to .safetensors): {err}") from err
    meta: dict = {}
    if isinstance(obj, dict) and isinstance(obj.get("metadata"), dict):
        meta = {k: v if isinstance(v, str) else json.dumps(v) for k, v in obj["metadata"].items()}
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{str(path)!r} does not hold a state dict (name -> tensor)")
    return obj, meta


def load_timm_file(model: nn.Module, path: str | Path, timm_name: str = "") -> None:
    """Load a local timm-format weight file into ``model`` (a plain timm model, before surgery).

    The file's classifier is replaced by the model's new head; any other missing, unexpected or
    mis-shaped tensor raises a WeightsError (never a silent partial load)."""
    state, _ = read_state_dict(path)
    state = {k.removeprefix("module."): v for k, v in state.items()}
    if hasattr(model, "pos_embed"):  # ViT: timm's own conversion (pos-embed resizing, npz layouts)
        try:
            state = checkpoint_filter_fn(state, model)
        except Exception as err:
            raise WeightsError(f"{str(path)!r} is not a ViT checkpoint that fits {timm_name}: {err}") from err
    classifier = model.pretrained_cfg.get("classifier", "head")
    heads = (classifier,) if isinstance(classifier, str) else tuple(classifier)
    is_head = lambda k: any(k.startswith(h + ".") for h in heads)  # noqa: E731
    state = {k: v for k, v in state.items() if not is_head(k)}
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as err:
        raise WeightsError(f"{str(path)!r} does not fit timm {timm_name or type(model).__name__}: "
                           f"{str(err)[:600]}") from err
    missing = [k for k in missing if not is_head(k)]
    if missing or unexpected:
        raise WeightsError(
            f"{str(path)!r} does not fit timm {timm_name or type(model).__name__}: "
            f"{len(missing)} missing tensors (e.g. {missing[:3]}), {len(unexpected)} unexpected "
            f"(e.g. {unexpected[:3]}); pass the timm-format file of exactly that architecture")


def save_checkpoint(model: nn.Module, path: str | Path, metadata: dict[str, Any] | None = None) -> Path:
    """Save ``model.state_dict()`` as ``.safetensors`` atomically (temp file + os.replace).

    ``metadata`` values are stored JSON-encoded; ``model``, ``num_classes`` and ``options`` are filled in
    from the model when absent (``classes`` should be given by the caller)."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise WeightsError(f"checkpoints are written as .safetensors; got {str(path)!r}")
    meta: dict[str, Any] = {"format": FORMAT}
    if hasattr(model, "medattn_name"):
        meta["model"] = model.medattn_name
        meta["options"] = getattr(model, "medattn_options", {})
    if hasattr(model, "num_classes"):
        meta["num_classes"] = int(model.num_classes)
    meta.update(metadata or {})
    # clone: safetensors refuses shared storage, and the copy is detached from training
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    # bytes through the one atomic writer (no library temp file can outlive a kill), metadata in
    # a canonical order so that identical runs give identical files
    write_tensors(path, tensors, {k: json.dumps(v, sort_keys=True) for k, v in meta.items()})
    return path


def _decode(value: str) -> Any:
    try:
        return json.loads(value)
    except (TypeError, ValueError):
        return value


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[dict, dict]:
    """Read a medattn checkpoint -> ``(state_dict, metadata)`` with metadata values JSON-decoded."""
    state, meta = read_state_dict(path, map_location)
    return state, {k: _decode(v) for k, v in meta.items()}


def load_into(model: nn.Module, path: str | Path, num_classes: int) -> None:
    """Load a full medattn checkpoint into a model built by ``create_model`` (strict)."""
    state, meta = load_checkpoint(path)
    name = getattr(model, "medattn_name", None)
    if meta.get("model") not in (None, name):
        raise WeightsError(f"{str(path)!r} is a checkpoint of {meta['model']!r}, not of {name!r}; "
                           f"create_model({meta['model']!r}, ...) to load it")
    if meta.get("num_classes") not in (None, num_classes):
        raise WeightsError(f"{str(path)!r} has {meta['num_classes']} classes, but num_classes={num_classes}")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise WeightsError(f"{str(path)!r} does not fit {name}: {str(err)[:600]}") from err
