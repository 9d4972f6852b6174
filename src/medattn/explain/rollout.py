"""Attention rollout (Abnar & Zuidema 2020) from the class token of a timm Vision Transformer.

timm computes attention with fused SDPA, which never materialises the weights. For the duration of
one forward pass each attention module's ``fused_attn`` flag is switched off, so the explicit
softmax runs and a forward hook on its ``attn_drop`` (identity in eval mode) sees the weights; flags
and hooks are restored afterwards, so the model's outputs are unchanged.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from medattn.explain._maps import scale_by_max, upsample


def _attention_modules(model: nn.Module) -> list[nn.Module]:
    mods = [m for m in model.modules() if hasattr(m, "fused_attn") and isinstance(
        getattr(m, "attn_drop", None), nn.Module)]
    if not mods:
        raise ValueError(f"{type(model).__name__} has no timm attention modules: attention rollout "
                         "needs a timm Vision Transformer")
    return mods


@torch.no_grad()
def attention_weights(model: nn.Module, images: torch.Tensor) -> list[torch.Tensor]:
    """Softmax attention weights of every attention block, in forward order.

    Returns a list of (B, heads, N, N) tensors (N tokens including prefix tokens).
    The model is run in eval mode; its mode, ``fused_attn`` flags and hooks are restored.
    """
    mods = _attention_modules(model)
    captured: list[torch.Tensor] = []
    saved_flags = [m.fused_attn for m in mods]
    was_training = model.training
    handles = []
    try:
        for m in mods:
            m.fused_attn = False
            handles.append(m.attn_drop.register_forward_hook(
                lambda _m, _inp, out: captured.append(out.detach())))
        model.eval()
        model(images)
    finally:
        for h in handles:
            h.remove()
        for m, flag in zip(mods, saved_flags):
            m.fused_attn = flag
        model.train(was_training)
    return captured


def rollout(attentions: list[torch.Tensor], head_fusion: str = "mean") -> torch.Tensor:
    """Roll attention out through the layers.

    Per layer: fuse heads (mean or max), add the identity for the residual path and renormalise each
    row to sum to one; then multiply the layers, last on the left. Every batch element is handled on
    its own (batched matmul), with no token dropped.

    Args:
        attentions: list of (B, heads, N, N).
    Returns:
        (B, N, N) rolled-out attention; row i = how much token i draws on each input token.
    """
    result = None
    for attn in attentions:
        a = attn.float()
        a = a.mean(dim=1) if head_fusion == "mean" else a.amax(dim=1)
        a = a + torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
        a = a / a.sum(dim=-1, keepdim=True)
        result = a if result is None else a @ result
    if result is None:
        raise ValueError("no attention layers to roll out")
    return result


def vit_rollout(model: nn.Module, images: torch.Tensor, head_fusion: str = "mean") -> torch.Tensor:
    """Attention-rollout maps from the class token for a batch.

    Args:
        model: a timm VisionTransformer (class token first; register tokens are skipped).
        images: normalised input (B, 3, H, W).
        head_fusion: ``mean`` (Abnar & Zuidema) or ``max`` over heads.

    Returns:
        maps (B, H, W), float32 in [0, 1]: the class-token row over patch tokens, bilinearly
        upsampled to the input and divided by its per-image maximum.
    """
    if head_fusion not in ("mean", "max"):
        raise ValueError(f"head_fusion must be 'mean' or 'max', got {head_fusion!r}")
    H, W = images.shape[-2:]
    rolled = rollout(attention_weights(model, images), head_fusion)
    n_prefix = next((int(m.num_prefix_tokens) for m in model.modules()
                     if hasattr(m, "num_prefix_tokens")), 1)
    cls_row = rolled[:, 0, n_prefix:]
    n = cls_row.shape[-1]
    gh = round(math.sqrt(n * H / W))
    gw = n // max(gh, 1)
    if gh * gw != n:
        raise ValueError(f"cannot lay {n} patch tokens out on a grid for a {H}x{W} input")
    return scale_by_max(upsample(cls_row.reshape(-1, gh, gw), (H, W)))
