"""The model zoo: names, where the paper's attention goes, options, training, input sizes."""

import pytest
import torch

from medattn.errors import ConfigError
from medattn.models import (EmbeddedLocalAttention2d, GlobalAttention2d, LocalAttention2d, create_model,
                            gradcam_target_layers, list_models, parse_model_name)

pytestmark = pytest.mark.usefixtures("one_thread")  # steady on the shared 2-core machine


def test_names_parse_and_round_trip():
    names = list_models(paper_only=True)
    assert len(names) == 14 and len(set(names)) == 14 and names == list_models()[:14]
    for name in names:
        assert parse_model_name(name).name == name
    spec = parse_model_name(" ResNet18 + ELA + GA ")
    assert (spec.name, spec.backbone, spec.variant) == ("resnet18+ga+ela", "resnet18", "ga+ela")
    assert parse_model_name("vit_tiny_in21k").variant == "21k"
    assert parse_model_name("efficientnet_b0").variant == "base"


@pytest.mark.parametrize("bad", ["resnet51", "resnet50+la+mhsa", "densenet121+ga+se", "resnet18+la+ela",
                                 "resnet18+ga+ga", "vit_tiny_in1k+ga", "resnet18+"])
def test_unknown_names_and_options_are_config_errors(bad):
    with pytest.raises(ConfigError, match="medattn models"):
        parse_model_name(bad)


def test_bad_options_are_config_errors():
    with pytest.raises(ConfigError, match="kernel_size"):
        create_model("resnet18+la", 3, kernel_size=4)
    with pytest.raises(ConfigError, match="unknown model option"):
        create_model("resnet18", 3, kernal_size=7)
    with pytest.raises(ConfigError, match="not a resnet18 checkpoint"):
        create_model("resnet18+ga", 3, pretrained_tag="resnet50.a1_in1k")
    assert create_model("resnet18", 3, pretrained_tag="a1_in1k").medattn_timm_name == "resnet18.a1_in1k"


def test_attention_inserted_where_the_paper_says():
    r = create_model("resnet18+ga+ela", 3)
    assert isinstance(r.layer1.ga, GlobalAttention2d) and r.layer1.ga.channels == 64
    assert isinstance(r.layer2.ga, GlobalAttention2d) and r.layer2.ga.channels == 128
    assert not hasattr(r.layer3, "ga")
    for block in r.layer4:
        assert isinstance(block.conv1, EmbeddedLocalAttention2d) and isinstance(block.conv2, EmbeddedLocalAttention2d)
    assert r.layer4[0].conv1.attention.stride == 2 and r.layer4[0].conv1.layer.stride == (2, 2)
    la = create_model("resnet18+la", 3)
    assert isinstance(la.layer4[0].conv1, LocalAttention2d) and la.layer4[0].conv1.stride == 2
    assert isinstance(la.layer4[0].downsample[0], torch.nn.Conv2d)  # 1x1 downsample stays
    e = create_model("efficientnet_b0+ga+la", 3)
    assert e.blocks[1].ga.channels == 24 and e.blocks[2].ga.channels == 40
    assert isinstance(e.blocks[6][0], LocalAttention2d)
    assert (e.blocks[6][0].in_channels, e.blocks[6][0].out_channels) == (192, 320)
    assert create_model("efficientnet_b0+ela", 3).blocks[6][0].layer.__class__.__name__ == "InvertedResidual"


@pytest.mark.parametrize("name", ["resnet18+ga", "efficientnet_b0+ga+ela"])
def test_ga_subsample_option_pools_keys_with_the_same_parameters(name):
    from medattn.models import count_parameters

    plain, sub = create_model(name, 3), create_model(name, 3, ga_subsample=True)
    blocks = [m for m in sub.modules() if isinstance(m, GlobalAttention2d)]
    assert len(blocks) == 2 and all(b.subsample for b in blocks)
    assert not any(m.subsample for m in plain.modules() if isinstance(m, GlobalAttention2d))
    assert count_parameters(sub) == count_parameters(plain)  # Table 1 does not move
    assert sub.state_dict().keys() == plain.state_dict().keys()
    with pytest.raises(ConfigError, match="ga_subsample"):
        create_model(name, 3, ga_subsample="yes")


