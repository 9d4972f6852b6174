"""timm's attention layers made to fit the zoo: identity at initialisation, any input size.

* :class:`ZeroInitResidual` wraps a gate such as squeeze-and-excitation, CBAM or ECA
  (``timm.layers.create_attn``) as ``y = x + gamma * (f(x) - x)`` with a per-channel ``gamma``
  (timm's ``LayerScale2d``) initialised to zero: exactly the identity at initialisation, the
  original gate at ``gamma = 1``, and ``dy/dgamma = f(x) - x`` is not zero, so it learns at once.
* :class:`MultiHeadSelfAttention2d` is BoTNet's multi-head self-attention (timm's
  ``BottleneckAttn``, state-dict keys unchanged) on any input size: its relative position tables
  are sized for the feature map of a 224 px image and linearly interpolated to other sizes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import LayerScale2d
from timm.layers.bottleneck_attn import BottleneckAttn, rel_logits_1d
from torch import nn

__all__ = ["MultiHeadSelfAttention2d", "ZeroInitResidual"]


class ZeroInitResidual(nn.Module):
    """``y = x + gamma * (fn(x) - x)``, ``gamma`` of shape (C,) zero at initialisation.

    Input and output ``(B, C, H, W)``; ``fn`` must keep the shape (a gate).
    """

    def __init__(self, fn: nn.Module, channels: int):
        super().__init__()
        self.fn = fn
        self.scale = LayerScale2d(channels, init_values=0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.scale(self.fn(x) - x)


def _resize(table: torch.Tensor, length: int) -> torch.Tensor:
    """A (2n - 1, d) relative-offset table linearly resampled to (length, d)."""
    if table.shape[0] == length:
        return table
    return F.interpolate(table.t()[None], size=length, mode="linear", align_corners=True)[0].t()


class MultiHeadSelfAttention2d(BottleneckAttn):
    """BoTNet MHSA (Srinivas et al. 2021): all-to-all attention over the map with 2-D relative
    position logits, ``num_heads`` heads, bias-free qkv 1x1 conv; stride 2 average-pools the
    output (``ceil_mode``, so odd maps give ``ceil(H / 2)`` like the strided conv it replaces).

    ``feat_size``: the (H, W) the position tables are made for (their exact size); other input
    sizes use the tables linearly interpolated to ``2H - 1`` / ``2W - 1`` offsets. Input
    ``(B, dim, H, W)``, output ``(B, dim_out, ceil(H / stride), ceil(W / stride))``.
    """

    def __init__(self, dim: int, dim_out: int, feat_size: tuple[int, int], stride: int = 1,
                 num_heads: int = 4):
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        super().__init__(dim, dim_out, feat_size=feat_size, stride=stride, num_heads=num_heads)
        if stride == 2:
            self.pool = nn.AvgPool2d(2, 2, ceil_mode=True)

    def _rel_logits(self, q: torch.Tensor, H: int, W: int) -> torch.Tensor:
        # q: (B * heads, N, d) -> (B * heads, N, N), timm's 1-D relative logits on resized tables
        pe = self.pos_embed
        rel_h, rel_w = _resize(pe.height_rel, 2 * H - 1), _resize(pe.width_rel, 2 * W - 1)
        q = q.reshape(-1, H, W, q.shape[-1])
        logits_w = rel_logits_1d(q, rel_w, permute_mask=(0, 1, 3, 2, 4))
        logits_h = rel_logits_1d(q.transpose(1, 2), rel_h, permute_mask=(0, 3, 1, 4, 2))
        return (logits_h + logits_w).reshape(q.shape[0], H * W, H * W)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, _, H, W = x.shape
        heads = self.num_heads
        q, k, v = torch.split(self.qkv(x), [self.dim_out_qk, self.dim_out_qk, self.dim_out_v], dim=1)
        q = q.reshape(B * heads, self.dim_head_qk, H * W).transpose(1, 2)
        k = k.reshape(B * heads, self.dim_head_qk, H * W)
        v = v.reshape(B * heads, self.dim_head_v, H * W).transpose(1, 2)
        rel = self._rel_logits(q, H, W)
        logits = (q @ k + rel) * self.scale if self.scale_pos_embed else (q @ k) * self.scale + rel
        out = (logits.softmax(dim=-1) @ v).transpose(1, 2).reshape(B, self.dim_out_v, H, W)
        return self.pool(out)
