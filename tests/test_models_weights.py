"""Checkpoints and pretrained files: round trips and clear errors for bad files."""

import json
import os

import pytest
import timm
import torch
from safetensors.torch import save_file

from medattn.errors import WeightsError
from medattn.models import create_model, load_checkpoint, save_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")  # steady on the shared 2-core machine


@pytest.mark.parametrize("name", ["resnet18+ga+la", "efficientnet_b0+ela", "vit_tiny_in21k"])
def test_safetensors_checkpoint_round_trip(tmp_path, name):
    torch.manual_seed(0)
    model = create_model(name, 3, kernel_size=5) if "la" in name else create_model(name, 3)
    with torch.no_grad():  # move away from the initialisation so a fresh model would differ
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    model.eval()
    path = save_checkpoint(model, tmp_path / "run" / "model.safetensors",
                           {"classes": ["melanoma", "nevus", "other"], "epoch": 3})
    assert path.is_file() and not [f for f in os.listdir(path.parent) if f.endswith(".tmp")]
    state, meta = load_checkpoint(path)
    assert meta["model"] == name and meta["num_classes"] == 3 and meta["epoch"] == 3
    assert meta["classes"] == ["melanoma", "nevus", "other"]
    assert set(state) == set(model.state_dict())
    options = meta["options"]
    assert options == ({"kernel_size": 5} if "la" in name else {})
    reloaded = create_model(meta["model"], meta["num_classes"], weights=path, **options).eval()
    x = torch.randn(2, 3, 64, 48)
    with torch.no_grad():
        assert torch.equal(model(x), reloaded(x))


def test_pth_checkpoint_is_read_with_weights_only(tmp_path):
    model = create_model("resnet18", 3).eval()
    torch.save(model.state_dict(), tmp_path / "m.pth")
    reloaded = create_model("resnet18", 3, weights=tmp_path / "m.pth").eval()
    x = torch.randn(1, 3, 40, 40)
    with torch.no_grad():
        assert torch.equal(model(x), reloaded(x))
    # a pickled object that is not a plain state dict is refused, never unpickled
    torch.save({"model": model}, tmp_path / "pickled.pth")
    with pytest.raises(WeightsError, match="weights_only"):
        create_model("resnet18", 3, weights=tmp_path / "pickled.pth")


def test_bad_checkpoints_give_clear_errors(tmp_path):
    model = create_model("resnet18+ga", 3)
    good = save_checkpoint(model, tmp_path / "good.safetensors")
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(WeightsError, match="truncated.safetensors.*not a readable"):
        create_model("resnet18+ga", 3, weights=truncated)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"this is not a weight file")
    with pytest.raises(WeightsError, match="garbage.safetensors"):
        create_model("resnet18+ga", 3, weights=garbage)
    with pytest.raises(WeightsError, match="checkpoint of 'resnet18\\+ga', not of 'resnet18\\+la'"):
        create_model("resnet18+la", 3, weights=good)
    with pytest.raises(WeightsError, match="3 classes, but num_classes=5"):
        create_model("resnet18+ga", 5, weights=good)
    with pytest.raises(WeightsError, match="does not exist"):
        create_model("resnet18", 3, weights=tmp_path / "missing.safetensors")
    # a file without metadata that does not fit: strict load error, file named
    plain = tmp_path / "plain.safetensors"
    save_file({"fc.weight": torch.zeros(3, 512)}, str(plain))
    with pytest.raises(WeightsError, match="plain.safetensors.*does not fit"):
        create_model("resnet18", 3, weights=plain)


def test_pretrained_local_file_replaces_head_and_rejects_wrong_files(tmp_path):
    timm_model = timm.create_model("resnet18", pretrained=False)  # 1000-class head, as on the hub
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in timm_model.state_dict().items()}, str(path))
    model = create_model("resnet18+ela", 3, pretrained=path)
    assert model.fc.out_features == 3
    torch.testing.assert_close(model.layer4[0].conv1.layer.weight, timm_model.layer4[0].conv1.weight)
    torch.testing.assert_close(model.layer1[0].conv1.weight, timm_model.layer1[0].conv1.weight)
    # another architecture's file: never a silent partial load
    with pytest.raises(WeightsError, match="does not fit timm efficientnet_b0"):
        create_model("efficientnet_b0", 3, pretrained=path)
    state = {k: v.contiguous() for k, v in timm_model.state_dict().items() if not k.startswith("layer3")}
    save_file(state, str(tmp_path / "partial.safetensors"))
    with pytest.raises(WeightsError, match="missing tensors"):
        create_model("resnet18", 3, pretrained=tmp_path / "partial.safetensors")


def test_vit_pretrained_local_file_with_21k_head(tmp_path):
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=21843)
    path = tmp_path / "vit.safetensors"
    save_file({k: v.contiguous() for k, v in vit.state_dict().items()}, str(path))
    model = create_model("vit_tiny_in21k", 3, pretrained=path)
    assert model.head.out_features == 3
    torch.testing.assert_close(model.pos_embed, vit.pos_embed)
    torch.testing.assert_close(model.blocks[5].attn.qkv.weight, vit.blocks[5].attn.qkv.weight)


def test_pretrained_true_offline_says_how_to_pass_a_local_file(tmp_path, monkeypatch):
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache" / "hub"))
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache" / "hub"))
    with pytest.raises(WeightsError) as err:
        create_model("efficientnet_b0+ga", 3, pretrained=True)
    msg = str(err.value)
    assert "pretrained=PATH" in msg and "efficientnet_b0.ra_in1k" in msg and "model.safetensors" in msg


def test_checkpoint_metadata_is_json(tmp_path):
    from safetensors import safe_open

    path = save_checkpoint(create_model("resnet18", 2), tmp_path / "m.safetensors", {"classes": ["a", "b"]})
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    assert json.loads(meta["classes"]) == ["a", "b"] and json.loads(meta["num_classes"]) == 2
    with pytest.raises(WeightsError, match=".safetensors"):
        save_checkpoint(create_model("resnet18", 2), tmp_path / "m.pth")


def test_pretrained_true_offline_uses_the_local_hub_cache(tmp_path, monkeypatch):
    import huggingface_hub.constants as hf_constants

    cache = tmp_path / "hub"
    snapshot = cache / "models--timm--resnet18.tv_in1k" / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (cache / "models--timm--resnet18.tv_in1k" / "refs").mkdir()
    (cache / "models--timm--resnet18.tv_in1k" / "refs" / "main").write_text("0123abcd")
    timm_model = timm.create_model("resnet18", pretrained=False)
    save_file({k: v.contiguous() for k, v in timm_model.state_dict().items()}, str(snapshot / "model.safetensors"))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(cache))
    model = create_model("resnet18+ga", 3, pretrained=True)
    torch.testing.assert_close(model.layer3[1].conv2.weight, timm_model.layer3[1].conv2.weight)
    assert model.fc.out_features == 3
