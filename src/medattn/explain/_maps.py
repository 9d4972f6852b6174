"""Shared map plumbing: upsampling to the input size and scaling to [0, 1]."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def upsample(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinearly resize maps (B, h, w) to (B, H, W) (half-pixel centres, like cv2.resize)."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps.float()
    return F.interpolate(maps[:, None].float(), size=size, mode="bilinear",
                         align_corners=False)[:, 0]


def scale_by_max(maps: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Divide each map (B, H, W) by its maximum: proportions (and so mass shares) are kept, max = 1.

    Attention maps are non-negative distributions; dividing by the maximum (rather than min-max
    scaling) keeps "share of the map's mass in a region" equal to the share of attention there.
    """
    peak = maps.flatten(1).amax(dim=1).clamp_min(eps)
    return (maps / peak[:, None, None]).clamp_(0.0, 1.0)


def to_uint8(map_: torch.Tensor | np.ndarray) -> np.ndarray:
    """Min-max scale one map (H, W) to 0..255 for display, as the paper does for Table 4."""
    arr = np.asarray(map_, dtype=np.float64)
    lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
    if not np.isfinite(hi) or hi - lo <= 0:
        return np.zeros(arr.shape, dtype=np.uint8)
    return np.round((arr - lo) / (hi - lo) * 255.0).astype(np.uint8)
