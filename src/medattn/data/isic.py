"""ISIC Archive as written by ``isic image download OUTDIR`` (isic-cli), plus ISIC 2018 masks.

Layout: a flat folder of ``ISIC_0000000.jpg`` (some ``.png``/``.tif``), ``metadata.csv`` (UTF-8,
CRLF), ``attribution.txt``, ``licenses/``. Both metadata generations are read: the older single
``diagnosis`` column and the newer hierarchical ``diagnosis_1..5``. ISIC 2018 task-1/2 masks
(``<id>_segmentation.png``, ``<id>_attribute_<name>.png``) are joined when found in the folder or
in its sub-folders (two levels), e.g. an unpacked ``ISIC2018_Task1_Training_GroundTruth/``.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from pathlib import Path

import pandas as pd

from medattn.data import labels as L
from medattn.data.table import finish_table, list_files, read_csv
from medattn.errors import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff")
ATTRIBUTES = ("pigment_network", "negative_network", "streaks", "milia_like_cyst", "globules")
_MASK_RE = re.compile(r"^(ISIC_\d+)_(segmentation|attribute_[a-z_]+|patch)\.png$")


def find_masks(root: Path, depth: int = 2) -> dict[str, dict[str, str]]:
    """``{isic_id: {kind: path}}`` for ISIC 2018 mask files under ``root`` (kind = ``segmentation``,
    ``attribute_<name>`` or ``patch``)."""
    found: dict[str, dict[str, str]] = {}
    root_depth = len(root.parts)
    for dirpath, dirnames, filenames in os.walk(root):
        if len(Path(dirpath).parts) - root_depth >= depth:
            dirnames[:] = []
        for name in filenames:
            m = _MASK_RE.match(name)
            if m:
                found.setdefault(m.group(1), {})[m.group(2)] = os.path.join(dirpath, name)
    return found


def read_isic(root: str | Path, spec: str | None = None) -> pd.DataFrame:
    """Read an ISIC archive download into a sample table (classes melanoma / nevus / other).

    group = ``patient_id`` where present, else ``lesion_id``, else the image id (the strongest
    leakage unit the metadata provides). Images without a usable diagnosis, with a diagnosis not
    in :data:`medattn.data.labels.ISIC_OLD_DIAGNOSES`, or without an image file are skipped and
    counted in ``attrs["skipped"]``.
    """
    root = Path(root).expanduser()
    spec = spec or f"isic:{root}"
    meta_path = root / "metadata.csv"
    df = read_csv(meta_path, required=["isic_id"])
    if "diagnosis_1" in df.columns:
        for c in ("diagnosis_2", "diagnosis_3"):
            if c not in df.columns:
                df[c] = pd.NA
        labels = [L.isic_new_label(a, b, c) for a, b, c in
                  zip(df["diagnosis_1"], df["diagnosis_2"], df["diagnosis_3"])]
        diagnosis = df["diagnosis_3"].fillna(df["diagnosis_2"]).fillna(df["diagnosis_1"])
    elif "diagnosis" in df.columns:
        labels = [L.isic_old_label(d) for d in df["diagnosis"]]
        diagnosis = df["diagnosis"]
    else:
        raise DataError(f"{meta_path}: required column 'diagnosis' (older downloads) or "
                        "'diagnosis_1'..'diagnosis_5' (newer downloads) missing; download the "
                        "metadata with `isic image download` or `isic metadata download`")

    files = list_files(root)
    by_stem = {}
    for name in sorted(files):
        stem, ext = os.path.splitext(name)
        if ext.lower() in IMAGE_EXTENSIONS and stem.startswith("ISIC_") and "_" not in stem[5:]:
            by_stem.setdefault(stem, name)
    masks = find_masks(root)

    rows, skipped = [], Counter()
    for i, isic_id in enumerate(df["isic_id"]):
        label = labels[i]
        if isinstance(label, str):
            skipped[label] += 1
            continue
        name = by_stem.get(str(isic_id).strip())
        if name is None:
            skipped["missing image"] += 1
            continue
        rows.append((i, str(isic_id).strip(), str(root / name), label))
    idx = [r[0] for r in rows]
    sub = df.iloc[idx].reset_index(drop=True)
    table = pd.DataFrame({
        "image_id": [r[1] for r in rows],
        "path": [r[2] for r in rows],
        "label": [r[3] for r in rows],
    })
    group = pd.Series([pd.NA] * len(sub), dtype="object")
    if "patient_id" in sub.columns:
        group = ("patient:" + sub["patient_id"]).where(sub["patient_id"].notna(), pd.NA)
    if "lesion_id" in sub.columns:
        group = group.fillna("lesion:" + sub["lesion_id"].where(sub["lesion_id"].notna(), pd.NA))
    table["group"] = group.fillna("image:" + table["image_id"]).values
    table["subset"] = pd.NA
    table["diagnosis"] = diagnosis.iloc[idx].values
    if "age_approx" in sub.columns:
        table["age"] = pd.to_numeric(sub["age_approx"], errors="coerce").values
    if "sex" in sub.columns:
        table["sex"] = sub["sex"].values
    if "fitzpatrick_skin_type" in sub.columns:
        table["skin_type"] = sub["fitzpatrick_skin_type"].values
    for col in ("lesion_id", "patient_id", "anatom_site_general"):
        if col in sub.columns:
            table[col] = sub[col].values
    ids = table["image_id"]
    if any(i in masks for i in ids):
        table["mask_path"] = [masks.get(i, {}).get("segmentation", pd.NA) for i in ids]
        for att in ATTRIBUTES:
            table[f"attr_{att}_path"] = [masks.get(i, {}).get(f"attribute_{att}", pd.NA) for i in ids]
        if any("patch" in masks.get(i, {}) for i in ids):
            table["patch_mask_path"] = [masks.get(i, {}).get("patch", pd.NA) for i in ids]
    for col in sub.columns:
        if col.startswith("true_"):
            values = pd.to_numeric(sub[col], errors="coerce")
            table[col] = (values if values.notna().sum() == sub[col].notna().sum() else sub[col]).values
    return finish_table(table, L.SKIN_CLASSES, "isic", spec, skipped)
