"""Every registered backbone x attention variant: identity at initialisation where the registry
claims it (from random weights and from a pretrained file), forward and backward at 64 and 224 px,
a non-empty Grad-CAM map; and the registry's errors."""

import pytest
import timm
import torch
from safetensors.torch import save_file

from medattn.errors import ConfigError
from medattn.explain import gradcam
from medattn.models import create_model, gradcam_target_layers, list_models, parse_model_name
from medattn.models import registry as R

pytestmark = pytest.mark.usefixtures("one_thread")  # steady on the shared 2-core machine

CNNS = [b.name for b in R.backbones() if b.kind == "cnn"]
# resnet18 in the fast selection; the larger backbones (up to 20 s each on a laptop core) are slow
CNN_PARAMS = [b if b == "resnet18" else pytest.param(b, marks=pytest.mark.slow) for b in CNNS]
LOCAL = [a.name for a in R.attentions() if a.placement != "after"]


def _claims_identity(name: str) -> bool:
    spec = parse_model_name(name)
    return all(R.get_attention(a).identity_at_init for a in (spec.after, spec.local) if a)


def _fake_timm_file(path, backbone: str) -> str:
    """A timm-format weight file (1000-class head) with every tensor randomised, BN statistics and
    zero-initialised scales included, so that kept layers matter."""
    torch.manual_seed(1)
    model = timm.create_model(R.get_backbone(backbone).checkpoint, pretrained=False)
    state = {}
    for k, v in model.state_dict().items():
        if v.is_floating_point():
            v = (torch.rand_like(v) + 0.5) if k.endswith("running_var") \
                else torch.randn_like(v) * (v.std() if v.numel() > 1 and v.std() > 0 else 0.1)
        state[k] = v.contiguous()
    save_file(state, str(path))
    return str(path)


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return bool((a - b).abs().max() <= 1e-4 * b.abs().max().clamp_min(1.0))


def _backward(model, x) -> None:
    """One training step's backward: every parameter gets a finite gradient."""
    model.train().zero_grad()
    torch.nn.functional.cross_entropy(model(x), torch.arange(len(x)) % 3).backward()
    for n, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), n


def test_registered_out_of_the_box():
    assert CNNS == ["resnet18", "efficientnet_b0", "resnet50", "densenet121", "efficientnet_b3"]
    assert [a.name for a in R.attentions()] == ["ga", "la", "ela", "se", "cbam", "eca", "mhsa"]
    # 1 base + 7 single modules + 4 'after' x 3 local per CNN, the paper's two ViTs and the demo's
    assert len(list_models()) == 5 * 20 + 3
    claims = {a.name: a.identity_at_init for a in R.attentions()}
    assert claims == {"ga": True, "la": False, "ela": True, "se": True, "cbam": True, "eca": True,
                      "mhsa": False}


@pytest.mark.slow
@pytest.mark.parametrize("backbone", CNN_PARAMS)
def test_each_module_from_a_pretrained_file(tmp_path, backbone):
    """Each module alone: identity where claimed with the same pretrained file, a different
    function where not; forward and backward at 64 px, and at 224 px for the modules that replace
    layers (their map size matters: MHSA's position tables are made for 224 px, LA tiles the map;
    ELA runs the same LA beside the layer; the 'after' gates see any size alike, one backbone
    suffices: test_after_modules_at_224_px); a non-empty Grad-CAM map."""
    path = _fake_timm_file(tmp_path / "w.safetensors", backbone)
    x = torch.randn(1, 3, 64, 64)
    base = create_model(backbone, 3, pretrained=path).eval()
    with torch.no_grad():
        ref = base(x)
    assert ref.abs().max() > 1e-3
    for attention in R.attentions():
        name = f"{backbone}+{attention.name}"
        model = create_model(name, 3, pretrained=path).eval()
        model.get_classifier().load_state_dict(base.get_classifier().state_dict())  # new head: random
        with torch.no_grad():
            out = model(x)
        assert torch.isfinite(out).all() and _close(out, ref) == attention.identity_at_init, name
        _backward(model, x)
        new = [p for n, p in model.named_parameters() if n not in base.state_dict()]
        assert new and sum(float(p.grad.abs().sum()) for p in new) > 0, name  # the module learns
        maps = gradcam(model.eval(), x)
        assert maps.shape == (1, 64, 64) and torch.isfinite(maps).all() and maps.max() > 0, name
        if attention.placement == "replace":
            _backward(model, torch.randn(1, 3, 224, 224))


