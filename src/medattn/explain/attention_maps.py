"""Global-attention (GA) maps as the paper draws them (Wang et al. 2018's visualisation).

For every query position the attention over all key positions, averaged over all queries: one map
per GA block. The block computes it itself when ``record_map`` is set (see
``medattn.models.attention.GlobalAttention2d``: the column means of softmax(QK^T), without the
full N x N matrix for large N); this module switches recording on for one forward pass, collects
``last_map`` and restores the blocks.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from medattn.explain._maps import scale_by_max, upsample
from medattn.models.attention import GlobalAttention2d


def ga_blocks(model: nn.Module) -> list[nn.Module]:
    """The model's GA blocks in forward (registration) order; empty for models without GA."""
    return [m for m in model.modules() if isinstance(m, GlobalAttention2d)]


@torch.no_grad()
def ga_maps(model: nn.Module, images: torch.Tensor) -> list[torch.Tensor]:
    """GA attention maps for a batch, one per GA block.

    Args:
        model: a model with ``GlobalAttention2d`` blocks (e.g. ``resnet18+ga``).
        images: normalised input (B, 3, H, W).

    Returns:
        list (one entry per GA block, forward order) of maps (B, H, W), float32 in [0, 1]:
        the query-averaged attention each key position receives, bilinearly upsampled to the input
        and divided by its per-image maximum.
    """
    blocks = ga_blocks(model)
    if not blocks:
        raise ValueError(f"{getattr(model, 'medattn_name', type(model).__name__)} has no GA block")
    saved = [(b.record_map, getattr(b, "last_map", None)) for b in blocks]
    was_training = model.training
    try:
        for b in blocks:
            b.record_map = True
            b.last_map = None
        model.eval()
        model(images)
        raw = [b.last_map for b in blocks]
    finally:
        for b, (flag, last) in zip(blocks, saved):
            b.record_map = flag
            b.last_map = last
        model.train(was_training)
    if any(m is None for m in raw):
        raise RuntimeError("a GA block did not record its map: is it on the forward path?")
    size = tuple(images.shape[-2:])
    return [scale_by_max(upsample(m.float(), size)) for m in raw]
