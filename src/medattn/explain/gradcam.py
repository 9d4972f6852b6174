"""Grad-CAM (Selvaraju et al. 2017) for the CNN variants, through the ``grad-cam`` package.

The package computes the class-discriminative map; this module only adds what a study needs around
it: the documented target layer per architecture (``medattn.models.gradcam_target_layers``), a
batch in / tensor out interface, and leaving the model exactly as it was (training mode, parameter
gradients, no hooks left behind).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn


def _default_target_layers(model: nn.Module) -> list[nn.Module]:
    from medattn.models import gradcam_target_layers

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
        activations, min-max scaled per image and bilinearly upsampled (the package's scaling).
    """
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    if images.ndim != 4:
        raise ValueError(f"images must be (B, 3, H, W), got shape {tuple(images.shape)}")
    layers = list(target_layers) if target_layers is not None else _default_target_layers(model)
    cam_targets = None
    if targets is not None:
        targets = [int(t) for t in (targets.tolist() if torch.is_tensor(targets) else targets)]
        if len(targets) != len(images):
            raise ValueError(f"got {len(targets)} targets for {len(images)} images")
        cam_targets = [ClassifierOutputTarget(t) for t in targets]

    was_training = model.training
    params = list(model.parameters())
    saved_grads = [p.grad for p in params]  # the package zeroes and then fills them
    saved_flags = [p.requires_grad for p in params]
    handle = None
    if len(layers) == 1:
        # Grad-CAM needs only d(score)/d(activation). The package calls loss.backward(), which
        # would back-propagate through the whole backbone into every weight (2.7-4x the cost, see
        # docs/benchmarks.md). Freezing the weights and making the target activation a fresh leaf
        # (registered before the package's hooks, so they see the leaf) stops autograd there;
        # values are unchanged.
        for p in params:
            p.requires_grad_(False)
        handle = layers[0].register_forward_hook(lambda _m, _i, out: out.detach().requires_grad_(True))
        x = images.detach()
    else:
        # several layers: gradients must flow between them; a leaf input keeps hooks firing even
        # when every parameter is frozen
        x = images.detach().clone().requires_grad_(True)
    try:
        with torch.enable_grad(), GradCAM(model=model, target_layers=layers) as cam:
            maps = cam(input_tensor=x, targets=cam_targets)
    finally:
        if handle is not None:
            handle.remove()
        for p, g, flag in zip(params, saved_grads, saved_flags):
            p.requires_grad_(flag)
            p.grad = g
        model.train(was_training)
    return torch.from_numpy(maps).float().clamp_(0.0, 1.0)
