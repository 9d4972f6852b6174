"""The model zoo: any registered CNN backbone with any registered attention module, ViT baselines,
Table 1.

See docs/models.md. Public API::

    create_model(name, num_classes, pretrained=False, weights=None, **options) -> nn.Module
    list_models() -> list[str];  parse_model_name(name) -> ModelSpec;  describe_model(name) -> str
    register_backbone(name, checkpoint, after=..., local=..., gradcam=...)
    register_attention(name, factory, placement="after" | "replace" | "embed")
    gradcam_target_layers(model) -> list[nn.Module]
    parameter_table(num_classes=3) -> pandas.DataFrame   (Table 1)
    save_checkpoint(model, path, metadata) / load_checkpoint(path, map_location="cpu")

Names are loaded on first use, so that the registry (``medattn.models.registry``: labels and table
order for compare and the report) can be read without importing torch.
"""

from __future__ import annotations

import importlib

_WHERE = {
    "EmbeddedLocalAttention2d": "attention", "GlobalAttention2d": "attention",
    "LocalAttention2d": "attention", "count_parameters": "counting", "parameter_table": "counting",
    "load_checkpoint": "weights", "save_checkpoint": "weights", "ModelSpec": "zoo",
    "create_model": "zoo", "describe_model": "zoo", "gradcam_target_layers": "zoo",
    "list_models": "zoo", "model_catalog": "zoo", "parse_model_name": "zoo",
    "Attention": "registry", "Backbone": "registry", "Site": "registry",
    "register_attention": "registry", "register_backbone": "registry",
}

__all__ = ["create_model", "list_models", "parse_model_name", "describe_model", "model_catalog", "ModelSpec",
           "gradcam_target_layers", "parameter_table", "count_parameters", "save_checkpoint",
           "load_checkpoint", "GlobalAttention2d", "LocalAttention2d", "EmbeddedLocalAttention2d",
           "register_backbone", "register_attention", "Backbone", "Attention", "Site"]


# Start-up time: `from medattn.models import registry` (labels and order for compare and the
# report) must not import torch and timm (about 3 s), which create_model and the rest need.
def __getattr__(name: str):
    if name in _WHERE:
        value = getattr(importlib.import_module(f"medattn.models.{_WHERE[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'medattn.models' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
