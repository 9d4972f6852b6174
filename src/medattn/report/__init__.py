"""The study report: one self-contained HTML page plus Markdown, CSV and LaTeX tables.

``build_report(runs_dir, *, out=None, settings=CompareSettings()) -> ReportResult`` reads a study's
runs (docs/architecture.md) and the analysis outputs beside them and writes ``out`` (default
``RUNS_DIR/report``):

- ``report.html``: every section, figures embedded as base64 PNG, CSS inline, no scripts;
- ``report.md`` with ``figures/*.png``;
- ``table1.csv/.tex``, ``table2.csv`` (long form, full precision), ``table2.md``, ``table2.tex``,
  ``runs.csv`` (every final run's balanced accuracy per set), ``settings.json`` (the settings).

See docs/report.md. Over 400 lines on purpose: one short function per section of the page, in
page order, so the report reads top to bottom here as it does in the browser.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml

from medattn import __version__
from medattn.analysis import compare
from medattn.analysis.sequential import read_state
from medattn.analysis.settings import CompareSettings
from medattn.errors import MedattnError
from medattn.runs import store
from medattn.runs.atomic import write_json, write_text
from medattn.runs.hint import check_runs_dir
from medattn.report import table2 as T2
from medattn.report import tables as T
from medattn.report.across import across_section
from medattn.report.design import design_section
from medattn.report.verdict import verdict_markdown

# The sections that draw (report.figures, table2_view, features: matplotlib; explain_view: torch)
# import them inside their function, so `import medattn.report` stays free of both.
from medattn.report.html import (MAX_ROWS, Details, Figure, Pre, Section, Table, Text, read_table,
                                 render_html, render_markdown)

__all__ = ["ReportResult", "build_report"]

log = logging.getLogger("medattn.report")

FEATURES_HINT = "not run yet (run `medattn features RUNS_DIR`)"
EXPLAIN_HINT = "not run yet (run `medattn explain RUNS_DIR`)"
NOTHING_TO_COMPARE = ("no variant has its base among these runs, so there is nothing to compare "
                      "(Table 2 compares each attention variant with the base of its backbone, "
                      "split by split). Train the base and a variant on the same splits, e.g. "
                      "with `medattn study`.")

def _slug(*parts: str) -> str:
    return "-".join(str(p).replace("+", "").replace(":", "").replace("/", "").replace(" ", "_")
                    for p in parts)


def _read_yaml(path: Path) -> tuple[dict | None, str | None]:
    if not path.is_file():
        return None, None
    text = path.read_text(encoding="utf-8")
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError:
        raw = None
    return (raw if isinstance(raw, dict) else None), text


@dataclass
class _Study:
    """What the sections of a report read: the runs folder, its records and study config, and
    Table 2 (None when it could not be computed; ``table2_error`` says why)."""

    runs_dir: Path
    records: list[dict]
    config: dict | None
    config_text: str | None
    name: str
    datasets: list[str]
    settings: CompareSettings
    result: compare.CompareResult | None = None
    table2_error: str | None = None
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)  # written as CSV + LaTeX

    def final_records(self) -> list[dict]:
        """Records of the current selection's final runs that enter the figures (done, and
        diverged ones with ``include_diverged``); superseded runs are left out."""
        ok = ("done", "diverged") if self.settings.include_diverged else ("done",)
        return [r for r in store.final_runs(self.runs_dir).records.values() if r.status in ok]


@dataclass
class ReportResult:
    """What :func:`build_report` wrote: ``html`` (``report.html``), ``paths`` (every file by
    name: ``html``, ``md``, ``settings``, ``table2_csv``, ...), the Table 2 it computed
    (``compare``; None with ``compare_error`` saying why) and the settings (as recorded)."""

    html: Path
    paths: dict[str, Path]
    settings: dict
    compare: object | None = None  # medattn.analysis.compare.CompareResult
    compare_error: str | None = None


def build_report(runs_dir: str | os.PathLike, *, out: str | os.PathLike | None = None,
                 settings: CompareSettings = CompareSettings(),
                 parameters: bool = True) -> ReportResult:
    """Write the report of the study in ``runs_dir`` (to ``out``, default ``RUNS_DIR/report``).

    ``settings``: those of Table 2, as ``medattn compare``
    (:func:`medattn.analysis.compare.compare_runs`); ``settings.include_diverged`` also holds
    for the figures. ``parameters=False`` skips Table 1 (it builds every model, a few seconds).
    """
    study = _read_study(check_runs_dir(runs_dir), settings.for_source(summary=False))
    _compare(study)
    final = study.final_records()
    sections = [_overview(study), _table1(study, parameters), _table2(study),
                _across(study), _accuracy(study), _curves(study, final),
                _confusion(study, final), _search(study), _design(study), _table3(study),
                _table4(study),
                _run_status(study), _reproduce(study)]
    sections.insert(0, _verdict(study, sections))  # the answer first
    paths = _write(study, sections, Path(out) if out is not None else study.runs_dir / "report")
    return ReportResult(paths["html"], paths, _recorded(study), study.result, study.table2_error)


def _recorded(study: _Study) -> dict:
    """The settings the report records: Table 2's (with ``design``) or, without a Table 2, the
    ones it was asked for."""
    return dict(study.result.settings) if study.result is not None else study.settings.as_dict()


def _read_study(runs_dir: Path, settings: CompareSettings) -> _Study:
    records = list(store.iter_records(runs_dir))
    config, config_text = _read_yaml(runs_dir / "study.yaml")
    return _Study(runs_dir, records, config, config_text,
                  name=(config or {}).get("name") or runs_dir.resolve().name,
                  datasets=list(dict.fromkeys(r.get("dataset") for r in records
                                              if r.get("dataset"))),
                  settings=settings)


def _compare(study: _Study) -> None:
    """Table 2 into ``study.result`` (or why not into ``study.table2_error``)."""
    try:
        study.result = compare.compare_runs(study.runs_dir, settings=study.settings)
    except MedattnError as err:
        study.table2_error = str(err)


def _verdict(study: _Study, sections: list[Section]) -> Section:
    """What the study found, one plain-words line per comparison (report.verdict)."""
    design = "see Design" if any(s.id == "design" for s in sections) else None
    text = verdict_markdown(study.result, design) if study.result is not None else ""
    if not text:
        text = f"Nothing compared yet: {study.table2_error or NOTHING_TO_COMPARE}"
    return Section("verdict", "What the study found", [Text(text)])


def _overview(study: _Study) -> Section:
    records = study.records
    counts = (pd.DataFrame([{"phase": r.get("phase"), "status": r.get("status")} for r in records])
              .value_counts().rename("runs").reset_index()
              if records else pd.DataFrame(columns=["phase", "status", "runs"]))
    return Section("overview", "Overview", [
        Text(f"Study **{study.name}** in `{study.runs_dir}`: {len(records)} runs on data set(s) "
             f"{', '.join(f'`{d}`' for d in study.datasets) or '(none)'}. Balanced accuracy is "
             f"in %, differences in percentage points (pp). Only final runs enter Table 2 and "
             f"the accuracy plots; the hyper-parameter search is shown on its own."),
        Table(counts, "Runs by phase and status."),
    ])


def _table1(study: _Study, parameters: bool) -> Section:
    if not parameters:
        return Section("table1", "Table 1: parameters", [
            Text("Table 1 was skipped (`parameters=False`); `medattn params` prints it.")])
    n_classes = next((len(r["classes"]) for r in study.records if r.get("classes")), 3)
    try:
        t1 = T.table1(num_classes=n_classes,
                      models=sorted({r["model"] for r in study.records if r.get("model")}))
    except ImportError as err:  # the model zoo is another part of medattn
        return Section("table1", "Table 1: parameters",
                       [Text(f"Table 1 is not available: {err}.")])
    study.tables["table1"] = t1
    cap = (f"Parameters in millions with {n_classes} output classes. \"Paper's counting\" "
           "counts only module weights and biases, as the paper did (Table 1); \"all "
           "tensors\" adds position embeddings and the like.")
    trained = T.trained_rows(t1, [r["model"] for r in study.records if r.get("model")])
    if trained.empty or len(trained) == len(t1):
        return Section("table1", "Table 1: parameters", [Table(t1, cap)])
    return Section("table1", "Table 1: parameters", [
        Table(trained, f"The {len(trained)} models this study trained. {cap}"),
        Details(f"Every model of the paper's Table 1 and this study: {len(t1)} rows (click to "
                f"open)", [Table(t1, cap)])])


def _table2(study: _Study) -> Section:
    result = study.result
    if result is None:
        return Section("table2", "Table 2: balanced accuracy", [Text(study.table2_error or "")])
    if not result.table["reference"].notna().any():  # e.g. a `medattn train` folder
        return Section("table2", "Table 2: balanced accuracy", [
            Table(T2.wide_table(result.table), "Balanced accuracy in %, mean ± sd over the final "
                  "runs (in-distribution test set, OOD in parentheses).", index=True),
            Text(NOTHING_TO_COMPARE)])
    from medattn.report.table2_view import table2_blocks

    blocks = table2_blocks(result)
    blocks.append(Table(T2.wide_table(result.table), T2.legend(result.settings, result.table),
                        index=True))
    folded = ("Statistics per comparison", "Per-split differences (pp)",
              "Converged runs and all runs")
    for title, caption, body in T2.table2_sections(result):
        if title == "Final runs not included":  # as a table, with the reason per run
            body = result.excluded[["run_id", "dataset", "backbone", "model", "reason"]]
            caption = "n counts only the included runs."
        shown = ([Text(caption)] if caption else []) + [
            Text("\n".join(f"- {x}" for x in body)) if isinstance(body, list) else Table(body)]
        if title in folded and not isinstance(body, list):  # long: behind a one-line summary
            blocks.append(Details(f"{title}: {len(body)} rows × {len(body.columns)} columns "
                                  "(click to open)", shown))
        else:
            blocks += [Text(f"**{title}.**")] + shown
    return Section("table2", "Table 2: balanced accuracy and comparisons", blocks)


def _across(study: _Study) -> Section:
    """Across data sets (docs/statistics.md): verdicts, forest plots, CD diagram, or why not."""
    return across_section(study.result, _slug)


def _set_label(set_name: str) -> str:
    """``in-distribution test`` for ``id``/``test``, ``OOD test (<name>)`` for ``ood-<name>``."""
    return ("in-distribution test" if set_name in ("id", "test")
            else f"OOD test ({set_name[4:]})")


def _accuracy(study: _Study) -> Section:
    from medattn.report import figures as F

    blocks = []
    runs = study.result.runs if study.result is not None else None
    for ds in study.datasets if runs is not None else ():
        for set_name in sorted(set(runs[runs.dataset == ds].set), key=lambda s: (s != "id", s)):
            sel = runs[(runs.dataset == ds) & (runs.set == set_name)]
            label = _set_label(set_name)
            fig = F.bacc_dots(sel, set_name, f"{ds}: {label}")
            if fig is not None:
                blocks.append(Figure(F.to_png(fig), _slug("bacc", ds, set_name),
                                     f"{ds}, {label}: balanced accuracy of every final run "
                                     "(box: quartiles of included runs; whiskers: 1.5 IQR)."))
    return Section("accuracy", "Balanced accuracy per run",
                   blocks or [Text("No final runs with test metrics yet.")])


def _curves(study: _Study, final: list[dict]) -> Section:
    from medattn.report import figures as F

    blocks = []
    for ds in study.datasets:
        fig = F.training_curves([r for r in final if r.get("dataset") == ds], ds)
        if fig is not None:
            blocks.append(Figure(F.to_png(fig), _slug("curves", ds),
                                 f"{ds}: mean over final runs per epoch."))
    return Section("curves", "Training curves",
                   blocks or [Text("No training histories in the final runs.")])


def _confusion(study: _Study, final: list[dict]) -> Section:
    from medattn.report import figures as F

    blocks = []
    for ds in study.datasets:
        recs = [r for r in final if r.get("dataset") == ds]
        classes = next((r["classes"] for r in recs if r.get("classes")), None)
        sets = sorted({s for r in recs for s in (r.get("metrics") or {}) if s != "val"},
                      key=lambda s: (s != "test", s))
        for s in sets:
            label = _set_label(s)
            fig = F.confusion_grid(recs, s, classes or [], f"{ds}, {label}") if classes else None
            if fig is not None:
                blocks.append(Figure(F.to_png(fig), _slug("confusion", ds, s),
                                     f"{ds}, {label}: confusion matrices."))
    return Section("confusion", "Confusion matrices",
                   blocks or [Text("No confusion matrices in the final runs.")])


def _search(study: _Study) -> Section:
    from medattn.report import figures as F

    blocks = []
    records = study.records
    selection = read_table(study.runs_dir / "selection.csv")
    for ds in study.datasets:
        recs = [r for r in records if r.get("phase") == "search" and r.get("dataset") == ds]
        usable = selection is not None and {"dataset", "model", "lr", "weight_decay"} <= set(
            selection.columns)
        sel = selection[selection.dataset.astype(str) == ds] if usable else None
        fig = F.hp_heatmaps(recs, ds, sel) if recs else None
        if fig is not None:
            blocks.append(Figure(F.to_png(fig), _slug("search", ds),
                                 f"{ds}: hyper-parameter search (learning rate × weight decay)."))
    if selection is not None:
        blocks.append(Table(T.selection_table(selection), "The learning rate and weight decay each "
                            "model's final runs used, and how they were chosen."))
    return Section("search", "Hyper-parameter search",
                   blocks or [Text("No search runs (hyper-parameters were fixed or the search "
                                   "has not run).")])


def _design(study: _Study) -> Section:
    """The plan saved by ``medattn plan`` (report/design.py)."""
    return design_section(study.runs_dir)


def _table3(study: _Study) -> Section:
    """Table 3 as ``medattn features`` writes it, else whatever its folder holds."""
    from medattn.report.features import table3_section

    folder = study.runs_dir / "analysis" / "features"
    return table3_section(folder, FEATURES_HINT) or _artifact_section(
        folder, "table3", "Table 3: feature usage", ["table3.csv"], FEATURES_HINT)


def _table4(study: _Study) -> Section:
    """Table 4 from ``medattn explain``'s outputs (report.explain_view)."""
    from medattn.report.explain_view import table4_section

    return table4_section(study.runs_dir / "analysis" / "explain", study.records, EXPLAIN_HINT)


