"""The attention layers against slow, obviously-correct references."""


import pytest
import torch
import torch.nn.functional as F
from torch import nn
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


class ReferenceNonLocal(nn.Module):
    """The non-local block as Wang et al. (2018) define it (embedded Gaussian), written plainly:
    f(x_i, x_j) = exp(theta(x_i)^T phi(x_j)), y_i = sum_j f(x_i, x_j) g(x_j) / sum_j f(x_i, x_j),
    z = BN(W_z y) + x; with ``subsample`` phi and g are 2x2 max-pooled (their sec. 3.3)."""

    def __init__(self, c: int, subsample: bool = False):
        super().__init__()
        ci = c // 2
        self.theta, self.phi, self.g = nn.Conv2d(c, ci, 1), nn.Conv2d(c, ci, 1), nn.Conv2d(c, ci, 1)
        self.out, self.bn, self.subsample = nn.Conv2d(ci, c, 1), nn.BatchNorm2d(c), subsample

    def forward(self, x):
        B, C, H, W = x.shape
        pool = (lambda t: F.max_pool2d(t, 2, ceil_mode=True)) if self.subsample else (lambda t: t)
        theta = self.theta(x).flatten(2)                   # (B, C_i, N)
        phi, g = pool(self.phi(x)).flatten(2), pool(self.g(x)).flatten(2)  # (B, C_i, M)
        f = torch.exp(theta.transpose(1, 2) @ phi)         # (B, N, M); fine for the small tests
        y = (f / f.sum(-1, keepdim=True)) @ g.transpose(1, 2)  # (B, N, C_i)
        return x + self.bn(self.out(y.transpose(1, 2).reshape(B, -1, H, W)))


def _trained_like(block: nn.Module) -> None:
    """Non-trivial BN scale/shift and running statistics, and logits of order 1."""
    with torch.no_grad():
        for m in (block.theta, block.phi):
            m.weight.mul_(0.5)
        nn.init.normal_(block.bn.weight)
        nn.init.normal_(block.bn.bias)
        block.bn.running_mean.normal_()
        block.bn.running_var.uniform_(0.5, 2.0)


