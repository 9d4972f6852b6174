"""Install paths: `[test]` holds what the test suite needs, and CI installs every optional part the
tests skip without, so that CI runs every test."""

import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _extras() -> dict[str, set[str]]:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    raw = meta["optional-dependencies"]

    def names(extra: str) -> set[str]:
        out = set()
        for req in raw[extra]:
            m = re.match(r"medattn\[([^\]]+)\]", req)
            if m:
                for inner in m.group(1).split(","):
                    out |= names(inner.strip())
            else:
                out.add(re.match(r"[A-Za-z0-9_.-]+", req).group().lower())
        return out
    return {extra: names(extra) for extra in raw}


def test_test_extra_and_dev_extra():
    extras = _extras()
    assert {"pytest", "baycomp"} <= extras["test"]
    # every module a test skips without (tests name the extra in the skip reason)
    skipped_on = set()
    for path in (ROOT / "tests").glob("test_*.py"):
        skipped_on |= set(re.findall(r"pip install 'medattn\[(\w+)\]'", path.read_text()))
    assert {"ray", "fast", "tensorboard", "mlflow"} <= skipped_on
    for extra in skipped_on:
        assert extras[extra] <= extras["dev"], extra
    assert extras["test"] <= extras["dev"]


def test_ci_installs_the_dev_extra_and_runs_pytest():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "-e '.[dev]'" in ci and re.search(r"^python3 -m pytest\s*$", ci, re.M)


def test_ci_lints_before_the_tests_and_ruff_is_a_dev_dependency():
    ci = (ROOT / ".ci" / "run").read_text()
    lint = ci.find("python3 -m ruff check src tests benchmarks")
    layers = ci.find("\nlint-imports\n")  # the import contract (tests/test_import_contract.py)
    assert 0 <= lint < layers < ci.find("python3 -m pytest")
    assert "ruff" in _extras()["dev"] and "import-linter" in _extras()["test"]
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "ruff" in meta["tool"] and meta["tool"]["ruff"]["lint"]["select"]



def test_ci_builds_the_docs_site_strictly_and_its_nav_names_every_page():
    ci = (ROOT / ".ci" / "run").read_text()
    build = ci.find("python3 -m mkdocs build --strict")
    assert 0 <= build < ci.find("python3 -m pytest")
    assert {"mkdocs", "mkdocstrings-python"} <= _extras()["docs"] <= _extras()["dev"]
    # A page missing from the nav is built but unreachable; mkdocs only warns about it when
    # validation says so, so check the nav here too.
    conf = (ROOT / "mkdocs.yml").read_text()
    pages = {p.relative_to(ROOT / "docs").as_posix() for p in (ROOT / "docs").rglob("*.md")}
    assert pages == set(re.findall(r":\s*([\w/.-]+\.md)\s*$", conf, re.M))


def test_ci_checks_types_against_the_baseline_after_ruff_and_before_the_tests():
    ci = (ROOT / ".ci" / "run").read_text()
    ruff, mypy = ci.find("python3 -m ruff check"), ci.find("python3 -m mypy >")
    check = ci.find("python3 -m mypy_baseline filter")
    assert 0 <= ruff < mypy < check < ci.find("python3 -m pytest")
    assert {"mypy", "mypy-baseline"} <= _extras()["dev"]
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]
    assert meta["mypy"]["files"] == ["src/medattn"]
    baseline = ROOT / meta["mypy_baseline"]["baseline_path"]
    lines = baseline.read_text().splitlines()
    # entries without line numbers, so that an edit above an old error does not make it "new"
    assert lines and all(re.match(r"src/medattn/\S+\.py:0: (error|note): ", line)
                         for line in lines), [x for x in lines if ":0: " not in x][:3]


def test_python_floor_is_the_one_the_tests_need_and_the_readme_names():
    floor = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert floor.startswith(">=3.11")  # tests import tomllib (3.11+)
    assert "Python >= 3.11" in (ROOT / "README.md").read_text()


GRADCAM_WITHOUT_REFERENCES = r'''
import sys
for name in ("pytorch_grad_cam", "cv2", "sklearn", "statsmodels"):  # test-only references
    sys.modules[name] = None
import numpy as np, timm, torch
from medattn.explain import gradcam
from medattn.training.metrics import summarize
from medattn.analysis.stats import adjust_pvalues
assert np.allclose(adjust_pvalues([0.01, 0.04, 0.03], "fdr_bh"), [0.03, 0.04, 0.04])
assert np.allclose(adjust_pvalues([0.01, 0.04, 0.03], "bonferroni"), [0.03, 0.12, 0.09])
model = timm.create_model("resnet18", num_classes=3, zero_init_last=False).eval()
maps = gradcam(model, torch.randn(2, 3, 64, 64))
assert maps.shape == (2, 64, 64) and float(maps.max()) > 0.99
m = summarize(np.array([0, 1, 2, 2]), np.array([0, 2, 2, 2]), ["a", "b", "c"])
assert m["confusion_matrix"] == [[1, 0, 0], [0, 0, 1], [0, 0, 2]], m
print("ok")
'''


@pytest.mark.slow  # a subprocess importing torch and timm: ~9 s
def test_grad_cam_and_metrics_run_without_the_test_only_libraries():
    """grad-cam (with OpenCV), scikit-learn and statsmodels are references of the tests, not
    run-time needs: the library runs with them blocked, and they are not core dependencies."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", GRADCAM_WITHOUT_REFERENCES], capture_output=True,
                         text=True, timeout=300, env={**__import__("os").environ,
                                                      "PYTHONPATH": str(ROOT / "src")})
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
    core = {re.match(r"[A-Za-z0-9_.-]+", r).group().lower() for r in tomllib.loads(
        (ROOT / "pyproject.toml").read_text())["project"]["dependencies"]}
    assert not {"grad-cam", "scikit-learn", "statsmodels", "opencv-python"} & core
    # and no library module imports them (a static check, catching function-level imports too)
    pattern = re.compile(r"^\s*(from|import)\s+(pytorch_grad_cam|cv2|sklearn|statsmodels)\b", re.M)
    offenders = [str(p.relative_to(ROOT)) for p in (ROOT / "src").rglob("*.py")
                 if pattern.search(p.read_text(encoding="utf-8"))]
    assert offenders == []