@pytest.mark.slow
@pytest.mark.parametrize("backbone", CNN_PARAMS)
def test_every_combination_from_random_weights(backbone):
    """Every 'after' x 'replace'/'embed' combination against the base built from the same seed
    (the timm backbone is built first, so its random weights are the same): identity where both
    modules claim it; forward and backward at 64 px."""
    x = torch.randn(1, 3, 64, 64)
    torch.manual_seed(0)
    base = create_model(backbone, 3, zero_init_last=False).eval()  # residual branches not silenced
    with torch.no_grad():
        ref = base(x)
    combinations = [n for n in list_models([backbone]) if n.count("+") == 2]
    assert len(combinations) == 4 * 3
    for name in combinations:
        torch.manual_seed(0)
        model = create_model(name, 3, zero_init_last=False).eval()
        with torch.no_grad():
            out = model(x)
        assert out.shape == (1, 3) and torch.isfinite(out).all(), name
        assert _close(out, ref) == _claims_identity(name), name
        _backward(model, x)


@pytest.mark.parametrize("name", [a.name for a in R.attentions() if a.placement == "after"])
def test_after_modules_at_224_px(name):
    model = create_model(f"efficientnet_b0+{name}", 3)
    _backward(model, torch.randn(2, 3, 224, 224))


def test_gradcam_layer_is_the_pooled_map_of_every_backbone():
    for backbone in CNNS:
        model = create_model(backbone, 3).eval()
        (layer,) = gradcam_target_layers(model)
        feats = {}
        handle = layer.register_forward_hook(lambda m, i, o: feats.setdefault("f", o))
        with torch.no_grad():
            model(torch.randn(1, 3, 64, 64))
        handle.remove()
        width = model.num_features
        assert feats["f"].shape[:2] == (1, width) and feats["f"].ndim == 4, backbone


def test_register_backbone_names_a_wrong_module_path():
    with pytest.raises(ConfigError, match=r"after path 'layer9' names no module.*layer4"):
        R.register_backbone("resnet34_bad", "resnet34", after=("layer1", "layer9"), gradcam="layer4")
    with pytest.raises(ConfigError, match=r"local path 'layer4\.\*\.conv3' names no module.*layer4\.0"):
        R.register_backbone("resnet34_bad", "resnet34", local="layer4.*.conv3", gradcam="layer4")
    with pytest.raises(ConfigError, match="gradcam path 'fc' does not map a"):
        R.register_backbone("resnet34_bad", "resnet34", gradcam="fc")
    with pytest.raises(ConfigError, match="timm cannot build 'resnet34x'"):
        R.register_backbone("resnet34_bad", "resnet34x", gradcam="layer4")
    with pytest.raises(ConfigError, match="Grad-CAM target layer"):
        R.register_backbone("resnet34_bad", "resnet34")
    with pytest.raises(ConfigError, match="registered already"):
        R.register_backbone("resnet18", "resnet18", gradcam="layer4")
    with pytest.raises(ConfigError, match="placement must be one of"):
        R.register_attention("gate_bad", lambda site: torch.nn.Identity(), placement="before")
    with pytest.raises(ConfigError, match="cannot be unchanged"):
        R.register_attention("gate_bad", lambda site: torch.nn.Identity(), "replace", identity_at_init=True)
    # nothing half-registered
    assert "resnet34_bad" not in [b.name for b in R.backbones()]
    assert "gate_bad" not in [a.name for a in R.attentions()]
