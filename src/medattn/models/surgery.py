"""Attention surgery: build the attention modules of a model name's sites and insert them.

The sites (paths, channel widths, strides, feature-map sizes) come from
:mod:`medattn.models.probe`, which reads them from the model itself; nothing is written down by
hand, so any timm CNN works.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from medattn.errors import ConfigError
from medattn.models.attention import EmbeddedLocalAttention2d
from medattn.models.probe import find_modules, measure
from medattn.models.registry import Attention, Backbone, Site, get_attention
from medattn.models.timm_layers import ZeroInitResidual

__all__ = ["attach_attention", "build_modules"]

_SHAPES: dict[tuple, dict[str, tuple[tuple, tuple]]] = {}


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
