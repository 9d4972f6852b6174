"""`medattn study --until-decided`: batches, per-model stopping, the state file, and resume.

Most tests drive the real loop (run_study -> backend -> compare -> rule) with a backend that
writes records of planted accuracies instead of training (seconds); one trains real tiny runs
and interrupts one mid-batch.
"""

import json
import zlib
from pathlib import Path

import numpy as np
import pytest

from medattn.analysis import sequential as seq
from medattn.analysis.compare import compare_runs
from medattn.errors import ConfigError
from medattn.models import parse_model_name
from medattn.sequential_study import run_until_decided
from medattn.runs import store
from medattn.training.backends import LocalBackend
from medattn.training.config import parse_config
from medattn.training.engine import Hooks
from medattn.analysis.settings import CompareSettings
from medattn.analysis.settings import SequentialSettings


class Kill(BaseException):
    pass


class Planted:
    """A backend whose runs score ``mean[model] + pool + noise`` (pp) without training; the noise
    depends only on (model, split seed), so a resumed study sees the same values. ``kill_after``:
    raise after writing that many runs (an interrupted batch)."""

    progress = False

    def __init__(self, means: dict, sd: float = 1.0, kill_after: int | None = None):
        self.means, self.sd, self.kill_after, self.trained = means, sd, kill_after, []

    def run(self, specs, runs_dir, *, restart=False, on_record=None):
        out = []
        for spec in specs:
            rec = store.read_record(store.run_dir(runs_dir, spec.run_id))
            if rec is None or rec.get("status") not in store.FINISHED:
                if self.kill_after is not None and len(self.trained) == self.kill_after:
                    raise Kill
                rec = self._record(spec)
                store.write_json(store.run_dir(runs_dir, spec.run_id) / "record.json", rec)
                self.trained.append(spec.run_id)
            out.append(rec)
        return out

    def _record(self, spec) -> dict:
        rng = np.random.default_rng([zlib.crc32(spec.model.encode()), spec.split_seed])
        split = np.random.default_rng(spec.split_seed).normal(0, 2.0)  # shared by all models
        bacc = (self.means[spec.model] + split + rng.normal(0, self.sd)) / 100
        m = parse_model_name(spec.model)
        return {"run_id": spec.run_id, "status": "done", "phase": spec.phase,
                "model": spec.model, "backbone": m.backbone, "variant": m.variant,
                "dataset": spec.dataset, "data": spec.data, "classes": ["a", "b", "c"],
                "split_seed": spec.split_seed, "lr": spec.lr, "weight_decay": spec.weight_decay,
                "metrics": {"val": {"balanced_accuracy": 0.7}, "test": {"balanced_accuracy": bacc}},
                "split": {"kind": "random", "n_train": 700, "n_val": 100, "n_test": 200},
                "selection": spec.selection, "history": [], "config": {}, "message": ""}


def _config(models, splits=12, data="isic:/nowhere/isic"):
    return parse_config({"name": "seq", "datasets": [{"name": "isic", "data": data}],
                         "models": list(models),
                         "hparams": {m: {"lr": 0.01, "weight_decay": 0.0} for m in models},
                         "final": {"splits": splits}})


def _finals(runs_dir, model):
    return sorted(r["split_seed"] for r in store.iter_records(runs_dir)
                  if r["model"] == model and r["phase"] == "final")


