"""Mixed precision and channels-last: what train.amp / train.channels_last mean on each device, and
whole runs on CPU under bf16 and fp16 autocast (the code path CUDA runs, minus the device)."""

import dataclasses
import json

import pytest
import torch
import yaml
from torch import nn

from medattn.errors import ConfigError
from medattn.runs import store
from medattn.training.config import RunSpec, TrainSettings, parse_config
from medattn.training.engine import Hooks, train_run
from medattn.training.precision import Precision

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def derm(tmp_path_factory):
    from medattn.data.synthetic import write_derm
    # a strong colourful-patch shortcut, so that a few epochs from scratch learn something. With
    # 150 images (15 for validation) a 2-4-epoch run ends at chance on validation for some data
    # seeds (the engine records it as diverged): the tiny fp16 CNN for 4 of 6 seeds, before and
    # after the generator had fine diagnoses. Seed 1 trains every run of this file.
    return write_derm(tmp_path_factory.mktemp("derm"), n=150, n_ood=24, image_size=40, workers=1,
                      patch_bias=1.0, seed=1)


def _spec(derm, model="resnet18", **train):
    isic, pad = derm
    settings = dict(epochs=4, batch_size=16, image_size=32, pretrained=False, threads=1,
                    augment="light")
    settings.update(train)
    return RunSpec(phase="final", dataset="isic", data=isic, ood=(pad,), model=model,
                   lr=0.003, weight_decay=1e-4, split_seed=0, train=TrainSettings(**settings))


# -- what the settings mean ---------------------------------------------------------------------

@pytest.mark.parametrize("amp,cl,dtype,channels_last", [
    ("auto", "auto", None, False),            # CPU default: float32, NCHW
    (True, False, None, False),               # YAML's true (amp: auto) and off (NCHW)
    ("bf16", "on", torch.bfloat16, True),
    ("fp16", "off", torch.float16, False),
    ("off", False, None, False),
])
def test_precision_on_cpu(amp, cl, dtype, channels_last):
    p = Precision.resolve(amp, cl, "cpu")
    assert (p.dtype, p.channels_last) == (dtype, channels_last)
    assert p.grad_scaler().is_enabled() == (dtype == torch.float16)
    with p.autocast():
        y = nn.Linear(4, 4)(torch.randn(2, 4))
    assert y.dtype == (dtype or torch.float32)


@pytest.mark.parametrize("bf16_ok,dtype", [(True, torch.bfloat16), (False, torch.float16)])
def test_precision_auto_on_cuda_picks_bf16_where_supported(monkeypatch, bf16_ok, dtype):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16_ok)
    p = Precision.resolve("auto", "auto", "cuda")
    assert (p.dtype, p.channels_last) == (dtype, True)
    assert p.name == ("bf16" if bf16_ok else "fp16") + "+channels_last"
    assert Precision.resolve("off", "off", "cuda:1") == Precision(torch.device("cuda:1"), None, False)


def test_precision_bf16_on_a_gpu_without_it_says_what_to_use(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a, **k: "Tesla V100")
    with pytest.raises(ConfigError, match="Tesla V100.*`fp16` or `auto`"):
        Precision.resolve("bf16", "auto", "cuda")


def test_precision_prepares_model_and_batches_channels_last():
    p = Precision.resolve("off", "on", "cpu")
    model = p.prepare(nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 1)))
    assert all(m.weight.is_contiguous(memory_format=torch.channels_last) for m in model)
    x = p.batch(torch.randn(2, 3, 9, 9))
    assert x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    assert p.batch(torch.randn(2, 5)).shape == (2, 5)  # non-images pass through
    off = Precision.resolve("off", "off", "cpu")
    assert off.batch(torch.randn(2, 3, 9, 9)).is_contiguous()


def test_yaml_on_off_mean_the_documented_modes():
    """PyYAML reads `on`/`off` as booleans: `channels_last: on` must still mean on (NHWC on CPU)."""
    raw = yaml.safe_load("train:\n  amp: off\n  channels_last: on\n")
    assert raw["train"] == {"amp": False, "channels_last": True}  # what the parser hands over
    parsed = parse_config({"name": "t", "datasets": [{"data": "isic:x"}], "models": ["resnet18"],
                           **raw}, "t.yaml")
    assert (parsed.train.amp, parsed.train.channels_last) == ("off", "on")
    assert Precision.resolve(parsed.train.amp, parsed.train.channels_last, "cpu").channels_last


def test_config_values_and_run_ids():
    parsed = parse_config({"name": "t", "datasets": [{"data": "isic:x"}], "models": ["resnet18"],
                           "train": {"amp": "BF16", "channels_last": "on"}}, "t.yaml")
    assert (parsed.train.amp, parsed.train.channels_last) == ("bf16", "on")
    for bad in ("yes", 1, None):
        with pytest.raises(ConfigError, match="train.amp"):
            parse_config({"name": "t", "datasets": [{"data": "isic:x"}], "models": ["resnet18"],
                          "train": {"amp": bad}}, "t.yaml")
    with pytest.raises(ConfigError, match="train.channels_last"):
        TrainSettings(channels_last="nhwc")
    spec = lambda **t: RunSpec(phase="final", dataset="isic", data="isic:/x", model="resnet18+ga",  # noqa
                               lr=0.001, weight_decay=0.0001, split_seed=3, train=TrainSettings(**t))
    assert spec(amp=True).run_id == spec().run_id and spec(amp=False).run_id == spec(amp="off").run_id
    assert len({spec(amp=a).run_id for a in ("auto", "bf16", "fp16", "off")}) == 4
    assert spec(channels_last="on").run_id == spec().run_id  # memory format: speed only
    assert RunSpec.from_dict(json.loads(json.dumps(spec(amp="fp16").to_dict()))) == spec(amp="fp16")


