"""Grad-CAM and ViT rollout: localisation, equality with a direct computation, range, no side effects."""

import math

import pytest
import timm
import torch
import torch.nn as nn
import torch.nn.functional as F

from medattn.explain import gradcam, mass_share, vit_rollout
from medattn.explain.quantify import border_mask, corner_mask


pytestmark = pytest.mark.usefixtures("one_thread")


def _hooks(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
               for m in model.modules())


# ------------------------------------------------------------------------------------ Grad-CAM

def _square_images(n: int, size: int = 32, side: int = 8, seed: int = 0):
    """Noise images; label 1 = a bright square at a random place. Returns images, labels, square masks."""
    g = torch.Generator().manual_seed(seed)
    x = 0.3 * torch.rand(n, 3, size, size, generator=g)
    y = torch.arange(n) % 2
    masks = torch.zeros(n, size, size, dtype=torch.bool)
    for i in range(n):
        if y[i]:
            r, c = torch.randint(0, size - side + 1, (2,), generator=g).tolist()
            x[i, :, r:r + side, c:c + side] = 1.0
            masks[i, r:r + side, c:c + side] = True
    return x, y, masks


class _TinyCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.stage = nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
                                   nn.Conv2d(16, 16, 3, stride=2, padding=1), nn.ReLU())
        self.head = nn.Linear(16, 2)

    def forward(self, x):
        return self.head(self.stage(self.stem(x)).mean((2, 3)))


@pytest.fixture(scope="module")
def square_model():
    torch.manual_seed(0)
    model = _TinyCNN()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for step in range(60):
        x, y, _ = _square_images(32, seed=step + 1)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def test_gradcam_puts_mass_on_the_region_the_model_uses(square_model):
    x, y, masks = _square_images(16, seed=1000)
    assert (square_model(x).argmax(1) == y).float().mean() >= 0.9  # the toy model has learned it
    pos = y == 1
    maps = gradcam(square_model, x[pos], targets=[1] * int(pos.sum()),
                   target_layers=[square_model.stage[-1]])
    # dilate the square by the upsampling blur of one feature cell (4 px) each side
    region = F.max_pool2d(masks[pos].float()[:, None], 9, stride=1, padding=4)[:, 0] > 0
    share = mass_share(maps, region)
    area = region.float().mean((1, 2))
    assert torch.all(share > 2 * area), (share, area)
    assert share.mean() > 0.6


def test_gradcam_default_target_is_predicted_class(square_model):
    x, _, _ = _square_images(6, seed=7)
    pred = square_model(x).argmax(1)
    layer = [square_model.stage[-1]]
    assert torch.allclose(gradcam(square_model, x, target_layers=layer),
                          gradcam(square_model, x, targets=pred, target_layers=layer))
    with pytest.raises(ValueError, match="targets"):
        gradcam(square_model, x, targets=[0], target_layers=layer)


def test_gradcam_leaves_resnet_untouched():
    # zero_init_last=False: timm zero-initialises each block's last BN, making random-init CAMs all zero
    model = timm.create_model("resnet18", num_classes=3, zero_init_last=False)
    model.train()
    model.fc.weight.grad = torch.ones_like(model.fc.weight)
    x = torch.randn(3, 3, 64, 64)  # layer4 is 2x2 here; at 32 px it is 1x1 and the CAM is flat
    state = {k: v.clone() for k, v in model.state_dict().items()}
    hooks = _hooks(model)
    maps = gradcam(model, x, target_layers=[model.layer4[-1]])
    assert maps.shape == (3, 64, 64) and maps.dtype == torch.float32
    assert torch.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1
    assert maps.flatten(1).amax(1).gt(0.99).all()  # not the all-zero map
    assert model.training, "training mode restored"
    assert _hooks(model) == hooks, "hooks removed"
    assert torch.equal(model.fc.weight.grad, torch.ones_like(model.fc.weight)), "grads restored"
    assert all(p.requires_grad for p in model.parameters()), "requires_grad restored"
    for k, v in model.state_dict().items():  # no BN running-stat update
        assert torch.equal(v, state[k]), k
    model.eval()
    out = model(x)
    gradcam(model, x, target_layers=[model.layer4[-1]])
    assert torch.equal(model(x), out)


# ------------------------------------------------------------------------------------ rollout

def _tiny_vit(reg_tokens: int = 0):
    torch.manual_seed(0)
    vit = timm.models.vision_transformer.VisionTransformer(
        img_size=16, patch_size=4, embed_dim=24, depth=3, num_heads=2, num_classes=3,
        reg_tokens=reg_tokens)
    # sharpen the attention so rollout is far from uniform
    with torch.no_grad():
        for blk in vit.blocks:
            blk.attn.qkv.weight.mul_(4)
    return vit.eval()