def _train_steps(model, x, y, steps):
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        losses.append(loss.item())
        opt.step()
    return losses


@pytest.mark.slow
@pytest.mark.parametrize("name", list_models(paper_only=True))
def test_every_model_trains_and_loss_goes_down(name):
    torch.manual_seed(0)
    model = create_model(name, 3, zero_init_last=False) if name.startswith("resnet") else create_model(name, 3)
    model.train()
    # non-square, odd size: one step, every attention parameter gets a finite gradient
    x = torch.randn(2, 3, 48, 75)
    torch.nn.functional.cross_entropy(model(x), torch.tensor([0, 2])).backward()
    for n, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), n
    kinds = (LocalAttention2d, EmbeddedLocalAttention2d, GlobalAttention2d)
    attn = [m for m in model.modules() if isinstance(m, kinds)]
    inner = {id(m.attention) for m in attn if isinstance(m, EmbeddedLocalAttention2d)}
    spec = parse_model_name(name)
    n_local = (4 if spec.backbone == "resnet18" else 1) if spec.local else 0
    count = lambda cls: sum(isinstance(m, cls) and id(m) not in inner for m in attn)  # noqa: E731
    assert count(GlobalAttention2d) == (2 if spec.has_ga else 0)
    assert count(LocalAttention2d) == (n_local if spec.local == "la" else 0)
    assert count(EmbeddedLocalAttention2d) == (n_local if spec.local == "ela" else 0)
    for m in (m for m in attn if id(m) not in inner):  # zero-init parts of ELA/GA get gradient first
        p = {GlobalAttention2d: "bn.weight", EmbeddedLocalAttention2d: "proj.weight",
             LocalAttention2d: "query.weight"}[type(m)]
        assert m.get_parameter(p).grad.abs().sum() > 0, (name, p)
    model.zero_grad()
    # fixed batch at 64 px: the loss goes down
    x, y = torch.randn(2, 3, 64, 64), torch.tensor([1, 2])
    losses = _train_steps(model, x, y, 4)
    assert losses[-1] < losses[0], losses


@pytest.mark.parametrize("name", ["resnet18+ga+la", "efficientnet_b0+ga+ela", "vit_tiny_in1k"])
@pytest.mark.parametrize("size", [(32, 32), (33, 71), (97, 40)])
def test_any_input_size_from_32_px(name, size):
    model = create_model(name, 4).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, *size))
    assert out.shape == (1, 4) and torch.isfinite(out).all()


def test_large_non_square_input_512_px():
    # layer4 gets a 16 x 13 map (one dense LA block), GA runs over 128 x 97 = 12416 positions
    model = create_model("resnet18+ga+la", 2).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 512, 388))
    assert out.shape == (1, 2) and torch.isfinite(out).all()


def test_model_metadata_and_gradcam_layers():
    m = create_model("efficientnet_b0+ga", 3, kernel_size=5)
    assert m.medattn_name == "efficientnet_b0+ga" and m.medattn_options == {"kernel_size": 5}
    assert len(m.pretrained_cfg["mean"]) == 3 and len(m.pretrained_cfg["std"]) == 3
    assert gradcam_target_layers(m) == [m.bn2]
    r = create_model("resnet18+la", 3)
    assert gradcam_target_layers(r) == [r.layer4[-1]]
    assert gradcam_target_layers(create_model("vit_tiny_in21k", 3)) == []
    # the target layer's output is the map that is pooled: its gradient reaches every position
    feats = {}
    h = r.layer4[-1].register_forward_hook(lambda mod, i, o: feats.setdefault("f", o))
    r.eval()(torch.randn(1, 3, 64, 64))
    h.remove()
    assert feats["f"].shape == (1, 512, 2, 2)
