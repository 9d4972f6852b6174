"""Probe a timm architecture: find a backbone's registered module paths and measure their shapes.

Channel widths, strides and feature-map sizes are read from the model itself: one forward pass of a
224 x 224 input on the ``meta`` device (shapes only, no compute, weights untouched) records each
module's input and output shape. :func:`check_backbone` runs this when a backbone is registered;
:mod:`medattn.models.surgery` when it inserts attention. This module does not import the registry
(the registry calls it), so the two form no cycle.
"""

from __future__ import annotations

import difflib
from fnmatch import fnmatchcase
from itertools import chain
from typing import TYPE_CHECKING

import timm
import torch
from torch import nn

from medattn.errors import ConfigError

if TYPE_CHECKING:  # for the annotations only: the registry imports this module
    from medattn.models.registry import Backbone

__all__ = ["PROBE_SIZE", "check_backbone", "find_modules", "measure"]

PROBE_SIZE = 224  # the image size feature-map sizes (Site.feat_size) refer to


def _matches(name: str, pattern: str) -> bool:
    parts, pats = name.split("."), pattern.split(".")
    return len(parts) == len(pats) and all(fnmatchcase(a, p) for a, p in zip(parts, pats))


def _nearby(pattern: str, names: list[str]) -> list[str]:
    """Valid paths near a wrong one: the children of its longest existing prefix, else the names
    that look alike."""
    parts = pattern.split(".")
    for cut in range(len(parts) - 1, -1, -1):
        prefix = ".".join(parts[:cut])
        if cut == 0 or prefix in names:
            depth = cut + 1
            kids = [n for n in names if n.count(".") + 1 == depth and (cut == 0 or n.startswith(prefix + "."))]
            if kids:
                return kids[:12]
    return difflib.get_close_matches(pattern, names, n=6, cutoff=0.5)


def find_modules(model: nn.Module, patterns: tuple[str, ...], backbone: Backbone,
                 role: str) -> list[tuple[str, nn.Module]]:
    """``(path, module)`` for every module matching one of ``patterns`` (``*`` = one component),
    in the model's module order. A pattern that matches nothing raises ConfigError naming it and
    the valid paths nearby."""
    named = dict(model.named_modules())
    names = [n for n in named if n]
    hits = set()
    for pattern in patterns:
        found = [n for n in names if _matches(n, pattern)]
        if not found:
            near = ", ".join(_nearby(pattern, names)) or "none"
            raise ConfigError(f"backbone {backbone.name!r}: {role} path {pattern!r} names no module of "
                              f"timm {backbone.architecture}; valid paths nearby: {near} "
                              f"([n for n, _ in model.named_modules()] lists them all); fix it with "
                              f"register_backbone({backbone.name!r}, ..., {role}=..., overwrite=True)")
        hits.update(found)
    return [(n, named[n]) for n in names if n in hits]


def measure(model: nn.Module, modules: list[tuple[str, nn.Module]],
            size: int = PROBE_SIZE) -> dict[str, tuple[tuple, tuple]]:
    """``path -> (input shape, output shape)`` of each module for one ``(1, 3, size, size)`` image.

    Runs on the ``meta`` device (the model's weights are neither used nor changed); a model with
    an operation that has no meta implementation is run for real, in eval mode without gradients.
    Shapes that are not tensors are recorded as ``()``."""
    shapes: dict[str, tuple[tuple, tuple]] = {}

    def hook(path):
        def record(_mod, args, out):
            if path not in shapes:
                first = args[0] if args else None
                shapes[path] = (tuple(first.shape) if torch.is_tensor(first) else (),
                                tuple(out.shape) if torch.is_tensor(out) else ())
        return record

    handles = [m.register_forward_hook(hook(p)) for p, m in modules]
    was_training = model.training
    model.eval()
    try:
        state = {k: torch.empty_like(v, device="meta")
                 for k, v in chain(model.named_parameters(), model.named_buffers())}
        with torch.no_grad():
            try:
                torch.func.functional_call(model, state, (torch.empty(1, 3, size, size, device="meta"),))
            except (RuntimeError, NotImplementedError, TypeError):
                shapes.clear()
                p = next(model.parameters())
                model(torch.zeros(1, 3, size, size, device=p.device, dtype=p.dtype))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return shapes


def check_backbone(entry: Backbone) -> None:
    """Build ``entry``'s timm architecture on the ``meta`` device and check that every ``after``,
    ``local`` and ``gradcam`` path names a module that maps a feature map to a feature map;
    ConfigError otherwise (an unknown architecture too)."""
    try:
        with torch.device("meta"):
            model = timm.create_model(entry.architecture, pretrained=False, **entry.timm_kwargs)
    except (RuntimeError, TypeError) as err:
        raise ConfigError(f"backbone {entry.name!r}: timm cannot build {entry.architecture!r} "
                          f"({err}); timm.list_models('{entry.architecture[:4]}*') lists the names") from err
    roles = {"after": entry.after, "local": entry.local, "gradcam": entry.gradcam}
    found = {role: find_modules(model, paths, entry, role) for role, paths in roles.items() if paths}
    shapes = measure(model, [m for mods in found.values() for m in mods])
    for role, mods in found.items():
        for path, _ in mods:
            shape_in, shape_out = shapes.get(path, ((), ()))
            if len(shape_out) != 4 or (role == "local" and len(shape_in) != 4):
                raise ConfigError(f"backbone {entry.name!r}: {role} path {path!r} does not map a "
                                  f"(B, C, H, W) feature map to one (input {shape_in or 'none'}, output "
                                  f"{shape_out or 'none'}: not a tensor, or not run in the forward "
                                  f"pass); name a conv, block or stage")
