"""Each command end to end through ``medattn.cli.main`` on tiny data, judged by what it writes and
prints: ``train``; ``study``, then ``features``, ``explain`` and ``report`` on that study. (``demo``
runs through ``main`` in tests/test_training_demo.py, the data commands in tests/test_data_*.py,
``compare`` in tests/test_compare*.py.)"""

import contextlib
import io
import json

import pandas as pd
import pytest
import yaml

from medattn import cli
from medattn.report import EXPLAIN_HINT, FEATURES_HINT
from medattn.runs import store

pytestmark = pytest.mark.slow

MODELS = ["resnet18", "resnet18+ga"]
TRAIN = {"epochs": 3, "batch_size": 16, "image_size": 32, "pretrained": False, "threads": 1,
         "augment": "light"}


def _main(args: list[str]) -> tuple[int, str]:
    """(exit code, stdout) of one command."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = cli.main(args)
    return rc, buf.getvalue()


@pytest.fixture(scope="module")
def study(learnable_derm, tmp_path_factory):
    """``(runs_dir, config, {command: (exit code, stdout)})``: ``medattn study`` on a tiny config
    (2 models, a one-point grid: no search, 2 final splits), then ``features``, ``explain`` and ``report``
    on its folder, in the order a user runs them."""
    isic, pad = learnable_derm
    root = tmp_path_factory.mktemp("cli_study")
    config = {"name": "tiny", "datasets": [{"name": "isic", "data": isic, "ood": [pad]}],
              "models": MODELS, "search": {"lr": [0.05], "weight_decay": [0.0001]},
              "final": {"splits": 2}, "train": TRAIN}
    (root / "tiny.yaml").write_text(yaml.safe_dump(config))
    runs = root / "runs"
    said = {"study": _main(["study", str(root / "tiny.yaml"), "--out", str(runs)])}
    # every test image (30): one per patient would leave fewer than the tests' minimum of 20
    said["features"] = _main(["features", str(runs), "--all-images"])
    said["explain"] = _main(["explain", str(runs), "--n-mean", "6", "--batch-size", "8"])
    said["report"] = _main(["report", str(runs), "--bootstrap", "200"])
    return runs, config, said


def test_train_fine_tunes_from_a_weight_file_and_prints_what_it_stored(study, learnable_derm,
                                                                       tmp_path):
    # From the weights of a study's run (the CLI trains with the paper's strong augmentation,
    # which a tiny run from scratch cannot learn in a few epochs): a user's typical next step.
    isic, pad = learnable_derm
    runs, _, _ = study
    start = next(r for r in store.iter_records(runs)
                 if (r["phase"], r["model"], r["split_seed"]) == ("final", "resnet18", 0))
    weights = store.run_dir(runs, start["run_id"]) / store.MODEL
    rc, out = _main(["train", "--model", "resnet18", "--data", isic, "--ood", pad, "--runs",
                     str(tmp_path), "--lr", "0.01", "--weight-decay", "0.0001", "--split-seed",
                     "0", "--epochs", "2", "--batch-size", "16", "--image-size", "32",
                     "--pretrained", str(weights), "--threads", "1"])
    assert rc == 0, out
    (rdir,) = (tmp_path / "runs").iterdir()
    rec = json.loads((rdir / store.RECORD).read_text())
    assert (rec["status"], rec["model"], rec["split_seed"], rec["lr"]) == ("done", "resnet18", 0,
                                                                           0.01)
    assert rec["config"]["train"]["pretrained"] == str(weights) and len(rec["history"]) == 2
    lines = out.splitlines()
    assert lines[0] == f"done: {rec['run_id']} (best epoch {rec['best_epoch']})"
    for name in ("val", "test", "ood-pad-ufes-20"):  # each set's accuracy as recorded
        m = rec["metrics"][name]
        assert (f"  {name:<20} balanced accuracy {100 * m['balanced_accuracy']:.1f}%  "
                f"(n={m['n']})") in lines
    assert lines[-1] == (f"run stored in {tmp_path}/runs/{rec['run_id']} (next: medattn report "
                         f"{tmp_path})")
    for name in ("test", "ood-pad-ufes-20"):
        assert len(pd.read_csv(rdir / "predictions" / f"{name}.csv")) == rec["metrics"][name]["n"]
    assert (rdir / store.MODEL).stat().st_size > 1e6 and not (rdir / store.RESUME).exists()


def test_study_trains_selects_and_summarises(study):
    from medattn.report.tables import model_name_label

    runs, config, said = study
    rc, out = said["study"]
    assert rc == 0, out
    records = store.load_records(runs)
    assert len(records) == 4 and set(records["status"]) == {"done"}, records[["run_id", "status"]]
    assert set(records["phase"]) == {"final"}  # a one-point grid needs no search
    assert "runs: 4 done" in out and out.rstrip().endswith(
        f"results in {runs} (next: medattn compare {runs})")
    assert yaml.safe_load((runs / "study.yaml").read_text())["models"] == MODELS
    selection = pd.read_csv(runs / "selection.csv")
    assert sorted(selection["model"]) == MODELS and set(selection["lr"]) == {0.05}
    final = records[records["phase"] == "final"]
    assert sorted(final["split_seed"]) == [0, 0, 1, 1]
    for model in MODELS:  # the printed summary: each model's mean test accuracy over 2 runs
        mean = 100 * final.loc[final["model"] == model, "bacc_test"].mean()
        label = model_name_label(model)  # the end summary names models by the registry
        row = next(line for line in out.splitlines() if f" {label} " in f" {line} "
                   and " in-distribution " in f" {line} ")
        assert f"{mean:.1f}" in row.split(), (row, mean)


def test_features_writes_table3_for_each_model(study):
    runs, _, said = study
    rc, out = said["features"]
    assert rc == 0, out
    folder = runs / "analysis" / "features"
    md = (folder / "table3.md").read_text()
    assert md.strip() and md.strip() in out and str(folder) in out  # printed, and where
    assert sorted(set(pd.read_csv(folder / "table3.csv")["model"])) == MODELS
    pvalues = pd.read_csv(folder / "pvalues.csv")
    assert sorted(set(pvalues["model"])) == MODELS
    assert set(pvalues["test"]) == {"chsic", "rcot", "cmiknn"}
    p = pvalues["p_value"].dropna()  # NaN: a feature no test could use (e.g. constant)
    assert len(p) > len(pvalues) / 2 and p.between(0, 1).all()
    table = pd.read_csv(folder / "table3.csv", dtype=str).set_index("model")
    cells = table.drop(columns=[c for c in ("condition",) if c in table])
    assert (cells != "n/a").to_numpy().mean() > 0.5  # most features could be tested


def test_explain_draws_table4_and_quantifies_the_maps(study):
    runs, _, said = study
    rc, out = said["explain"]
    assert rc == 0, out
    png, pdf, summary = out.splitlines()[-3:]
    assert png == str(runs / "analysis" / "explain" / "table4.png")
    with open(png, "rb") as f:
        assert f.read(4) == b"\x89PNG"
    with open(pdf, "rb") as f:
        assert f.read(5) == b"%PDF-"
    table = pd.read_csv(summary)
    assert sorted(set(table["model"])) == MODELS
    assert {"all", "melanoma", "nevus", "other"} == set(table["class"])
    assert (table.loc[table["class"] == "all", "n_images"] == 6).all()  # --n-mean 6
    # one common split: every model explained on the same test images
    finals = store.load_records(runs).set_index("run_id")
    assert finals.loc[table["run_id"].unique(), "split_seed"].nunique() == 1
    shares = table.filter(regex="^(mass|area)_").dropna(axis=1, how="all")
    assert shares.shape[1] >= 4 and shares.stack().dropna().between(0, 1).all()


def test_report_holds_every_table_and_the_analyses_run_before_it(study):
    runs, _, said = study
    rc, out = said["report"]
    assert rc == 0, out
    html_path = out.strip().splitlines()[-1]
    assert html_path == str(runs / "report" / "report.html")
    html = (runs / "report" / "report.html").read_text()
    assert html.lstrip().lower().startswith("<!doctype html")
    md = (runs / "report" / "report.md").read_text()
    for title in ("Table 1", "Table 2", "Table 3", "Table 4"):
        assert title in html and title in md
    assert FEATURES_HINT not in md and EXPLAIN_HINT not in md  # features and explain were found
    assert "ResNet18 +GA" in md and "ResNet18" in md
    assert "data:image/png;base64," in html  # figures embedded: opens offline
