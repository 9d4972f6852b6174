"""Console output: progress bars as plain lines where stderr is not a terminal, quiet mode, and
warnings shown once, before the work and its bars."""

import io
import logging
import os
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest
from tqdm import tqdm

from medattn import progress
from medattn.progress import LineBar, progress_bar, set_quiet, setup_console, warn_once

ESCAPES = ("\r", "\x1b")


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_bars_write_plain_periodic_lines_to_a_file():
    out = io.StringIO()  # not a terminal: a log file or a pipe
    outer = progress_bar(total=3, desc="runs", unit="run", file=out, mininterval=0)
    for epoch in range(3):  # a nested bar, as the epoch bar inside a study
        inner = progress_bar(total=4, desc=f"epoch {epoch + 1}/3", leave=False, file=out,
                             mininterval=0)
        for _ in range(4):
            inner.update()
            inner.set_postfix(loss="0.5")
        inner.close()
        outer.update()
    outer.close()
    text = out.getvalue()
    assert not any(e in text for e in ESCAPES)
    lines = text.splitlines()
    assert all(line.strip() for line in lines)  # no blank lines either
    assert lines.count("runs: 3/3 (100%)" + lines[-1][len("runs: 3/3 (100%)"):]) == 1
    assert lines[-1].startswith("runs: 3/3 (100%) [")
    assert sum(line.startswith("epoch 2/3: 4/4 (100%)") for line in lines) == 1
    assert any("loss=0.5" in line for line in lines)
    assert len(lines) == 3 * 4 + 3  # one line per step of each bar, none at zero


def test_bar_lines_are_periodic():
    out = io.StringIO()
    bar = progress_bar(total=1000, desc="slow", file=out, mininterval=0.2)
    for _ in range(1000):
        bar.update()
        time.sleep(0.001)
    bar.close()
    lines = out.getvalue().splitlines()
    # ~1.1 s of work at most every 0.2 s, plus the last line: a handful, not 1000
    assert 2 <= len(lines) <= 9 and lines[-1].startswith("slow: 1000/1000 (100%)")
    # a bar that is not kept (leave=False) and ends before its first line writes nothing, even
    # with a postfix set on every step (set_postfix refreshes the bar each time)
    quiet_out = io.StringIO()
    with progress_bar(total=50, desc="epoch", leave=False, file=quiet_out) as b:
        for _ in range(50):
            b.update()
            b.set_postfix(loss="0.5")
    assert quiet_out.getvalue() == ""
    kept = io.StringIO()
    with progress_bar(total=50, desc="epoch", file=kept) as b:
        for _ in range(50):
            b.update()
            b.set_postfix(loss="0.5")
    assert kept.getvalue().splitlines() == [kept.getvalue().strip()]  # one line: the last
    assert kept.getvalue().startswith("epoch: 50/50 (100%)")


def test_a_terminal_gets_tqdm_itself():
    term = Terminal()
    bar = progress_bar(total=2, desc="x", file=term, mininterval=0)
    bar.update(2)
    bar.close()
    assert type(bar) is tqdm and not isinstance(bar, LineBar)
    assert "\r" in term.getvalue()
    assert isinstance(progress_bar(total=2, file=io.StringIO()), LineBar)


def test_quiet_turns_bars_off_and_travels_to_child_processes(monkeypatch):
    set_quiet(True)
    out = io.StringIO()
    for _ in progress_bar(range(3), desc="x", file=out, mininterval=0):
        pass
    assert out.getvalue() == ""
    code = "from medattn.progress import quiet; print(quiet())"
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert child.stdout.strip() == "True"
    set_quiet(False)
    assert not progress.quiet()


def test_quiet_logs_only_warnings(monkeypatch):
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])
    monkeypatch.setattr(root, "level", root.level)
    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)
    setup_console(True)
    assert root.level == logging.WARNING
    setup_console(False)
    assert root.level == logging.INFO
    assert len(root.handlers) == 1  # set up twice, one handler


