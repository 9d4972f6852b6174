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


def test_table2_rendering_lives_only_in_report():
    from medattn.analysis import compare
    from medattn.report import table2

    for name in ("format_result", "wide_table", "legend", "stats_display", "run_compare",
                 "table2_markdown", "table2_latex", "table2_sections"):
        assert callable(getattr(table2, name))
        assert not hasattr(compare, name)  # no forwarding name: compare only computes


MPL_STATE = r'''
import sys
import matplotlib
matplotlib.use("svg")  # the caller's own choice, e.g. a notebook's
matplotlib.rcParams["font.size"] = 7.0
rc = matplotlib.rcParams
snap = lambda: {k: dict.__getitem__(rc, k) for k in dict.keys(rc)}
before = snap()
import pandas as pd
from medattn.report import figures
import medattn.report, medattn.report.features, medattn.report.table2  # noqa: E401
assert snap() == before, "importing report.figures changed rcParams"
runs = pd.DataFrame({"backbone": ["resnet18"] * 3, "model": ["base"] * 3,
                     "bacc_pct": [60.0, 62.0, 61.0], "included": [True] * 3,
                     "status": ["done"] * 3})
fig = figures.bacc_dots(runs, "id", "title")
png = figures.to_png(fig)
assert png.startswith(b"\x89PNG"), png[:8]
assert fig.axes[0].title.get_fontsize() == 11.0  # the report's style was applied while drawing
changed = sorted(k for k, v in snap().items() if before[k] != v)
assert not changed, f"making a figure changed rcParams {changed}"
assert rc._get_backend_or_none() == "svg", rc._get_backend_or_none()
assert "matplotlib.pyplot" not in sys.modules, "pyplot (global figure state) was imported"
print("ok")
'''


@pytest.mark.slow
def test_report_figures_leave_matplotlib_state_alone():
    """Importing medattn.report.figures and drawing a figure changes neither the backend nor any
    rcParams (fresh interpreter: the module may already be imported here)."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", MPL_STATE], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]
