"""The registry: every backbone and every attention module medattn can combine, in one place.

A model name is ``<backbone>[+<after>][+<local>]``: a registered backbone, optionally one attention
module placed *after* given stages (``ga``, ``se``, ``cbam``, ``eca``) and one that *replaces* given
convs or blocks (``la``, ``mhsa``) or is *embedded* beside them (``ela``). A :class:`Backbone`
names its timm architecture and the module paths where attention goes; an :class:`Attention`
names a factory that builds the module for one :class:`Site`. Everything else in medattn (the
zoo, Table 1, the config check, compare's labels and order, the figures, the explanations) reads
these entries, so one :func:`register_backbone` / :func:`register_attention` call is all a new
backbone or module needs::

    register_backbone("resnet34", "resnet34.tv_in1k", after=("layer1", "layer2"),
                      local=("layer4.*.conv1", "layer4.*.conv2"), gradcam=("layer4",))
    register_attention("gc", lambda site: timm.layers.create_attn("gc", site.out_channels))

Registrations of other modules reach other processes (``medattn`` commands, spawned training
workers, Ray) through plugins: modules named in ``$MEDATTN_PLUGINS`` (comma-separated) and
``medattn.plugins`` entry points are imported on the first lookup. This module imports neither
torch nor timm, so the analysis commands stay quick to start.

Over 400 lines because registering, looking up and ordering the entries are one job, read
together; most of the length is the two documented signatures.
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

from medattn.errors import ConfigError

__all__ = ["Attention", "Backbone", "PluginError", "Site", "attentions", "backbone_label",
           "backbone_rank", "backbones", "get_attention", "get_backbone", "is_attention_variant",
           "load_plugins", "model_label", "register_attention", "register_backbone",
           "split_variant", "variant_label", "variant_rank", "variants"]

PLACEMENTS = ("after", "replace", "embed")
KINDS = ("cnn", "vit")
PLUGINS_ENV = "MEDATTN_PLUGINS"
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class Site:
    """One place where an attention module goes, measured on the model being built.

    ``path``: the module path (``layer4.0.conv1``); ``module``: the module there (kept beside an
    ``embed`` module, dropped by ``replace``); ``in_channels`` / ``out_channels``: channels of its
    input and output (equal for ``after``: the output's); ``stride``: input size / output size
    (1 for ``after``); ``feat_size``: (H, W) of the map the new module sees for a 224 x 224 image;
    ``options``: the model options (``create_model(..., **options)``, defaults filled in).
    """

    path: str
    module: Any
    in_channels: int
    out_channels: int
    stride: int
    feat_size: tuple[int, int]
    options: Mapping[str, Any]


@dataclass(frozen=True)
class Backbone:
    """A registered backbone (see :func:`register_backbone` for the fields)."""

    name: str
    checkpoint: str
    kind: str
    after: tuple[str, ...]
    local: tuple[str, ...]
    gradcam: tuple[str, ...]
    label: str
    short_label: str
    order: float
    group: str
    variant: str
    variant_label: str
    description: str
    after_text: str
    local_text: str
    timm_kwargs: Mapping[str, Any] = field(default_factory=dict)
    timm_options: tuple[str, ...] = ()
    paper: bool = False

    @property
    def architecture(self) -> str:
        """The timm architecture (``checkpoint`` without its ``.tag``)."""
        return self.checkpoint.split(".")[0]


@dataclass(frozen=True)
class Attention:
    """A registered attention module (see :func:`register_attention` for the fields)."""

    name: str
    factory: Callable[[Site], Any]
    placement: str
    label: str
    abbrev: str
    order: float
    identity_at_init: bool
    rezero: bool
    description: str
    short: str
    note: str = ""
    paper: bool = False


_BACKBONES: dict[str, Backbone] = {}
_ATTENTIONS: dict[str, Attention] = {}
_state = {"builtins": False, "plugins": None, "entry_points": False}


# --------------------------------------------------------------------------------- registering

def _check_name(name: Any, what: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name) or name == "base":
        raise ConfigError(f"{what} name {name!r} must be lower case letters, digits and '_', "
                          "starting with a letter (it becomes part of model names), and not 'base'")
    return name


def _check_paths(paths: Any, what: str, name: str) -> tuple[str, ...]:
    paths = (paths,) if isinstance(paths, str) else tuple(paths or ())
    for p in paths:
        if not isinstance(p, str) or not p or any(not c for c in p.split(".")):
            raise ConfigError(f"backbone {name!r}: {what} path {p!r} is not a module path such as "
                              "'layer4.0.conv1' ('*' matches one component: 'layer4.*.conv1')")
    return paths


def _unique(registry: dict, name: str, overwrite: bool, what: str) -> None:
    if name in registry and not overwrite:
        raise ConfigError(f"{what} {name!r} is registered already; pass overwrite=True to replace "
                          "it (the paper's models change with it where it is one of theirs)")


def register_backbone(name: str, checkpoint: str, *, after: tuple[str, ...] | str = (),
                      local: tuple[str, ...] | str = (), gradcam: tuple[str, ...] | str = (),
                      kind: str = "cnn", label: str | None = None, short_label: str | None = None,
                      order: float | None = None, group: str | None = None, variant: str = "base",
                      variant_label: str | None = None, description: str | None = None,
                      after_text: str | None = None, local_text: str | None = None,
                      timm_kwargs: Mapping[str, Any] | None = None, timm_options: tuple[str, ...] = (),
                      paper: bool = False, overwrite: bool = False, check: bool = True) -> Backbone:
    """Register a timm backbone under ``name`` (the head of model names).

    Args:
        name: e.g. ``"resnet50"``; lower case, digits and ``_``.
        checkpoint: timm ``architecture.tag`` used for ``pretrained=True`` (a bare architecture
            takes timm's default tag); ``pretrained_tag`` picks another tag of that architecture.
        after: module paths after whose output an ``after`` module (GA, SE, ...) goes.
        local: module paths (convs or blocks) that a ``replace`` module takes the place of and
            that an ``embed`` module runs beside. ``*`` matches one path component.
        gradcam: the Grad-CAM target layer path(s): the last convolutional stage, whose output is
            pooled. Required for a CNN.
        kind: ``"cnn"`` or ``"vit"`` (ViTs get attention rollout and no attention variants).
        label: display name in tables. Default: ``name``.
        short_label: display name in narrow figure labels. Default: ``label``.
        order: position in tables and listings (default: after every backbone registered so far).
        group: how runs of the bare backbone are grouped (default ``name``). The paper's two
            ViT-tiny models share the group ``"vit"``.
        variant: how runs of the bare backbone are recorded (default ``"base"``; the ViT-tiny
            models: ``"1k"`` / ``"21k"``).
        variant_label: how that variant is shown (default ``"Base"`` for ``"base"``).
        description: words for ``medattn models`` (default: from the paths).
        after_text: words for the ``after`` paths in ``medattn models`` (default: the paths).
        local_text: words for the ``local`` paths in ``medattn models`` (default: the paths).
        timm_kwargs: fixed keyword arguments of ``timm.create_model``.
        timm_options: model options passed on to ``timm.create_model`` (e.g. ``zero_init_last``).
        overwrite: replace an entry of the same name.
        check: build the architecture on the ``meta`` device now (no weights, well under a
            second) and check every path, so that a wrong one fails here, not in a training
            worker. The built-in entries pass False (their paths are tested; it keeps
            ``import medattn`` free of timm).

    A path that names no module raises :class:`~medattn.errors.ConfigError` naming it and the
    valid paths nearby; nothing is registered then. Channel widths and strides are read from the
    modules themselves when a model is built.
    """
    _load_builtins()
    _check_name(name, "backbone")
    _unique(_BACKBONES, name, overwrite, "backbone")
    if kind not in KINDS:
        raise ConfigError(f"backbone {name!r}: kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if not isinstance(checkpoint, str) or not checkpoint or checkpoint.count(".") > 1:
        raise ConfigError(f"backbone {name!r}: checkpoint must be a timm 'architecture' or "
                          f"'architecture.tag', got {checkpoint!r}")
    after, local = _check_paths(after, "after", name), _check_paths(local, "local", name)
    gradcam = _check_paths(gradcam, "gradcam", name)
    if kind == "vit" and (after or local):
        raise ConfigError(f"backbone {name!r}: attention variants are for CNNs; a ViT takes no "
                          "after/local paths")
    if kind == "cnn" and not gradcam:
        raise ConfigError(f"backbone {name!r}: name its Grad-CAM target layer, gradcam=('<path>',): "
                          "the module whose output is globally pooled (e.g. 'layer4')")
    if not isinstance(variant, str) or not re.match(r"^[a-z0-9][a-z0-9_]*$", variant):
        raise ConfigError(f"backbone {name!r}: variant {variant!r} must be lower case letters, "
                          "digits and '_'")
    label = label or name
    entry = Backbone(
        name=name, checkpoint=checkpoint, kind=kind, after=after, local=local, gradcam=gradcam,
        label=label, short_label=short_label or label,
        order=float(order) if order is not None else 1000.0 + len(_BACKBONES),
        group=group or name, variant=variant,
        variant_label=variant_label or ("Base" if variant == "base" else variant),
        description=description or f"{label} baseline (timm {checkpoint})",
        after_text=after_text or ("after " + " and ".join(after) if after else ""),
        local_text=local_text or ", ".join(local),
        timm_kwargs=dict(timm_kwargs or {}), timm_options=tuple(timm_options), paper=bool(paper))
    if check:  # start-up time: the probe imports torch and timm; labels (report, compare) must not
        from medattn.models.probe import check_backbone

        check_backbone(entry)
    _BACKBONES[name] = entry
    return entry


def register_attention(name: str, factory: Callable[[Site], Any], placement: str = "after", *,
                       label: str | None = None, abbrev: str | None = None, order: float | None = None,
                       identity_at_init: bool | None = None, rezero: bool | None = None,
                       description: str | None = None, short: str | None = None, note: str = "",
                       paper: bool = False, overwrite: bool = False) -> Attention:
    """Register an attention module: ``<backbone>+<name>`` then names a model everywhere.

    Args:
        name: the model-name suffix, e.g. ``"cbam"``.
        factory: ``factory(site) -> nn.Module`` (see :class:`Site`). ``after``: a module
            ``(B, C, H, W) -> (B, C, H, W)`` with ``C = site.out_channels``; ``replace`` / ``embed``:
            ``(B, site.in_channels, H, W) -> (B, site.out_channels, ceil(H / s), ceil(W / s))``
            with ``s = site.stride``.
        placement: ``"after"`` (appended after each of the backbone's ``after`` modules),
            ``"replace"`` (takes the place of each ``local`` module) or ``"embed"`` (runs beside
            each ``local`` module, followed by a zero-initialised 1x1 conv, summed with it).
        label: display name (``+CBAM``).
        abbrev: the short form of the Table 4 grid.
        identity_at_init: whether the network is unchanged at initialisation (tested for every
            registered variant). Default: ``embed`` yes, ``replace`` no (the replaced layer and
            its weights are gone), ``after`` as ``rezero``.
        rezero: ``after`` only, default True: wrap the module as ``x + gamma * (f(x) - x)`` with a
            per-channel ``gamma`` initialised to zero, so that any gate starts as the identity
            and becomes ``f`` as gamma grows. Pass False for a module that is the identity at
            initialisation by itself (GA: its last BatchNorm's scale starts at zero).
        description: words for ``medattn models`` (long form).
        short: the form used in combinations.
        note: why the module cannot be the identity at initialisation, where it cannot.
        order: position in tables (default: after every module registered so far).
        overwrite: replace an entry of the same name.
    """
    _load_builtins()
    _check_name(name, "attention")
    _unique(_ATTENTIONS, name, overwrite, "attention")
    if placement not in PLACEMENTS:
        raise ConfigError(f"attention {name!r}: placement must be one of {', '.join(PLACEMENTS)}, "
                          f"got {placement!r}")
    if not callable(factory):
        raise ConfigError(f"attention {name!r}: factory must be callable as factory(site)")
    if rezero and placement != "after":
        raise ConfigError(f"attention {name!r}: rezero wraps 'after' modules only")
    rezero = placement == "after" if rezero is None else bool(rezero)
    default_identity = {"after": rezero, "embed": True, "replace": False}[placement]
    identity = default_identity if identity_at_init is None else bool(identity_at_init)
    if identity and placement == "replace":
        raise ConfigError(f"attention {name!r}: a 'replace' module removes the layer it replaces, so "
                          "the network cannot be unchanged at initialisation; use placement='embed'")
    label = label or name.upper()
    entry = Attention(name=name, factory=factory, placement=placement, label=label,
                      abbrev=abbrev or label,
                      order=float(order) if order is not None else 1000.0 + len(_ATTENTIONS),
                      identity_at_init=identity, rezero=rezero, description=description or label,
                      short=short or description or label, note=note, paper=bool(paper))
    _ATTENTIONS[name] = entry
    return entry


# --------------------------------------------------------------------------------- plugins

def _load_builtins() -> None:
    if not _state["builtins"]:
        _state["builtins"] = True
        importlib.import_module("medattn.models.builtin")


class PluginError(ConfigError):
    """A plugin module failed to import: the model names it would register are unknown, so a
    caller reports this error, not a guess at a similar name."""


def load_plugins() -> None:
    """Import the plugin modules not imported yet: ``$MEDATTN_PLUGINS`` (comma-separated module
    names) and the ``medattn.plugins`` entry points of installed packages. Called by every lookup,
    so a plugin registers in whichever process builds or names a model. A plugin that fails to
    import raises :class:`PluginError`, at this and every later lookup (never silently skipped)."""
    _load_builtins()
    if not _state["entry_points"]:
        for ep in entry_points(group="medattn.plugins"):
            try:
                ep.load()
            except Exception as err:
                raise PluginError(f"medattn plugin {ep.name!r} ({ep.value}) failed to load: "
                                  f"{type(err).__name__}: {err}") from err
        _state["entry_points"] = True
    wanted = os.environ.get(PLUGINS_ENV, "")
    if wanted == _state["plugins"]:
        return
    for module in (m.strip() for m in wanted.split(",")):
        if module:
            try:
                importlib.import_module(module)
            except Exception as err:
                raise PluginError(f"${PLUGINS_ENV}: module {module!r} failed to import "
                                  f"({type(err).__name__}: {err}); it must be importable "
                                  f"(on PYTHONPATH) in every process that builds models") from err
    _state["plugins"] = wanted  # only once all imported: a failed one fails every lookup


# --------------------------------------------------------------------------------- lookups

def backbones() -> list[Backbone]:
    """Every registered backbone, in table order."""
    load_plugins()
    return sorted(_BACKBONES.values(), key=lambda b: (b.order, b.name))


def attentions() -> list[Attention]:
    """Every registered attention module, in table order."""
    load_plugins()
    return sorted(_ATTENTIONS.values(), key=lambda a: (a.order, a.name))


def get_backbone(name: str) -> Backbone:
    load_plugins()
    if name not in _BACKBONES:
        raise ConfigError(f"unknown backbone {name!r}; registered: {', '.join(b.name for b in backbones())} "
                          "(`medattn models` lists the models; register_backbone() adds one)")
    return _BACKBONES[name]


def get_attention(name: str) -> Attention:
    load_plugins()
    if name not in _ATTENTIONS:
        raise ConfigError(f"unknown attention {name!r}; registered: "
                          f"{', '.join(a.name for a in attentions())} "
                          "(`medattn models` lists the models; register_attention() adds one)")
    return _ATTENTIONS[name]


def variants(backbone: Backbone) -> list[tuple[Attention | None, Attention | None]]:
    """``(after, local)`` pairs a backbone takes, in listing order: the bare backbone, each module
    alone, then every ``after`` with every ``replace``/``embed`` module. Modules need the paths
    of their placement (a backbone without ``local`` paths takes no LA)."""
    if backbone.kind != "cnn":
        return [(None, None)]
    atts = attentions()
    after = [a for a in atts if a.placement == "after" and backbone.after]
    local = [a for a in atts if a.placement != "after" and backbone.local]
    singles = [(a, None) if a.placement == "after" else (None, a) for a in atts
               if a in after or a in local]
    return [(None, None), *singles, *[(a, b) for a in after for b in local]]


def split_variant(variant: str) -> tuple[Attention | None, Attention | None] | None:
    """``"ga+la"`` -> (GA entry, LA entry); ``"base"`` -> (None, None); None if it names anything
    else (an unregistered module, a ViT variant such as ``"1k"``, a bad combination)."""
    if variant == "base":
        return None, None
    load_plugins()
    parts = variant.split("+")
    if len(set(parts)) != len(parts) or not all(p in _ATTENTIONS for p in parts):
        return None
    after = [_ATTENTIONS[p] for p in parts if _ATTENTIONS[p].placement == "after"]
    local = [_ATTENTIONS[p] for p in parts if _ATTENTIONS[p].placement != "after"]
    if len(after) > 1 or len(local) > 1:
        return None
    return (after[0] if after else None), (local[0] if local else None)


def variant_name(after: Attention | None, local: Attention | None) -> str:
    """The canonical variant: the ``after`` module first (``ga+ela``), ``base`` for neither."""
    return "+".join(a.name for a in (after, local) if a is not None) or "base"


# --------------------------------------------------------------------------------- display and order

def _group_entries(group: str) -> list[Backbone]:
    return [b for b in backbones() if b.group == group]


def backbone_label(group: str, short: bool = False) -> str:
    """Display name of a recorded backbone (``resnet18`` -> ``ResNet18``; ``vit`` -> ``ViT-tiny``);
    unknown names are returned as they are."""
    entries = _group_entries(group)
    if not entries:
        return group
    return entries[0].short_label if short else entries[0].label


def backbone_rank(group: str) -> float:
    """Table position of a recorded backbone (unknown ones last)."""
    entries = _group_entries(group)
    return entries[0].order if entries else float("inf")


def _bare(variant: str) -> Backbone | None:
    """The backbone whose bare model is recorded as this non-``base`` variant (``1k``)."""
    return next((b for b in backbones() if b.variant == variant and variant != "base"), None)


def variant_label(variant: str) -> str:
    """``base`` -> ``Base``, ``ga+la`` -> ``+GA+LA``, ``1k`` -> ``ViT-1k``; else the name itself."""
    if variant == "base":
        return "Base"
    split = split_variant(variant)
    if split is not None:
        return "".join(f"+{a.label}" for a in split if a is not None)
    bare = _bare(variant)
    return bare.variant_label if bare else variant


def variant_rank(variant: str) -> tuple:
    """Table order of variants: base, then by the local module (none, LA, ELA, ...), within it by
    the after module (none, GA, SE, ...): the paper's base, +GA, +LA, +GA+LA, +ELA, +GA+ELA. Bare
    models recorded under a variant (the ViTs' ``1k``, ``21k``) follow; unknown ones come last."""
    split = split_variant(variant)
    if split is not None:
        after, local = split
        return (0, local.order if local else -1.0, after.order if after else -1.0)
    bare = _bare(variant)
    return (1, bare.order, 0.0) if bare else (2, 0.0, 0.0)


def is_attention_variant(variant: str) -> bool:
    """True for a CNN variant with attention (compared only with the base of its own backbone)."""
    return variant != "base" and split_variant(variant) is not None


def model_label(group: str, variant: str, short: bool = False) -> str:
    """``ResNet18 +GA``, ``EfficientNet-B0 Base``; a bare model recorded under its own variant
    (the ViTs) by that variant's label alone: ``ViT-21k``. ``short``: the narrow form of
    figures, ``EffNet-B0 base``."""
    bare = _bare(variant)
    if bare is not None and bare.group == group:
        return bare.variant_label
    if short:
        return f"{backbone_label(group, short=True)} {'base' if variant == 'base' else variant_label(variant)}"
    return f"{backbone_label(group)} {variant_label(variant)}"
