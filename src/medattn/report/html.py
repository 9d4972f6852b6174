"""Render report sections as one self-contained HTML page and as Markdown.

A section is a title plus blocks: text (a small Markdown subset: paragraphs, ``**bold**``,
`` `code` ``, lists), tables (DataFrames), figures (PNG bytes) and preformatted text. HTML embeds
figures as base64 data URIs and carries its CSS inline: no network, no JavaScript, one file.
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from medattn.render import markdown_table

LEAD = ("verdict",)  # sections shown above the contents: the answer first
MAX_ROWS = 120  # rows of an analysis CSV shown in the report; the CSV has everything


def read_table(path: Path, **kw) -> pd.DataFrame | None:
    """An analysis CSV for the report (``kw``: to ``pandas.read_csv``), or None if it is missing
    or unreadable: the report shows what is there."""
    try:
        return pd.read_csv(path, **kw)
    except (OSError, ValueError, pd.errors.ParserError):
        return None

__all__ = ["Details", "Figure", "Pre", "Section", "Table", "Text", "render_html", "render_markdown"]


@dataclass
class Text:
    text: str
    cls: str = ""  # an HTML class for the paragraphs' box (``reading``: a note beside a table)


@dataclass
class Table:
    frame: pd.DataFrame
    caption: str = ""
    index: bool = False


@dataclass
class Figure:
    png: bytes
    name: str  # file stem for the Markdown copy (figures/<name>.png)
    caption: str = ""


@dataclass
class Pre:
    text: str
    caption: str = ""


@dataclass
class Details:
    """Blocks folded behind a one-line ``summary`` (``<details>`` in HTML): long tables."""

    summary: str
    blocks: list = field(default_factory=list)


@dataclass
class Section:
    id: str
    title: str
    blocks: list = field(default_factory=list)


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:0;
 color:#1a1a1a;background:#fff;line-height:1.45}
main{max-width:1500px;margin:0 auto;padding:1.5rem 2rem 4rem;box-sizing:border-box}
h1{font-size:1.7rem;margin-bottom:.2rem}h2{border-bottom:2px solid #ddd;padding-bottom:.2rem;
 margin-top:2.2rem}h3{margin-top:1.4rem}
nav{background:#f6f6f6;border:1px solid #e2e2e2;padding:.6rem 1rem;border-radius:6px}
nav ol{margin:.2rem 0;columns:2}
table{border-collapse:collapse;margin:.6rem 0;font-size:.86rem}
th,td{border:1px solid #d4d4d4;padding:.25rem .5rem;text-align:left;vertical-align:top;
 overflow-wrap:anywhere}
th{background:#f0f0f0}tr:nth-child(even) td{background:#fafafa}
.scroll{max-width:100%}
#verdict{background:#f3f7fc;border:1px solid #c9d8ea;border-radius:6px;padding:.2rem 1rem;
 margin:1rem 0}#verdict h2{border:none;margin-top:.6rem}#verdict li{margin:.25rem 0}
details{margin:.6rem 0}summary{cursor:pointer;color:#234;font-weight:600}
.reading{border-left:3px solid #c9d8ea;padding:.1rem .8rem;color:#333}
figure{margin:1rem 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption,.caption{font-size:.85rem;color:#555;margin:.2rem 0 .6rem}
pre{background:#f6f6f6;border:1px solid #e2e2e2;padding:.6rem;font-size:.8rem;
 white-space:pre-wrap;overflow-wrap:anywhere}
code{background:#f3f3f3;padding:0 .2rem;border-radius:3px}
.note{color:#8a5a00}
"""


def _cell(v) -> str:
    if v is None or (not isinstance(v, str) and pd.isna(v)):
        return ""
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _inline_html(text: str) -> str:
    t = html.escape(text, quote=False)
    t = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", t)
    t = re.sub(r"`([^`]+)`", r"<code>\1</code>", t)
    return t


def _text_html(text: str) -> str:
    out = []
    for para in re.split(r"\n\s*\n", text.strip()):
        lines = para.splitlines()
        if all(ln.lstrip().startswith("- ") for ln in lines):
            items = "".join(f"<li>{_inline_html(ln.lstrip()[2:])}</li>" for ln in lines)
            out.append(f"<ul>{items}</ul>")
        else:
            out.append(f"<p>{_inline_html(' '.join(lines))}</p>")
    return "\n".join(out)


