"""A backbone and an attention module registered from outside medattn (here, in this test module):
a tiny study, compare, features, explain and the report run on them, as on the paper's models;
and a plugin module registers them in another process."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from medattn import demo
from medattn.analysis.compare import compare_runs
from medattn.cli import main
from medattn.models import create_model, parameter_table, register_attention, register_backbone
from medattn.models import registry as R
from medattn.runs import store

pytestmark = pytest.mark.usefixtures("one_thread")  # steady on the shared 2-core machine


class ChannelGate(nn.Module):
    """The user's own attention: a sigmoid gate per channel from the map's mean (B, C, H, W)."""

    def __init__(self, channels: int):
        super().__init__()
        self.fc = nn.Conv2d(channels, channels, 1)

    def forward(self, x):
        return x * torch.sigmoid(self.fc(x.mean((2, 3), keepdim=True)))


@pytest.fixture
def registered(monkeypatch):
    """ResNet18-D (a timm CNN medattn does not register) and ChannelGate, registered for this
    test only (the registry is restored afterwards, so other tests see the built-in entries)."""
    R.backbones()  # the built-in entries are in before the copies are taken
    monkeypatch.setattr(R, "_BACKBONES", dict(R._BACKBONES))
    monkeypatch.setattr(R, "_ATTENTIONS", dict(R._ATTENTIONS))
    register_backbone("resnet18d_user", "resnet18d", after=("layer1", "layer2"),
                      local=("layer4.*.conv2",), label="ResNet18-D",
                      # for 32 px images: layer4's map is 1 x 1 there (a constant Grad-CAM map)
                      gradcam=("layer3",))
    register_attention("gate", lambda site: ChannelGate(site.out_channels), "after", label="Gate",
                       abbrev="T")
    yield


def test_registered_models_build_and_list(registered):
    names = [n for n in R.backbones() if n.name == "resnet18d_user"]
    assert names and names[0].order > max(b.order for b in R.backbones() if b.paper)
    model = create_model("resnet18d_user+gate+ela", 3).eval()
    assert isinstance(model.layer1.gate.fn, ChannelGate) and model.layer1.gate.fn.fc.in_channels == 64
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 32)).shape == (1, 3)
    counts = parameter_table(3, ["resnet18d_user", "resnet18d_user+gate", "resnet18+gate"])
    base, gated = list(counts.itertuples())[:2]
    assert gated.params_paper - base.params_paper == (64 * 64 + 64) + (128 * 128 + 128)  # the gates' convs
    assert gated.params_full - gated.params_paper == 64 + 128  # the zero-init scales (not weight/bias)
    assert main(["models", "--names", "--backbone", "resnet18d_user"]) == 0


@pytest.mark.slow
def test_study_compare_features_explain_and_report_on_registered_models(registered, tmp_path,
                                                                        monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    # the demo's steps (synthetic ISIC-layout data, study, compare, features, explain, report),
    # 4 two-epoch runs at 32 px of the registered backbone and its variant
    # (as tests/test_training_demo.py: the patch on nevi only, split seeds and one thread on
    # which every tiny run leaves chance level, so that "done" is asserted)
    monkeypatch.setitem(demo.SIZES, "quick", demo.DemoSize(
        120, 16, {"models": ["resnet18d_user", "resnet18d_user+gate"],
                 "search": {"lr": [0.05], "weight_decay": [0.0001]},
                 "final": {"splits": 2, "first_seed": 3},
                 "train": {"epochs": 2, "image_size": 32, "batch_size": 16, "threads": 1}},
        n_mean=8))
    monkeypatch.setattr(demo, "PATCH_BIAS", 1.0)
    assert main(["demo", "--quick", "--jobs", "1", "--out", "out"]) == 0
    said = capsys.readouterr().out
    runs = tmp_path / "out" / "runs"

    recs = store.load_records(runs)
    assert len(recs) == 4 and set(recs["status"]) == {"done"}
    assert set(recs["model"]) == {"resnet18d_user", "resnet18d_user+gate"}
    assert set(recs["backbone"]) == {"resnet18d_user"} and set(recs["variant"]) == {"base", "gate"}

    # compare: the variant against its own base, labelled from the registry
    table = compare_runs(runs).table
    rows = table[table["model"] == "gate"]
    assert len(rows) and set(rows["reference"]) == {"resnet18d_user"} and rows["p"].notna().all()
    assert "ResNet18-D +Gate" in said
    assert main(["compare", str(runs), "--format", "md"]) == 0
    md = capsys.readouterr().out
    assert "ResNet18-D" in md and "+Gate" in md

    # features: Table 3 has a row per registered model
    t3 = pd.read_csv(runs / "analysis" / "features" / "table3.csv")
    assert set(t3["model"]) == {"resnet18d_user", "resnet18d_user+gate"}

    # explain: Grad-CAM on the registered target layer, non-empty maps for both models
    explain = runs / "analysis" / "explain"
    summary = pd.read_csv(explain / "explain_summary.csv")
    assert set(summary["model"]) == {"resnet18d_user", "resnet18d_user+gate"}
    assert set(summary["method"]) == {"gradcam"}
    maps = {folder: np.load(explain / "isic" / folder / "examples.npy")  # one image per class
            for folder in ("gradcam__resnet18d_user", "gradcam__resnet18d_user-gate")}
    for folder, m in maps.items():
        assert m.shape == (3, 32, 32) and np.isfinite(m).all() and m.min() >= 0 and m.max() <= 1, folder
    # (a map of two epochs' training may be all zero: ReLU of negative evidence; every variant
    # gives non-empty maps in test_models_registry)
    assert max(m.max() for m in maps.values()) > 0
    assert (explain / "table4.png").stat().st_size > 0

    # report: Table 1 carries the registered models with the zoo's counts
    t1 = pd.read_csv(runs / "report" / "table1.csv")
    counts = parameter_table(3, ["resnet18d_user", "resnet18d_user+gate"])
    for label, millions in zip(["ResNet18-D Base", "ResNet18-D +Gate"], counts.params_paper_m):
        row = t1[t1["model"] == label]
        assert len(row) == 1 and float(row.iloc[0, 1]) == pytest.approx(millions), label
    html = (runs / "report" / "report.html").read_text(encoding="utf-8")
    assert "ResNet18-D +Gate" in html


PLUGIN = '''
from timm.layers import create_attn
from medattn.models import register_attention, register_backbone

register_backbone("plug_net", "regnetx_002", after=("s1", "s2"), local=("s4.*.conv2.conv",),
                  gradcam=("s4",), label="RegNetX-200MF")
register_attention("plug_gc", lambda site: create_attn("gc", site.out_channels), label="GC")
'''


@pytest.mark.slow
def test_a_plugin_module_registers_in_every_process(tmp_path):
    (tmp_path / "my_plugin.py").write_text(PLUGIN, encoding="utf-8")
    src = Path(__import__("medattn").__file__).parents[1]
    env = dict(os.environ, MEDATTN_PLUGINS="my_plugin",
               PYTHONPATH=os.pathsep.join([str(tmp_path), str(src)]))
    code = ("import json; from medattn.models import list_models, create_model; "
            "m = create_model('plug_net+plug_gc', 2); "
            "print(json.dumps([list_models(['plug_net']), m.medattn_name]))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    names, built = json.loads(out.stdout.strip().splitlines()[-1])
    assert built == "plug_net+plug_gc" and "plug_net+plug_gc+ela" in names and len(names) == 1 + 8 + 5 * 3
    bad = dict(env, MEDATTN_PLUGINS="no_such_plugin")
    out = subprocess.run([sys.executable, "-c", "from medattn.models import list_models; list_models()"],
                         env=bad, capture_output=True, text=True, timeout=300)
    assert out.returncode != 0 and "MEDATTN_PLUGINS: module 'no_such_plugin' failed to import" in out.stderr
