"""The model zoo: name -> model, for every registered backbone and attention module.

A name is ``<backbone>[+<after>][+<local>]`` (``resnet18+ga+ela``, ``densenet121+cbam``); the parts
are entries of :mod:`medattn.models.registry`. Every model is a timm backbone; attention variants
are made by surgery on the timm model *after* its (pretrained) weights are loaded, so the layers
that stay keep them (:mod:`medattn.models.surgery`). The paper's models:

* ``+ga``: :class:`GlobalAttention2d` appended to ResNet18 ``layer1``/``layer2`` (64, 128 ch) or to
  EfficientNet-B0 ``blocks[1]``/``blocks[2]`` (24, 40 ch).
* ``+la``: :class:`LocalAttention2d` replaces the four 3x3 convs of ResNet18 ``layer4`` (stride 2
  where the conv had it; BatchNorms and the 1x1 downsample stay), or the whole final MBConv block of
  EfficientNet-B0 (``blocks[6]``, 192 -> 320).
* ``+ela``: the same layers are kept and wrapped in :class:`EmbeddedLocalAttention2d`.
* ViT-tiny baselines (``vit_tiny_in1k``, ``vit_tiny_in21k``), built with ``dynamic_img_size=True``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from medattn.errors import ConfigError
from medattn.models import registry as R
from medattn.models import weights as W
from medattn.models.probe import find_modules
from medattn.models.surgery import attach_attention

__all__ = ["ModelSpec", "create_model", "list_models", "parse_model_name", "gradcam_target_layers",
           "describe_model", "model_catalog", "DEFAULT_OPTIONS"]

# options create_model understands, with defaults (stored in checkpoints to rebuild the same model)
DEFAULT_OPTIONS = {
    "kernel_size": 7,        # LA neighbourhood k
    "heads": 8,              # LA heads
    "la_tile": 7,            # LA query block size (speed only, results identical)
    "ga_subsample": False,   # GA: 2x2 max-pooled phi and g (Wang et al.'s cheaper variant; not the paper's)
    "mhsa_heads": 4,         # MHSA heads (BoTNet's 4)
    "drop_rate": 0.0,        # dropout before the classifier (timm)
    "drop_path_rate": 0.0,   # stochastic depth (timm)
    "zero_init_last": True,  # timm ResNet: zero-init the last BN of each block (random init only)
    "pretrained_tag": None,  # timm checkpoint to use instead of the default (architecture.tag)
}


@dataclass(frozen=True)
class ModelSpec:
    """A parsed model name: ``name`` (canonical); ``backbone`` and ``variant`` as runs record them
    (``resnet18`` / ``ga+ela``; the ViTs: ``vit`` / ``1k``, ``21k``); ``base``: the registered
    backbone (``vit_tiny_in1k``); ``after`` / ``local``: the attention modules (or None)."""

    name: str
    backbone: str
    variant: str
    base: str = ""
    after: str | None = None
    local: str | None = None

    @property
    def entry(self) -> R.Backbone:
        return R.get_backbone(self.base or self.backbone)

    @property
    def kind(self) -> str:
        """``cnn`` or ``vit``."""
        return self.entry.kind

    @property
    def has_ga(self) -> bool:
        return self.after == "ga"

    @property
    def paper(self) -> bool:
        """One of the paper's 14 models."""
        return self.entry.paper and all(R.get_attention(a).paper for a in (self.after, self.local) if a)

    @property
    def description(self) -> str:
        return describe_model(self.name)


def list_models(backbones: Sequence[str] | None = None, paper_only: bool = False) -> list[str]:
    """Every model name (registered backbone x attention variant): the paper's 14 first, in its
    order, then the others by backbone. ``backbones``: only these; ``paper_only``: only the 14."""
    wanted = None if backbones is None else {parse_model_name(b).base for b in backbones}
    rows = []
    for b in R.backbones():
        if wanted is not None and b.name not in wanted:
            continue
        for after, local in R.variants(b):
            variant = R.variant_name(after, local)
            paper = b.paper and all(a.paper for a in (after, local) if a)
            if paper or not paper_only:
                rows.append((not paper, b.name if variant == "base" else f"{b.name}+{variant}"))
    return [name for _, name in sorted(rows, key=lambda r: r[0])]  # stable: listing order kept


