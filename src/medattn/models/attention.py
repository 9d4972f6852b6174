"""Self-attention layers for convolutional networks: GA, LA and ELA.

* :class:`GlobalAttention2d` (GA): the non-local block of Wang et al. (2018), embedded-Gaussian form,
  residual and identity at initialisation.
* :class:`LocalAttention2d` (LA): stand-alone k x k neighbourhood self-attention of Ramachandran et
  al. (2019) with learned relative position embeddings (split over rows and columns).
* :class:`EmbeddedLocalAttention2d` (ELA): keeps an existing layer and adds an LA branch followed by a
  zero-initialised 1x1 conv, so the network is unchanged at initialisation.

All layers take and return ``(B, C, H, W)`` tensors and work at any spatial size. Attention runs
through :func:`torch.nn.functional.scaled_dot_product_attention` (SDPA): on CPU its fused kernel is only
used for 4-D, contiguous q/k/v with equal head dimensions, which is why the code below takes care to
produce exactly that (otherwise SDPA silently falls back to the explicit N x N "math" kernel).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["GlobalAttention2d", "LocalAttention2d", "EmbeddedLocalAttention2d", "local_attention_unfold"]


def _is_channels_last(x: torch.Tensor) -> bool:
    """True for NHWC strides (not for tensors that are both, e.g. 1x1 maps: those stay NCHW)."""
    return x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


class GlobalAttention2d(nn.Module):
    """Non-local block (embedded Gaussian): ``z = x + BN(W_z(softmax(theta(x)^T phi(x)) g(x)))``.

    theta, phi, g are 1x1 convs ``C -> C_i`` (``C_i = C // 2`` unless given) with bias, W_z is a 1x1 conv
    ``C_i -> C`` with bias, followed by BatchNorm whose scale is zero-initialised: the block is the
    identity at initialisation. Logits are not scaled (``scale=1.0``), as in Wang et al.

    Args:
        channels: C, input and output channels.
        inter_channels: C_i; default ``channels // 2``.
        scale: multiplier of the logits ``theta^T phi``; default 1.0 (the original block).
        impl: ``"sdpa"`` (fused kernel, no N x N matrix kept) or ``"explicit"`` (materialises
            softmax(QK^T); for reference and benchmarks).
        subsample: Wang et al.'s cheaper variant: phi and g are 2x2 max-pooled (``ceil_mode``), so
            each query attends to ``ceil(H/2) * ceil(W/2)`` pooled positions (4x less attention
            work, same parameters). Off by default: the paper's block attends to every position.

    Input and output ``(B, C, H, W)``, contiguous or channels-last (the output keeps the layout).
    The conv modules hold the parameters (so state-dict keys are those of the plain block), but
    the forward pass computes theta, phi and g as one GEMM on ``(B, N, C)`` tokens: that is the
    layout attention needs, so q, k, v are never transposed or copied. Their width is padded
    with zero rows to a multiple of 8 (exact: zero channels add nothing to ``q . k`` and give
    zero outputs, which are dropped); CUDA's fused kernels need it, and on CPU 12 -> 16 is faster.

    Attention maps: set ``module.record_map = True`` and every forward stores ``module.last_map``, a
    detached ``(B, H', W')`` tensor (``H' x W'``: the key grid, ``H x W`` unless ``subsample``):
    for each key position, the attention it receives averaged over all query positions (the mean
    of the rows of softmax(QK^T)). It is accumulated over chunks of queries, so the N x N matrix
    is never held in memory at once (exact, not an approximation).
    """

    def __init__(self, channels: int, inter_channels: int | None = None, scale: float = 1.0,
                 impl: str = "sdpa", subsample: bool = False):
        super().__init__()
        inter = inter_channels or max(channels // 2, 1)
        if impl not in ("sdpa", "explicit"):
            raise ValueError(f"impl must be 'sdpa' or 'explicit', got {impl!r}")
        self.channels, self.inter_channels, self.scale, self.impl = channels, inter, float(scale), impl
        self.subsample = bool(subsample)
        self.theta = nn.Conv2d(channels, inter, 1)
        self.phi = nn.Conv2d(channels, inter, 1)
        self.g = nn.Conv2d(channels, inter, 1)
        self.out = nn.Conv2d(inter, channels, 1)
        self.bn = nn.BatchNorm2d(channels)
        nn.init.zeros_(self.bn.weight)  # identity at initialisation (Wang et al., sec. 4.1)
        self.record_map = False
        self.last_map: torch.Tensor | None = None
        self.map_chunk_elements = 1 << 22  # queries x keys per chunk when averaging the map

    def _projection(self) -> tuple[torch.Tensor, torch.Tensor]:
        """theta, phi, g stacked: weight (3 e, C), bias (3 e), each padded with zero rows to e."""
        ci, c = self.inter_channels, self.channels
        pad = -(-ci // 8) * 8 - ci
        ws, bs = [], []
        for m in (self.theta, self.phi, self.g):
            ws += [m.weight.view(ci, c), m.weight.new_zeros(pad, c)]
            bs += [m.bias, m.bias.new_zeros(pad)]
        return torch.cat(ws), torch.cat(bs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        ci = self.inter_channels
        tokens = x.flatten(2).transpose(1, 2)  # (B, N, C): a view (contiguous if x is channels-last)
        w, b = self._projection()
        e = w.shape[0] // 3
        # split views (last-dim stride 1, as the fused kernels need); their backward is one cat
        qkv = torch.baddbmm(b, tokens, w.t().expand(B, C, 3 * e)).unsqueeze(1)  # (B, 1, N, 3e)
        if self.subsample:  # 2x2 max pool of phi and g over the (H, W) grid, channels-last view
            q, kv = qkv.split([e, 2 * e], dim=-1)
            kv = F.max_pool2d(kv.view(B, H, W, 2 * e).permute(0, 3, 1, 2), 2, ceil_mode=True)
            k, v = kv.permute(0, 2, 3, 1).reshape(B, 1, -1, 2 * e).split(e, dim=-1)
        else:
            q, k, v = qkv.split(e, dim=-1)
        if self.impl == "sdpa":
            y = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        else:
            y = torch.softmax(q @ k.transpose(-1, -2) * self.scale, dim=-1) @ v
        y = y.squeeze(1)[..., :ci]                                       # (B, N, C_i)
        wz, bz = self.out.weight.view(C, ci), self.out.bias
        fold = not self.bn.training and self.bn.running_var is not None
        if fold:  # eval: BN is affine, so it folds into W_z exactly (one pass less)
            s = self.bn.weight * torch.rsqrt(self.bn.running_var + self.bn.eps)
            wz, bz = wz * s[:, None], (bz - self.bn.running_mean) * s + self.bn.bias
        if not _is_channels_last(x):  # W_z y^T straight into (B, C, N): no transposing copy
            z = torch.baddbmm(bz.view(1, C, 1), wz.expand(B, C, ci), y.transpose(1, 2)).view(B, C, H, W)
        else:  # channels-last: tokens (B, N, C) are the layout already
            z = F.linear(y, wz, bz).transpose(1, 2).unflatten(2, (H, W))
        if self.record_map:
            Hk, Wk = ((H + 1) // 2, (W + 1) // 2) if self.subsample else (H, W)
            self.last_map = self.average_map(q.squeeze(1), k.squeeze(1)).view(B, Hk, Wk)
        return x + (z if fold else self.bn(z))

    @torch.no_grad()
    def average_map(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """Mean over queries of softmax(scale * q k^T) rows. q: (B, N, C_i), k: (B, M, C_i) -> (B, M)."""
        B, N, _ = q.shape
        M = k.shape[1]
        chunk = max(1, min(N, self.map_chunk_elements // max(M, 1)))
        acc = q.new_zeros(B, M, dtype=torch.float32)
        kt = k.transpose(1, 2).float()
        for start in range(0, N, chunk):
            logits = q[:, start:start + chunk].float() @ kt * self.scale
            acc += torch.softmax(logits, dim=-1).sum(dim=1)
        return (acc / N).to(q.dtype).detach()

    def extra_repr(self) -> str:
        return (f"channels={self.channels}, inter_channels={self.inter_channels}, scale={self.scale}"
                + (", subsample=True" if self.subsample else ""))


class _LAPlan:
    """Index tables of the blocked neighbourhood attention for one (H, W, stride) geometry."""

    def __init__(self, H: int, W: int, k: int, stride: int, tile: int, device: torch.device):
        r = k // 2
        self.Ho, self.Wo = (H - 1) // stride + 1, (W - 1) // stride + 1
        ys = self._axis(H, self.Ho, k, stride, tile, r)
        xs = self._axis(W, self.Wo, k, stride, tile, r)
        (self.nty, self.ty, self.kh, qy, ky, my, iy) = ys
        (self.ntx, self.tx, self.kw, qx, kx, mx, ix) = xs
        L, S = self.ty * self.tx, self.kh * self.kw
        # tiles are row-major (ty_index, tx_index); inside a tile, queries and keys are row-major too
        qidx = qy[:, None, :, None] * self.Wo + qx[None, :, None, :]          # (nty, ntx, ty, tx)
        kidx = ky[:, None, :, None] * W + kx[None, :, None, :]                # (nty, ntx, kh, kw)
        mask = my[:, None, :, None, :, None] & mx[None, :, None, :, None, :]  # (nty, ntx, ty, tx, kh, kw)
        nt = self.nty * self.ntx
        self.qidx = qidx.reshape(nt * L).to(device)
        self.kidx = kidx.reshape(nt * S).to(device)
        self.mask = mask.reshape(1, nt, L, S).to(device)  # 4-D: CPU fused SDPA rejects 3-D masks
        # relative-offset index (0..k-1) of key row/col for each query, clamped outside the window
        self.iy = iy[:, None, :, None, :].expand(self.nty, self.ntx, self.ty, self.tx, self.kh)
        self.iy = self.iy.reshape(nt, L, self.kh).to(device)
        self.ix = ix[None, :, None, :, :].expand(self.nty, self.ntx, self.ty, self.tx, self.kw)
        self.ix = self.ix.reshape(nt, L, self.kw).to(device)
        onehot_y = F.one_hot(torch.arange(self.kh).repeat_interleave(self.kw), self.kh)
        onehot_x = F.one_hot(torch.arange(self.kw).repeat(self.kh), self.kw)
        self.onehot = torch.cat([onehot_y, onehot_x], dim=1).float().to(device)  # (S, kh + kw)
        self.nt, self.L, self.S = nt, L, S
        self.q_identity = nt == 1 and (self.ty, self.tx) == (self.Ho, self.Wo)
        self.k_identity = nt == 1 and (self.kh, self.kw) == (H, W)

    @staticmethod
    def _axis(n_in: int, n_out: int, k: int, s: int, tile: int, r: int):
        # one block per axis while the map is small: dense masked attention is then faster than
        # gathering windows (measured: 16x16 dense 1.3x faster than 7x7 blocks, 28x28 2.3x slower);
        # larger maps get blocks of about `tile` with as little padding as possible
        if n_out <= 2 * tile + 2:
            t = n_out
        else:
            t = -(-n_out // -(-n_out // tile))
        n_tiles = -(-n_out // t)
        kn = min((t - 1) * s + k, n_in)  # key window per tile: always inside the image
        starts_q = torch.arange(n_tiles) * t
        q_out = (starts_q[:, None] + torch.arange(t)[None]).clamp(max=n_out - 1)  # padded queries repeat the last
        start_k = (starts_q * s - r).clamp(min=0, max=n_in - kn)
        k_in = start_k[:, None] + torch.arange(kn)[None]                       # (n_tiles, kn)
        off = k_in[:, None, :] - (q_out * s)[:, :, None]                        # (n_tiles, t, kn)
        valid = off.abs() <= r
        idx = (off + r).clamp(0, k - 1)
        return n_tiles, t, kn, q_out, k_in, valid, idx


class LocalAttention2d(nn.Module):
    """Stand-alone k x k neighbourhood self-attention (Ramachandran et al., 2019).

    For output position (i, j) (query at input position (s*i, s*j) for stride s), attends to the input
    positions (a, b) with ``|a - s*i| <= k // 2`` and ``|b - s*j| <= k // 2`` that lie inside the
    image (padded positions never receive attention)::

        y_ij = sum_ab softmax_ab(scale * q_ij . (k_ab + r_{a - s i, b - s j})) v_ab

    q, k, v are 1x1 convs ``C_in -> C_out`` without bias, split into ``heads`` heads. The relative
    embedding r of each head concatenates a row-offset embedding (first half of the head's
    channels) and a column-offset embedding (second half); ``rel_h``/``rel_w`` are learned.
    With ``stride=2`` queries are computed only at the strided positions (output size
    ``ceil(H / 2) x ceil(W / 2)``, like a 3x3 conv with stride 2 and padding 1).

    Implementation (``impl="blocked"``, default): queries are grouped into ``tile x tile`` blocks;
    each block attends densely to the key window that covers its neighbourhoods, with a boolean
    mask for the k x k window and the relative term folded into the dot product (q is extended by
    its row/column scores, k by one-hot row/column indicators, v by zeros), so one fused SDPA call
    does the work. Small maps (``<= 2 * tile + 2`` per axis) are a single block: dense masked attention.
    Memory is O(keys per block), not k^2 copies of the feature map. ``impl="unfold"`` is the
    straightforward unfold formulation (k^2 copies), kept as a reference for tests and benchmarks.

    Args:
        in_channels, out_channels: C_in, C_out.
        kernel_size: k, odd (default 7).
        stride: 1 or 2 (any positive int works).
        heads: number of heads; must divide ``out_channels``.
        scale: logit multiplier; default ``head_dim ** -0.5``.
        tile: query block size of the blocked formulation on large maps (default 7; speed only).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 7, stride: int = 1,
                 heads: int = 8, scale: float | None = None, tile: int = 7, impl: str = "blocked"):
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and positive, got {kernel_size}")
        if out_channels % heads:
            raise ValueError(f"heads={heads} must divide out_channels={out_channels}")
        if impl not in ("blocked", "unfold"):
            raise ValueError(f"impl must be 'blocked' or 'unfold', got {impl!r}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.heads, self.tile, self.impl = kernel_size, stride, heads, tile, impl
        self.head_dim = out_channels // heads
        self.scale = float(scale) if scale is not None else self.head_dim ** -0.5
        self.query = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.key = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.value = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        dh = self.head_dim // 2
        # named rel_* (not weight/bias): the paper's counting convention leaves them out
        self.rel_h = nn.Parameter(torch.randn(heads, dh, kernel_size) * self.head_dim ** -0.5)
        self.rel_w = nn.Parameter(torch.randn(heads, self.head_dim - dh, kernel_size) * self.head_dim ** -0.5)
        for conv in (self.query, self.key, self.value):
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
        self._plans: dict = {}

    def _plan(self, H: int, W: int, device: torch.device) -> _LAPlan:
        key = (H, W, str(device))
        plan = self._plans.get(key)
        if plan is None:
            if len(self._plans) > 16:
                self._plans.clear()
            plan = self._plans[key] = _LAPlan(H, W, self.kernel_size, self.stride, self.tile, device)
        return plan

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.impl == "unfold":
            return local_attention_unfold(self, x)
        B, C, H, W = x.shape
        s, nh, d, co = self.stride, self.heads, self.head_dim, self.out_channels
        p = self._plan(H, W, x.device)
        # the 1x1 convs as one GEMM per input on (B, N, C) tokens: the (token, channel) layout is the
        # one attention needs, so no transposing copies of q, k, v (the conv modules hold the weights)
        wq, wk, wv = (m.weight.view(co, C) for m in (self.query, self.key, self.value))
        tokens = x.flatten(2).transpose(1, 2)                                   # (B, H*W, C)
        if s == 1:
            q, k, v = F.linear(tokens, torch.cat([wq, wk, wv])).split(co, dim=-1)
        else:
            k, v = F.linear(tokens, torch.cat([wk, wv])).split(co, dim=-1)
            q = F.linear(x[:, :, ::s, ::s].flatten(2).transpose(1, 2), wq)
        # query blocks and their key windows: (B, nt * L|S, C_out); a single block needs no gather
        if not p.q_identity:
            q = q.index_select(1, p.qidx)
        if not p.k_identity:
            k, v = k.index_select(1, p.kidx), v.index_select(1, p.kidx)
        q = q.reshape(B, p.nt, p.L, nh, d).permute(0, 3, 1, 2, 4)               # (B, nh, nt, L, d)
        k = k.reshape(B, p.nt, p.S, nh, d).permute(0, 3, 1, 2, 4)
        v = v.reshape(B, p.nt, p.S, nh, d).permute(0, 3, 1, 2, 4)
        # relative term: each query's score for every key row / column of its window
        dh, kk = self.rel_h.shape[1], self.kernel_size
        rel = torch.cat([torch.cat([self.rel_h, self.rel_h.new_zeros(nh, dh, kk)], 2),
                         torch.cat([self.rel_w.new_zeros(nh, d - dh, kk), self.rel_w], 2)], 1)
        qr = torch.matmul(q.reshape(B, nh, p.nt * p.L, d), rel.to(q.dtype))     # (B, nh, nt*L, 2k)
        qr = qr.view(B, nh, p.nt, p.L, 2 * kk)
        sh = torch.gather(qr[..., :kk], 4, p.iy.expand(B, nh, -1, -1, -1))      # (B, nh, nt, L, kh)
        sw = torch.gather(qr[..., kk:], 4, p.ix.expand(B, nh, -1, -1, -1))      # (B, nh, nt, L, kw)
        # head dims: q, k, v equal (CPU fused kernel) and a multiple of 8 (CUDA fused kernels)
        extra = p.kh + p.kw
        e = -(-(d + extra) // 8) * 8
        qx = F.pad(torch.cat([q, sh, sw], -1), (0, e - d - extra)).reshape(B * nh, p.nt, p.L, e)
        onehot = F.pad(p.onehot.to(k.dtype), (0, e - d - extra))
        kx = torch.cat([k, onehot.expand(B, nh, p.nt, p.S, e - d)], -1).reshape(B * nh, p.nt, p.S, e)
        vx = F.pad(v, (0, e - d)).reshape(B * nh, p.nt, p.S, e)
        y = F.scaled_dot_product_attention(qx, kx, vx, attn_mask=p.mask, scale=self.scale)[..., :d]
        # (B*nh, nt, L, d) -> (B, C_out, Ho, Wo), in the input's memory format (one copy either way)
        y = y.reshape(B, nh, p.nty, p.ntx, p.ty, p.tx, d)
        if _is_channels_last(x):
            y = y.permute(0, 2, 4, 3, 5, 1, 6).reshape(B, p.nty * p.ty, p.ntx * p.tx, co)
            return y[:, :p.Ho, :p.Wo].permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)
        y = y.permute(0, 1, 6, 2, 4, 3, 5).reshape(B, co, p.nty * p.ty, p.ntx * p.tx)
        return y[:, :, :p.Ho, :p.Wo].contiguous()

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, heads={self.heads}, impl={self.impl}")


def local_attention_unfold(la: LocalAttention2d, x: torch.Tensor) -> torch.Tensor:
    """LA by the common unfold formulation: k^2 shifted copies of k and v (reference, slow).

    Same parameters and result as ``la(x)`` (padded positions are masked out). x: (B, C_in, H, W)
    -> (B, C_out, ceil(H / stride), ceil(W / stride)).
    """
    B, _, H, W = x.shape
    k_, s, r, nh, d = la.kernel_size, la.stride, la.kernel_size // 2, la.heads, la.head_dim
    Ho, Wo = (H - 1) // s + 1, (W - 1) // s + 1
    q = la.query(x[:, :, ::s, ::s]).view(B, nh, d, Ho, Wo, 1)
    pad = lambda t: F.unfold(t, k_, padding=r, stride=s).view(B, nh, d, k_ * k_, Ho, Wo)  # noqa: E731
    keys, vals = pad(la.key(x)), pad(la.value(x))
    valid = F.unfold(x.new_ones(1, 1, H, W), k_, padding=r, stride=s).view(1, 1, k_ * k_, Ho, Wo) > 0
    rel = torch.cat([la.rel_h[:, :, :, None].expand(-1, -1, -1, k_),
                     la.rel_w[:, :, None, :].expand(-1, -1, k_, -1)], dim=1).reshape(nh, d, k_ * k_)
    keys = keys + rel[None, :, :, :, None, None]
    logits = (q.permute(0, 1, 3, 4, 5, 2) @ keys.permute(0, 1, 4, 5, 2, 3)).squeeze(-2)  # (B, nh, Ho, Wo, k^2)
    logits = logits.permute(0, 1, 4, 2, 3) * la.scale
    logits = logits.masked_fill(~valid, float("-inf"))
    attn = torch.softmax(logits, dim=2)                                   # (B, nh, k^2, Ho, Wo)
    y = (attn[:, :, None] * vals).sum(dim=3)                              # (B, nh, d, Ho, Wo)
    return y.reshape(B, la.out_channels, Ho, Wo)


class EmbeddedLocalAttention2d(nn.Module):
    """ELA: ``y = layer(x) + proj(LA(x))`` with ``proj`` a zero-initialised 1x1 conv (with bias).

    ``layer`` is the original conv or block with its (pretrained) weights; the LA branch runs on the
    same input with the same stride, so the sum is the original layer at initialisation. Any other
    branch with the layer's output shape works too (an ``embed`` module of the registry), with
    ``out_channels`` its output channels (default: ``attention.out_channels``).
    """

    def __init__(self, layer: nn.Module, attention: nn.Module, out_channels: int | None = None):
        super().__init__()
        self.layer = layer
        self.attention = attention
        c = out_channels or attention.out_channels
        self.proj = nn.Conv2d(c, c, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x) + self.proj(self.attention(x))