def test_a_large_planted_effect_stops_early_and_the_base_waits_for_undecided_variants(tmp_path):
    means = {"resnet18": 80.0, "resnet18+ga": 68.0, "resnet18+ela": 80.0}
    cfg = _config(means)
    res = run_until_decided(cfg, tmp_path, Planted(means, sd=3.0), settings=SequentialSettings(batch=3, max_splits=12))
    stops = res.models.set_index("model")
    comps = res.comparisons.set_index("key")
    ga = comps.loc[[k for k in comps.index if "+GA vs" in k][0]]
    ela = comps.loc[[k for k in comps.index if "+ELA vs" in k][0]]
    assert ga["decision"] == "worse" and ga["batch"] < 4
    assert stops.loc["resnet18+ga", "n_splits"] < 12
    assert _finals(tmp_path, "resnet18+ga") == list(range(stops.loc["resnet18+ga", "n_splits"]))
    assert stops.loc["resnet18+ga", "reason"] == "every comparison decided"
    # the null variant is not worse or better; the base trains as long as it is open
    assert ela["decision"] in ("undecided", "equivalent")
    assert stops.loc["resnet18", "n_splits"] == stops.loc["resnet18+ela", "n_splits"]
    assert len(_finals(tmp_path, "resnet18")) == stops.loc["resnet18", "n_splits"]
    # the decision interval is the repeated CI: wider than the fixed-design CI
    assert ga["rci_low"] <= ga["diff"] <= ga["rci_high"] and ga["rci_high"] < -1.0
    state = json.loads((tmp_path / seq.STATE_FILE).read_text())
    assert state["active"] == [] and state["batch"] == 3 and state["max_splits"] == 12
    assert oct((tmp_path / seq.STATE_FILE).stat().st_mode & 0o777) == "0o644"
    # Table 2 of a sequential study says so
    notes = compare_runs(tmp_path, settings=CompareSettings(bootstrap=0)).notes
    assert notes[0].startswith("sequential design") and "optimistic" in notes[0]
    assert any(n.startswith("sequential: ") and "isic id: ResNet18 +GA vs ResNet18 base: worse at batch "
               f"{ga['batch']}" in n and "repeated CI" in n for n in notes)
    (tmp_path / seq.STATE_FILE).unlink()  # a fixed design: no such note
    assert not any("sequential" in n for n in compare_runs(tmp_path, settings=CompareSettings(bootstrap=0)).notes)


def test_two_clearly_different_models_both_stop_at_the_first_look_that_decides(tmp_path):
    means = {"resnet18": 80.0, "resnet18+ga": 60.0}
    res = run_until_decided(_config(means), tmp_path, Planted(means, sd=0.5),
                            settings=SequentialSettings(batch=3, max_splits=12))
    assert set(res.models["stopped_batch"]) == {1}
    assert res.comparisons["decision"].tolist() == ["worse"]
    assert len(_finals(tmp_path, "resnet18")) == len(_finals(tmp_path, "resnet18+ga")) == 3


@pytest.mark.slow
@pytest.mark.parametrize("kill_after, batches_done", [(13, 1), (18, 2)])  # 9 runs a batch:
def test_an_interrupted_sequential_study_resumes_to_the_same_decisions(tmp_path, kill_after,
                                                                        batches_done):
    # killed mid-batch 2, or at the boundary (batch 2 recorded, batch 3 not started)
    means = {"resnet18": 80.0, "resnet18+ga": 75.0, "resnet18+ela": 80.5}
    cfg = _config(means, splits=9)
    whole = run_until_decided(cfg, tmp_path / "whole", Planted(means, sd=1.5), settings=SequentialSettings(batch=3))
    with pytest.raises(Kill):
        run_until_decided(cfg, tmp_path / "cut", Planted(means, sd=1.5, kill_after=kill_after),
                          settings=SequentialSettings(batch=3))
    state = json.loads((tmp_path / "cut" / seq.STATE_FILE).read_text())
    # +GA is decided (worse) at batch 2 and stops there; the others go on
    assert state["batches_done"] == batches_done
    assert len(state["active"]) == {1: 3, 2: 2}[batches_done]
    resumed = Planted(means, sd=1.5)
    again = run_until_decided(cfg, tmp_path / "cut", resumed, settings=SequentialSettings(batch=3))
    assert len(resumed.trained) == sum(len(_finals(tmp_path / "whole", m)) for m in means) \
        - kill_after  # nothing trained twice
    a = json.loads((tmp_path / "whole" / seq.STATE_FILE).read_text())
    b = json.loads((tmp_path / "cut" / seq.STATE_FILE).read_text())
    assert a == b
    assert [c["decision"] for c in a["comparisons"].values()] == ["worse", "undecided"]
    assert a["models"]["isic/resnet18+ga"]["stopped_batch"] == 2
    assert again.models.equals(whole.models)
    # other settings on the same folder are refused, naming the arguments
    with pytest.raises(ConfigError, match="same batch, max_splits and margin"):
        run_until_decided(cfg, tmp_path / "cut", Planted(means), settings=SequentialSettings(batch=2))


