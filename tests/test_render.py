"""The one Markdown and LaTeX table renderer (medattn.render) and where Table 2 is rendered."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from medattn.render import latex_table, markdown_table, tex_escape


def _md_cells(line: str) -> list[str]:
    """Split a Markdown table line on unescaped pipes."""
    out, cur, prev = [], "", ""
    for ch in line.strip()[1:-1]:
        if ch == "|" and prev != "\\":
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
        prev = ch
    return out + [cur.strip()]


def test_markdown_table_keeps_one_cell_per_column_whatever_the_text():
    frame = pd.DataFrame({"a": ["x|y", "two\nlines"], "b": [1.5, math.nan]},
                         index=pd.Index(["r|1", "r2"], name="row"))
    lines = markdown_table(frame, index=True).splitlines()
    assert len(lines) == 4  # header, rule, two rows: a line break in a cell did not split a row
    assert _md_cells(lines[0]) == ["row", "a", "b"]
    assert lines[1] == "|---|---|---|"
    assert _md_cells(lines[2]) == ["r\\|1", "x\\|y", "1.5"]
    assert _md_cells(lines[3]) == ["r2", "two lines", ""]  # NaN is an empty cell, not "nan"


def test_markdown_table_alignment_and_cell_format():
    frame = pd.DataFrame({"model": ["m"], "params": [11.1849]})
    text = markdown_table(frame, align="lr", cell=lambda v: f"{v:.2f}" if isinstance(v, float)
                          else str(v))
    assert text.splitlines()[1] == "|---|---:|"
    assert _md_cells(text.splitlines()[2]) == ["m", "11.18"]
    with pytest.raises(ValueError, match="2 columns"):
        markdown_table(frame, align="l")


def test_latex_table_escapes_text_and_keeps_raw_markup_when_asked():
    frame = pd.DataFrame({"a_b": ["50%", r"\textbf{1}"]}, index=pd.Index(["x&y", "z"], name="m"))
    plain = latex_table(frame, index=True)
    assert r"m & a\_b \\" in plain and r"x\&y & 50\% \\" in plain
    assert r"\textbackslash{}textbf\{1\}" in plain
    raw = latex_table(frame, index=True, raw_cells=True)
    assert r"z & \textbf{1} \\" in raw and r"x\&y & 50% \\" in raw  # index escaped, cells raw
    assert raw.startswith(r"\begin{tabular}{ll}") and raw.endswith(r"\end{tabular}")
    assert tex_escape("±†≈") == r"$\pm$$^\dagger$$^\approx$"


def test_table2_rendering_lives_in_report_and_old_names_still_import():
    from medattn.analysis import compare
    from medattn.report import table2

    for name in ("format_result", "wide_table", "legend", "stats_display", "run_compare",
                 "table2_markdown", "table2_latex", "table2_sections"):
        assert getattr(compare, name) is getattr(table2, name)
        assert name not in vars(compare)  # not a second copy: compare only computes
    with pytest.raises(AttributeError):
        compare.no_such_name  # noqa: B018
