"""Table 2: every model variant against its reference, from run records or a summary CSV.

A *summary* is a table with one row per (dataset, backbone, model, set) and the columns
``mean, sd, n`` (balanced accuracy in percent, sd with ddof=1). ``model`` is the variant
(``base``, ``ga``, ``la``, ``ga+la``, ``ela``, ``ga+ela``; ``1k``/``21k`` for the ViT backbone
``vit``); ``set`` is ``id`` (the in-distribution test split) or ``ood``/``ood-<name>``.

References: a variant is compared with the ``base`` of its own backbone in the same data set and
set. A backbone without a base of its own (the ViTs) is compared with *every* base in the same
data set and set, which generalises the paper's layout (ViT-1k under the ResNet columns, ViT-21k
under the EfficientNet ones) to all pairs. Multiple-comparison correction runs within each column
of Table 2, i.e. over all comparisons that share (dataset, set, reference).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from medattn.analysis import stats
from medattn.errors import ConfigError, DataError

__all__ = [
    "BACKBONE_LABELS",
    "CompareResult",
    "FORMATS",
    "MODEL_LABELS",
    "SUMMARY_COLUMNS",
    "compare_runs",
    "compare_summary",
    "format_result",
    "read_summary",
    "run_compare",
    "summarize_runs",
    "wide_table",
]

PAPER_TABLE2 = Path(__file__).resolve().parents[1] / "configs" / "paper_table2.csv"
SUMMARY_COLUMNS = ["dataset", "backbone", "model", "set", "mean", "sd", "n"]
FORMATS = ("md", "csv", "json", "latex")
CORRECTIONS = ("holm", "none", "bonferroni", "holm-sidak", "fdr_bh", "fdr_by")
MODEL_ORDER = ["base", "ga", "la", "ga+la", "ela", "ga+ela", "1k", "21k"]
ATTENTION_VARIANTS = ("ga", "la", "ga+la", "ela", "ga+ela")
MODEL_LABELS = {"base": "Base", "ga": "+GA", "la": "+LA", "ga+la": "+GA+LA", "ela": "+ELA",
                "ga+ela": "+GA+ELA", "1k": "ViT-1k", "21k": "ViT-21k"}
BACKBONE_ORDER = ["resnet18", "efficientnet_b0", "vit"]
BACKBONE_LABELS = {"resnet18": "ResNet18", "efficientnet_b0": "EfficientNet-B0", "vit": "ViT-tiny"}
STAT_COLUMNS = ["diff", "diff_ci_low", "diff_ci_high", "se", "t", "df", "p", "p_adjusted",
                "significant", "significant_adjusted", "hedges_g", "hedges_g_ci_low",
                "hedges_g_ci_high", "tost_p", "equivalent", "detectable_diff"]
TABLE_COLUMNS = (["dataset", "backbone", "model", "set", "reference", "mean", "sd", "n",
                  "ref_mean", "ref_sd", "ref_n"] + STAT_COLUMNS)


@dataclass
class CompareResult:
    """Table 2 in long form plus what the reader needs to judge it.

    ``table``: one row per (dataset, backbone, model, set, reference), columns ``TABLE_COLUMNS``
    (percent / percentage points). ``runs``: per-run values (long form; ``None`` for a summary).
    ``excluded``: final runs that did not enter, with ``reason``. ``settings``: alpha, margin, ...
    """

    table: pd.DataFrame
    runs: pd.DataFrame | None = None
    excluded: pd.DataFrame = field(default_factory=pd.DataFrame)
    settings: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------------


def read_summary(path: str | os.PathLike) -> pd.DataFrame:
    """Read and check a summary CSV (``SUMMARY_COLUMNS``, balanced accuracy in percent)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: summary file not found; give a CSV with columns "
                        f"{','.join(SUMMARY_COLUMNS)}.")
    try:
        df = pd.read_csv(path, dtype={"dataset": str, "backbone": str, "model": str, "set": str},
                         skipinitialspace=True, comment="#")
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as err:
        raise DataError(f"{path}: not a readable CSV ({err}).") from err
    df.columns = [str(c).strip().lower() for c in df.columns]
    # Physical line numbers of the data rows (comments and blank lines are skipped by pandas).
    text_lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    data_lines = [i for i, t in enumerate(text_lines, 1) if t.strip() and not t.lstrip().startswith("#")]
    line_of = data_lines[1:] + [len(text_lines)] * max(0, len(df) - len(data_lines) + 1)
    missing = [c for c in SUMMARY_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}; the header must be "
                        f"{','.join(SUMMARY_COLUMNS)}.")
    df = df[SUMMARY_COLUMNS].copy()
    for col in ("dataset", "backbone", "model", "set"):
        df[col] = df[col].astype(str).str.strip()
    df["model"] = df["model"].str.lower()
    df["set"] = df["set"].str.lower()
    for i, row in df.iterrows():
        line = line_of[i]
        for col in ("mean", "sd", "n"):
            try:
                float(row[col])
            except (TypeError, ValueError):
                raise DataError(f"{path}, line {line}: {col}={row[col]!r} is not a number.") from None
            if not np.isfinite(float(row[col])):
                raise DataError(f"{path}, line {line}: {col} is empty or not finite.")
        if row["set"] != "id" and row["set"] != "ood" and not row["set"].startswith("ood-"):
            raise DataError(f"{path}, line {line}: set={row['set']!r}; use 'id' (in-distribution "
                            f"test) or 'ood' / 'ood-<name>'.")
        if float(row["sd"]) < 0:
            raise DataError(f"{path}, line {line}: sd={row['sd']} is negative.")
        n = float(row["n"])
        if n < 1 or n != int(n):
            raise DataError(f"{path}, line {line}: n={row['n']} must be a positive whole number.")
    df["mean"] = df["mean"].astype(float)
    df["sd"] = df["sd"].astype(float)
    df["n"] = df["n"].astype(float).astype(int)
    dup = df.duplicated(["dataset", "backbone", "model", "set"], keep="first")
    if dup.any():
        i = int(np.flatnonzero(dup.to_numpy())[0])
        raise DataError(f"{path}, line {line_of[i]}: (dataset, backbone, model, set) appears more than "
                        f"once; keep one row per combination.")
    if len(df) and df["mean"].abs().max() <= 1.0:
        raise DataError(f"{path}: all means are <= 1; the summary must be in percent "
                        f"(multiply fractions by 100).")
    return df


