"""The answer across data sets through the CLI and the report: a synthetic suite of 3 data sets
end to end (synth suite -> study -> compare -> report), several RUNS_DIRs merged, and what is
said when there is only one data set."""

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from medattn import cli
from medattn.analysis.compare import compare_runs
from medattn.analysis.across_study import merge_results
from medattn.errors import DataError
from tests.fake_study import write_fake_study
from medattn.analysis.settings import CompareSettings


def _main(args: list[str]) -> tuple[int, str]:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = cli.main(args)
    return rc, buf.getvalue()


def _stripe_accuracy(path) -> float:
    """Test accuracy of a fixed two-feature classifier (variance of the row means and of the
    column means: stripes one way or the other, a disk in between), nearest class centroid."""
    d = np.load(path)

    def feats(split):
        g = d[f"{split}_images"].mean(-1) / 255.0
        x = np.log(np.stack([g.mean(2).var(1), g.mean(1).var(1)], 1))
        return x, d[f"{split}_labels"].ravel()

    (xtr, ytr), (xte, yte) = feats("train"), feats("test")
    cent = np.stack([xtr[ytr == k].mean(0) for k in range(3)])
    return float((((xte[:, None] - cent[None]) ** 2).sum(-1).argmin(1) == yte).mean())


def test_synth_suite_writes_graded_data_sets_and_a_study_config(tmp_path):
    rc, out = _main(["synth", "suite", "--out", str(tmp_path), "--n", "300", "--size", "16"])
    assert rc == 0 and "suite.yaml" in out
    config = yaml.safe_load((tmp_path / "suite.yaml").read_text())
    names = [d["name"] for d in config["datasets"]]
    assert names == ["suite_easy", "suite_medium", "suite_hard"]
    d = np.load(tmp_path / "suite_easy.npz")
    assert d["train_images"].shape == (210, 16, 16, 3) and d["test_labels"].shape == (60, 1)
    # a fixed simple classifier does worse as the difficulty grows
    acc = [_stripe_accuracy(tmp_path / f"{n}.npz") for n in names]
    assert acc[0] > acc[1] > acc[2] and acc[0] - acc[2] > 0.1, acc
    rc, _ = _main(["synth", "suite", "--out", str(tmp_path), "--n", "300"])
    assert rc == 2  # exists, no --overwrite


def _fake(root, name, seed):
    write_fake_study(root, seed=seed)
    for rec in (root / "runs").glob("*/record.json"):
        r = json.loads(rec.read_text())
        r["dataset"] = name
        rec.write_text(json.dumps(r))
    for f in ("study.yaml", "selection.csv"):
        (root / f).write_text((root / f).read_text().replace("name: isic", f"name: {name}")
                              .replace("isic,", f"{name},"))
    return root


@pytest.mark.slow
def test_several_runs_dirs_merge_and_one_data_set_says_why(tmp_path):
    a, b = _fake(tmp_path / "a", "derm_a", 0), _fake(tmp_path / "b", "derm_b", 1)
    rc, out = _main(["compare", str(a), str(b), "--bootstrap", "0"])
    assert rc == 0 and "## Across data sets" in out
    assert "| derm_a | derm_b |" in out.split("## Across data sets")[1]
    assert "ResNet18 +GA cannot yet be told from ResNet18 base on a new data set" in out
    assert "it needs D >= 6" in out
    rc, one = _main(["compare", str(a), "--bootstrap", "0"])
    assert rc == 0 and "Across data sets" not in one  # auto: one data set, no section
    rc, one = _main(["compare", str(a), "--bootstrap", "0", "--across"])
    assert "Not computed: the answer across data sets needs >= 2 data sets; these runs hold 1 " \
           "(derm_a)" in one
    rc, none = _main(["compare", str(a), str(b), "--bootstrap", "0", "--no-across"])
    assert "Across data sets" not in none
    res = compare_runs(a, settings=CompareSettings(bootstrap=0))
    with pytest.raises(DataError, match="'derm_a' is in RUNS_DIR number 1 and 2"):
        merge_results([res, res])


@pytest.mark.slow
def test_suite_end_to_end_study_compare_and_report(tmp_path):
    data, runs = tmp_path / "data", tmp_path / "runs"
    assert _main(["synth", "suite", "--out", str(data), "--n", "90", "--size", "16"])[0] == 0
    config = yaml.safe_load((data / "suite.yaml").read_text())
    config["final"]["splits"] = 2
    config["train"].update(epochs=2, batch_size=16)
    (data / "small.yaml").write_text(yaml.safe_dump(config))
    rc, _ = _main(["study", str(data / "small.yaml"), "--out", str(runs)])
    assert rc == 0
    rc, out = _main(["compare", str(runs), "--bootstrap", "0"])
    assert rc == 0
    across = out.split("## Across data sets")[1]
    for name in ("suite_easy", "suite_medium", "suite_hard"):
        assert name in across.splitlines()[2]  # the table's header
    for variant in ("+GA", "+ELA"):
        assert f"- ResNet18 {variant} " in across and "on a new data set (P(worse" in across
    assert "Friedman test over 3 models on 3 data sets" in across
    rc, _ = _main(["report", str(runs), "--bootstrap", "0"])
    assert rc == 0
    md = (runs / "report" / "report.md").read_text()
    section = md.split("## Across data sets")[1].split("\n## ")[0]
    assert "on a new data set (P(worse" in section
    figs = sorted(p.name for p in (runs / "report" / "figures").glob("*.png"))
    assert sum(f.startswith("forest") for f in figs) == 2 and "cd_diagram.png" in figs
    html = (runs / "report" / "report.html").read_text()
    assert "Across data sets" in html and "data:image/png;base64" in html


@pytest.mark.parametrize("size, suffix", [(28, ""), (64, "_64")])
def test_medmnist_plus_configs_hold_the_eleven_multiclass_flags_at_one_size(size, suffix):
    from medattn.data import labels as L
    from medattn.data.medmnist import medmnist_flag
    from medattn.training.config import load_config

    cfg = load_config(f"medmnist_plus_{size}")
    files = [d.data.split(":", 1)[1] for d in cfg.datasets]
    flags = [medmnist_flag(Path(f)) for f in files]
    assert flags == [d.name for d in cfg.datasets]
    assert set(flags) == {"pathmnist", "dermamnist", "octmnist", "pneumoniamnist", "retinamnist",
                          "breastmnist", "bloodmnist", "tissuemnist", "organamnist",
                          "organcmnist", "organsmnist"}
    assert files == [f"{fl}{suffix}.npz" for fl in flags]
    assert not set(flags) & L.MEDMNIST_MULTILABEL
    assert all(fl in L.MEDMNIST_CLASSES or fl == "dermamnist" for fl in flags)
    assert len(cfg.models) == 14 and cfg.final_splits == 10 and cfg.train.split == "random"
