"""The code's shape (CONTRIBUTING.md): no function over 80 lines except linear numerical kernels,
and no file over 400 lines without its reason in its first lines.

A function or file that must stay longer goes into the allow-lists below with a comment saying
why; an entry that no longer applies fails too, so the lists shrink as the code is split.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "medattn"
MAX_FUNCTION = 80
MAX_FILE = 400
REASON = re.compile(r"Over 400 lines\b\S*\s+\S")  # "Over 400 lines because ..." and the like
REASON_WITHIN = 40  # the reason must be in the file's first lines (its docstring or a comment)

# Functions allowed over MAX_FUNCTION lines: "path relative to src/medattn::qualified name",
# or "path::*" for a whole file.
LONG_FUNCTIONS = {
    # Linear numerical kernels: one computation read top to bottom, no branch worth a name.
    "analysis/citests/cmiknn.py::cmiknn": "option checks, jitter, then the shuffle test",
    "data/synthetic/derm_render.py::render": "one image drawn layer by layer",
}

# Files allowed over MAX_FILE lines without a reason at their top (other branches split them).
LONG_FILES = {
}


def _functions(tree: ast.AST, prefix: str = ""):
    """(qualified name, node) of every function, nested ones and methods included."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield prefix + node.name, node
            yield from _functions(node, f"{prefix}{node.name}.")
        elif isinstance(node, ast.ClassDef):
            yield from _functions(node, f"{prefix}{node.name}.")
        else:
            yield from _functions(node, prefix)


def _sources() -> dict[str, str]:
    return {p.relative_to(SRC).as_posix(): p.read_text(encoding="utf-8")
            for p in sorted(SRC.rglob("*.py"))}


def long_functions(sources: dict[str, str]) -> dict[str, int]:
    """``path::qualname`` -> length in lines, for every function over MAX_FUNCTION lines."""
    out = {}
    for path, text in sources.items():
        for name, node in _functions(ast.parse(text, filename=path)):
            length = node.end_lineno - node.lineno + 1
            if length > MAX_FUNCTION:
                out[f"{path}::{name}"] = length
    return out


def unexplained_long_files(sources: dict[str, str]) -> dict[str, int]:
    """path -> lines, for every file over MAX_FILE lines without a reason at its top."""
    out = {}
    for path, text in sources.items():
        lines = text.splitlines()
        head = " ".join(line.strip(' #"') for line in lines[:REASON_WITHIN])
        if len(lines) > MAX_FILE and not REASON.search(head):
            out[path] = len(lines)
    return out


def _allowed(key: str) -> bool:
    return key in LONG_FUNCTIONS or f"{key.split('::')[0]}::*" in LONG_FUNCTIONS


def test_no_function_is_over_80_lines_unless_listed_with_a_reason():
    found = long_functions(_sources())
    bad = {k: n for k, n in found.items() if not _allowed(k)}
    assert not bad, (f"functions over {MAX_FUNCTION} lines: {bad}; split them (or, for a linear "
                     "numerical kernel, add it to LONG_FUNCTIONS with the reason)")
    stale = [k for k in LONG_FUNCTIONS if not k.endswith("::*") and k not in found]
    assert not stale, f"LONG_FUNCTIONS entries now within {MAX_FUNCTION} lines: remove {stale}"


def test_no_file_is_over_400_lines_without_a_reason_at_its_top():
    sources = _sources()
    found = unexplained_long_files(sources)
    bad = {k: n for k, n in found.items() if k not in LONG_FILES}
    assert not bad, (f"files over {MAX_FILE} lines: {bad}; split them by job, or say why at the "
                     f"top ('Over 400 lines because ...' in the first {REASON_WITHIN} lines)")
    stale = [k for k in LONG_FILES if k not in found]
    assert not stale, f"LONG_FILES entries that are short or explained now: remove {stale}"


def test_the_checks_catch_a_long_function_and_an_unexplained_long_file():
    body = "".join(f"    x{i} = {i}\n" for i in range(MAX_FUNCTION))
    code = f"class A:\n    def long(self):\n{body.replace('    ', '        ')}\n\ndef short():\n    pass\n"
    assert long_functions({"m.py": code}) == {"m.py::A.long": MAX_FUNCTION + 1}
    filler = "x = 1\n" * MAX_FILE
    assert unexplained_long_files({"a.py": '"""A module."""\n' + filler}) == {"a.py": MAX_FILE + 1}
    explained = '"""A module.\n\nOver 400 lines because it is one job.\n"""\n' + filler
    assert unexplained_long_files({"b.py": explained, "c.py": "# Over 400 lines because x\n"
                                   + filler}) == {}
