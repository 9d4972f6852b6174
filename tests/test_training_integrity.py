"""Nothing silently wrong: an incomplete search stops before selection, finished runs are checked
against the data, superseded final runs stay out of Table 2, unreadable resume state and failed
runs end with a clear error and a non-zero exit, 16-bit images are not white."""

import dataclasses
import json
import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medattn import cli
from medattn.analysis.study_summary import final_summary
from medattn.errors import DataError, IncompleteStudyError, StoreError
from medattn.runs import store
from medattn.training.backends import LocalBackend
from medattn.training.config import parse_config
from medattn.training.engine import Hooks, train
from medattn.training.study import run_study
from medattn.analysis.settings import CompareSettings


class Kill(BaseException):
    pass


@pytest.fixture(scope="module")
def derm(tiny_derm):
    return tiny_derm


TRAIN = {"epochs": 1, "batch_size": 16, "image_size": 32, "pretrained": False, "threads": 1}


def _config(derm, **over):
    raw = {"name": "t", "datasets": [{"data": derm[0], "ood": [derm[1]]}], "models": ["resnet18"],
           "search": {"lr": [0.01, 0.05], "weight_decay": [0.0], "splits": 1},
           "final": {"splits": 2}, "train": TRAIN}
    raw.update(over)
    return parse_config(raw)


def _quiet():
    return LocalBackend(progress=False)


def _copy_data(derm, dst):
    """A private copy of the data (a test may change it)."""
    isic, pad = (spec.split(":", 1)[1] for spec in derm)
    shutil.copytree(isic, dst / "isic")
    shutil.copytree(pad, dst / "pad")
    return f"isic:{dst / 'isic'}", f"pad-ufes-20:{dst / 'pad'}"


# ---------------------------------------------------------------------------------------------
# selection only on a complete search
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_failed_search_run_stops_the_study_before_selection(derm, tmp_path):
    cfg = _config(derm)

    def fail_lr_005(epoch, entry):
        if entry["lr"] == pytest.approx(0.05):
            raise RuntimeError("out of memory (simulated)")
    with pytest.raises(IncompleteStudyError, match=r"1 of 2 search run.*lr0\.05.*failed.*out of "
                                                   r"memory") as err:
        run_study(cfg, tmp_path, LocalBackend(progress=False, hooks=Hooks(fail_lr_005)))
    assert [r[1] for r in err.value.runs] == ["failed"]
    assert not (tmp_path / "selection.csv").exists()
    assert [r["phase"] for r in store.iter_records(tmp_path)] == ["search", "search"]

    # fixed, the same command completes: the failed run resumes, then selection and final runs
    res = run_study(cfg, tmp_path, _quiet())
    assert set(res.records["status"]) <= set(store.FINISHED) and len(res.records) == 4
    assert res.selection.loc[0, "n_runs"] == 1


def test_an_unreadable_search_resume_state_stops_the_study(derm, tmp_path, cli_error):
    cfg = _config(derm, train={**TRAIN, "epochs": 2})

    def kill(epoch, entry):
        raise Kill
    with pytest.raises(Kill):
        run_study(cfg, tmp_path, LocalBackend(progress=False, hooks=Hooks(kill)))
    resume = next((tmp_path / "runs").glob("*/resume.safetensors"))
    resume.write_bytes(resume.read_bytes()[:1000])  # truncated: a disk that filled up, a copy cut
    with pytest.raises(StoreError, match="resume state .* is unreadable.*--restart"):
        run_study(cfg, tmp_path, _quiet())
    assert not (tmp_path / "selection.csv").exists()


