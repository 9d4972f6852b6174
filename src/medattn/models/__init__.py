"""The model zoo of the paper: CNN backbones with global/local self-attention, ViT baselines, Table 1.

See docs/models.md. Public API::

    create_model(name, num_classes, pretrained=False, weights=None, **options) -> nn.Module
    list_models() -> list[str];  parse_model_name(name) -> ModelSpec;  describe_model(name) -> str
    gradcam_target_layers(model) -> list[nn.Module]
    parameter_table(num_classes=3) -> pandas.DataFrame   (Table 1)
    save_checkpoint(model, path, metadata) / load_checkpoint(path, map_location="cpu")
"""

from medattn.models.attention import EmbeddedLocalAttention2d, GlobalAttention2d, LocalAttention2d
from medattn.models.counting import count_parameters, parameter_table
from medattn.models.weights import load_checkpoint, save_checkpoint
from medattn.models.zoo import (ModelSpec, create_model, describe_model, gradcam_target_layers, list_models,
                                model_catalog, parse_model_name)

__all__ = ["create_model", "list_models", "parse_model_name", "describe_model", "model_catalog", "ModelSpec",
           "gradcam_target_layers", "parameter_table", "count_parameters", "save_checkpoint",
           "load_checkpoint", "GlobalAttention2d", "LocalAttention2d", "EmbeddedLocalAttention2d"]