def test_bad_settings_are_refused_naming_the_argument_to_fix(tmp_path):
    cfg = _config({"resnet18": 1.0, "resnet18+ga": 1.0})
    with pytest.raises(ConfigError, match="^max_splits must be >= 3"):
        run_until_decided(cfg, tmp_path, Planted({}),
                          settings=SequentialSettings(batch=1, max_splits=2))
    with pytest.raises(ConfigError, match="^batch must be a whole number >= 1"):
        SequentialSettings(batch=0)


REAL = {"name": "seqreal", "models": ["resnet18", "resnet18+ga"],
        "hparams": {m: {"lr": 0.05, "weight_decay": 0.0} for m in ("resnet18", "resnet18+ga")},
        "final": {"splits": 3},
        "train": {"epochs": 2, "batch_size": 16, "image_size": 32, "pretrained": False,
                  "threads": 1, "augment": "light"}}


@pytest.fixture(scope="module")
def real_whole(learnable_derm, tmp_path_factory):
    """An uninterrupted tiny sequential study with real training (batches of 1, 3 splits)."""
    cfg = parse_config({**REAL, "datasets": [{"data": learnable_derm[0]}]})
    out = tmp_path_factory.mktemp("whole")
    res = run_until_decided(cfg, out, LocalBackend(progress=False), settings=SequentialSettings(batch=1))
    return cfg, res, json.loads((out / seq.STATE_FILE).read_text())


def _same_ending(cut, whole_state, whole):
    b = json.loads((cut / seq.STATE_FILE).read_text())
    assert b["comparisons"] == whole_state["comparisons"] and b["models"] == whole_state["models"]
    assert whole.comparisons["n"].tolist() == [3]


@pytest.mark.slow
def test_real_training_interrupted_mid_batch_resumes_to_the_uninterrupted_decisions(
        real_whole, tmp_path):
    cfg, whole, state = real_whole
    seen = []

    def kill_in_batch_three(epoch, entry):
        seen.append(epoch)
        if len(seen) == 9:  # batches 1-2: 4 runs x 2 epochs; then epoch 1 of run 5
            raise Kill
    with pytest.raises(Kill):
        run_until_decided(cfg, tmp_path, LocalBackend(progress=False,
                                                      hooks=Hooks(kill_in_batch_three)),
                          settings=SequentialSettings(batch=1))
    statuses = sorted(r["status"] for r in store.iter_records(tmp_path))
    assert statuses.count("running") == 1 and len(statuses) == 5
    seen.clear()
    backend = LocalBackend(progress=False, hooks=Hooks(lambda e, _: seen.append(e)))
    run_until_decided(cfg, tmp_path, backend, settings=SequentialSettings(batch=1))
    assert seen == [2, 1, 2]  # the interrupted run resumed at epoch 2, then the last run
    _same_ending(tmp_path, state, whole)


