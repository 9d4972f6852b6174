"""The tutorial (docs/tutorial.md) works as written: its ```bash blocks, run in order in an empty
folder, produce the outputs the text tells the reader to look at.

Sizes are shrunk by SHRINK, a list of exact replacements in the tutorial's commands; each must
match exactly once, so an edit of the tutorial that a replacement no longer fits fails here
instead of silently running the full practice sizes.
"""

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from medattn.cli import build_parser

TUTORIAL = Path(__file__).resolve().parents[1] / "docs" / "tutorial.md"
SRC = Path(__file__).resolve().parents[1] / "src"

# medattn demo --quick's sizes: 300 images at 32 px, 2 epochs, 2 models, one search setting.
SHRINK = [
    ("--n 700 --n-ood 200 --size 64", "--n 300 --n-ood 30 --size 48 --workers 1"),
    ("models: [resnet18, resnet18+ga, resnet18+ela]", "models: [resnet18, resnet18+ga]"),
    ("lr: [0.05, 0.02]", "lr: [0.05]"),
    ("splits: 3                          # the pilot", "splits: 2                          # the pilot"),
    ("epochs: 6 ", "epochs: 2 "),
    ("batch_size: 32", "batch_size: 16"),
    ("image_size: 48", "image_size: 32"),
    ("/splits: 10/", "/splits: 3/"),
    ("medattn explain runs/first", "medattn explain runs/first --n-mean 30"),
    ("medattn report runs/first", "medattn report runs/first --bootstrap 1000"),
]


def bash_blocks(text: str) -> list[str]:
    """The ```bash blocks of a Markdown page, in order."""
    return re.findall(r"^```bash\n(.*?)^```", text, re.M | re.S)


def shrunk_blocks() -> list[str]:
    blocks = bash_blocks(TUTORIAL.read_text())
    joined = "\n\x00\n".join(blocks)
    for old, new in SHRINK:
        assert joined.count(old) == 1, f"docs/tutorial.md: {old!r} found {joined.count(old)} times"
        joined = joined.replace(old, new)
    return joined.split("\n\x00\n")


def medattn_lines(block: str) -> list[str]:
    return [ln.strip() for ln in block.splitlines() if ln.strip().startswith("medattn ")]


def test_tutorial_commands_parse_with_the_current_cli():
    """Every medattn command of the tutorial parses (a renamed flag fails here in a second)."""
    lines = [ln for b in bash_blocks(TUTORIAL.read_text()) for ln in medattn_lines(b)]
    assert len(lines) >= 9
    parser = build_parser()
    for line in lines:
        try:
            parser.parse_args(shlex.split(line)[1:])
        except SystemExit:
            pytest.fail(f"docs/tutorial.md: {line!r} does not parse")


def _run(block: str, cwd: Path) -> None:
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MEDATTN_QUIET": "1"}
    # `medattn` is this checkout's CLI, whatever an installed entry point points at.
    script = f'medattn() {{ {shlex.quote(sys.executable)} -m medattn.cli "$@"; }}\n{block}'
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"tutorial block failed:\n{block}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"


def _final_runs(runs: Path) -> pd.DataFrame:
    rows = [json.loads(p.read_text()) for p in (runs / "runs").glob("*/record.json")]
    final = [r for r in rows if r["phase"] == "final"]
    return pd.DataFrame({"run_id": [r["run_id"] for r in final],
                         "model": [r["model"] for r in final],
                         "status": [r["status"] for r in final]})


@pytest.mark.slow
def test_tutorial_runs_end_to_end(tmp_path):
    blocks = shrunk_blocks()
    runs = tmp_path / "runs" / "first"
    studies = [i for i, b in enumerate(blocks) if "medattn study study.yaml" in b]
    assert len(studies) == 2, "the tutorial has a pilot and the study"
    pilot_records = {}
    for i, block in enumerate(blocks):
        _run(block, tmp_path)
        if i == studies[0]:  # the pilot: 2 final splits per model
            final = _final_runs(runs)
            assert sorted(final.model.value_counts().items()) == [("resnet18", 2), ("resnet18+ga", 2)]
            pilot_records = {rid: (runs / "runs" / rid / "record.json").read_bytes()
                             for rid in final.run_id}

    assert (tmp_path / "data" / "isic" / "metadata.csv").is_file()
    assert (tmp_path / "data" / "pad-ufes-20" / "metadata.csv").is_file()

    # the study added one split per model and kept the pilot's runs untouched
    final = _final_runs(runs)
    assert sorted(final.model.value_counts().items()) == [("resnet18", 3), ("resnet18+ga", 3)]
    assert set(final.status) <= {"done", "diverged"}
    for rid, content in pilot_records.items():
        assert (runs / "runs" / rid / "record.json").read_bytes() == content, rid

    plan = json.loads((runs / "plan.json").read_text())
    assert {p["set"] for p in plan["pilots"]} == {"id", "ood-pad-ufes-20"}
    assert all(p["n_pairs"] == 2 for p in plan["pilots"])  # planned from the pilot

    table2 = (runs / "table2.md").read_text()
    assert "## What the study found" in table2
    assert re.search(r"^\| \+GA \| ", table2, re.M) and re.search(r"^\| Base \| ", table2, re.M)

    table3 = pd.read_csv(runs / "analysis" / "features" / "table3.csv")
    assert set(table3.model) == {"resnet18", "resnet18+ga"}
    assert "Colorful patches" in table3.columns
    assert all(re.fullmatch(r"\d/3†?", str(v)) for v in table3["Colorful patches"])

    explain = runs / "analysis" / "explain"
    assert (explain / "table4.png").stat().st_size > 0
    summary = pd.read_csv(explain / "explain_summary.csv")
    assert {("gradcam", "resnet18"), ("gradcam", "resnet18+ga"), ("ga", "resnet18+ga")} <= set(
        zip(summary.method, summary.model))

    html = (runs / "report" / "report.html").read_text()
    for section in ("What the study found", "Table 2", "Design", "Table 3", "Table 4"):
        assert f"<h2>{section}" in html, section
    assert "+GA" in html and "data:image/png;base64," in html
