"""The attention layers against slow, obviously-correct references."""

import pytest
import torch
from torch.profiler import profile

from medattn.models.attention import (EmbeddedLocalAttention2d, GlobalAttention2d, LocalAttention2d,
                                      local_attention_unfold)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def direct_local_attention(la: LocalAttention2d, x: torch.Tensor) -> torch.Tensor:
    """LA by loops over output positions, heads and neighbours (only in-image neighbours)."""
    B, _, H, W = x.shape
    s, r, d = la.stride, la.kernel_size // 2, la.head_dim
    q, k, v = la.query(x), la.key(x), la.value(x)
    Ho, Wo = (H - 1) // s + 1, (W - 1) // s + 1
    out = torch.zeros(B, la.out_channels, Ho, Wo)
    for i in range(Ho):
        for j in range(Wo):
            yi, xj = i * s, j * s
            for h in range(la.heads):
                c = slice(h * d, (h + 1) * d)
                logits, vals = [], []
                for a in range(yi - r, yi + r + 1):
                    for b in range(xj - r, xj + r + 1):
                        if 0 <= a < H and 0 <= b < W:
                            rel = torch.cat([la.rel_h[h, :, a - yi + r], la.rel_w[h, :, b - xj + r]])
                            logits.append((q[:, c, yi, xj] * (k[:, c, a, b] + rel)).sum(1) * la.scale)
                            vals.append(v[:, c, a, b])
                w = torch.softmax(torch.stack(logits, 1), 1)
                out[:, c, i, j] = (w[:, :, None] * torch.stack(vals, 1)).sum(1)
    return out


# (H, W, stride, kernel, tile): borders, odd/non-square maps, stride 2, maps smaller than the
# window, one block (maps up to 2 * tile + 2) and many blocks with padded last blocks
CASES = [(5, 7, 1, 3, 7), (9, 6, 2, 3, 7), (9, 11, 1, 5, 4), (13, 17, 2, 5, 2), (3, 3, 1, 7, 7),
         (8, 8, 1, 7, 7), (12, 9, 1, 3, 1), (1, 4, 1, 3, 7), (11, 10, 2, 7, 1)]


def test_cases_cover_single_and_multi_block_plans():
    from medattn.models.attention import _LAPlan

    plans = [_LAPlan(H, W, k, s, t, torch.device("cpu")) for H, W, s, k, t in CASES]
    assert any(p.nt == 1 for p in plans) and sum(p.nt > 1 for p in plans) >= 3
    assert any(p.nty * p.ty > p.Ho for p in plans)  # a padded last block