def _unknown(raw: str, why: str) -> ConfigError:
    atts = R.attentions()
    after = ", ".join(a.name for a in atts if a.placement == "after")
    local = ", ".join(a.name for a in atts if a.placement != "after")
    return ConfigError(f"unknown model {raw!r}: {why}. A name is <backbone>[+<after>][+<local>]: "
                       f"backbones {', '.join(b.name for b in R.backbones())}; after: {after}; "
                       f"local: {local} (`medattn models` lists them)")


def parse_model_name(name: str) -> ModelSpec:
    """Parse ``resnet18+ga+ela`` (case, spaces, ``-`` for ``_`` and the order of ``+`` parts do
    not matter). Raises ConfigError for an unknown backbone or module or a bad combination."""
    raw = str(name)
    parts = [p.strip().lower().replace("-", "_") for p in raw.split("+")]
    head, mods = parts[0], parts[1:]
    entry = next((b for b in R.backbones() if b.name == head), None)
    if entry is None:
        raise _unknown(raw, f"no backbone {head!r}")
    if not mods:
        return ModelSpec(head, entry.group, entry.variant, head)
    if entry.kind != "cnn":
        raise _unknown(raw, f"{head} is a {entry.kind.upper()} baseline and takes no attention")
    split = R.split_variant("+".join(mods))
    if split is None:
        raise _unknown(raw, "each part after the backbone must be a registered attention module, "
                       "at most one 'after' and one 'replace'/'embed'")
    after, local = split
    if (after and not entry.after) or (local and not entry.local):
        where = "after" if after and not entry.after else "local"
        raise _unknown(raw, f"backbone {head} has no {where} paths registered")
    variant = R.variant_name(after, local)
    return ModelSpec(f"{head}+{variant}", entry.group, variant, head,
                     after.name if after else None, local.name if local else None)


def model_catalog(backbones: Sequence[str] | None = None) -> list[tuple[str, str]]:
    """``(name, one-line description)`` for every model, in :func:`list_models` order."""
    return [(name, describe_model(name)) for name in list_models(backbones)]


def describe_model(name: str) -> str:
    """One-line description of a model name."""
    spec = parse_model_name(name)
    entry = spec.entry
    after = R.get_attention(spec.after) if spec.after else None
    local = R.get_attention(spec.local) if spec.local else None
    if after is None and local is None:
        return entry.description
    verb = "replacing" if local is not None and local.placement == "replace" else "beside"
    if local is None:
        return f"{entry.label} + {after.description} {entry.after_text}"
    if after is None:
        joiner = "with" if local.placement == "replace" else "+"
        return f"{entry.label} {joiner} {local.description} {verb} {entry.local_text}"
    return f"{entry.label} + {after.short} {entry.after_text}, {local.short} {verb} {entry.local_text}"


def _timm_name(spec: ModelSpec, options: dict) -> str:
    default = spec.entry.checkpoint
    tag = options.get("pretrained_tag")
    if not tag:
        return default
    arch = spec.entry.architecture
    tag = str(tag)
    if "." not in tag:  # a bare tag such as "a1_in1k"
        tag = f"{arch}.{tag}"
    if tag.split(".")[0] != arch:
        raise ConfigError(f"model option pretrained_tag={options['pretrained_tag']!r} is not a {arch} "
                          f"checkpoint; use '{arch}.<tag>' (timm.list_pretrained('{arch}.*') lists them)")
    return tag


