"""Where does a map put its mass? Shares inside a region (lesion mask, patch, border, corners).

A map's *mass share* in a region is sum(map * region) / sum(map): 1 means everything is inside,
and a map that is flat over the image gives the region's area share, which is reported beside it as
the chance level.
"""

from __future__ import annotations

import torch


def mass_share(maps: torch.Tensor, region: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Share of each map's mass inside a region.

    Args:
        maps: (B, H, W) non-negative.
        region: (B, H, W) or (H, W), bool or weights in [0, 1].
    Returns:
        (B,) float in [0, 1]; NaN for a map with no mass.
    """
    maps = maps.float()
    region = region.to(maps.dtype).expand_as(maps)
    total = maps.flatten(1).sum(1)
    inside = (maps * region).flatten(1).sum(1)
    share = inside / total.clamp_min(eps)
    return torch.where(total > eps, share, torch.full_like(share, float("nan")))


def border_mask(height: int, width: int, frac: float = 0.1) -> torch.Tensor:
    """Bool (H, W): pixels within ``frac`` of the side length of any image edge."""
    if not 0 < frac < 0.5:
        raise ValueError(f"border frac must be in (0, 0.5), got {frac}")
    bh, bw = max(1, round(frac * height)), max(1, round(frac * width))
    inner = torch.zeros(height, width, dtype=torch.bool)
    inner[bh:height - bh, bw:width - bw] = True
    return ~inner


def corner_mask(height: int, width: int, frac: float = 0.1) -> torch.Tensor:
    """Bool (H, W): the four corner squares of side ``frac`` of the image (the paper's "corner spikes")."""
    if not 0 < frac < 0.5:
        raise ValueError(f"corner frac must be in (0, 0.5), got {frac}")
    bh, bw = max(1, round(frac * height)), max(1, round(frac * width))
    rows = torch.zeros(height, dtype=torch.bool)
    cols = torch.zeros(width, dtype=torch.bool)
    rows[:bh] = rows[height - bh:] = True
    cols[:bw] = cols[width - bw:] = True
    return rows[:, None] & cols[None, :]
