"""Attention surgery: find a backbone's registered module paths, measure them, insert the modules.

Channel widths, strides and feature-map sizes are read from the model itself: one forward pass of a
224 x 224 input on the ``meta`` device (shapes only, no compute, weights untouched) records each
site's input and output shape. Nothing is written down by hand, so any timm CNN works.
"""

from __future__ import annotations

import difflib
from collections import OrderedDict
from fnmatch import fnmatchcase
from itertools import chain

import torch
from torch import nn

from medattn.errors import ConfigError
from medattn.models.registry import Attention, Backbone, Site, get_attention

__all__ = ["attach_attention", "build_modules", "check_backbone", "find_modules", "measure"]

PROBE_SIZE = 224  # the image size feature-map sizes (Site.feat_size) refer to
_SHAPES: dict[tuple, dict[str, tuple[tuple, tuple]]] = {}


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


def _site(path: str, module: nn.Module, shape: tuple[tuple, tuple], attention: Attention,
          backbone: Backbone, options: dict) -> Site:
    shape_in, shape_out = shape
    if len(shape_out) != 4 or (attention.placement != "after" and len(shape_in) != 4):
        raise ConfigError(f"backbone {backbone.name!r}: {path!r} does not map a (B, C, H, W) feature "
                          f"map to one (input {shape_in or 'none'}, output {shape_out or 'none'}: not a "
                          f"tensor, or not run in the forward pass); name a conv, block or stage")
    if attention.placement == "after":
        return Site(path, module, shape_out[1], shape_out[1], 1, tuple(shape_out[2:]), options)
    stride = max(1, round(shape_in[2] / shape_out[2]))
    return Site(path, module, shape_in[1], shape_out[1], stride, tuple(shape_in[2:]), options)


def _parent(model: nn.Module, path: str) -> tuple[nn.Module, str]:
    prefix, _, attr = path.rpartition(".")
    return (model.get_submodule(prefix) if prefix else model), attr


def _insert_after(model: nn.Module, path: str, module: nn.Module, name: str, new: nn.Module) -> None:
    """Run ``new`` on the output of ``module``: appended as ``<path>.<name>`` to a Sequential that
    runs its children in order (the paper's ``layer1.ga``), else the two wrapped in a Sequential
    (``<path>.layer``, ``<path>.<name>``)."""
    if isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward \
            and name not in module._modules:
        module.add_module(name, new)
        return
    parent, attr = _parent(model, path)
    setattr(parent, attr, nn.Sequential(OrderedDict([("layer", module), (name, new)])))


def _shapes(model: nn.Module, entry: Backbone, role: str,
            modules: list[tuple[str, nn.Module]]) -> dict[str, tuple[tuple, tuple]]:
    # shapes depend on the architecture and the paths only: measured once per process
    key = (entry.name, entry.architecture, role, entry.after if role == "after" else entry.local)
    if key not in _SHAPES:
        _SHAPES[key] = measure(model, modules)
    return _SHAPES[key]


def build_modules(model: nn.Module, entry: Backbone, attention: Attention,
                  options: dict) -> list[tuple[str, nn.Module, nn.Module]]:
    """``(path, module there, its replacement)`` for every site of ``attention`` in ``model``, in
    module order; nothing is inserted. The replacement of an ``after`` module runs the original
    and then the attention (a :class:`ZeroInitResidual` gate where the entry asks for it); of an
    ``embed`` module, it holds the original (:class:`EmbeddedLocalAttention2d`)."""
    from medattn.models.attention import EmbeddedLocalAttention2d
    from medattn.models.timm_layers import ZeroInitResidual

    role = "after" if attention.placement == "after" else "local"
    modules = find_modules(model, entry.after if role == "after" else entry.local, entry, role)
    shapes = _shapes(model, entry, role, modules)
    out = []
    for path, module in modules:
        site = _site(path, module, shapes.get(path, ((), ())), attention, entry, options)
        new = attention.factory(site)
        if attention.rezero:
            new = ZeroInitResidual(new, site.out_channels)
        elif attention.placement == "embed":
            new = EmbeddedLocalAttention2d(module, new, out_channels=site.out_channels)
        out.append((path, module, new))
    return out


def attach_attention(model: nn.Module, spec, options: dict) -> None:
    """Insert the attention modules a :class:`~medattn.models.zoo.ModelSpec` names into ``model``
    (a plain timm model of its backbone, weights already loaded). ``after`` modules are built
    first, then the ``local`` ones, each in module order (random initialisation is reproducible)."""
    entry = spec.entry
    after = build_modules(model, entry, get_attention(spec.after), options) if spec.after else []
    local = build_modules(model, entry, get_attention(spec.local), options) if spec.local else []
    # every parent is found before anything moves: a wrapped 'after' module may hold local ones
    parents = [_parent(model, path) for path, _, _ in local]
    for path, module, new in after:
        _insert_after(model, path, module, spec.after, new)
    for (parent, attr), (_, _, new) in zip(parents, local):
        setattr(parent, attr, new)


def check_backbone(entry: Backbone) -> None:
    """Build ``entry``'s timm architecture on the ``meta`` device and check that every ``after``,
    ``local`` and ``gradcam`` path names a module that maps a feature map to a feature map;
    ConfigError otherwise (an unknown architecture too)."""
    import timm

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
