"""The model zoo of the paper: name -> model.

Every model is a timm backbone; attention variants are made by surgery on the timm model *after* its
(pretrained) weights are loaded, so the layers that stay keep them:

* ``+ga``: :class:`GlobalAttention2d` appended to ResNet18 ``layer1``/``layer2`` (64, 128 ch) or to
  EfficientNet-B0 ``blocks[1]``/``blocks[2]`` (24, 40 ch).
* ``+la``: :class:`LocalAttention2d` replaces the four 3x3 convs of ResNet18 ``layer4`` (stride 2
  where the conv had it; BatchNorms and the 1x1 downsample stay), or the whole final MBConv block of
  EfficientNet-B0 (``blocks[6]``, 192 -> 320).
* ``+ela``: the same layers are kept and wrapped in :class:`EmbeddedLocalAttention2d`.
* ViT-tiny baselines (``vit_tiny_in1k``, ``vit_tiny_in21k``), built with ``dynamic_img_size=True``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn

from medattn.errors import ConfigError
from medattn.models.attention import EmbeddedLocalAttention2d, GlobalAttention2d, LocalAttention2d

__all__ = ["ModelSpec", "create_model", "list_models", "parse_model_name", "gradcam_target_layers",
           "describe_model", "model_catalog", "BACKBONES", "VARIANTS", "VIT_CHECKPOINTS"]

BACKBONES = ("resnet18", "efficientnet_b0")
VARIANTS = ("base", "ga", "la", "ela", "ga+la", "ga+ela")

# Default timm checkpoints (architecture.tag). ResNet18: the torchvision weights, the ImageNet
# ResNet18 of the paper's time; EfficientNet-B0: timm's default.
CNN_CHECKPOINTS = {"resnet18": "resnet18.tv_in1k", "efficientnet_b0": "efficientnet_b0.ra_in1k"}
# ViT-Ti/16 (embed 192, depth 12, 3 heads). 1k: DeiT-Ti is the ViT-Ti architecture trained on
# ImageNet-1k only (timm has no plain-ViT ImageNet-1k-only Ti weights). 21k: the AugReg ViT-Ti
# pre-trained on ImageNet-21k only (not the in1k fine-tuned one), so the two differ in pre-training data.
VIT_CHECKPOINTS = {"vit_tiny_in1k": "deit_tiny_patch16_224.fb_in1k",
                   "vit_tiny_in21k": "vit_tiny_patch16_224.augreg_in21k"}

_DESCRIPTIONS = {
    "base": "{bb} baseline (timm)",
    "ga": "{bb} + global self-attention (non-local blocks) {ga}",
    "la": "{bb} with local self-attention replacing {la}",
    "ela": "{bb} + embedded local self-attention beside {la}",
    "ga+la": "{bb} + global attention {ga}, local attention replacing {la}",
    "ga+ela": "{bb} + global attention {ga}, embedded local attention beside {la}",
}
_WHERE = {
    "resnet18": dict(bb="ResNet18", ga="after layer1 and layer2", la="the 3x3 convs of layer4"),
    "efficientnet_b0": dict(bb="EfficientNet-B0", ga="after blocks[1] and blocks[2]",
                            la="the last MBConv block (blocks[6])"),
}
_VIT_DESCRIPTIONS = {
    "vit_tiny_in1k": "ViT-tiny/16 pre-trained on ImageNet-1k (timm deit_tiny_patch16_224.fb_in1k)",
    "vit_tiny_in21k": "ViT-tiny/16 pre-trained on ImageNet-21k (timm vit_tiny_patch16_224.augreg_in21k)",
}

# options create_model understands, with defaults (stored in checkpoints to rebuild the same model)
DEFAULT_OPTIONS = {
    "kernel_size": 7,        # LA neighbourhood k
    "heads": 8,              # LA heads
    "la_tile": 7,            # LA query block size (speed only, results identical)
    "ga_subsample": False,   # GA: 2x2 max-pooled phi and g (Wang et al.'s cheaper variant; not the paper's)
    "drop_rate": 0.0,        # dropout before the classifier (timm)
    "drop_path_rate": 0.0,   # stochastic depth (timm)
    "zero_init_last": True,  # timm ResNet: zero-init the last BN of each block (random init only)
    "pretrained_tag": None,  # timm checkpoint to use instead of the default (architecture.tag)
}


@dataclass(frozen=True)
class ModelSpec:
    """A parsed model name: ``name`` (canonical), ``backbone`` (``resnet18``, ``efficientnet_b0``,
    ``vit``), ``variant`` (``base``, ``ga``, ``la``, ``ga+la``, ``ela``, ``ga+ela``, or ``1k``/``21k``)."""

    name: str
    backbone: str
    variant: str

    @property
    def has_ga(self) -> bool:
        return self.variant.startswith("ga")

    @property
    def local(self) -> str | None:
        """``"la"``, ``"ela"`` or None."""
        return next((p for p in self.variant.split("+") if p in ("la", "ela")), None)

    @property
    def description(self) -> str:
        return describe_model(self.name)


def list_models() -> list[str]:
    """All model names, in the paper's order."""
    names = [bb if v == "base" else f"{bb}+{v}" for bb in BACKBONES for v in VARIANTS]
    return names + list(VIT_CHECKPOINTS)


def parse_model_name(name: str) -> ModelSpec:
    """Parse ``resnet18+ga+ela`` (case, spaces and the order of ``+`` parts do not matter)."""
    raw = str(name)
    parts = [p.strip().lower().replace("-", "_") for p in raw.split("+")]
    head, mods = parts[0], sorted(set(parts[1:]), key=lambda p: (p != "ga", p))
    if head in VIT_CHECKPOINTS and not mods:
        return ModelSpec(head, "vit", head.rsplit("_in", 1)[1])
    variant = "+".join(mods) if mods else "base"
    if head not in BACKBONES or variant not in VARIANTS or len(mods) != len(parts) - 1:
        raise ConfigError(f"unknown model {raw!r}; choose one of: {', '.join(list_models())} "
                          "(`medattn models` lists them)")
    return ModelSpec(head if variant == "base" else f"{head}+{variant}", head, variant)