@pytest.mark.parametrize("H,W,stride,k,tile", CASES)
def test_local_attention_matches_direct_reference(H, W, stride, k, tile):
    la = LocalAttention2d(6, 8, kernel_size=k, stride=stride, heads=2, tile=tile)
    x = torch.randn(2, 6, H, W)
    with torch.no_grad():
        ref = direct_local_attention(la, x)
        fast = la(x)
        unfold = local_attention_unfold(la, x)
    assert fast.shape == ref.shape == (2, 8, (H - 1) // stride + 1, (W - 1) // stride + 1)
    torch.testing.assert_close(fast, ref, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(unfold, ref, atol=2e-5, rtol=1e-4)


def test_local_attention_padding_never_attended():
    # a huge value at an out-of-image position cannot exist; instead make every in-image key tiny and
    # check that the output is a convex combination of in-window values only (no zero padding mixed in)
    la = LocalAttention2d(4, 4, kernel_size=5, heads=1)
    with torch.no_grad():
        la.value.weight.copy_(torch.eye(4)[:, :, None, None])
    x = torch.full((1, 4, 6, 6), 3.0) + 0.01 * torch.randn(1, 4, 6, 6)
    with torch.no_grad():
        y = la(x)
    # zero-padded keys attended would pull border outputs towards 0
    assert y.min() > 2.9 and y.max() < 3.1


@pytest.mark.parametrize("H,W,stride,tile", [(9, 7, 1, 4), (13, 11, 2, 1)])
def test_local_attention_gradients_match_unfold(H, W, stride, tile):
    la = LocalAttention2d(6, 8, kernel_size=5, stride=stride, heads=2, tile=tile)
    x = torch.randn(2, 6, H, W, requires_grad=True)
    w = torch.randn(2, 8, (H - 1) // stride + 1, (W - 1) // stride + 1)
    grads = []
    for impl in ("blocked", "unfold"):
        la.impl = impl
        la.zero_grad()
        x.grad = None
        (la(x) * w).sum().backward()
        grads.append([x.grad.clone()] + [p.grad.clone() for p in la.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    assert la.rel_h.grad.abs().sum() > 0 and la.rel_w.grad.abs().sum() > 0


def test_local_attention_rejects_even_kernel_and_bad_heads():
    with pytest.raises(ValueError):
        LocalAttention2d(4, 8, kernel_size=4)
    with pytest.raises(ValueError):
        LocalAttention2d(4, 10, heads=4)


def test_global_attention_sdpa_matches_explicit_and_is_identity_at_init():
    ga = GlobalAttention2d(16)
    x = torch.randn(2, 16, 7, 9)
    with torch.no_grad():
        torch.testing.assert_close(ga(x), x)  # zero-initialised BN scale
        torch.nn.init.normal_(ga.bn.weight)
        torch.nn.init.normal_(ga.bn.bias)
        ga.eval()
        fast = ga(x)
        ga.impl = "explicit"
        explicit = ga(x)
    assert (fast - x).abs().max() > 1e-2  # non-trivial once the scale is non-zero
    torch.testing.assert_close(fast, explicit, atol=1e-5, rtol=1e-5)


def test_global_attention_average_map_is_mean_of_softmax_rows():
    ga = GlobalAttention2d(8)
    ga.record_map = True
    ga.map_chunk_elements = 50  # force several query chunks on a 9 x 11 map
    x = torch.randn(3, 8, 9, 11)
    ga(x)
    m = ga.last_map
    q = ga.theta(x).flatten(2).transpose(1, 2)
    k = ga.phi(x).flatten(2)
    ref = torch.softmax(q @ k, dim=-1).mean(dim=1).view(3, 9, 11)
    assert m.shape == (3, 9, 11) and not m.requires_grad
    torch.testing.assert_close(m, ref.detach(), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(m.sum(dim=(1, 2)), torch.ones(3))
    ga.record_map = False
    ga.last_map = None
    ga(x)
    assert ga.last_map is None


def _kernels(fn) -> set[str]:
    with profile() as prof:
        fn()
    return {e.name for e in prof.events() if "attention" in e.name}


def test_attention_layers_use_fused_sdpa_kernel_on_cpu():
    ga = GlobalAttention2d(64)
    la = LocalAttention2d(32, 64, kernel_size=7, stride=2, heads=4)
    x = torch.randn(1, 64, 12, 12, requires_grad=True)
    # forward and backward: neither may fall back to the explicit N x N math kernel
    for fn in (lambda: ga(x).sum().backward(), lambda: la(x[:, :32]).sum().backward()):
        names = _kernels(fn)
        assert "aten::_scaled_dot_product_flash_attention_for_cpu" in names, names
        assert "aten::_scaled_dot_product_attention_math" not in names, names


def test_embedded_local_attention_is_identity_at_init_then_learns():
    conv = torch.nn.Conv2d(4, 8, 3, stride=2, padding=1)
    ela = EmbeddedLocalAttention2d(conv, LocalAttention2d(4, 8, kernel_size=3, stride=2, heads=2))
    x = torch.randn(2, 4, 9, 8)
    torch.testing.assert_close(ela(x), conv(x))
    ela(x).square().sum().backward()
    assert ela.proj.weight.grad.abs().sum() > 0


def test_global_attention_map_never_holds_the_full_matrix():
    # N = 4096 positions: the N x N float matrix would be 64 MiB; chunks of 1M entries are 4 MiB
    ga = GlobalAttention2d(8).eval()
    ga.record_map = True
    ga.map_chunk_elements = 1 << 20
    x = torch.randn(1, 8, 64, 64)
    with torch.no_grad(), profile(profile_memory=True) as prof:
        ga(x)
    events = sorted((e.time_range.start, e.self_cpu_memory_usage) for e in prof.events()
                    if e.self_cpu_memory_usage)
    live = peak = 0
    for _, delta in events:
        live += delta
        peak = max(peak, live)
    assert ga.last_map.shape == (1, 64, 64)
    assert peak < 24 * 2**20, peak / 2**20
