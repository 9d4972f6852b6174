"""Local explanations (the paper's Table 4): Grad-CAM, GA attention maps and ViT attention rollout.

Each method maps a batch of images (B, 3, H, W) to maps (B, H, W) in [0, 1] at input resolution and
leaves the model as it found it. ``explain_runs`` draws the Table 4 grid for a study's best runs and
measures where the maps put their mass.
"""

from medattn.explain.attention_maps import ga_blocks, ga_maps
from medattn.explain.gradcam import gradcam
from medattn.explain.pipeline import explain_runs
from medattn.explain.quantify import border_mask, corner_mask, mass_share
from medattn.explain.rollout import attention_weights, vit_rollout

# (the rollout product itself is medattn.explain.rollout.rollout; not re-exported, so that the
# name keeps meaning the submodule)
__all__ = ["gradcam", "ga_maps", "ga_blocks", "vit_rollout", "attention_weights",
           "mass_share", "border_mask", "corner_mask", "explain_runs"]
