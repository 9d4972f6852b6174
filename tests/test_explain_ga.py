"""GA attention maps: chunked map == explicit matrix map, ga_maps on zoo models, no side effects."""

import pytest
import torch
import torch.nn.functional as F

from medattn import models
from medattn.explain import ga_blocks, ga_maps, gradcam


pytestmark = pytest.mark.usefixtures("one_thread")


def _explicit_map(block, x):
    """Mean over queries of the full softmax(theta^T phi) matrix, built explicitly."""
    q = block.theta(x).flatten(2).transpose(1, 2)   # (B, N, C_i)
    k = block.phi(x).flatten(2)                     # (B, C_i, N)
    att = torch.softmax(q @ k * block.scale, dim=-1)  # (B, N, N) rows = queries
    assert torch.allclose(att.sum(-1), torch.ones(()))
    return att.mean(dim=1).reshape(x.shape[0], *x.shape[-2:])


@pytest.mark.parametrize("impl", ["sdpa", "explicit"])
def test_chunked_map_equals_explicit_matrix(impl):
    torch.manual_seed(0)
    block = models.GlobalAttention2d(8, impl=impl).eval()
    block.map_chunk_elements = 7 * 36  # force several uneven query chunks (N = 36)
    x = 3 * torch.randn(2, 8, 6, 6)
    block.record_map = True
    with torch.no_grad():
        block(x)
        ref = _explicit_map(block, x)
    assert block.last_map.shape == (2, 6, 6)
    assert torch.allclose(block.last_map, ref, atol=1e-6)
    assert torch.allclose(block.last_map.sum((1, 2)), torch.ones(2), atol=1e-5)
    assert not torch.allclose(ref, torch.full_like(ref, 1 / 36), atol=1e-3)  # not trivially uniform


def _ga_model(name="resnet18+ga"):
    torch.manual_seed(0)
    model = models.create_model(name, num_classes=3)
    with torch.no_grad():  # GA is the identity at init (zero BN scale); make it act
        for b in ga_blocks(model):
            b.bn.weight.fill_(1.0)
            b.theta.weight.mul_(5)
    return model.eval()


@pytest.mark.parametrize("name", ["resnet18+ga", "efficientnet_b0+ga+ela"])
def test_ga_maps_on_zoo_models(name):
    model = _ga_model(name)
    x = torch.randn(2, 3, 64, 64)
    blocks = ga_blocks(model)
    assert len(blocks) == 2
    # the explicit map of each block on its own input, captured with a hook of our own
    inputs = []
    handles = [b.register_forward_pre_hook(lambda m, a: inputs.append(a[0])) for b in blocks]
    with torch.no_grad():
        out = model(x)
    for h in handles:
        h.remove()
    maps = ga_maps(model, x)
    assert len(maps) == 2
    for b, inp, m in zip(blocks, inputs, maps):
        with torch.no_grad():
            ref = _explicit_map(b, inp)
        ref = F.interpolate(ref[:, None], size=(64, 64), mode="bilinear", align_corners=False)[:, 0]
        ref = ref / ref.flatten(1).amax(1)[:, None, None]
        assert m.shape == (2, 64, 64) and torch.isfinite(m).all()
        assert m.min() >= 0 and m.max() <= 1
        assert torch.allclose(m, ref, atol=1e-5)
    # outputs unchanged, recording switched off again, no maps kept
    assert all(b.record_map is False and b.last_map is None for b in blocks)
    with torch.no_grad():
        assert torch.equal(model(x), out)


def test_gradcam_on_zoo_models_uses_documented_layer_and_keeps_outputs():
    torch.manual_seed(0)
    for name in ("resnet18+ga", "efficientnet_b0"):
        model = models.create_model(name, num_classes=3, **({"zero_init_last": False}
                                                             if name.startswith("resnet") else {}))
        model.eval()
        x = torch.randn(2, 3, 64, 64)
        with torch.no_grad():
            out = model(x)
        maps = gradcam(model, x)
        assert maps.shape == (2, 64, 64) and torch.isfinite(maps).all()
        assert maps.min() >= 0 and maps.max() <= 1
        with torch.no_grad():
            assert torch.equal(model(x), out)


def test_ga_maps_rejects_model_without_ga():
    with pytest.raises(ValueError, match="no GA block"):
        ga_maps(models.create_model("resnet18", num_classes=2), torch.randn(1, 3, 32, 32))


def test_rollout_on_zoo_vit_keeps_outputs_and_fused_flags():
    from medattn.explain import vit_rollout

    torch.manual_seed(0)
    vit = models.create_model("vit_tiny_in1k", num_classes=3).eval()
    flags = [m.fused_attn for m in vit.modules() if hasattr(m, "fused_attn")]
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        out = vit(x)
    maps = vit_rollout(vit, x)
    assert maps.shape == (2, 64, 64) and torch.isfinite(maps).all()
    assert maps.min() >= 0 and maps.max() == 1
    assert [m.fused_attn for m in vit.modules() if hasattr(m, "fused_attn")] == flags
    with torch.no_grad():
        assert torch.equal(vit(x), out)