def _direct_rollout(vit, x, fusion="mean"):
    """Per image, per layer: attention from the block's own weights, heads fused, identity added,
    each row divided by its own sum (explicit loop), chained."""
    maps = []
    for b in range(x.shape[0]):
        tokens = vit.norm_pre(vit._pos_embed(vit.patch_embed(x[b:b + 1])))
        joint = None
        for blk in vit.blocks:
            h = blk.norm1(tokens)[0]
            n, d = h.shape
            qkv = blk.attn.qkv(h).reshape(n, 3, blk.attn.num_heads, -1)
            q, k = qkv[:, 0].transpose(0, 1), qkv[:, 1].transpose(0, 1)
            a = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(q.shape[-1]), dim=-1)
            a = (a.mean(0) if fusion == "mean" else a.amax(0)) + torch.eye(n)
            a = torch.stack([row / row.sum() for row in a])
            joint = a if joint is None else a @ joint
            tokens = blk(tokens)
        row = joint[0, vit.num_prefix_tokens:]
        side = int(math.isqrt(row.numel()))
        up = F.interpolate(row.reshape(1, 1, side, side), size=x.shape[-2:], mode="bilinear",
                           align_corners=False)[0, 0]
        maps.append(up / up.max())
    return torch.stack(maps)


@pytest.mark.parametrize("reg_tokens,fusion", [(0, "mean"), (2, "mean"), (0, "max")])
def test_rollout_equals_direct_computation(reg_tokens, fusion):
    # with max fusion the rows sum to different values, so a row normalisation without keepdim
    # (dividing by the wrong sums) would fail here; with mean fusion every row sums to 2
    vit = _tiny_vit(reg_tokens)
    x = torch.randn(3, 3, 16, 16)
    x[1] *= 3  # batch elements differ: catches "batch element 0 only" bugs
    ours = vit_rollout(vit, x, head_fusion=fusion)
    with torch.no_grad():
        ref = _direct_rollout(vit, x, fusion)
    assert ours.shape == (3, 16, 16)
    assert torch.allclose(ours, ref, atol=1e-5), (ours - ref).abs().max()
    assert not torch.allclose(ours[0], ours[1], atol=1e-3)
    assert ours.min() >= 0 and ours.max() <= 1 and torch.isfinite(ours).all()


def test_rollout_leaves_vit_untouched():
    vit = _tiny_vit()
    flags = [blk.attn.fused_attn for blk in vit.blocks]
    vit.train()
    hooks = _hooks(vit)
    x = torch.randn(2, 3, 16, 16)
    vit_rollout(vit, x)
    assert vit.training and _hooks(vit) == hooks
    assert [blk.attn.fused_attn for blk in vit.blocks] == flags
    vit.eval()
    out = vit(x)
    vit_rollout(vit, x)
    assert torch.equal(vit(x), out)


def test_rollout_rejects_cnn():
    with pytest.raises(ValueError, match="Vision Transformer"):
        vit_rollout(_TinyCNN(), torch.randn(1, 3, 16, 16))


# ------------------------------------------------------------------------------------ quantify

def test_mass_share_and_regions():
    maps = torch.zeros(2, 10, 10)
    maps[0, 0, 0] = 1.0           # all mass in a corner
    maps[1] = 1.0                 # flat map
    border = border_mask(10, 10, 0.1)
    corners = corner_mask(10, 10, 0.1)
    assert border.sum() == 100 - 64 and corners.sum() == 4
    assert torch.allclose(mass_share(maps, border), torch.tensor([1.0, 0.36]))
    assert torch.allclose(mass_share(maps, corners), torch.tensor([1.0, 0.04]))
    assert torch.isnan(mass_share(torch.zeros(1, 10, 10), border)).all()
    with pytest.raises(ValueError):
        border_mask(10, 10, 0.6)


def test_gradcam_of_several_layers_works_on_a_frozen_model():
    model = timm.create_model("resnet18", num_classes=3, zero_init_last=False).eval()
    x = torch.randn(2, 3, 64, 64)
    layers = [model.layer3[-1], model.layer4[-1]]
    free = gradcam(model, x, target_layers=layers)
    for p in model.parameters():
        p.requires_grad_(False)
    frozen = gradcam(model, x, target_layers=layers)
    assert torch.equal(frozen, free) and frozen.flatten(1).amax(1).gt(0.99).all()
    assert all(p.grad is None and not p.requires_grad for p in model.parameters())
    # the mean of two layers' maps is not either layer's map alone
    assert not torch.allclose(frozen, gradcam(model, x, target_layers=layers[1:]), atol=1e-3)


@pytest.mark.slow  # importing the package (OpenCV, scikit-learn) takes most of its ~10 s
def test_gradcam_equals_the_grad_cam_package():
    # the hand-written Grad-CAM (short backward for one layer) against the `grad-cam` package used
    # plainly, the independent reference ([test] extra; CI installs it)
    GradCAM = pytest.importorskip("pytorch_grad_cam", reason="pip install 'medattn[test]'").GradCAM

    model = timm.create_model("resnet18", num_classes=3, zero_init_last=False).eval()
    x = torch.randn(3, 3, 64, 64)
    layer = [model.layer4[-1]]
    ours = gradcam(model, x, target_layers=layer)
    with GradCAM(model=model, target_layers=layer) as cam:
        ref = torch.from_numpy(cam(input_tensor=x, targets=None))
    assert torch.allclose(ours, ref, atol=1e-5)
    # several layers take the full-backward path; still the package's result
    layers = [model.layer3[-1], model.layer4[-1]]
    with GradCAM(model=model, target_layers=layers) as cam:
        ref2 = torch.from_numpy(cam(input_tensor=x, targets=None))
    assert torch.allclose(gradcam(model, x, target_layers=layers), ref2, atol=1e-5)
