"""How a model and a comparison are named in every output (notes, plans, plots, sequential state).

One format for a comparison, ``<dataset> <set>: <model> vs <reference> base`` (e.g. ``isic id:
ResNet18 +GA vs ResNet18 base``), and its short form for plot labels (``isic ID: +GA vs
ResNet18``). Labels of backbones and variants come from the model registry.
"""

from __future__ import annotations

from medattn.models import registry as R

__all__ = ["comparison_label", "model_label"]


def _get(row, key: str):
    try:
        return row[key]  # a dict or Series
    except (TypeError, KeyError, IndexError):  # a named tuple (itertuples)
        return getattr(row, key)


def model_label(backbone: str, model: str) -> str:
    """``ResNet18 +GA``, ``EfficientNet-B0 Base``, ``ViT-21k``."""
    return R.model_label(backbone, model)


def comparison_label(row, short: bool = False) -> str:
    """The name of a comparison: a row (dict, named tuple or Series) with ``dataset, set,
    backbone, model, reference``. ``isic id: ResNet18 +GA vs ResNet18 base``; ``short`` (plots):
    ``isic ID: +GA vs ResNet18`` / ``isic OOD pad-ufes-20: ViT-21k vs EfficientNet-B0``."""
    dataset, set_name = _get(row, "dataset"), _get(row, "set")
    backbone, model, ref = _get(row, "backbone"), _get(row, "model"), _get(row, "reference")
    if not short:
        return f"{dataset} {set_name}: {model_label(backbone, model)} vs {R.backbone_label(ref)} base"
    where = "ID" if set_name in ("id", "test") else f"OOD {set_name[4:]}".strip()
    shown = (R.variant_label(model) if backbone == ref
             else R.model_label(backbone, model, short=True))
    return f"{dataset} {where}: {shown} vs {R.backbone_label(ref, short=True)}"