def _check_options(spec: ModelSpec, options: dict) -> dict:
    unknown = sorted(set(options) - set(DEFAULT_OPTIONS))
    if unknown:
        raise ConfigError(f"unknown model option(s) {unknown} for {spec.name}; "
                          f"known: {', '.join(DEFAULT_OPTIONS)}")
    opts = {**DEFAULT_OPTIONS, **options}
    k = opts["kernel_size"]
    if not isinstance(k, int) or k < 1 or k % 2 == 0:
        raise ConfigError(f"model option kernel_size must be an odd positive int, got {k!r}")
    for key in ("heads", "mhsa_heads", "la_tile"):
        if not isinstance(opts[key], int) or isinstance(opts[key], bool) or opts[key] < 1:
            raise ConfigError(f"model option {key} must be a positive int, got {opts[key]!r}")
    if not isinstance(opts["ga_subsample"], bool):
        raise ConfigError(f"model option ga_subsample must be true or false, got {opts['ga_subsample']!r}")
    return opts


def create_model(name: str, num_classes: int, pretrained: bool | str | Path = False,
                 weights: str | Path | None = None, **options) -> nn.Module:
    """Build a model of the zoo.

    Args:
        name: one of :func:`list_models` (e.g. ``"resnet18+ga+ela"``, ``"densenet121+cbam"``).
        num_classes: outputs of the new classifier head.
        pretrained: ``True``: timm's ImageNet weights through timm (needs the Hugging Face hub or its
            cache); a path: the same weights from a local timm-format file (``.safetensors``, or
            ``.pth``/``.bin`` read with ``weights_only=True``), classifier included and replaced.
            Weights go into the backbone before the attention surgery.
        weights: a full medattn checkpoint of this exact model (see :func:`medattn.models.weights.save_checkpoint`).
        **options: see ``DEFAULT_OPTIONS`` (``kernel_size``, ``heads``, ``drop_rate``, ...).

    Returns:
        The model, with ``medattn_name``, ``medattn_spec``, ``medattn_options`` and timm's
        ``pretrained_cfg`` (``mean``/``std`` for the transforms). Input: (B, 3, H, W) with
        H, W >= 32; output: (B, num_classes) logits.
    """
    spec = parse_model_name(name)
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ConfigError(f"num_classes must be a positive int, got {num_classes!r}")
    opts = _check_options(spec, options)
    entry = spec.entry
    timm_name = _timm_name(spec, opts)
    kwargs = dict(num_classes=num_classes, **entry.timm_kwargs, **{o: opts[o] for o in entry.timm_options})
    # only when set: not every timm architecture takes them (DenseNet has no drop_path_rate)
    kwargs.update({k: opts[k] for k in ("drop_rate", "drop_path_rate") if opts[k]})
    use_hub = pretrained is True and weights is None
    try:
        model = W.create_timm(timm_name, pretrained=use_hub, **kwargs)
    except (RuntimeError, TypeError) as err:
        raise ConfigError(f"cannot build timm model {timm_name!r} for {spec.name} (backbone "
                          f"{entry.name!r}): {err}") from err
    if pretrained not in (False, None, True) and weights is None:
        W.load_timm_file(model, pretrained, timm_name)
    attach_attention(model, spec, opts)
    model.medattn_name = spec.name
    model.medattn_spec = spec
    model.medattn_options = {k: v for k, v in options.items()}
    model.medattn_timm_name = timm_name
    if weights is not None:
        W.load_into(model, weights, num_classes)
    return model


def gradcam_target_layers(model: nn.Module) -> list[nn.Module]:
    """Grad-CAM target layer(s): the output of the last convolutional stage, i.e. the feature map
    that is globally pooled, as the backbone's registry entry names it (ResNet18: ``layer4[-1]``;
    EfficientNet-B0: ``bn2`` = conv_head + BN + act). ViT: ``[]`` (use attention rollout instead).
    A plain timm model is matched to a backbone by its architecture."""
    spec = getattr(model, "medattn_spec", None)
    if spec is not None:
        entry = spec.entry
    else:
        arch = (getattr(model, "pretrained_cfg", None) or {}).get("architecture")
        entry = next((b for b in R.backbones() if b.architecture == arch), None)
        if entry is None:
            return []
    return [m for _, m in find_modules(model, entry.gradcam, entry, "gradcam")]