def _run_status(study: _Study) -> Section:
    """Diverged, failed and missing runs."""
    problems, missing = T.run_problems(study.records, study.config)

    if (state := read_state(study.runs_dir)) and len(missing):  # stopped early on purpose
        stop = {k: v.get("n_splits", 0) for k, v in (state.get("models") or {}).items()}
        missing = missing[[not (r.phase == "final" and r.done >= stop.get(f"{r.dataset}/{r.model}",
                                                                           r.expected))
                           for r in missing.itertuples()]]
    blocks = [Text("Runs whose status is not `done` (diverged runs are excluded from Table 2 "
                   "unless `--include-diverged`):") if len(problems) else
              Text("Every run finished with status `done`.")]
    if len(problems):
        blocks.append(Table(problems))
    if study.config is None:
        blocks.append(Text("`study.yaml` not found or unreadable, so missing runs cannot be "
                           "listed."))
    elif len(missing):
        blocks += [Text("Runs the study config asks for that have not finished (run the study "
                        "again to complete them; finished runs are skipped):"), Table(missing)]
    else:
        blocks.append(Text("No runs are missing: every run the study config asks for finished."))
    return Section("runs", "Diverged, failed and missing runs", blocks)


def _reproduce(study: _Study) -> Section:
    blocks = [Text(f"Generated by medattn {__version__} on "
                   f"{_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d %H:%M} UTC. To reproduce, run "
                   f"`medattn study RUNS_DIR/study.yaml --out NEW_DIR` (the config below), then "
                   f"`medattn compare NEW_DIR` and `medattn report NEW_DIR`; with `--out "
                   f"RUNS_DIR` the same command completes this study's missing runs (finished "
                   f"runs are skipped). Each run's split and initialisation are seeded by its "
                   f"split seed.")]

    if state := read_state(study.runs_dir):  # the command must repeat the sequential design
        blocks.append(Text(f"This is a sequential study: add `--until-decided --batch "
                           f"{state.get('batch')} --max-splits {state.get('max_splits')} --margin "
                           f"{state.get('margin')}` to the study command."))
    versions = T.versions_table(study.records)
    if len(versions):
        blocks.append(Table(versions, "Package versions recorded by the runs."))
    fps = sorted({str(r.get("data_fingerprint")) for r in study.records
                  if r.get("data_fingerprint")})
    if fps:
        blocks.append(Text("Data fingerprints: " + ", ".join(f"`{f}`" for f in fps)))
    blocks.append(Pre(study.config_text, "`RUNS_DIR/study.yaml`:") if study.config_text else
                  Text("`study.yaml` not found in RUNS_DIR."))
    shown = ", ".join(f"{k}={v}" for k, v in _recorded(study).items())
    blocks.append(Text(f"Table 2's settings (also in `settings.json`): {shown}."))
    return Section("reproduce", "How to reproduce", blocks)