def model_catalog() -> list[tuple[str, str]]:
    """``(name, one-line description)`` for every model, in the paper's order."""
    return [(name, describe_model(name)) for name in list_models()]


def describe_model(name: str) -> str:
    """One-line description of a model name."""
    spec = parse_model_name(name)
    if spec.backbone == "vit":
        return _VIT_DESCRIPTIONS[spec.name]
    return _DESCRIPTIONS[spec.variant].format(**_WHERE[spec.backbone])


def _timm_name(spec: ModelSpec, options: dict) -> str:
    default = VIT_CHECKPOINTS[spec.name] if spec.backbone == "vit" else CNN_CHECKPOINTS[spec.backbone]
    tag = options.get("pretrained_tag")
    if not tag:
        return default
    arch = default.split(".")[0]
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
    if not isinstance(opts["heads"], int) or opts["heads"] < 1 or 320 % opts["heads"] or 512 % opts["heads"]:
        raise ConfigError(f"model option heads must divide 320 and 512 (e.g. 1, 2, 4, 8), got {opts['heads']!r}")
    if not isinstance(opts["ga_subsample"], bool):
        raise ConfigError(f"model option ga_subsample must be true or false, got {opts['ga_subsample']!r}")
    return opts


def create_model(name: str, num_classes: int, pretrained: bool | str | Path = False,
                 weights: str | Path | None = None, **options) -> nn.Module:
    """Build a model of the zoo.

    Args:
        name: one of :func:`list_models` (e.g. ``"resnet18+ga+ela"``).
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
    from medattn.models import weights as W

    spec = parse_model_name(name)
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ConfigError(f"num_classes must be a positive int, got {num_classes!r}")
    opts = _check_options(spec, options)
    timm_name = _timm_name(spec, opts)
    kwargs = dict(num_classes=num_classes, drop_rate=opts["drop_rate"], drop_path_rate=opts["drop_path_rate"])
    if spec.backbone == "vit":
        kwargs.update(dynamic_img_size=True, dynamic_img_pad=True)
    elif spec.backbone == "resnet18":
        kwargs.update(zero_init_last=opts["zero_init_last"])
    use_hub = pretrained is True and weights is None
    try:
        model = W.create_timm(timm_name, pretrained=use_hub, **kwargs)
    except RuntimeError as err:
        raise ConfigError(f"cannot build timm model {timm_name!r} for {spec.name}: {err}") from err
    if pretrained not in (False, None, True) and weights is None:
        W.load_timm_file(model, pretrained, timm_name)
    _attach_attention(model, spec, opts)
    model.medattn_name = spec.name
    model.medattn_spec = spec
    model.medattn_options = {k: v for k, v in options.items()}
    model.medattn_timm_name = timm_name
    if weights is not None:
        W.load_into(model, weights, num_classes)
    return model


def _la(cin: int, cout: int, stride: int, opts: dict) -> LocalAttention2d:
    return LocalAttention2d(cin, cout, kernel_size=opts["kernel_size"], stride=stride, heads=opts["heads"],
                            tile=opts["la_tile"])


def _attach_attention(model: nn.Module, spec: ModelSpec, opts: dict) -> None:
    if spec.backbone == "vit" or spec.variant == "base":
        return
    sub = opts["ga_subsample"]
    if spec.backbone == "resnet18":
        if spec.has_ga:
            for stage in (model.layer1, model.layer2):
                stage.add_module("ga", GlobalAttention2d(stage[-1].conv2.out_channels, subsample=sub))
        if spec.local:
            for block in model.layer4:
                for attr in ("conv1", "conv2"):
                    conv = getattr(block, attr)
                    la = _la(conv.in_channels, conv.out_channels, conv.stride[0], opts)
                    setattr(block, attr, la if spec.local == "la" else EmbeddedLocalAttention2d(conv, la))
    else:  # efficientnet_b0
        if spec.has_ga:
            for i in (1, 2):
                stage = model.blocks[i]
                stage.add_module("ga", GlobalAttention2d(_out_channels(stage[-1]), subsample=sub))
        if spec.local:
            block = model.blocks[6][0]
            cin, cout = block.conv_pw.in_channels, block.conv_pwl.out_channels
            stride = block.conv_dw.stride[0]
            la = _la(cin, cout, stride, opts)
            model.blocks[6][0] = la if spec.local == "la" else EmbeddedLocalAttention2d(block, la)


def _out_channels(block: nn.Module) -> int:
    # the last conv of an (inverted) residual block is its output projection (conv_pwl)
    return [m for m in block.modules() if isinstance(m, nn.Conv2d)][-1].out_channels


def gradcam_target_layers(model: nn.Module) -> list[nn.Module]:
    """Grad-CAM target layer(s): the output of the last convolutional stage, i.e. the feature map
    that is globally pooled (ResNet18: ``layer4[-1]``; EfficientNet-B0: ``bn2`` = conv_head + BN + act).
    ViT: ``[]`` (use attention rollout instead)."""
    spec = getattr(model, "medattn_spec", None)
    backbone = spec.backbone if spec else ("resnet18" if hasattr(model, "layer4") else
                                           "efficientnet_b0" if hasattr(model, "conv_head") else "vit")
    if backbone == "resnet18":
        return [model.layer4[-1]]
    if backbone == "efficientnet_b0":
        return [model.bn2]
    return []

