"""Issue 26, item 6: small fixes found by trying medattn as a new user would. Each test fails on
the code before the fix."""

import json
import re
import shutil

import pandas as pd
import pytest

from medattn import cli
from medattn.errors import DataError
from medattn.report import build_report
from medattn.models import registry as R
from medattn.runs import store
from medattn.analysis.study_summary import format_study
from medattn.training.study import StudyResult, selection_note

from tests.fake_study import write_fake_study


def _section(html: str, sid: str) -> str:
    return html.split(f'<section id="{sid}">')[1].split("</section>")[0]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    write_fake_study(root)
    return root


@pytest.mark.slow
def test_table1_shows_the_trained_models_and_folds_the_rest(study, tmp_path, monkeypatch):
    labels = [R.model_label(b, v) for b, v in [("resnet18", "base"), ("resnet18", "ga"),
                                             ("resnet18", "la"), ("resnet18", "ela"),
                                             ("efficientnet_b0", "base"), ("vit", "1k")]]
    monkeypatch.setattr("medattn.report.tables.table1", lambda num_classes=3, models=None:
                        pd.DataFrame({"model": labels, "parameters (M)": ["1"] * len(labels)}))
    html = build_report(study, out=tmp_path / "r").html.read_text()
    t1 = _section(html, "table1")
    shown, folded = t1.split("<details>")
    assert "ResNet18 +GA" in shown and "ResNet18 +LA" not in shown and "ViT-1k" not in shown
    assert "The 4 models this study trained" in shown
    assert "ResNet18 +LA" in folded and "6 rows" in folded


@pytest.mark.slow
def test_one_point_grid_says_no_search(study, tmp_path):
    assert selection_note("grid", float("nan"), 0) == "no search: one setting"
    assert selection_note("fixed", float("nan"), 0) == "fixed in the config"
    assert selection_note("search", 0.7312, 2) == "mean val bacc 73.1% over 2 runs"
    root = tmp_path / "s"
    shutil.copytree(study, root)
    (root / "selection.csv").write_text(
        "dataset,model,lr,weight_decay,mean_val_bacc,n_runs,n_diverged,source,selection_id\n"
        "isic,resnet18,0.001,0.0,,0,0,grid,abc\n")
    search = _section(build_report(root, out=tmp_path / "r", parameters=False).html.read_text(),
                      "search")
    search = re.sub(r"<img[^>]*>|<[^>]+>", " ", search)  # the text a reader sees
    assert "no search: one setting" in search and "nan" not in search.lower()


def test_study_summary_is_a_formatted_table(study):
    res = StudyResult(study, store.load_records(study), None)
    text = format_study(res)
    lines = text.splitlines()
    assert lines[0] == "runs: 76 done, 1 diverged, 1 failed"  # not a dict
    assert lines[1].split() [:4] == ["data", "set", "model", "test"]
    models = [ln[10:32].strip() for ln in lines[2:]]
    assert models[0] == "ResNet18 Base" and models[-1] == "ViT-21k"  # the registry's order
    assert "ResNet18 +GA          in-distribution" in text and "{" not in text


def test_report_on_a_train_folder_has_no_broken_table(tmp_path):
    write_fake_study(tmp_path)
    for d in (tmp_path / "runs").iterdir():  # one model, as `medattn train` leaves
        if not d.name.startswith("final-isic-resnet18-"):
            shutil.rmtree(d)
    (tmp_path / "study.yaml").unlink()
    html = build_report(tmp_path, out=tmp_path / "r", parameters=False).html.read_text()
    t2 = _section(html, "table2")
    assert "p adj." not in t2 and "approximated from the summary" not in t2
    assert "nothing to compare" in t2 and "73." in t2
    assert "Nothing compared yet: no variant has its base" in _section(html, "verdict")


def test_compare_summary_flags_implausible_sds_first(capsys):
    assert cli.main(["compare", "--summary", "paper"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("## Warnings\n\n- implausible published sd: isic ood ViT-1k has sd "
                          "113.45 pp (> 50 pp")
    assert out.count("implausible published sd") == 1
    assert cli.main(["compare", "--summary", "paper", "--test", "corrected",
                     "--test-train-ratio", "0.2857"]) == 0
    out = capsys.readouterr().out
    assert out.index("## Marks of Welch's test re-checked") < out.index("## What the study found")
    assert out.index("## What the study found") < out.index("## Table 2")


@pytest.mark.parametrize("command", ["compare", "features", "explain", "report"])
def test_wrong_folder_names_the_runs_dir(command, capsys, monkeypatch, tmp_path):
    study = tmp_path / "work" / "mystudy"
    write_fake_study(study)
    monkeypatch.chdir(study.parent)
    name = study.name
    for wrong in (f"{name}/typo", ".", f"{name}/runs", f"{name}/runs/final-isic-resnet18-s0"):
        assert cli.main([command, wrong]) == 2, wrong
        err = capsys.readouterr().err
        assert f"did you mean `medattn {command} {name}`" in err, (wrong, err)
    (tmp_path / "empty").mkdir()  # nothing near it
    assert cli.main([command, str(tmp_path / "empty" / "nowhere")]) == 2
    assert "no RUNS_DIR was found near it" in capsys.readouterr().err


def test_features_on_only_diverged_runs_says_so(tmp_path):
    from medattn.analysis.features.usage import feature_usage

    write_fake_study(tmp_path)
    for rec_path in (tmp_path / "runs").glob("final-*/record.json"):
        rec = json.loads(rec_path.read_text())
        rec["status"] = "diverged"
        rec_path.write_text(json.dumps(rec))
    with pytest.raises(DataError, match=r"every final run diverged \(30: final-isic-"):
        feature_usage(tmp_path)


def test_confusion_title_of_one_model_fits_its_figure():
    from medattn.report.figures import confusion_grid

    rec = {"backbone": "resnet18", "variant": "base",
           "metrics": {"test": {"confusion_matrix": [[5, 1, 0], [1, 5, 0], [0, 1, 5]]}}}
    fig = confusion_grid([rec], "test", ["melanoma", "nevus", "other"],
                         "isic, in-distribution test")
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    box = fig._suptitle.get_window_extent(canvas.get_renderer())
    assert box.x0 >= 0 and box.x1 <= fig.bbox.width  # not clipped at either side