# ---------------------------------------------------------------------------------------------
# final runs carry their selection; superseded ones stay out of Table 2
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_final_runs_of_an_earlier_selection_are_superseded(derm, tmp_path, capsys):
    from medattn.analysis.compare import compare_runs

    cfg = _config(derm, models=["resnet18", "resnet18+ga"], final={"splits": 1})
    first = run_study(cfg, tmp_path, _quiet())
    old_final = set(first.records.query("phase == 'final'")["run_id"])
    chosen = dict(zip(first.selection["model"], first.selection["lr"]))
    for rid in old_final:
        rec = store.read_record(store.run_dir(tmp_path, rid))
        sel = rec["selection"]  # the selection a final run was trained under
        assert sel["lr"] == rec["lr"] == chosen[rec["model"]] and sel["source"] == "search"
        assert len(sel["search_runs"]) == 1 and sel["id"]

    # the search of resnet18 changes (as when a lost run finishes later): the other lr wins now
    for rec in store.iter_records(tmp_path):
        if (rec["phase"], rec["model"]) == ("search", "resnet18") and \
                rec["lr"] != chosen["resnet18"]:
            rec["metrics"]["val"]["balanced_accuracy"] = 1.0
            store.write_json(store.run_dir(tmp_path, rec["run_id"]) / "record.json", rec)
    second = run_study(cfg, tmp_path, _quiet())
    new_lr = second.selection.set_index("model").loc["resnet18", "lr"]
    assert new_lr != chosen["resnet18"]
    records = second.records
    stale = set(records.query("phase == 'final' and model == 'resnet18' and superseded")["run_id"])
    assert len(stale) == 1 and stale <= old_final
    assert not records.query("phase == 'final' and model == 'resnet18+ga'")["superseded"].any()
    # never 2: superseded runs are not averaged in; each model's one current run is counted as
    # what the store says it is (a 1-epoch run may end at chance: diverged, counted apart)
    current = records.query("phase == 'final' and not superseded")
    for row in final_summary(store.final_runs(tmp_path)).itertuples():
        status = list(current.loc[current["model"] == row.model, "status"])
        assert len(status) == 1
        assert (row.n, row.n_diverged) == (status.count("done"), status.count("diverged"))

    result = compare_runs(tmp_path, settings=CompareSettings(include_diverged=True))
    assert stale.isdisjoint(set(result.runs["run_id"]))
    assert len(result.runs.query("model == 'base'")["run_id"].unique()) == 1
    reasons = result.excluded.set_index("run_id").loc[sorted(stale), "reason"]
    assert all(r.startswith("superseded") and f"lr {new_lr:g}" in r for r in reasons)
    assert cli.main(["compare", str(tmp_path), "--include-diverged"]) == 0
    out = capsys.readouterr().out
    assert all(rid in out for rid in stale) and "superseded" in out


def test_compare_and_report_warn_when_one_table_mixes_data_versions(tmp_path, caplog):
    from medattn.analysis.compare import compare_runs
    from medattn.report.table2 import format_result
    from medattn.report import build_report

    for i, (variant, seed) in enumerate([(v, s) for v in ("base", "ga") for s in (0, 1)]):
        model = "resnet18" if variant == "base" else "resnet18+ga"
        store.write_record(tmp_path, {
            "run_id": f"r{i}", "status": "done", "phase": "final", "model": model,
            "backbone": "resnet18", "variant": variant, "dataset": "isic", "split_seed": seed,
            "lr": 0.01, "weight_decay": 0.0, "data_fingerprint": "aaaa" if seed == 0 else "bbbb",
            "metrics": {"test": {"balanced_accuracy": 0.6 + 0.01 * i}}})
    with caplog.at_level("WARNING"):
        result = compare_runs(tmp_path)
    assert len(result.warnings) == 1 and "2 different versions of the data" in result.warnings[0]
    assert "aaaa (2 runs)" in result.warnings[0] and "isic" in result.warnings[0]
    assert "different versions of the data" in caplog.text
    assert "### Warnings" in format_result(result, "md")
    html = build_report(tmp_path, parameters=False).html.read_text()
    assert "different versions of the data" in html