# (C, H, W, subsample): C_i = 8 (no padding) and 12 (padded to 16 inside), odd maps for the pooling
GA_CASES = [(16, 7, 9, False), (24, 6, 6, False), (16, 7, 9, True), (24, 8, 5, True)]


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-4)])
@pytest.mark.parametrize("C,H,W,subsample", GA_CASES)
@pytest.mark.parametrize("channels_last", [False, True])
def test_global_attention_equals_reference_block(C, H, W, subsample, dtype, tol, channels_last):
    ref = ReferenceNonLocal(C, subsample).to(dtype)
    _trained_like(ref)
    ga = GlobalAttention2d(C, subsample=subsample).to(dtype)
    ga.load_state_dict(ref.state_dict())  # strict: the state-dict keys are the plain block's
    assert ga.state_dict().keys() == ref.state_dict().keys()
    x = torch.randn(3, C, H, W, dtype=dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    w = torch.randn(3, C, H, W, dtype=dtype)
    outs, grads = [], []
    for m in (ref, ga):
        xi = x.clone().requires_grad_(True)
        out = m(xi)  # training mode: batch statistics, running statistics updated
        (out * w).sum().backward()
        outs.append(out)
        grads.append({"x": xi.grad, **{n: p.grad for n, p in m.named_parameters()}})
    assert (outs[1] - x).abs().max() > 0.1  # the block does something
    assert outs[1].is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    torch.testing.assert_close(outs[1], outs[0], atol=tol, rtol=tol)
    assert grads[1].keys() == grads[0].keys()
    for name in grads[0]:
        # tolerance relative to the scale of the module's gradients: in training mode the biases of
        # phi (a shift of all logits of a query: softmax cancels it), g and W_z (removed by BN's
        # batch mean) have a true gradient of 0, so float32 gives rounding noise of that scale
        scale = float(grads[0][name.replace("bias", "weight")].abs().max())
        torch.testing.assert_close(grads[1][name], grads[0][name], atol=tol * scale, rtol=tol,
                                   msg=lambda m, name=name: f"{name}: {m}")
    for key in ("running_mean", "running_var"):
        torch.testing.assert_close(getattr(ga.bn, key), getattr(ref.bn, key), atol=tol, rtol=tol)
    ref.eval(), ga.eval()  # eval: running statistics, BN folded into W_z
    with torch.no_grad():
        torch.testing.assert_close(ga(x), ref(x), atol=tol, rtol=tol)


def test_global_attention_loads_a_plain_block_checkpoint_by_key():
    # a checkpoint of the module as it was (theta/phi/g/out convs + bn) loads strictly, and back
    ref = ReferenceNonLocal(32)
    _trained_like(ref)
    ga = GlobalAttention2d(32)
    assert ga.load_state_dict(ref.state_dict(), strict=True).missing_keys == []
    assert {k: tuple(v.shape) for k, v in ga.state_dict().items()} == \
        {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    ref.eval(), ga.eval()
    x = torch.randn(2, 32, 5, 6)
    with torch.no_grad():
        torch.testing.assert_close(ga(x), ref(x), atol=1e-5, rtol=1e-5)


def test_global_attention_subsample_pools_keys_and_maps_the_pooled_grid():
    ga = GlobalAttention2d(16, subsample=True)
    _trained_like(ga)
    ga.record_map = True
    x = torch.randn(2, 16, 7, 10)
    ga(x)
    phi = F.max_pool2d(ga.phi(x), 2, ceil_mode=True).flatten(2)                  # (B, C_i, 4 * 5)
    ref = torch.softmax(ga.theta(x).flatten(2).transpose(1, 2) @ phi, -1).mean(1).view(2, 4, 5)
    assert ga.last_map.shape == (2, 4, 5)
    torch.testing.assert_close(ga.last_map, ref.detach(), atol=1e-6, rtol=1e-5)
    assert sum(p.numel() for p in ga.parameters()) == sum(p.numel() for p in GlobalAttention2d(16).parameters())


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


@pytest.mark.parametrize("amp", [None, torch.bfloat16])
@pytest.mark.parametrize("channels_last", [False, True])
def test_attention_layers_use_fused_sdpa_kernel_on_cpu(amp, channels_last):
    # GA as in ResNet18 (C_i = 32) and EfficientNet-B0 (C_i = 12, padded), sub-sampled GA, LA with
    # stride 2 and several blocks; fp32 and bf16 autocast, contiguous and channels-last input
    layers = [(GlobalAttention2d(64), 64), (GlobalAttention2d(24), 24),
              (GlobalAttention2d(24, subsample=True), 24),
              (LocalAttention2d(32, 64, kernel_size=7, stride=2, heads=4), 32),
              (LocalAttention2d(16, 32, kernel_size=5, heads=4, tile=3), 16)]
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    for layer, c in layers:
        x = torch.randn(2, c, 12, 10, dtype=amp or torch.float32)  # a network under autocast
        x = x.contiguous(memory_format=fmt).requires_grad_(True)    # passes bf16 activations

        def step():
            with torch.autocast("cpu", dtype=amp or torch.bfloat16, enabled=amp is not None):
                y = layer(x)
            assert y.is_contiguous(memory_format=fmt) and y.dtype == (amp or torch.float32)
            y.float().square().sum().backward()
            assert x.grad is not None and torch.isfinite(x.grad).all()

        # forward and backward: neither may fall back to the explicit N x N math kernel
        names = _kernels(step)
        assert "aten::_scaled_dot_product_flash_attention_for_cpu" in names, (layer, names)
        assert "aten::_scaled_dot_product_flash_attention_for_cpu_backward" in names, (layer, names)
        assert "aten::_scaled_dot_product_attention_math" not in names, (layer, names)


@pytest.mark.parametrize("channels_last", [False, True])
def test_attention_layers_under_bf16_autocast_stay_close_to_fp32(channels_last):
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    for layer, c in [(GlobalAttention2d(24), 24), (LocalAttention2d(16, 32, kernel_size=5, heads=4), 16)]:
        if isinstance(layer, GlobalAttention2d):
            _trained_like(layer)
        x = torch.randn(2, c, 9, 11).contiguous(memory_format=fmt)
        residual = x if isinstance(layer, GlobalAttention2d) else 0  # compare what attention adds
        ref = layer(x) - residual
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = layer(x.bfloat16())
        assert low.dtype == torch.bfloat16 and ref.abs().max() > 0.1
        err = (low.float() - residual - ref).norm() / ref.norm()
        assert err < 2e-2, err  # bf16 has 8 bits of mantissa: about 0.4 % per rounding


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


# -- CUDA: which fused kernel runs at the paper's 224 px (skipped without a GPU) -------------------

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

# (layer, input channels, map side at 224 px, fused kernels that may serve it). Flash attention
# takes no mask and needs fp16/bf16, so LA (boolean window mask) and fp32 GA go to the
# memory-efficient or cuDNN kernel; the math kernel (the N x N matrix) is never acceptable.
CUDA_LAYERS = [
    ("GA resnet18 layer1", lambda: GlobalAttention2d(64), 64, 56),
    ("GA resnet18 layer2", lambda: GlobalAttention2d(128), 128, 28),
    ("GA efficientnet_b0 blocks[1] (C_i 12 -> 16)", lambda: GlobalAttention2d(24), 24, 56),
    ("GA efficientnet_b0 blocks[2] (C_i 20 -> 24)", lambda: GlobalAttention2d(40), 40, 28),
    ("GA sub-sampled", lambda: GlobalAttention2d(64, subsample=True), 64, 56),
    ("LA resnet18 layer4[0].conv1 (stride 2)", lambda: LocalAttention2d(256, 512, stride=2), 256, 14),
    ("LA resnet18 layer4", lambda: LocalAttention2d(512, 512), 512, 7),
    ("LA efficientnet_b0 blocks[6]", lambda: LocalAttention2d(192, 320), 192, 7),
]


@needs_cuda
@pytest.mark.parametrize("amp", [None, torch.bfloat16, torch.float16], ids=["fp32", "bf16", "fp16"])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("name,make,c,side", CUDA_LAYERS, ids=[c[0] for c in CUDA_LAYERS])
def test_attention_on_cuda_runs_a_fused_kernel_never_math(name, make, c, side, amp, channels_last):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    if amp is torch.bfloat16 and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    layer = make().cuda()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(8, c, side, side, device="cuda", dtype=amp or torch.float32)
    x = x.contiguous(memory_format=fmt).requires_grad_(True)

    def step():
        with torch.autocast("cuda", dtype=amp or torch.float16, enabled=amp is not None):
            y = layer(x)
        y.float().square().mean().backward()
        torch.cuda.synchronize()

    # without the math kernel a fallback raises instead of silently building the N x N matrix
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION]):
        step()
    names = _kernels(step)  # and with every kernel allowed, the dispatcher does not pick math
    assert not any("math" in n for n in names), names
    fused = {n for n in names if n.startswith("aten::_scaled_dot_product_") and "backward" not in n}
    assert fused, names
    if amp is None or name.startswith("LA"):  # no flash: fp32, or a mask
        assert not any("flash" in n for n in fused), fused
    assert torch.isfinite(x.grad).all()


@needs_cuda
def test_global_attention_on_cuda_equals_cpu():
    ga = GlobalAttention2d(24)
    _trained_like(ga)
    x = torch.randn(2, 24, 14, 14)
    ref = ga(x)
    out = ga.cuda()(x.cuda())
    torch.testing.assert_close(out.cpu(), ref, atol=1e-4, rtol=1e-4)
