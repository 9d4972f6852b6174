"""Install paths: `[test]` holds what the test suite needs, and CI installs every optional part the
tests skip without, so that CI runs every test."""

import re
import tomllib
from pathlib import Path

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