def _set_name(metric_set: str) -> str | None:
    if metric_set == "test":
        return "id"
    if metric_set.startswith("ood-") or metric_set == "ood":
        return metric_set
    return None  # val and anything else is not a test set


def summarize_runs(frame: pd.DataFrame, include_diverged: bool = False
                   ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Summarise final runs per (dataset, backbone, model, set).

    ``frame``: one row per run as :func:`medattn.training.store.load_records` gives.
    Returns ``(summary, runs, excluded)``: the summary in percent, the per-run values in long form
    (``run_id, dataset, backbone, model, set, bacc, status, included``) and the final runs that
    did not enter (``run_id, dataset, backbone, model, status, reason``).
    """
    need = {"run_id", "status", "phase", "dataset", "backbone", "variant"}
    if len(frame) and not need <= set(frame.columns):
        raise DataError(f"run records lack field(s) {sorted(need - set(frame.columns))}; they "
                        f"were not written by this version of medattn.")
    final = frame[frame["phase"] == "final"] if len(frame) else frame
    allowed = {"done", "diverged"} if include_diverged else {"done"}
    excluded = []
    long = []
    for _, r in final.iterrows():
        sets = {_set_name(c[5:]): r[c] for c in final.columns
                if c.startswith("bacc_") and _set_name(c[5:]) and pd.notna(r[c])}
        base = dict(run_id=r["run_id"], dataset=r["dataset"], backbone=r["backbone"],
                    model=r["variant"], status=r["status"])
        if r["status"] not in allowed:
            msg = r.get("message")
            msg = f": {msg}" if isinstance(msg, str) and msg else ""
            reason = {"diverged": f"diverged{msg} (use --include-diverged to include)",
                      "running": "still running or interrupted",
                      "failed": f"failed{msg or ': see record.json'}"}.get(
                r["status"], f"status {r['status']}")
            excluded.append({**base, "reason": reason})
        elif not sets:
            excluded.append({**base, "reason": "no test metrics in record"})
        for s, v in sets.items():
            long.append({**base, "set": s, "bacc": 100.0 * float(v),
                         "included": r["status"] in allowed})
    runs = pd.DataFrame(long, columns=["run_id", "dataset", "backbone", "model", "status", "set",
                                       "bacc", "included"])
    excl = pd.DataFrame(excluded, columns=["run_id", "dataset", "backbone", "model", "status",
                                           "reason"])
    rows = []
    inc = runs[runs["included"].astype(bool)]
    for key, g in inc.groupby(["dataset", "backbone", "model", "set"], sort=False):
        mean, sd, n = stats.describe(g["bacc"].to_numpy())
        rows.append(dict(zip(["dataset", "backbone", "model", "set"], key), mean=mean, sd=sd, n=n))
    summary = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    return summary, runs, excl


# ----------------------------------------------------------------------------------------------
# The comparison
# ----------------------------------------------------------------------------------------------


def _order(values, order):
    return [order.index(v) if v in order else len(order) for v in values]


def _sort(df: pd.DataFrame, datasets: list[str]) -> pd.DataFrame:
    # Table order: dataset, set (id first), column (reference, or own backbone for a base), then
    # the column's own variants before the models compared with it from elsewhere (ViTs).
    col = [r if isinstance(r, str) else b for r, b in zip(df["reference"], df["backbone"])]
    keys = list(zip(
        [datasets.index(v) for v in df["dataset"]],
        [(0, "") if v == "id" else (1, v) for v in df["set"]],
        [(_order([c], BACKBONE_ORDER)[0], c) for c in col],
        [int(b != c) for b, c in zip(df["backbone"], col)],
        _order(df["backbone"], BACKBONE_ORDER),
        _order(df["model"], MODEL_ORDER),
    ))
    idx = sorted(range(len(df)), key=lambda i: keys[i])
    return df.iloc[idx].reset_index(drop=True)


def compare_summary(summary: pd.DataFrame, *, alpha: float = 0.05, margin: float = 1.0,
                    power: float = 0.8, correction: str = "holm") -> pd.DataFrame:
    """Compare every variant with its reference; returns Table 2 in long form (``TABLE_COLUMNS``).

    ``summary``: ``SUMMARY_COLUMNS`` in percent. ``margin``: TOST equivalence margin in percentage
    points. ``correction``: ``holm`` (default), ``none`` or another statsmodels ``multipletests``
    method, applied within each (dataset, set, reference) family. Base rows are kept (with empty
    statistics) so the table is complete.
    """
    if correction not in CORRECTIONS:
        raise ConfigError(f"--correction {correction!r} is unknown; use one of "
                          f"{', '.join(CORRECTIONS)}.")
    if not (0 < alpha < 1 and 0 < power < 1 and margin > 0):
        raise ConfigError("--alpha and --power must lie in (0, 1) and --margin must be > 0 "
                          f"(got alpha={alpha}, power={power}, margin={margin}).")
    datasets = list(dict.fromkeys(summary["dataset"]))
    rows = []
    for (dataset, set_), grp in summary.groupby(["dataset", "set"], sort=False):
        bases = {r["backbone"]: r for _, r in grp[grp["model"] == "base"].iterrows()}
        for _, r in grp.iterrows():
            own = dict(r[SUMMARY_COLUMNS])
            if r["model"] == "base":
                rows.append({**own, "reference": None})
                continue
            if r["backbone"] in bases:
                refs = [bases[r["backbone"]]]
            elif r["model"] in ATTENTION_VARIANTS:
                refs = []  # a CNN variant is only ever compared with its own base
            else:
                refs = list(bases.values())  # ViTs: against every base
            if not refs:
                rows.append({**own, "reference": None})
            for ref in refs:
                c = stats.compare_two(r["mean"], r["sd"], int(r["n"]), ref["mean"], ref["sd"],
                                      int(ref["n"]), margin=margin, alpha=alpha, power=power)
                rows.append({**own, "reference": ref["backbone"], "ref_mean": ref["mean"],
                             "ref_sd": ref["sd"], "ref_n": int(ref["n"]), **c.as_dict()})
    table = pd.DataFrame(rows).reindex(columns=TABLE_COLUMNS)
    table["p_adjusted"] = np.nan
    has_ref = table["reference"].notna()
    for _, idx in table[has_ref].groupby(["dataset", "set", "reference"]).groups.items():
        table.loc[idx, "p_adjusted"] = stats.adjust_pvalues(table.loc[idx, "p"].to_numpy(float),
                                                            correction, alpha)
    for out, src in (("significant", "p"), ("significant_adjusted", "p_adjusted"),
                     ("equivalent", "tost_p")):
        v = table[src].to_numpy(float)
        table[out] = pd.array([None if math.isnan(x) else bool(x < alpha) for x in v],
                              dtype="boolean")
    for col in ("n", "ref_n"):
        table[col] = table[col].astype("Int64")
    return _sort(table, datasets)


def compare_runs(runs_dir: str | os.PathLike, *, include_diverged: bool = False,
                 **options) -> CompareResult:
    """Table 2 from the final runs in ``runs_dir`` (diverged runs excluded unless asked)."""
    from medattn.training import store

    if not Path(runs_dir, "runs").is_dir():
        raise DataError(f"{runs_dir}: no 'runs/' folder; give the RUNS_DIR that `medattn study` "
                        f"wrote (or use --summary FILE.csv).")
    frame = store.load_records(runs_dir)
    summary, runs, excluded = summarize_runs(frame, include_diverged)
    if summary.empty:
        raise DataError(f"{runs_dir}: no finished final runs with test metrics; run "
                        f"`medattn study` first (search runs do not enter Table 2).")
    table = compare_summary(summary, **options)
    return CompareResult(table, runs, excluded, _settings(options, include_diverged))


def _settings(options: dict, include_diverged: bool | None = None) -> dict:
    s = {"alpha": 0.05, "margin": 1.0, "power": 0.8, "correction": "holm", **options}
    if include_diverged is not None:
        s["include_diverged"] = include_diverged
    return s


# ----------------------------------------------------------------------------------------------
# Output
# ----------------------------------------------------------------------------------------------


def _cell(row, n_mode: int | None, markup: str) -> str:
    if pd.isna(row["mean"]):
        return "–"
    sd = "n/a" if pd.isna(row["sd"]) else f"{row['sd']:.2f}"
    text = f"{row['mean']:.1f}"
    if row.get("significant") is True:
        text = f"**{text}**" if markup == "md" else rf"\textbf{{{text}}}"
    marks = ""
    if row.get("significant_adjusted") is True:
        marks += "†" if markup == "md" else r"$^\dagger$"
    if row.get("equivalent") is True:
        marks += "≈" if markup == "md" else r"$^\approx$"
    pm = "±" if markup == "md" else r"$\pm$"
    out = f"{text}{marks} {pm} {sd}"
    if n_mode is not None and row["n"] != n_mode:
        out += f" [n={row['n']}]"
    return out


def wide_table(table: pd.DataFrame, markup: str = "md") -> pd.DataFrame:
    """The paper's layout: rows = models, columns = (dataset, reference backbone).

    A cell is ``ID (OOD)`` as ``mean ± sd``; ViT rows appear in every column, marked against that
    column's base. Marks: bold = p < alpha (the paper's), † = significant after correction,
    ≈ = equivalent within the TOST margin. ``[n=k]`` flags a cell whose n differs from the rest.
    """
    if table.empty:
        return pd.DataFrame()
    n_mode = int(table["n"].mode().iloc[0])
    datasets = list(dict.fromkeys(table["dataset"]))
    columns: dict[str, dict[str, str]] = {}
    for ds in datasets:
        t = table[table["dataset"] == ds]
        present = [b for b in BACKBONE_ORDER + sorted(set(t["backbone"]) - set(BACKBONE_ORDER))
                   if (t["backbone"] == b).any()]
        compared_elsewhere = set(t.loc[t["reference"].notna() & (t["reference"] != t["backbone"]),
                                       "backbone"])
        # One column per backbone, except those whose rows sit in the other columns (the ViTs).
        for col_bb in [b for b in present if b not in compared_elsewhere]:
            own = t["backbone"] == col_bb
            sel = t[(own & (t["reference"].isna() | (t["reference"] == col_bb)))
                    | (~own & (t["reference"] == col_bb))]
            cells: dict[str, str] = {}
            for (bb, model), g in sel.groupby(["backbone", "model"], sort=False):
                parts = {r["set"]: _cell(r, n_mode, markup) for _, r in g.iterrows()}
                text = parts.pop("id", "–")
                if parts:
                    text += " (" + "; ".join(parts[k] for k in sorted(parts)) + ")"
                label = MODEL_LABELS.get(model, model)
                if bb != col_bb and bb != "vit":
                    label = f"{BACKBONE_LABELS.get(bb, bb)} {label}"
                cells[label] = text
            columns[f"{ds} · {BACKBONE_LABELS.get(col_bb, col_bb)}"] = cells
    labels = list(dict.fromkeys(k for c in columns.values() for k in c))
    order = [MODEL_LABELS[m] for m in MODEL_ORDER]
    labels.sort(key=lambda x: order.index(x) if x in order else len(order))
    wide = pd.DataFrame({c: [cells.get(lbl, "") for lbl in labels] for c, cells in columns.items()},
                        index=pd.Index(labels, name="model"))
    return wide


def _fmt(v, spec: str) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA:
        return ""
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    return format(v, spec)


def _p(v) -> str:
    if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
        return ""
    return f"{v:.2g}" if v < 0.001 else f"{v:.3f}"


def stats_display(table: pd.DataFrame) -> pd.DataFrame:
    """Human-readable statistics per comparison (strings), for Markdown / HTML / LaTeX."""
    t = table[table["reference"].notna()]
    return pd.DataFrame({
        "dataset": t["dataset"],
        "set": t["set"],
        "model": [MODEL_LABELS.get(m, m) if b == "vit" else f"{BACKBONE_LABELS.get(b, b)} "
                  f"{MODEL_LABELS.get(m, m)}" for b, m in zip(t["backbone"], t["model"])],
        "vs": [f"{BACKBONE_LABELS.get(r, r)} base" for r in t["reference"]],
        "n": [f"{a} vs {b}" for a, b in zip(t["n"], t["ref_n"])],
        "diff [95% CI] (pp)": [f"{_fmt(d, '+.2f')} [{_fmt(lo, '+.2f')}, {_fmt(hi, '+.2f')}]"
                               for d, lo, hi in zip(t["diff"], t["diff_ci_low"], t["diff_ci_high"])],
        "p": [_p(v) for v in t["p"]],
        "p adj.": [_p(v) for v in t["p_adjusted"]],
        "g [95% CI]": [f"{_fmt(g, '+.2f')} [{_fmt(lo, '+.2f')}, {_fmt(hi, '+.2f')}]"
                       for g, lo, hi in zip(t["hedges_g"], t["hedges_g_ci_low"], t["hedges_g_ci_high"])],
        "TOST p": [_p(v) for v in t["tost_p"]],
        "equiv.": [_fmt(v if v is not pd.NA else None, "") for v in t["equivalent"]],
        "detectable (pp)": [_fmt(v, ".2f") for v in t["detectable_diff"]],
    }).reset_index(drop=True)


def legend(settings: dict, table: pd.DataFrame | None = None) -> str:
    """One paragraph explaining the marks and settings of Table 2 (with its usual n if given)."""
    corr = {"holm": "Holm", "none": "no", "bonferroni": "Bonferroni", "holm-sidak": "Holm-Sidak",
            "fdr_bh": "Benjamini-Hochberg", "fdr_by": "Benjamini-Yekutieli"}.get(
        settings.get("correction", "holm"), settings.get("correction"))
    n = ""
    if table is not None and len(table) and table["n"].notna().any():
        n = f", n = {int(table['n'].mode().iloc[0])} runs unless marked [n=k]"
    return (f"Balanced accuracy in %, mean ± sd over the final runs (ID test set, OOD in "
            f"parentheses{n}). **Bold**: Welch's t-test against the respective base, p < "
            f"{settings.get('alpha', 0.05)} (the paper's mark). †: still significant after "
            f"{corr} correction within each column. ≈: equivalent within ±"
            f"{settings.get('margin', 1.0)} pp (TOST, alpha {settings.get('alpha', 0.05)}). "
            f"Detectable: the smallest true difference the test finds with "
            f"{int(100 * settings.get('power', 0.8))}% power at these n and sds.")


def _md_table(df: pd.DataFrame, index: bool = True) -> str:
    cols = ([df.index.name or ""] if index else []) + [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for i, row in df.iterrows():
        vals = ([str(i)] if index else []) + [str(v).replace("|", "\\|") for v in row]
        lines.append("| " + " | ".join(vals) + " |")
    return "\n".join(lines)


_TEX = {"·": "/", "–": "--", "−": "-", "±": r"$\pm$", "†": r"$^\dagger$", "≈": r"$^\approx$",
        "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
        "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "\\": r"\textbackslash{}"}


def tex_escape(text: str) -> str:
    """Escape LaTeX special characters in plain text."""
    return "".join(_TEX.get(ch, ch) for ch in str(text))


def _tex_table(df: pd.DataFrame, index: bool = True, raw_cells: bool = False) -> str:
    cols = ([df.index.name or ""] if index else []) + list(df.columns)
    lines = [r"\begin{tabular}{" + "l" * len(cols) + "}", r"\toprule",
             " & ".join(tex_escape(c) for c in cols) + r" \\", r"\midrule"]
    for i, row in df.iterrows():
        vals = ([tex_escape(i)] if index else []) + [
            (str(v) if raw_cells else tex_escape(v)) for v in row]
        lines.append(" & ".join(vals) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines)


def table2_markdown(result: CompareResult) -> str:
    """Table 2 (paper layout), the statistics per comparison and the excluded runs, as Markdown."""
    parts = ["## Table 2: balanced accuracy per model", "", _md_table(wide_table(result.table)), "",
             legend(result.settings, result.table), "", "### Statistics per comparison", "",
             "Differences are variant − reference in percentage points (pp).", "",
             _md_table(stats_display(result.table), index=False)]
    if result.excluded is not None and len(result.excluded):
        parts += ["", "### Final runs not included", ""]
        parts += [f"- `{r.run_id}` ({r.dataset}, {r.backbone} {r.model}): {r.reason}"
                  for r in result.excluded.itertuples()]
    return "\n".join(parts) + "\n"


def table2_latex(result: CompareResult) -> str:
    """Table 2 (paper layout) and the statistics table as LaTeX (booktabs) tabulars."""
    wide = wide_table(result.table, markup="latex")
    return ("% Table 2: balanced accuracy (%), mean $\\pm$ sd; \\textbf{}: p < alpha (Welch), "
            "$^\\dagger$: significant after correction, $^\\approx$: equivalent (TOST)\n"
            + _tex_table(wide, raw_cells=True) + "\n\n% Statistics per comparison (pp)\n"
            + _tex_table(stats_display(result.table), index=False) + "\n")


def _json_value(v):
    if v is None or v is pd.NA:
        return None
    if isinstance(v, (np.bool_, bool)):
        return bool(v)
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return None if math.isnan(v) else float(v)
    return v


def format_result(result: CompareResult, fmt: str = "md") -> str:
    """Render a comparison as ``md`` (paper layout + statistics), ``csv``, ``json`` or ``latex``."""
    if fmt == "md":
        return table2_markdown(result)
    if fmt == "csv":
        return result.table.to_csv(index=False, float_format="%.6g")
    if fmt == "json":
        rows = [{k: _json_value(v) for k, v in r.items()}
                for r in result.table.to_dict(orient="records")]
        return json.dumps(rows, indent=1) + "\n"
    if fmt == "latex":
        return table2_latex(result)
    raise ConfigError(f"--format {fmt!r} is unknown; use one of {', '.join(FORMATS)}.")


def write_atomic(path: str | os.PathLike, text: str | bytes) -> Path:
    """Write ``text`` to ``path`` via a temporary file and ``os.replace`` (never half-written)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(text.encode("utf-8") if isinstance(text, str) else text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a report is meant to be shared
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def run_compare(runs_dir: str | None = None, *, summary: str | None = None, fmt: str = "md",
                out: str | None = None, include_diverged: bool = False, alpha: float = 0.05,
                margin: float = 1.0, power: float = 0.8, correction: str = "holm") -> str:
    """What ``medattn compare`` does: compare, render, optionally write ``out``; returns the text."""
    if (runs_dir is None) == (summary is None):
        raise ConfigError("give either RUNS_DIR or --summary FILE.csv (exactly one).")
    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt!r} is unknown; use one of {', '.join(FORMATS)}.")
    opts = dict(alpha=alpha, margin=margin, power=power, correction=correction)
    if summary is not None:
        if summary == "paper":
            summary = str(PAPER_TABLE2)
        result = CompareResult(compare_summary(read_summary(summary), **opts),
                               settings=_settings(opts))
    else:
        result = compare_runs(runs_dir, include_diverged=include_diverged, **opts)
    text = format_result(result, fmt)
    if out:
        write_atomic(out, text)
    return text
