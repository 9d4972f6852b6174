"""``--pretrained PATH|timm``: a local weight file starts the run, the run id follows the file's
content, and a user error before the first epoch leaves no `failed` run behind."""

import json
import shutil

import pytest
import timm
import torch
from safetensors.torch import load_file, save_file

from medattn.cli import main
from medattn.errors import ConfigError
from medattn.runs import store
from medattn.training.config import RunSpec, TrainSettings, load_config, parse_pretrained

TINY = ["--epochs", "1", "--image-size", "32", "--batch-size", "16", "--threads", "1",
        "--no-cache"]


@pytest.fixture(scope="module")
def weight_file(tmp_path_factory):
    """A timm-format resnet18 file, as downloaded from huggingface.co/timm (random weights)."""
    torch.manual_seed(123)
    path = tmp_path_factory.mktemp("weights") / "model.safetensors"
    save_file({k: v.contiguous() for k, v in timm.create_model("resnet18").state_dict().items()},
              str(path))
    return path


def _run_dirs(runs):
    return [d for d in (runs / "runs").iterdir() if d.is_dir()] if (runs / "runs").exists() else []


@pytest.mark.slow
def test_train_starts_from_a_local_weight_file(tiny_derm, weight_file, tmp_path, one_thread):
    isic, _ = tiny_derm
    runs = tmp_path / "runs"
    # a learning rate so small that the trained conv weights stay those the run started from
    args = ["train", "--model", "resnet18", "--data", isic, "--runs", str(runs), "--lr", "1e-12",
            *TINY]
    assert main([*args, "--pretrained", str(weight_file)]) == 0
    assert main([*args, "--no-pretrained"]) == 0
    records = {r["config"]["train"]["pretrained"]: r for r in store.iter_records(runs)}
    assert set(records) == {str(weight_file), False}
    start = load_file(str(weight_file))["conv1.weight"]
    for setting, rec in records.items():
        trained = load_file(str(store.run_dir(runs, rec["run_id"]) / "model.safetensors"))
        conv1 = next(v for k, v in trained.items() if k.endswith("conv1.weight") and
                     v.shape == start.shape)
        assert torch.allclose(conv1, start, atol=1e-6) == (setting is not False), setting


def test_run_ids_follow_the_weight_files_content(weight_file, tmp_path):
    def run_id(pretrained):
        return RunSpec(phase="final", dataset="isic", data="isic:/x", model="resnet18", lr=0.1,
                       weight_decay=0.0, split_seed=0,
                       train=TrainSettings(pretrained=pretrained)).run_id

    moved = tmp_path / "elsewhere.safetensors"
    shutil.copy(weight_file, moved)
    assert run_id(str(moved)) == run_id(str(weight_file))  # moving the file keeps the results
    assert run_id(str(weight_file)) not in (run_id(True), run_id(False))
    other = load_file(str(weight_file))
    other["fc.bias"] = other["fc.bias"] + 1
    save_file(other, str(moved))
    assert run_id(str(moved)) != run_id(str(weight_file))


def test_pretrained_values_and_study_override(weight_file, tmp_path, monkeypatch):
    assert parse_pretrained("timm", "--pretrained") is True
    assert parse_pretrained(False, "x") is False
    monkeypatch.chdir(weight_file.parent)
    assert parse_pretrained(weight_file.name, "x") == str(weight_file)  # made absolute
    with pytest.raises(ConfigError, match="--pretrained: no weight file 'nope.safetensors'"):
        parse_pretrained("nope.safetensors", "--pretrained")
    cfg = load_config("demo", overrides={"train": {"pretrained": str(weight_file)}})
    assert cfg.train.pretrained == str(weight_file)
    with pytest.raises(ConfigError, match="`train.pretrained`"):
        load_config("demo", overrides={"train": {"pretrained": 3}})


def test_a_missing_weight_file_is_named_and_leaves_no_run(tiny_derm, tmp_path, cli_error):
    isic, _ = tiny_derm
    runs = tmp_path / "runs"
    rc = main(["train", "--model", "resnet18", "--data", isic, "--runs", str(runs),
               "--pretrained", str(tmp_path / "missing.safetensors"), *TINY])
    cli_error(rc, 2, "--pretrained", "missing.safetensors")
    assert list(store.iter_records(runs)) == []


def test_offline_timm_weights_fail_with_a_flag_that_exists_and_no_failed_record(
        tiny_derm, tmp_path, monkeypatch, cli_error):
    """The reported bug: offline, `medattn train` named a missing flag and left a failed run."""
    import huggingface_hub.constants as hf

    monkeypatch.setattr(hf, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hf, "HF_HUB_CACHE", str(tmp_path / "empty-hf-cache"))
    isic, _ = tiny_derm
    runs = tmp_path / "runs"
    for _ in range(2):  # the same command again: still nothing left behind
        rc = main(["train", "--model", "resnet18", "--data", isic, "--runs", str(runs), *TINY])
        line = cli_error(rc, 2, "--pretrained PATH")
        assert "no pretrained weights" in line
        assert list(store.iter_records(runs)) == []
    # the flag it names is one the parser accepts (it then fails only on the missing file)
    rc = main(["train", "--model", "resnet18", "--data", isic, "--runs", str(runs),
               "--pretrained", "PATH", *TINY])
    cli_error(rc, 2, "--pretrained: no weight file 'PATH'")


def test_an_error_after_an_epoch_is_still_recorded_as_failed(tiny_derm, tmp_path, monkeypatch):
    """Only user errors before any finished epoch leave no record; later ones are `failed`."""
    from medattn.errors import DataError
    from medattn.training import engine

    isic, _ = tiny_derm

    def fail_on_finish(self, *a, **k):
        raise DataError("the data vanished")
    monkeypatch.setattr(engine._Run, "_finish", fail_on_finish)
    with pytest.raises(DataError):
        engine.train("resnet18", isic, runs_dir=tmp_path, epochs=1, image_size=32,
                     batch_size=16, threads=1, pretrained=False, cache=False, progress=False)
    (rec,) = store.iter_records(tmp_path)
    assert rec["status"] == "failed" and "the data vanished" in rec["message"]
    assert json.loads(json.dumps(rec["history"]))[0]["epoch"] == 1