@pytest.mark.slow
def test_a_sequential_study_killed_with_sigkill_mid_batch_resumes_to_the_same_decisions(
        real_whole, learnable_derm, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    import yaml

    cfg, whole, state = real_whole
    path = tmp_path / "seq.yaml"
    path.write_text(yaml.safe_dump({**REAL, "datasets": [{"data": learnable_derm[0]}]}))
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": src, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "medattn.cli", "study", str(path), "--out",
                             str(tmp_path / "cut"), "--until-decided", "--batch", "1",
                             "--device", "cpu"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:  # kill it once a run of batch 3 (split seed 2) has started
        deadline = time.monotonic() + 300
        while not any(r.get("split_seed") == 2 for r in store.iter_records(tmp_path / "cut")):
            assert proc.poll() is None and time.monotonic() < deadline, "never reached batch 3"
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    before = json.loads((tmp_path / "cut" / seq.STATE_FILE).read_text())
    assert before["batches_done"] == 2 and before["active"]
    assert any(r["status"] == "running" for r in store.iter_records(tmp_path / "cut"))
    run_until_decided(cfg, tmp_path / "cut", LocalBackend(progress=False), settings=SequentialSettings(batch=1))
    _same_ending(tmp_path / "cut", state, whole)


def test_cli_runs_until_decided_and_prints_where_each_model_stopped(tmp_path, monkeypatch, capsys,
                                                                     cli_error):
    import yaml

    from medattn.cli import main
    from medattn.training import backends

    means = {"resnet18": 80.0, "resnet18+ga": 60.0}
    # the backend the CLI names ("local") is made by get_backend, through resolve_backend
    monkeypatch.setattr(backends, "get_backend", lambda name, **kw: Planted(means, sd=0.5))
    cfg = tmp_path / "seq.yaml"
    cfg.write_text(yaml.safe_dump(_config(means).to_dict()))
    rc = main(["study", str(cfg), "--out", str(tmp_path / "runs"), "--until-decided",
               "--batch", "3", "--max-splits", "9"])
    out = capsys.readouterr().out
    assert rc in (0, None)
    assert "every comparison decided" in out and "worse" in out and "sequential.json" in out
    cli_error(main(["study", str(cfg), "--out", str(tmp_path / "r2"), "--batch", "2"]), 2,
              "--until-decided")


@pytest.mark.slow
def test_the_report_does_not_list_the_splits_a_stopped_model_skipped_as_missing(tmp_path):
    import yaml

    from medattn.report import build_report

    means = {"resnet18": 80.0, "resnet18+ga": 60.0}
    cfg = _config(means)
    run_until_decided(cfg, tmp_path, Planted(means, sd=0.5), settings=SequentialSettings(batch=3, max_splits=12))
    assert yaml.safe_load((tmp_path / "study.yaml").read_text())["final"]["splits"] == 12
    html = build_report(tmp_path).html.read_text()
    assert "No runs are missing" in html
    assert "sequential design (stop when decided" in html
    assert "--until-decided --batch 3 --max-splits 12 --margin 1.0" in html  # to reproduce


def test_max_splits_above_the_configs_final_splits_trains_that_many(tmp_path):
    # Bug report: --max-splits N never trained past the config's final.splits, while
    # sequential.json said N splits and "max splits reached".
    means = {"resnet18": 80.0, "resnet18+ga": 80.0}  # equal: stays open, so every batch trains
    res = run_until_decided(_config(means, splits=2), tmp_path, Planted(means, sd=3.0),
                            settings=SequentialSettings(batch=3, max_splits=6))
    with pytest.raises(TypeError, match="batch, max_splits"):  # not silently dropped
        run_until_decided(_config(means), tmp_path, Planted(means), batch=3, max_splits=6)
    # run_study shares the rule (training.backends.resolve_backend)
    from medattn.training.study import run_study
    with pytest.raises(TypeError, match=r"run_study\(\) got device"):
        run_study(_config(means), tmp_path / "fixed", Planted(means), device="cuda")
    assert _finals(tmp_path, "resnet18") == _finals(tmp_path, "resnet18+ga") == list(range(6))
    assert set(res.models["n_splits"]) == {6}
    assert res.comparisons["n"].tolist() == [6]