# ---------------------------------------------------------------------------------------------
# finished runs are checked against the data now on disk
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_changed_data_after_finished_runs_stops_with_what_changed(derm, tmp_path, cli_error):
    isic, pad = _copy_data(derm, tmp_path)
    cfg = _config((isic, pad), search={"lr": [0.01], "weight_decay": [0.0]}, final={"splits": 1})
    res = run_study(cfg, tmp_path / "runs", _quiet())
    rid = res.records["run_id"][0]
    meta = tmp_path / "isic" / "metadata.csv"
    table = pd.read_csv(meta, dtype=str, keep_default_na=False)
    table.iloc[30:].to_csv(meta, index=False, lineterminator="\r\n")  # 30 rows lost

    with pytest.raises(DataError, match=rf"1 finished run.*pool: 70 -> 40 images \(.*\).*{rid}"):
        run_study(cfg, tmp_path / "runs", _quiet())
    with pytest.raises(DataError, match=r"finished on other data.*pool: 70 -> 40 images"):
        train("resnet18", isic, ood=[pad], runs_dir=tmp_path / "runs", lr=0.01, progress=False,
              split_seed=res.records["split_seed"][0], **TRAIN)
    (tmp_path / "study.yaml").write_text(json.dumps(cfg.to_dict()))
    rc = cli.main(["study", str(tmp_path / "study.yaml"), "--out", str(tmp_path / "runs")])
    cli_error(rc, 2, "pool: 70 -> 40 images", rid)

    from medattn.data import load_task
    from medattn.training.fingerprint import data_change
    old = {k: v for k, v in store.read_record(store.run_dir(tmp_path / "runs", rid)).items()
           if k != "data_summary"}  # a record from before runs kept a summary of their data
    assert data_change(old, load_task(isic, [pad])).startswith(
        f"data fingerprint {old['data_fingerprint']} when trained, ")


@pytest.mark.slow
def test_a_run_is_not_resumed_on_changed_data_and_nothing_written_is_lost(derm, tmp_path,
                                                                          cli_error):
    from medattn.training.config import RunSpec, TrainSettings
    from medattn.training.engine import train_run

    isic, pad = _copy_data(derm, tmp_path)
    spec = RunSpec(phase="final", dataset="isic", data=isic, ood=(pad,), model="resnet18",
                   lr=0.01, weight_decay=0.0, split_seed=0,
                   train=TrainSettings(**{**TRAIN, "epochs": 2}))

    def kill(epoch, entry):
        raise Kill
    with pytest.raises(Kill):  # epoch 1 saved, then killed
        train_run(spec, tmp_path / "runs", hooks=Hooks(kill), progress=False)
    rdir = store.run_dir(tmp_path / "runs", spec.run_id)
    resume = (rdir / store.RESUME).read_bytes()
    meta = tmp_path / "isic" / "metadata.csv"
    original = meta.read_bytes()
    table = pd.read_csv(meta, dtype=str, keep_default_na=False)
    table.iloc[10:].to_csv(meta, index=False, lineterminator="\r\n")  # 10 images gone

    with pytest.raises(DataError, match=r"resume state was written for other data.*--restart"):
        train_run(spec, tmp_path / "runs", progress=False)
    args = ["train", "--model", "resnet18", "--data", isic, "--ood", pad, "--runs",
            str(tmp_path / "runs"), "--lr", "0.01", "--epochs", "2", "--batch-size", "16",
            "--image-size", "32", "--no-pretrained", "--threads", "1"]
    cli_error(cli.main(args), 2, str(rdir / store.RESUME), "other data", "--restart")
    study = _config((isic, pad), search={"lr": [0.01], "weight_decay": [0.0]},
                    final={"splits": 1}, train={**TRAIN, "epochs": 2})
    with pytest.raises(DataError, match="--restart"):  # a study stops on it too
        run_study(study, tmp_path / "runs", _quiet())
    assert (rdir / store.RESUME).read_bytes() == resume  # the epoch already trained is kept

    # the data restored, the run continues where it stopped
    meta.write_bytes(original)
    rec = train_run(spec, tmp_path / "runs", progress=False)
    assert rec["timings"]["sessions"] == 2 and [h["epoch"] for h in rec["history"]] == [1, 2]
    assert rec["status"] in store.FINISHED and not (rdir / store.RESUME).exists()

    # or, the change meant: --restart trains it afresh on the data there now
    with pytest.raises(Kill):
        train_run(dataclasses.replace(spec, lr=0.02), tmp_path / "runs", hooks=Hooks(kill),
                  progress=False)
    table.iloc[10:].to_csv(meta, index=False, lineterminator="\r\n")
    assert cli.main([*args[:10], "0.02", *args[11:], "--restart"]) == 0
    rec = store.read_record(store.run_dir(tmp_path / "runs", dataclasses.replace(spec, lr=0.02)
                                          .run_id))
    assert rec["timings"]["sessions"] == 1 and rec["data_summary"]["pool"]["images"] == 60


