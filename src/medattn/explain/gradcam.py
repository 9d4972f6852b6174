"""Grad-CAM (Selvaraju et al. 2017) for the CNN variants.

Written out (about 30 lines) rather than taken from the ``grad-cam`` package, which pulls OpenCV
(160 MB installed) for one bilinear resize (docs/dependencies.md); the maps equal that package's
``GradCAM`` (its per-layer min-max scaling, resize and multi-layer mean; tested against it). The
module adds the documented target layer per architecture
(``medattn.models.gradcam_target_layers``), a batch in / tensor out interface, and leaves the model
as it was (training mode, parameter gradients, no hooks left behind).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from medattn.explain._maps import upsample
from medattn.models.zoo import gradcam_target_layers


def _default_target_layers(model: nn.Module) -> list[nn.Module]:

    layers = list(gradcam_target_layers(model))
    if not layers:
        raise ValueError(f"{type(model).__name__} has no Grad-CAM target layer (a ViT?): use vit_rollout")
    return layers


def gradcam(
    model: nn.Module,
    images: torch.Tensor,
    targets: Sequence[int] | torch.Tensor | None = None,
    target_layers: Sequence[nn.Module] | None = None,
) -> torch.Tensor:
    """Grad-CAM maps for a batch.

    Args:
        model: a classifier returning logits (B, num_classes).
        images: normalised input batch (B, 3, H, W).
        targets: class index per image; ``None`` = the predicted class (as in the paper).
        target_layers: layers whose activations are weighted; default
            ``medattn.models.gradcam_target_layers(model)`` (the last convolutional stage).

    Returns:
        maps (B, H, W), float32 in [0, 1] at input resolution: ReLU of the gradient-weighted
        activations, min-max scaled per image and bilinearly upsampled; with several layers the
        mean of their maps, scaled again (as the ``grad-cam`` package does).
    """
    if images.ndim != 4:
        raise ValueError(f"images must be (B, 3, H, W), got shape {tuple(images.shape)}")
    layers = list(target_layers) if target_layers is not None else _default_target_layers(model)
    if targets is not None:
        targets = [int(t) for t in (targets.tolist() if torch.is_tensor(targets) else targets)]
        if len(targets) != len(images):
            raise ValueError(f"got {len(targets)} targets for {len(images)} images")

    was_training = model.training
    model.eval()
    acts: list[torch.Tensor | None] = [None] * len(layers)
    # One layer: its output becomes a fresh leaf, so autograd stops there (Grad-CAM needs only
    # d(score)/d(activation); a full backward costs 2.7-4x, docs/benchmarks.md). Several layers:
    # the gradient must flow between them, so the outputs stay in the graph and a leaf input keeps
    # them differentiable even when every parameter is frozen.
    single = len(layers) == 1

    def keep(i: int):
        def hook(_m, _i, out):
            out = out.detach().requires_grad_(True) if single else out
            acts[i] = out
            return out
        return hook

    handles = [layer.register_forward_hook(keep(i)) for i, layer in enumerate(layers)]
    x = images.detach() if single else images.detach().clone().requires_grad_(True)
    params = list(model.parameters())
    flags = [p.requires_grad for p in params]
    if single:  # frozen weights: the forward records no graph before the target layer (~8 %)
        for p in params:
            p.requires_grad_(False)
    try:
        with torch.enable_grad():
            logits = model(x)
            chosen = (logits.argmax(1) if targets is None
                      else torch.as_tensor(targets, device=logits.device))
            score = logits.gather(1, chosen[:, None]).sum()
            # autograd.grad leaves parameters' .grad untouched
            grads = torch.autograd.grad(score, acts)
    finally:
        for h in handles:
            h.remove()
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)
        model.train(was_training)
    size = tuple(images.shape[-2:])
    per_layer = []
    for a, g in zip(acts, grads):
        # weights: spatial mean of the gradient per channel; map: ReLU of the weighted sum
        cam = (g.mean((2, 3), keepdim=True) * a).sum(1).detach().float().clamp_min(0)
        per_layer.append(upsample(_min_max(cam), size))
    return _min_max(torch.stack(per_layer).clamp_min(0).mean(0)).clamp_(0.0, 1.0)


def _min_max(maps: torch.Tensor) -> torch.Tensor:
    """Per map (B, H, W): subtract the minimum, divide by the new maximum (+1e-7: a flat map is 0)."""
    maps = maps - maps.flatten(1).amin(1)[:, None, None]
    return maps / (1e-7 + maps.flatten(1).amax(1)[:, None, None])