def _table_html(t: Table) -> str:
    df = t.frame
    head = ([html.escape(str(df.index.name or ""))] if t.index else []) + [
        html.escape(str(c)) for c in df.columns]
    rows = []
    for i, row in df.iterrows():
        cells = ([f"<th>{_inline_html(str(i))}</th>"] if t.index else []) + [
            f"<td>{_inline_html(_cell(v))}</td>" for v in row]
        rows.append("<tr>" + "".join(cells) + "</tr>")
    cap = f'<div class="caption">{_inline_html(t.caption)}</div>' if t.caption else ""
    return (f'<div class="scroll"><table><thead><tr>{"".join(f"<th>{h}</th>" for h in head)}'
            f'</tr></thead><tbody>{"".join(rows)}</tbody></table></div>{cap}')


def _block_html(b) -> str:
    if isinstance(b, Text):
        return (f'<div class="{b.cls}">{_text_html(b.text)}</div>' if b.cls
                else _text_html(b.text))
    if isinstance(b, Table):
        return _table_html(b)
    if isinstance(b, Figure):
        data = base64.b64encode(b.png).decode("ascii")
        alt = html.escape(b.caption or b.name)
        cap = f"<figcaption>{_inline_html(b.caption)}</figcaption>" if b.caption else ""
        return f'<figure><img src="data:image/png;base64,{data}" alt="{alt}">{cap}</figure>'
    if isinstance(b, Pre):
        cap = f'<div class="caption">{_inline_html(b.caption)}</div>' if b.caption else ""
        return f"{cap}<pre>{html.escape(b.text)}</pre>"
    if isinstance(b, Details):
        inner = "\n".join(_block_html(x) for x in b.blocks)
        return f"<details><summary>{_inline_html(b.summary)}</summary>\n{inner}</details>"
    raise TypeError(f"unknown report block {type(b).__name__}")


def render_html(title: str, subtitle: str, sections: list[Section]) -> str:
    """One self-contained HTML document (inline CSS, base64 images, no scripts)."""
    toc = "".join(f'<li><a href="#{s.id}">{html.escape(s.title)}</a></li>' for s in sections
                  if s.id not in LEAD)
    lead, body = ("\n".join(
        f'<section id="{s.id}"><h2>{html.escape(s.title)}</h2>\n'
        + "\n".join(_block_html(b) for b in s.blocks) + "</section>" for s in sections
        if (s.id in LEAD) == first) for first in (True, False))
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>\n<body><main>"
            f"<h1>{html.escape(title)}</h1><p class=\"caption\">{_inline_html(subtitle)}</p>"
            f"{lead}<nav><b>Contents</b><ol>{toc}</ol></nav>\n{body}\n</main></body></html>\n")


def _md_table(t: Table) -> str:
    text = markdown_table(t.frame, index=t.index, cell=_cell)
    return f"{text}\n\n{t.caption}" if t.caption else text


def render_markdown(title: str, subtitle: str, sections: list[Section],
                    figure_dir: str = "figures") -> tuple[str, dict[str, bytes]]:
    """Markdown text plus the figure files it links (``{relative path: png bytes}``)."""
    parts = [f"# {title}", "", subtitle, ""]
    files: dict[str, bytes] = {}
    for s in sections:
        parts += [f"## {s.title}", ""]
        blocks = []
        for b in s.blocks:  # Markdown has no folding: a details block is its summary, then it
            blocks += [Text(f"**{b.summary}**"), *b.blocks] if isinstance(b, Details) else [b]
        for b in blocks:
            if isinstance(b, Text):
                parts.append(b.text.strip())
            elif isinstance(b, Table):
                parts.append(_md_table(b))
            elif isinstance(b, Figure):
                rel = f"{figure_dir}/{b.name}.png"
                files[rel] = b.png
                parts.append(f"![{b.caption or b.name}]({rel})")
                if b.caption:
                    parts += ["", f"*{b.caption}*"]
            elif isinstance(b, Pre):
                if b.caption:
                    parts += [b.caption, ""]
                parts += ["```", b.text.rstrip(), "```"]
            parts.append("")
    return "\n".join(parts), files