def test_warn_once_holds_across_processes_started_later(monkeypatch):
    with pytest.warns(RuntimeWarning, match="slow path"):
        warn_once("slow path", RuntimeWarning)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second warning would raise
        warn_once("slow path", RuntimeWarning)
    code = ("import warnings; warnings.simplefilter('error'); "
            "from medattn.progress import warn_once; warn_once('slow path', RuntimeWarning); "
            "warn_once('other', RuntimeWarning)")
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    # silent about what the parent showed, not about a new warning
    assert "slow path" not in child.stderr and "RuntimeWarning: other" in child.stderr


def test_console_shows_each_warning_once_without_tearing_a_bar(monkeypatch):
    term = Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)
    monkeypatch.setattr(progress, "_SHOWN", set())
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])
    monkeypatch.setattr(root, "level", root.level)
    setup_console(False)
    with warnings.catch_warnings():
        warnings.simplefilter("always")  # even so: once per text
        bar = progress_bar(total=3, desc="work", mininterval=0)
        for i in range(3):
            warnings.warn("numba is not installed", RuntimeWarning, stacklevel=1)
            with warnings.catch_warnings():  # resets the warning registries, as readers do
                warnings.simplefilter("ignore")
            logging.getLogger("medattn.test").info("step %d", i)
            bar.update()
        bar.close()
    text = term.getvalue()
    assert text.count("warning: numba is not installed") == 1
    # tqdm.write lifted the bar for each line: every message starts a line of its own
    lines = text.replace("\r", "\n").splitlines()
    assert "warning: numba is not installed" in lines
    assert all(f"step {i}" in lines for i in range(3))


def test_features_warn_about_numba_once_and_before_their_bar(monkeypatch, tmp_path):
    """feature_usage with numba missing: the notice comes once, before the feature-test bar."""
    import json

    import pandas as pd

    from medattn.analysis.citests import _cmi_kernel
    from medattn.analysis.features import extract, usage_run
    from medattn.analysis.features.usage import feature_usage
    from medattn.data import load_dataset
    from medattn.data.synthetic import write_derm

    spec, _ = write_derm(tmp_path / "data", n=48, n_ood=1, image_size=48, workers=1)
    table = load_dataset(spec)
    rng = np.random.default_rng(0)
    prob = rng.dirichlet(np.ones(3), len(table))
    preds = pd.DataFrame({"row": np.arange(len(table)), "image_id": table["image_id"],
                          "label": table["label"], "pred": prob.argmax(1)})
    for i, c in enumerate(["melanoma", "nevus", "other"]):
        preds[f"prob_{c}"] = prob[:, i]
    run = tmp_path / "runs" / "runs" / "r0"
    (run / "predictions").mkdir(parents=True)
    preds.to_csv(run / "predictions" / "test.csv", index=False)
    (run / "record.json").write_text(json.dumps({
        "run_id": "r0", "status": "done", "phase": "final", "model": "resnet18",
        "backbone": "resnet18", "variant": "base", "dataset": "isic", "data": spec,
        "classes": ["melanoma", "nevus", "other"], "split_seed": 0,
        "metrics": {"test": {"balanced_accuracy": 0.5}, "val": {"balanced_accuracy": 0.5}}}))

    events = []
    real_bar = progress.progress_bar

    def recording_bar(*args, **kwargs):
        events.append(f"bar {kwargs.get('desc')}")
        return real_bar(*args, **kwargs)

    monkeypatch.setattr(usage_run, "progress_bar", recording_bar)  # the feature tests' bar
    monkeypatch.setattr(extract, "progress_bar", recording_bar)  # the feature extraction's
    monkeypatch.setattr(_cmi_kernel, "numba", None)
    monkeypatch.setattr(warnings, "showwarning",
                        lambda message, *a, **k: events.append(f"warning {message}"))
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        # 19 permutations (fast) can reach Holm-adjusted p = 0.4 over 8 features: alpha 0.5
        feature_usage(tmp_path / "runs", progress=True, alpha=0.5,
                      test_options={"chsic": {"permutations": 19}, "rcot": {},
                                    "cmiknn": {"permutations": 19}})
    notices = [i for i, e in enumerate(events) if "numba is not installed" in e]
    assert len(notices) == 1
    assert notices[0] < events.index("bar feature tests")
