"""medattn demo, scaled down: every step runs, writes its outputs, and a second start resumes."""

import json

import pandas as pd

from medattn import demo
from medattn.training import store
from medattn.training.config import load_config


def test_demo_config_is_a_real_study():
    cfg = load_config("demo")
    assert {"resnet18", "resnet18+ga", "resnet18+ela"} <= set(cfg.models)
    assert cfg.final_splits >= 3 and len(cfg.search_lr) * len(cfg.search_weight_decay) > 1
    assert cfg.datasets[0].ood  # an OOD test set


def test_demo_runs_all_steps_and_resumes(tmp_path, monkeypatch):
    tiny = {"models": ["resnet18+ga"],
            "search": {"lr": [0.05, 0.01], "weight_decay": [0.0], "splits": 1},
            "final": {"splits": 2},
            "train": {"epochs": 1, "image_size": 32, "batch_size": 16, "threads": 1}}
    steps = [s for s in demo.STEPS if s[0] in ("data", "study", "summary")]
    monkeypatch.setattr(demo, "STEPS", steps)
    out = demo.run_demo(tmp_path / "d", progress=False, jobs=1, n_images=70, n_ood=16,
                        overrides=tiny)
    assert out == (tmp_path / "d").resolve()
    recs = store.load_records(out / "runs")
    assert len(recs) == 2 + 2 and set(recs["status"]) <= {"done", "diverged"}
    assert {"bacc_test", "bacc_ood-pad-ufes-20"} <= set(recs.columns)
    summary = pd.read_csv(out / "summary.csv")
    assert set(summary["model"]) == {"resnet18+ga"}
    assert set(summary["set"]) == {"test", "ood-pad-ufes-20"}
    assert (summary["n"] + summary["n_diverged"] + summary["n_failed"] == 2).all()
    assert "resnet18+ga" in (out / "summary.md").read_text()
    assert set(json.loads((out / "timings.json").read_text())) == {"data", "study", "summary",
                                                                    "total"}
    mtimes = sorted(p.stat().st_mtime_ns for p in (out / "runs" / "runs").glob("*/record.json"))
    demo.run_demo(out, progress=False, jobs=1, n_images=70, n_ood=16, overrides=tiny)
    assert sorted(p.stat().st_mtime_ns
                  for p in (out / "runs" / "runs").glob("*/record.json")) == mtimes