def _write(study: _Study, sections: list[Section], out: Path) -> dict[str, Path]:
    """Write the HTML and Markdown reports, their figures, the tables' CSV/LaTeX copies and the
    settings; returns the files written by name."""
    title = f"medattn report: {study.name}"
    subtitle = f"Runs directory `{study.runs_dir}`."
    md, files = render_markdown(title, subtitle, sections)
    paths = {}
    for rel, data in files.items():
        paths[rel] = write_text(out / rel, data)
    paths["md"] = write_text(out / "report.md", md)
    paths["settings"] = write_json(out / "settings.json", _recorded(study))
    if "table1" in study.tables:
        T.write_table(out, "table1", study.tables["table1"])
        paths.update(table1_csv=out / "table1.csv", table1_tex=out / "table1.tex")
    result = study.result
    if result is not None:
        paths["table2_csv"] = write_text(out / "table2.csv", T2.format_result(result, "csv"))
        for name, frame in (("pairs", result.pairs), ("divergence", result.divergence),
                            ("sensitivity", result.sensitivity)):
            if frame is not None:
                paths[name] = write_text(out / f"{name}.csv",
                                         frame.to_csv(index=False, float_format="%.6g"))
        paths["table2_md"] = write_text(out / "table2.md", T2.format_result(result, "md"))
        paths["table2_tex"] = write_text(out / "table2.tex", T2.format_result(result, "latex"))
        if result.runs is not None:
            paths["runs"] = write_text(out / "runs.csv", result.runs.to_csv(index=False))
    paths["html"] = write_text(out / "report.html", render_html(title, subtitle, sections))
    log.info("report written to %s", paths["html"])
    return paths


def _artifact_section(folder: Path, sid: str, title: str, csvs: list[str], hint: str,
                      first_png: str | None = None) -> Section:
    """A table written by another command (Table 3, Table 4): its CSVs (or Markdown) and PNGs."""
    blocks = []
    md = folder / f"{sid}.md"
    for name in csvs:
        t = read_table(folder / name) if (folder / name).is_file() else None
        if t is not None:
            cap = f"`{folder.name}/{name}`"
            if len(t) > MAX_ROWS:  # keep the page light; the file has everything
                cap += f" (first {MAX_ROWS} of {len(t)} rows)"
                t = t.head(MAX_ROWS)
            blocks.append(Table(t, cap))
    if not blocks and md.is_file():
        blocks.append(Pre(md.read_text(encoding="utf-8"), f"`{folder.name}/{md.name}`"))
    pngs = sorted(folder.glob("*.png")) if folder.is_dir() else []
    if first_png:
        pngs.sort(key=lambda p: p.name != first_png)
    for p in pngs:
        blocks.append(Figure(p.read_bytes(), _slug(sid, p.stem), f"`{folder.name}/{p.name}`"))
    return Section(sid, title, blocks or [Text(f"{title.split(':')[0]}: {hint}.")])