# ---------------------------------------------------------------------------------------------
# unreadable resume state, failed runs
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_truncated_resume_file_is_a_one_line_error_and_restart_fixes_it(derm, tmp_path,
                                                                           cli_error):
    from medattn.training.config import RunSpec, TrainSettings
    from medattn.training.engine import train_run

    spec = RunSpec(phase="final", dataset="isic", data=derm[0], ood=(derm[1],), model="resnet18",
                   lr=0.01, weight_decay=0.0, split_seed=0,
                   train=TrainSettings(**{**TRAIN, "epochs": 2}))

    def kill(epoch, entry):
        raise Kill
    with pytest.raises(Kill):
        train_run(spec, tmp_path, hooks=Hooks(kill), progress=False)
    resume = store.run_dir(tmp_path, spec.run_id) / "resume.safetensors"
    resume.write_bytes(resume.read_bytes()[: resume.stat().st_size // 2])
    args = ["train", "--model", "resnet18", "--data", derm[0], "--ood", derm[1], "--runs",
            str(tmp_path), "--lr", "0.01", "--epochs", "2", "--batch-size", "16",
            "--image-size", "32", "--no-pretrained", "--threads", "1"]
    for _ in range(2):  # the same answer every time, not a traceback
        cli_error(cli.main(args), 2, str(resume), "unreadable", "--restart")
    assert cli.main(args + ["--restart"]) == 0
    rec = store.read_record(store.run_dir(tmp_path, spec.run_id))
    assert rec["status"] in store.FINISHED and rec["timings"]["sessions"] == 1
    assert [h["epoch"] for h in rec["history"]] == [1, 2]


@pytest.mark.slow
def test_a_study_with_a_failed_final_run_exits_non_zero(derm, tmp_path, cli_error, monkeypatch):
    from medattn.training import engine

    original = engine._Run._finish

    def finish(self, *a, **kw):
        if self.spec.split_seed == 1:
            raise RuntimeError("CUDA error: an illegal memory access (simulated)")
        return original(self, *a, **kw)
    monkeypatch.setattr(engine._Run, "_finish", finish)
    cfg = _config(derm, search={"lr": [0.01], "weight_decay": [0.0]})
    (tmp_path / "study.yaml").write_text(json.dumps(cfg.to_dict()))
    rc = cli.main(["study", str(tmp_path / "study.yaml"), "--out", str(tmp_path / "runs")])
    line = cli_error(rc, 1, "1 of 2 final run(s) did not finish", "split1", "illegal memory")
    assert "run the study again" in line
    # the summary first, with the one finished run as the store has it
    (finished,) = [r for r in store.iter_records(tmp_path / "runs")
                   if r["status"] in store.FINISHED]
    assert f"runs: 1 {finished['status']}" in cli_error.out and "1 failed" in cli_error.out


# ---------------------------------------------------------------------------------------------
# 16-bit images
# ---------------------------------------------------------------------------------------------


def _gradient16(path, size=40):
    arr = np.tile(np.linspace(0, 65535, size).astype(np.uint16), (size, 1))
    Image.fromarray(arr).save(path)  # mode I;16 PNG
    return arr


def test_16_bit_greyscale_is_scaled_not_white(tmp_path):
    from medattn.data import ImageCache, read_image

    arr = _gradient16(tmp_path / "x.png")
    rgb = np.asarray(read_image(str(tmp_path / "x.png")))
    expect = np.round(arr / 257.0).astype(np.uint8)
    assert rgb.shape == (40, 40, 3) and (rgb == expect[..., None]).all()
    cached = ImageCache(tmp_path / "cache", short_side=40).get_array(str(tmp_path / "x.png"))
    assert (cached == expect[..., None]).all()
    Image.fromarray(np.ones((8, 8), np.float32)).save(tmp_path / "f.tif")
    with pytest.raises(DataError, match=r"f\.tif: 32-bit floating-point image"):
        read_image(str(tmp_path / "f.tif"))


def test_data_inspect_lists_unusual_modes(derm, tmp_path):
    from medattn.data.inspect import inspect_dataset

    isic, _ = _copy_data(derm, tmp_path)
    root = tmp_path / "isic"
    jpgs = sorted(root.glob("ISIC_*.jpg"))[:2]
    for jpg in jpgs:
        _gradient16(jpg.with_suffix(".png"))
        jpg.unlink()
    report = str(inspect_dataset(isic))
    assert "2 image(s) in mode I;16 (16-bit greyscale, scaled to 8 bits" in report
    assert jpgs[0].with_suffix(".png").name in report