# -- whole runs on CPU ---------------------------------------------------------------------------

class _Seen:
    """Dtypes and layouts of conv and attention outputs seen in training forward passes."""

    def __init__(self):
        self.dtypes, self.layouts = set(), set()

    def __call__(self, module, args, out):
        from medattn.models import GlobalAttention2d, LocalAttention2d
        if module.training and isinstance(module, (nn.Conv2d, GlobalAttention2d, LocalAttention2d)):
            self.dtypes.add((type(module).__name__, out.dtype))
            if out.shape[-1] > 1:  # a 1 x 1 map is both layouts
                self.layouts.add(out.is_contiguous(memory_format=torch.channels_last)
                                 and not out.is_contiguous())


def _run_watching(spec, runs_dir, **kw):
    seen = _Seen()
    handle = nn.modules.module.register_module_forward_hook(seen)
    try:
        return train_run(spec, runs_dir, progress=False, **kw), seen
    finally:
        handle.remove()


@pytest.mark.slow
def test_bf16_channels_last_run_on_cpu(derm, tmp_path):
    # the GPU path's code on CPU: GA and LA under autocast with channels-last activations
    ref, seen_ref = _run_watching(_spec(derm, "resnet18+ga+la", amp="off", channels_last="off"), tmp_path)
    spec = _spec(derm, "resnet18+ga+la", amp="bf16", channels_last="on")
    rec, seen = _run_watching(spec, tmp_path)
    assert rec["status"] == "done" and ref["status"] == "done"
    assert rec["config"]["precision"] == "bf16+channels_last" and ref["config"]["precision"] == "fp32"
    assert {("Conv2d", torch.bfloat16), ("GlobalAttention2d", torch.bfloat16),
            ("LocalAttention2d", torch.bfloat16)} <= seen.dtypes
    assert seen.layouts == {True} and seen_ref.layouts == {False}
    assert {d for _, d in seen_ref.dtypes} == {torch.float32}
    # the same seed trains the same model: bf16 follows float32's loss closely
    for a, b in zip(rec["history"], ref["history"]):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=0.05)
    assert rec["run_id"] != ref["run_id"]


class _Tiny(nn.Sequential):
    """A small CNN with a GA block: CPU float16 kernels are 15-35x slower than float32 ones, too
    slow for a zoo model in a test; the scaler logic does not depend on the model."""

    def __init__(self, num_classes: int):
        from medattn.models import GlobalAttention2d
        super().__init__(nn.Conv2d(3, 16, 3, stride=2), nn.BatchNorm2d(16), nn.ReLU(),
                         GlobalAttention2d(16), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(16, num_classes))
        self.medattn_name, self.num_classes = "tiny", num_classes
        self.pretrained_cfg = {"mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)}
        nn.init.ones_(self[3].bn.weight)  # let the block act from the start


@pytest.mark.slow
def test_fp16_run_on_cpu_scales_gradients_and_resumes_exactly(derm, tmp_path, monkeypatch):
    import medattn.models
    monkeypatch.setattr(medattn.models, "create_model", lambda name, num_classes, **kw: _Tiny(num_classes))
    spec = dataclasses.replace(_spec(derm, amp="fp16", channels_last="on", epochs=2), lr=0.1)
    ref, seen = _run_watching(spec, tmp_path / "a")
    assert ref["status"] == "done" and ref["config"]["precision"] == "fp16+channels_last"
    assert ("GlobalAttention2d", torch.float16) in seen.dtypes and seen.layouts == {True}

    class Kill(BaseException):
        pass

    def kill(epoch, entry):
        raise Kill

    b = tmp_path / "b"
    with pytest.raises(Kill):
        train_run(spec, b, hooks=Hooks(on_epoch_end=kill), progress=False)
    from safetensors import safe_open
    with safe_open(str(store.run_dir(b, spec.run_id) / store.RESUME), framework="pt") as f:
        scaler = json.loads(f.metadata()["state"])["scaler"]
    assert scaler["scale"] >= 1 and scaler["_growth_tracker"] > 0  # the scaler ran; its state is saved
    rec = train_run(spec, b, progress=False)
    assert rec["timings"]["sessions"] == 2
    strip = lambda h: [{k: v for k, v in e.items() if k != "seconds"} for e in h]  # noqa: E731
    assert strip(rec["history"]) == strip(ref["history"]) and rec["metrics"] == ref["metrics"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_run_with_the_default_precision_follows_the_cpu_run(derm, tmp_path):
    # same seed, same data: the GPU (AMP + channels-last, the defaults there) against CPU float32
    spec = _spec(derm, "resnet18+ga+la")
    cpu = train_run(spec, tmp_path / "cpu", device="cpu", progress=False)
    gpu, seen = _run_watching(spec, tmp_path / "gpu", device="cuda")
    assert cpu["status"] == gpu["status"] == "done"
    assert gpu["config"]["precision"] in ("bf16+channels_last", "fp16+channels_last")
    assert seen.layouts == {True} and {d for _, d in seen.dtypes} <= {torch.bfloat16, torch.float16}
    assert gpu["history"][0]["train_loss"] == pytest.approx(cpu["history"][0]["train_loss"], rel=0.05)
