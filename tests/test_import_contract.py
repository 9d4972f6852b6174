"""The layer order is a contract: ``lint-imports`` (import-linter) checks pyproject.toml's
``[tool.importlinter]`` contracts on the source tree, here and in CI (.ci/run).

Besides the real tree, the contract is run on copies with one import added that breaks it, so a
contract that checks nothing (a wrong root package, a layer name that matches no module, a tool
that reads the installed package instead of this tree) fails here.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "pyproject.toml"
LINT = "from importlinter.cli import lint_imports_command; lint_imports_command()"


def _lint(src: Path) -> subprocess.CompletedProcess:
    """``lint-imports`` with the repository's contracts on the ``medattn`` package under ``src``
    (only ``src`` on the path: never the installed copy)."""
    env = {**os.environ, "PYTHONPATH": str(src), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-c", LINT, "--config", str(CONFIG), "--no-cache"],
                          capture_output=True, text=True, timeout=120, env=env, cwd=src)


def _copy_with(tmp_path: Path, module: str, line: str) -> Path:
    """A copy of src/medattn with ``line`` appended to ``module`` (a path under medattn/)."""
    src = tmp_path / "src"
    shutil.copytree(ROOT / "src" / "medattn", src / "medattn",
                    ignore=shutil.ignore_patterns("__pycache__"))
    target = src / "medattn" / module
    target.write_text(target.read_text(encoding="utf-8") + f"\n{line}\n", encoding="utf-8")
    return src


def test_the_source_tree_keeps_every_contract():
    out = _lint(ROOT / "src")
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert re.search(r"Layers: imports point downwards only KEPT", out.stdout)
    assert re.search(r"No import cycles between the modules of a package KEPT", out.stdout)
    assert "0 broken" in out.stdout


def test_the_contract_names_every_top_level_module():
    """A new top-level module or package must get a place in the layer order (import-linter
    ignores a module no layer names)."""
    contract = next(c for c in tomllib.loads(CONFIG.read_text())["tool"]["importlinter"]
                    ["contracts"] if c["id"] == "layers")
    named = {m.strip() for layer in contract["layers"] for m in layer.split("|")}
    pkg = ROOT / "src" / "medattn"
    present = {f"medattn.{p.stem}" for p in pkg.glob("*.py") if p.stem != "__init__"}
    present |= {f"medattn.{p.name}" for p in pkg.iterdir() if (p / "__init__.py").is_file()}
    assert present == named


@pytest.mark.parametrize("line", ["import medattn.report",
                                  "def _later():\n    from medattn.report import html"])
def test_an_upward_import_breaks_the_contract_and_is_named(tmp_path, line):
    """The run store importing the report (at module level, or inside a function): the layers
    contract fails and names the import and its line."""
    src = _copy_with(tmp_path, "runs/store.py", line)
    out = _lint(src)
    assert out.returncode == 1, out.stdout[-4000:]
    assert "Layers: imports point downwards only BROKEN" in out.stdout
    assert "medattn.runs is not allowed to import medattn.report" in out.stdout
    assert re.search(r"medattn\.runs\.store -> medattn\.report(\.html)? \(l\.\d+\)", out.stdout), \
        out.stdout[-4000:]


def test_a_cycle_inside_a_package_breaks_the_contract(tmp_path):
    """The registry importing the zoo (which imports the registry) keeps the layers but makes a
    cycle in medattn.models."""
    src = _copy_with(tmp_path, "models/registry.py", "from medattn.models import zoo")
    out = _lint(src)
    assert out.returncode == 1, out.stdout[-4000:]
    assert "Layers: imports point downwards only KEPT" in out.stdout
    assert "No cycles are allowed in medattn.models." in out.stdout
    assert re.search(r"\.(registry -> \.zoo|zoo -> \.registry)", out.stdout), out.stdout[-4000:]


def test_the_drawing_marks_an_upward_edge_and_a_cycle(tmp_path):
    """tools/draw_layers.py on a copy with an upward import: that edge is red and listed with its
    import; on the real tree nothing is."""
    src = _copy_with(tmp_path, "runs/store.py", "import medattn.report")
    (src / "medattn" / "models" / "registry.py").open("a").write("\nfrom medattn.models import zoo\n")
    tool = [sys.executable, str(ROOT / "tools" / "draw_layers.py")]
    out = subprocess.run([*tool, "--src", str(src)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert re.search(r"^  runs -->\|1 upward\| report$", out.stdout, re.M), out.stdout
    assert "1 edge(s) break the layer order" in out.stdout
    assert re.search(r"- runs -> report: 1 import\(s\), e\.g\. medattn\.runs\.store -> "
                     r"medattn\.report \(l\.\d+\)", out.stdout)
    assert re.search(r"^- medattn\.models\.registry <-> (\S+ <-> )*medattn\.models\.zoo$",
                     out.stdout, re.M), out.stdout[-3000:]
    real = subprocess.run(tool, capture_output=True, text=True, timeout=120)
    assert real.returncode == 0 and "No edge breaks the layer order." in real.stdout
    assert "linkStyle" not in real.stdout
    # the drawing's cycle list also sees what acyclic_siblings cannot: a package front and one of
    # its own modules importing each other. The one cycle left is the import the contract
    # ignores (analysis.compare <-> analysis.plan, removed by the settings branch).
    cycles = set(re.findall(r"^- (medattn\S* <-> .*)$", real.stdout, re.M))
    assert cycles <= {"medattn.analysis.compare <-> medattn.analysis.plan"}, cycles
