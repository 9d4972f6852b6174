"""medattn demo, scaled down: every step runs, the hand-over prints Table 2 and paths that the
commands it suggests accept, and a second start resumes."""

import json
import re
import shlex
from pathlib import Path

import pandas as pd
import pytest

from medattn import demo
from medattn.analysis.compare import compare_runs
from medattn.cli import main
from medattn.runs import store
from medattn.training.config import load_config

# 4 two-epoch runs (no search: a one-point grid) of a base and a variant, so Table 2 has a
# comparison; tiny images, just enough of them for every run to learn above chance. Two epochs on
# 84 training images are at the edge of learning at all (the fine diagnoses spread the classes'
# cues): the test plants the patch on nevi only (PATCH_BIAS 1.0 below) and uses split seeds and one
# thread on which all four runs leave chance level, so that "done" is asserted, never "diverged".
TINY = demo.DemoSize(120, 16, {"models": ["resnet18", "resnet18+ga"],
                               "search": {"lr": [0.05], "weight_decay": [0.0001]},
                               "final": {"splits": 2, "first_seed": 3},
                               "train": {"epochs": 2, "image_size": 32, "batch_size": 16,
                                         "threads": 1}},
                     n_mean=16)


def test_demo_config_is_a_real_study():
    cfg = load_config("demo")
    assert {"resnet18", "resnet18+ga", "resnet18+ela"} <= set(cfg.models)
    assert len(cfg.final_units()) >= 3 and len(cfg.search_lr) * len(cfg.search_weight_decay) > 1
    assert cfg.datasets[0].ood  # an OOD test set
    # a design whose test is calibrated (the one the plan chose on the pilot: 5-fold x 1)
    from medattn.kfold_designs import KFOLD_DESIGNS
    assert cfg.final_scheme == "random" or (cfg.final_folds, cfg.final_splits) in KFOLD_DESIGNS
    assert demo.PLAN_SETTINGS.margin == 1.0 and demo.PLAN_SETTINGS.threshold == 0.95
    quick = load_config("demo", overrides=demo.SIZES["quick"].overrides)  # a valid config too
    assert {"resnet18", "resnet18+ga"} <= set(quick.models) and quick.final_splits >= 2


def _section(text: str, title: str) -> list[str]:
    """The indented lines under a line starting with ``title``."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(title))
    out = []
    for line in lines[start + 1:]:
        if not line.startswith("  "):
            break
        out.append(line.strip())
    return out


@pytest.mark.slow
def test_demo_hands_over_paths_that_its_commands_accept(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # paths print relative to the working directory, as typed
    monkeypatch.setitem(demo.SIZES, "quick", TINY)
    monkeypatch.setattr(demo, "PATCH_BIAS", 1.0)
    assert main(["demo", "--quick", "--jobs", "1", "--out", "medattn-demo"]) == 0
    text = capsys.readouterr().out
    handover = text[text.rindex("medattn demo finished"):]
    out = tmp_path / "medattn-demo"
    runs = out / "runs"

    # every path printed exists, none is the store's inner runs/ folder (not a command's input)
    printed = re.findall(r"(?:^|[\s:])(medattn-demo\S*)", handover)
    assert printed and "medattn-demo/runs/runs" not in handover
    for p in printed:
        assert Path(p).exists(), p

    # Table 2 itself, in brief: every model and set, with the numbers of compare's table
    table = compare_runs(runs).table
    assert len(table) == 4
    for r in table.itertuples():
        label = "ResNet18 Base" if r.model == "base" else "ResNet18 +GA"
        row = next(line for line in handover.splitlines()
                   if re.match(rf"isic\s+{re.escape(r.set)}\s+{re.escape(label)}\s", line))
        assert f"{r.mean:.1f} ± {r.sd:.1f}" in row
        if r.model == "ga":
            assert f"{r.diff:+.1f} [{r.diff_ci_low:+.1f}, {r.diff_ci_high:+.1f}]" in row

    # the results: files to open
    results = {k: v.strip() for k, v in (line.split(": ", 1) for line in
                                         _section(handover, "Results:")
                                         if ": " in line and not line.startswith("("))}
    assert set(results) == {"summary", "Table 3", "Table 4", "report", "plan"}
    assert Path(results["report"]).read_text().lstrip().lower().startswith("<!doctype html")
    assert Path(results["Table 4"]).read_bytes()[:4] == b"\x89PNG"
    assert "resnet18+ga" in Path(results["summary"]).read_text()

    # the design check: `medattn plan` on these runs, for the design that ran (2 random splits)
    plan = json.loads(Path(results["plan"]).read_text())
    assert plan["settings"]["margin"] == 1.0 and plan["settings"]["threshold"] == 0.95
    check = _section(handover, "Design check")
    assert len(check) == len(plan["pilots"]) == 2  # +GA vs base, in-distribution and OOD
    assert all("random J=2 decides right with P = " in line for line in check)

    # the next commands, run exactly as printed
    commands = [line.split("  #")[0].strip() for line in _section(handover, "Next:")]
    assert {c.split()[1] for c in commands} >= {"compare", "report", "features", "explain",
                                                "study", "data", "plan"}
    mtimes = {p: p.stat().st_mtime_ns for p in (runs / "runs").glob("*/record.json")}
    for command in commands:
        args = shlex.split(command)
        assert args[0] == "medattn"
        assert main(args[1:]) == 0, command
        said = capsys.readouterr().out
        if args[1] == "compare":
            assert "Table 2" in said and "ResNet18 +GA" in said
    # the study command found every run finished and trained nothing
    assert {p: p.stat().st_mtime_ns for p in (runs / "runs").glob("*/record.json")} == mtimes

    recs = store.load_records(runs)
    assert len(recs) == 4 and set(recs["status"]) == {"done"}
    assert {"bacc_test", "bacc_ood-pad-ufes-20"} <= set(recs.columns)
    summary = pd.read_csv(out / "summary.csv")
    assert set(summary["model"]) == {"resnet18", "resnet18+ga"}
    assert set(summary["set"]) == {"test", "ood-pad-ufes-20"}
    assert (summary["n"] == 2).all()
    assert set(json.loads((out / "timings.json").read_text())) == {
        name for name, _ in demo.STEPS} | {"total"}

    # a second start resumes: no run is trained again, the hand-over is the same
    assert main(["demo", "--quick", "--jobs", "1", "--out", "medattn-demo"]) == 0
    again = capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in (runs / "runs").glob("*/record.json")} == mtimes
    strip = re.compile(r"finished in \d+ s")
    assert strip.sub("", again[again.rindex("medattn demo finished"):]) == strip.sub("", handover)


def test_demo_refuses_an_unknown_size(tmp_path):
    from medattn.errors import ConfigError
    with pytest.raises(ConfigError, match="quick"):
        demo.run_demo(tmp_path, size="huge")
