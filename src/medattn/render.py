"""Tables as text: the one Markdown renderer and the one LaTeX (booktabs) renderer of medattn.

Every Markdown or LaTeX table the package writes (Table 1, Table 2, Table 3, the report, the demo
summary) goes through :func:`markdown_table` or :func:`latex_table`, so escaping and layout are
the same everywhere.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd

__all__ = ["latex_table", "markdown_table", "tex_escape"]


def cell_text(v: Any) -> str:
    """A cell as text: missing values (None, NaN, NA) as an empty cell, anything else ``str``."""
    if v is None or (not isinstance(v, str) and pd.api.types.is_scalar(v) and pd.isna(v)):
        return ""
    return str(v)


def _columns(frame: pd.DataFrame, index: bool) -> list[str]:
    return ([str(frame.index.name or "")] if index else []) + [str(c) for c in frame.columns]


def _rows(frame: pd.DataFrame, index: bool, cell: Callable[[Any], str]) -> list[list[str]]:
    return [([cell_text(i)] if index else []) + [cell(v) for v in row]
            for i, row in zip(frame.index, frame.itertuples(index=False, name=None))]


def markdown_table(frame: pd.DataFrame, *, index: bool = False, align: str | None = None,
                   cell: Callable[[Any], str] = cell_text) -> str:
    """``frame`` as a GitHub-flavoured Markdown table (no trailing newline).

    ``index``: show the index as the first column (headed by its name). ``align``: one letter
    per shown column, ``l``, ``r`` or ``c`` (default all left). ``cell`` turns a value into text
    (default :func:`cell_text`). A ``|`` in a cell is escaped and a line break becomes a space,
    so a cell never breaks the table.
    """
    cols = _columns(frame, index)
    align = align or "l" * len(cols)
    if len(align) != len(cols):
        raise ValueError(f"align={align!r} has {len(align)} letters for {len(cols)} columns")
    rule = {"l": "---", "r": "---:", "c": ":---:"}

    def line(vals: list[str]) -> str:
        return "| " + " | ".join(v.replace("|", "\\|").replace("\n", " ") for v in vals) + " |"

    out = [line(cols), "|" + "|".join(rule[a] for a in align) + "|"]
    out += [line(r) for r in _rows(frame, index, cell)]
    return "\n".join(out)


_TEX = {"·": "/", "–": "--", "−": "-", "±": r"$\pm$", "†": r"$^\dagger$", "≈": r"$^\approx$",
        "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
        "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "\\": r"\textbackslash{}"}


def tex_escape(text: Any) -> str:
    """Plain text with LaTeX's special characters (and the marks of Table 2) escaped."""
    return "".join(_TEX.get(ch, ch) for ch in str(text))


def latex_table(frame: pd.DataFrame, *, index: bool = False, raw_cells: bool = False) -> str:
    """``frame`` as a booktabs ``tabular`` (no trailing newline); ``raw_cells`` keeps the cells'
    own LaTeX markup (headers and index are always escaped)."""
    cols = _columns(frame, index)
    lines = [r"\begin{tabular}{" + "l" * len(cols) + "}", r"\toprule",
             " & ".join(tex_escape(c) for c in cols) + r" \\", r"\midrule"]
    for row in _rows(frame, index, cell_text):
        head, cells = (row[:1], row[1:]) if index else ([], row)
        lines.append(" & ".join([tex_escape(v) for v in head]
                                + [v if raw_cells else tex_escape(v) for v in cells]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines)
