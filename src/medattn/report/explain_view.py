"""The report's Table 4 section, from what ``medattn explain`` wrote to ``analysis/explain/``: the
grid figure, a short summary of where each map puts its mass (percent of the map's mass vs
percent of the image's area, the chance level), and the full ``explain_summary.csv`` folded.

A Grad-CAM map is computed on the last convolutional stage, 1/32 of the input side: at 48-64 px
it has 2 x 2 cells and its border and corner shares equal the area shares by construction. Such
rows are flagged "cannot localise" and their shares left out (``explain.grid.MIN_CELLS``).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from medattn.explain.grid import MIN_CELLS, gradcam_cells
from medattn.report.html import MAX_ROWS, Details, Figure, Section, Table, Text, read_table
from medattn.report.tables import model_name_label

__all__ = ["explain_summary", "table4_section"]

TITLE = "Table 4: explanations"
REGION_NAMES = {"lesion": "in lesion", "patch": "on patch", "border": "border",
                "corners": "corners"}
METHODS = {"gradcam": "Grad-CAM", "ga": "GA map", "rollout": "attention rollout"}


def _sizes(records: list[dict]) -> dict[str, int]:
    return {r["run_id"]: int(r["image_size"]) for r in records
            if r.get("run_id") and r.get("image_size")}


def _pct(v) -> str:
    return "" if pd.isna(v) else f"{100 * float(v):.1f}"


def explain_summary(summary: pd.DataFrame, sizes: dict[str, int]) -> pd.DataFrame:
    """One row per data set, map and model (all images): the map's cells, and per region
    ``mass / area (%)``; Grad-CAM rows below 7 x 7 cells say they cannot localise, no shares."""
    s = summary[summary["class"].astype(str) == "all"] if "class" in summary else summary
    rows = []
    for r in s.to_dict(orient="records"):
        size = sizes.get(str(r.get("run_id")))
        method = str(r.get("method"))
        cells = gradcam_cells(size) if method == "gradcam" and size else None
        coarse = cells is not None and cells < MIN_CELLS
        block = r.get("block")
        name = METHODS.get(method, method) + (f" (block {int(block)})" if method == "ga"
                                              and pd.notna(block) and block != "" else "")
        row = {"data set": r.get("dataset"), "map": name, "model": model_name_label(r["model"]),
               "cells": f"{cells}×{cells}" if cells else "", "images": r.get("n_images")}
        for reg, label in REGION_NAMES.items():
            mass, area = r.get(f"mass_{reg}"), r.get(f"area_{reg}")
            if pd.isna(mass) and pd.isna(area):
                continue
            row[f"{label}: mass / area (%)"] = ("—" if coarse else
                                                f"{_pct(mass)} / {_pct(area)}")
        row["note"] = (f"cannot localise: a {cells}×{cells} map (needs {MIN_CELLS}×{MIN_CELLS}, "
                       f"{MIN_CELLS * 32} px)" if coarse else "")
        rows.append(row)
    out = pd.DataFrame(rows)
    if len(out) and not out["note"].astype(bool).any():
        out = out.drop(columns="note")
    return out


def table4_section(folder: Path, records: list[dict], hint: str) -> Section:
    """The Table 4 section; ``hint`` where ``medattn explain`` has not run."""
    blocks = []
    png = folder / "table4.png"
    summary = read_table(folder / "explain_summary.csv")
    short = (explain_summary(summary, _sizes(records))
             if summary is not None and len(summary) and "model" in summary else None)
    n_coarse = int(short["note"].astype(bool).sum()) if short is not None and "note" in short else 0
    if png.is_file():
        warn = (" Grad-CAM rows marked \"cannot localise\" have too few cells at this image size "
                "to outline anything." if n_coarse else "")
        blocks.append(Figure(png.read_bytes(), "table4",
                             "Grad-CAM, GA maps and attention rollout of the best final run per "
                             "model: one example image per class and the mean map." + warn))
    if short is not None:
        if n_coarse:
            blocks.append(Text(f"**{n_coarse} Grad-CAM row(s) cannot localise**: at this image "
                               f"size the map has fewer than {MIN_CELLS}×{MIN_CELLS} cells, so "
                               f"its border and corner shares equal their area shares by "
                               f"construction; they are left out below. Train at "
                               f"{MIN_CELLS * 32} px or more (the paper's size) to read them.",
                               cls="reading"))
        blocks.append(Table(short, "Where each map puts its mass, over the mean-map images: "
                                   "percent of the map's mass in a region / percent of the "
                                   "image's area in it (a flat map's score); mass above area "
                                   "means the map favours the region."))
        full = summary.head(MAX_ROWS)
        blocks.append(Details(f"Every class and region (`explain_summary.csv`): {len(summary)} "
                              f"rows × {len(summary.columns)} columns (click to open)",
                              [Table(full, "Shares as fractions (0-1), per class; the CSV has "
                                           "every row.")]))
    return Section("table4", TITLE, blocks or [Text(f"Table 4: {hint}.")])
