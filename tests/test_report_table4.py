"""Table 4 honest at any size (issue 26, item 5): a Grad-CAM map of fewer than 7 x 7 cells is
flagged as unable to localise (summary and figure), rows carry full labels, and the section shows
a short summary with the raw CSV folded."""

import pandas as pd
import pytest

from medattn.explain.grid import gradcam_cells, model_label, row_label
from medattn.report import build_report
from medattn.report.explain_view import explain_summary

from tests.fake_study import write_fake_study

RUN = "final-isic-resnet18+ga-s0"


def _summary(run_id=RUN) -> pd.DataFrame:
    base = {"dataset": "isic", "model": "resnet18+ga", "run_id": run_id, "selected_by": "best",
            "images": "pool", "class": "all", "n_images": 50, "mass_lesion": 0.61,
            "area_lesion": 0.2, "n_lesion": 50, "mass_patch": float("nan"),
            "area_patch": float("nan"), "n_patch": 0, "mass_border": 0.3733,
            "area_border": 0.3733, "mass_corners": 0.1, "area_corners": 0.1}
    return pd.DataFrame([{**base, "method": "gradcam", "block": ""},
                         {**base, "method": "ga", "block": 1, "mass_border": 0.2},
                         {**base, "method": "gradcam", "class": "nevus", "block": ""}])


def test_gradcam_cells_and_full_row_labels():
    assert [gradcam_cells(s) for s in (32, 48, 64, 223, 224)] == [1, 2, 2, 7, 7]
    assert model_label("resnet18+ga+ela") == "ResNet18 +GA+ELA"
    assert model_label("efficientnet_b0") == "EfficientNet-B0 Base"
    assert row_label("gradcam", "resnet18+ga", None, 48) == (
        "Grad-CAM\nResNet18 +GA\n(2×2 cells: cannot localise)")
    assert row_label("gradcam", "resnet18+ga", None, 224) == "Grad-CAM\nResNet18 +GA"


def test_summary_flags_coarse_gradcam_and_keeps_the_rest():
    short = explain_summary(_summary(), {RUN: 48})
    assert len(short) == 2  # the "all images" rows only
    cam, ga = short.iloc[0], short.iloc[1]
    assert cam["map"] == "Grad-CAM" and cam["model"] == "ResNet18 +GA" and cam["cells"] == "2×2"
    assert cam["border: mass / area (%)"] == "—" and cam["note"].startswith("cannot localise")
    assert ga["map"] == "GA map (block 1)" and ga["in lesion: mass / area (%)"] == "61.0 / 20.0"
    assert ga["border: mass / area (%)"] == "20.0 / 37.3" and ga["note"] == ""
    assert "on patch: mass / area (%)" not in short  # no image has a patch: no column
    fine = explain_summary(_summary(), {RUN: 224})
    assert "note" not in fine and fine.iloc[0]["border: mass / area (%)"] == "37.3 / 37.3"


@pytest.mark.slow
def test_report_section_says_it_cannot_localise(tmp_path):
    write_fake_study(tmp_path)  # image_size 32: a 1 x 1 Grad-CAM map
    ex = tmp_path / "analysis" / "explain"
    ex.mkdir(parents=True)
    _summary().to_csv(ex / "explain_summary.csv", index=False)
    html = build_report(tmp_path, out=tmp_path / "r", parameters=False).html.read_text()
    t4 = html.split('<section id="table4">')[1].split("</section>")[0]
    assert "1 Grad-CAM row(s) cannot localise" in t4
    assert "cannot localise: a 1×1 map" in t4 and "ResNet18 +GA" in t4
    assert "<details><summary>Every class and region" in t4  # the raw CSV, folded
    assert "explain_summary.csv</code>:" not in t4.split("<details>")[0]  # no file-name caption
