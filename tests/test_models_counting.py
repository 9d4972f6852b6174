"""Table 1 of the paper from the real models."""

import json
import math

import pytest
import torch

from medattn.cli import main
from medattn.models import count_parameters, create_model, parameter_table
from medattn.models.attention import GlobalAttention2d, LocalAttention2d

# the paper's Table 1: millions, |relative change| in percent (paper counting convention)
PAPER = {
    "resnet18": (11.18, 0.0), "resnet18+ga": (11.22, 0.37), "resnet18+la": (5.67, 49.25),
    "resnet18+ga+la": (5.71, 48.87), "resnet18+ela": (14.98, 34.02), "resnet18+ga+ela": (15.02, 34.40),
    "efficientnet_b0": (4.01, 0.0), "efficientnet_b0+ga": (4.02, 0.12), "efficientnet_b0+la": (3.48, 13.28),
    "efficientnet_b0+ga+la": (3.48, 13.17), "efficientnet_b0+ela": (4.30, 7.16),
    "efficientnet_b0+ga+ela": (4.30, 7.27), "vit_tiny_in1k": (5.49, None),
}


@pytest.fixture(scope="module")
def table_json():
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["params", "--format", "json"]) == 0
    return json.loads(buf.getvalue())


@pytest.mark.slow
def test_params_json_matches_paper_table_1(table_json):
    from medattn.models import list_models

    rows = {r["model"]: r for r in table_json}
    # every registered backbone x attention variant, the paper's 14 first and in its order
    assert [r["model"] for r in table_json] == list_models() and len(rows) == len(list_models()) > 14
    paper = [bb + v for bb in ("resnet18", "efficientnet_b0") for v in ("", "+ga", "+la", "+ela", "+ga+la", "+ga+ela")]
    assert list(rows)[:14] == list_models(paper_only=True) == paper + ["vit_tiny_in1k", "vit_tiny_in21k"]
    for name, (millions, change) in PAPER.items():
        row = rows[name]
        assert f"{row['params_paper_m']:.2f}" == f"{millions:.2f}", name
        if change is None:
            assert row["rel_change_pct"] is None or math.isnan(row["rel_change_pct"])
        elif name == "efficientnet_b0+la":  # the paper prints 13.29 for 532,912 / 4,011,391 = 13.2850%
            assert f"{abs(row['rel_change_pct']):.2f}" in ("13.28", "13.29")
        else:
            assert f"{abs(row['rel_change_pct']):.2f}" == f"{change:.2f}", name
    assert rows["resnet18+la"]["rel_change_pct"] < 0 < rows["resnet18+ela"]["rel_change_pct"]
    assert rows["vit_tiny_in21k"]["params_paper"] == rows["vit_tiny_in1k"]["params_paper"]


@pytest.mark.slow
def test_full_count_adds_exactly_the_uncounted_tensors(table_json):
    rows = {r["model"]: r for r in table_json}
    # ViT: pos_embed (197 x 192) and cls_token (192); LA: rel_h + rel_w = C_out * k per layer
    assert rows["vit_tiny_in1k"]["params_full"] - rows["vit_tiny_in1k"]["params_paper"] == 197 * 192 + 192
    assert rows["resnet18+la"]["params_full"] - rows["resnet18+la"]["params_paper"] == 4 * 512 * 7
    assert rows["efficientnet_b0+ela"]["params_full"] - rows["efficientnet_b0+ela"]["params_paper"] == 320 * 7
    assert rows["resnet18+ga"]["params_full"] == rows["resnet18+ga"]["params_paper"]


def test_layer_counts_follow_the_definitions():
    # GA(C): 3 x (C*C/2 + C/2) + (C/2*C + C) + 2C (BN scale and shift)
    assert count_parameters(GlobalAttention2d(64)) == 3 * (64 * 32 + 32) + (32 * 64 + 64) + 128
    # LA: three bias-free 1x1 convs; relative embeddings only in the full count
    la = LocalAttention2d(192, 320, kernel_size=7)
    assert count_parameters(la) == 3 * 192 * 320
    assert count_parameters(la, "full") == 3 * 192 * 320 + 320 * 7


@pytest.mark.slow
def test_table_other_num_classes_and_markdown(capsys):
    t = parameter_table(num_classes=7, models=["resnet18", "resnet18+ga"])
    base = count_parameters(create_model("resnet18", 7))
    assert t.params_paper.tolist()[0] == base == 11176512 + 7 * 513
    assert main(["params", "--paper"]) == 0
    out = capsys.readouterr().out
    assert "| resnet18+ga | 11.22 | 11.22 | +0.37 |" in out
    assert len(out.strip().splitlines()) == 2 + 14 and "+se" not in out
    with torch.device("meta"):
        assert count_parameters(create_model("efficientnet_b0", 3)) == 4011391


def test_models_command_lists_every_name_with_a_description(capsys):
    from medattn.models import list_models

    assert main(["models", "--names"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[0] for line in lines] == list_models()
    assert all(len(line.split(None, 1)[1]) > 10 for line in lines)
    for name in ("resnet50+cbam", "densenet121+ga+ela", "efficientnet_b3+mhsa", "resnet18+eca"):
        assert name in list_models()


@pytest.mark.slow
def test_models_command_shows_the_parameter_counts_of_table_1(capsys, table_json):
    counts = {r["model"]: r["params_paper_m"] for r in table_json}
    assert main(["models", "--backbone", "densenet121"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    names = [line.split()[0] for line in lines]
    # 1 + 7 single modules + 4 'after' x 3 'replace'/'embed' modules
    assert names == [m for m in counts if m.split("+")[0] == "densenet121"] and len(names) == 20
    for line in lines:
        name, millions = line.split()[:2]
        assert millions == f"{counts[name]:.2f}M", line
    assert main(["params", "--backbone", "vit_tiny_in1k", "resnet18", "--format", "csv"]) == 0
    csv = capsys.readouterr().out.strip().splitlines()
    # the paper's models first (ResNet18's six, the ViT), then the other ResNet18 variants
    assert [row.split(",")[0] for row in csv[1:]] == \
        [m for m in counts if m.startswith("resnet18+") or m in ("resnet18", "vit_tiny_in1k")]
    assert csv[7].startswith("vit_tiny_in1k,") and len(csv) == 1 + 20 + 1
