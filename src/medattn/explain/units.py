"""One row of Table 4 (a :class:`Unit`), stored on disk so that ``medattn explain`` resumes.

A unit's folder holds ``examples.npy``, ``mean.npy``, ``per_image.csv``, one PNG per example,
``mean.png`` and ``meta.json`` (written last). A model's units are complete when its marker
``<model>.done.json`` (written after all of them) matches the plan they were computed for.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from medattn.explain.grid import save_overlay
from medattn.explain.images import REGIONS, ExplainImages
from medattn.runs.store import atomic_write, write_json


@dataclass
class Unit:
    """One row of the grid: a method applied to one model's best run on one data set."""

    dataset: str
    method: str  # gradcam | ga | rollout
    model: str
    run_id: str
    block: int | None  # GA block index (1-based), else None
    classes: list[str]
    example_ids: list[str]
    examples: np.ndarray  # (n_examples, H, W) float32 in [0, 1]
    mean: np.ndarray  # (H, W)
    per_image: pd.DataFrame = field(repr=False)  # image_id, label, pred, mass_<region>
    selected_by: str = ""  # "split <seed>" or "best run"
    pool_source: str = ""  # "common test set" or "whole table"

    @property
    def key(self) -> str:
        slug = f"{self.method}__{self.model.replace('+', '-')}"
        return slug if self.block is None else f"{slug}__block{self.block}"


def slug(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in str(text))


def _marker(model_dir: Path, model: str) -> Path:
    return model_dir / f"{model.replace('+', '-')}.done.json"


def save_units(model_dir: Path, units: list[Unit], images: ExplainImages, meta: dict) -> None:
    """Write a model's units, then its completion marker (``meta`` plus the unit keys)."""
    for unit in units:
        _save_unit(unit, model_dir / unit.key, images,
                   {**meta, "method": unit.method, "block": unit.block})
    write_json(_marker(model_dir, meta["model"]), {**meta, "units": [u.key for u in units]})


def _save_unit(unit: Unit, folder: Path, images: ExplainImages, meta: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / "examples.npy", lambda t: _save_npy(t, unit.examples))
    atomic_write(folder / "mean.npy", lambda t: _save_npy(t, unit.mean))
    atomic_write(folder / "per_image.csv", lambda t: unit.per_image.to_csv(t, index=False,
                                                                         float_format="%.6g"))
    for c, (name, iid) in enumerate(zip(unit.classes, unit.example_ids)):
        if iid:
            save_overlay(folder / f"{slug(name)}_{slug(iid)}.png", images.image(iid),
                         unit.examples[c])
    save_overlay(folder / "mean.png", None, unit.mean)
    write_json(folder / "meta.json", meta)  # last: its presence marks the unit complete


def _save_npy(tmp: str, arr: np.ndarray) -> None:
    with open(tmp, "wb") as fh:
        np.save(fh, arr, allow_pickle=False)


def load_units(model_dir: Path, meta: dict, dataset: str) -> list[Unit] | None:
    """The saved units of ``meta["model"]`` when its completion marker matches ``meta``."""
    model = meta["model"]
    try:
        saved = json.loads(_marker(model_dir, model).read_text())
    except (OSError, ValueError):
        return None
    if any(saved.get(k) != v for k, v in meta.items()):
        return None
    units = []
    for key in saved["units"]:
        folder = model_dir / key
        try:
            m = json.loads((folder / "meta.json").read_text())
            units.append(Unit(
                dataset=dataset, method=m["method"], model=model, run_id=m["run_id"],
                block=m["block"], classes=m["classes"], example_ids=m["example_ids"],
                examples=np.load(folder / "examples.npy", allow_pickle=False),
                mean=np.load(folder / "mean.npy", allow_pickle=False),
                per_image=pd.read_csv(folder / "per_image.csv", dtype={"image_id": str}),
                selected_by=m.get("selected_by", ""), pool_source=m.get("pool_source", "")))
        except (OSError, ValueError, KeyError):
            return None
    return units


def summarise(units: list[Unit], areas: dict[str, dict[str, float]]) -> pd.DataFrame:
    """One row per (data set, method, model, block, class): mean mass share per region.

    ``class`` is a class name (images of that true class among the mean-map images) or ``all``.
    ``mass_<region>`` averages over the images that have the region (``n_lesion`` / ``n_patch`` of
    them); ``area_<region>`` is the region's mean area share, the score of a flat map.
    """
    rows = []
    for u in units:
        groups = [("all", u.per_image)]
        groups += [(name, u.per_image[u.per_image["label"] == c])
                   for c, name in enumerate(u.classes)]
        for cls, frame in groups:
            row = {"dataset": u.dataset, "method": u.method, "model": u.model, "run_id": u.run_id,
                   "selected_by": u.selected_by, "images": u.pool_source,
                   "block": u.block if u.block is not None else "", "class": cls,
                   "n_images": len(frame)}
            for r in REGIONS:
                col = frame.get(f"mass_{r}")
                have = int(col.notna().sum()) if col is not None else 0
                row[f"mass_{r}"] = float(col.mean()) if have else np.nan
                row[f"area_{r}"] = areas[u.dataset].get(f"area_{r}", np.nan)
                if r in ("lesion", "patch"):
                    row[f"n_{r}"] = have  # images that have this region (a mask, a patch)
            rows.append(row)
    return pd.DataFrame(rows)
