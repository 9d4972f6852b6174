"""ISIC Archive as written by ``isic image download OUTDIR`` (isic-cli), plus ISIC 2018 masks.

Layout: a flat folder of ``ISIC_0000000.jpg`` (some ``.png``/``.tif``), ``metadata.csv`` (UTF-8,
CRLF), ``attribution.txt``, ``licenses/``; images in sub-folders are found too. Both metadata
generations are read: the older single ``diagnosis`` column and the newer hierarchical
``diagnosis_1..5``. ISIC 2018 task-1/2 masks
(``<id>_segmentation.png``, ``<id>_attribute_<name>.png``) are joined when found in the folder or
in its sub-folders (two levels), e.g. an unpacked ``ISIC2018_Task1_Training_GroundTruth/``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pandas as pd

from medattn.data import labels as L
from medattn.data.table import (ImageIndex, copy_truth, finish_table, image_stem, link_groups,
                                match_rows, read_csv)
from medattn.errors import DataError

ATTRIBUTES = ("pigment_network", "negative_network", "streaks", "milia_like_cyst", "globules")
_ID_RE = re.compile(r"^ISIC_\d+$")
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


def isic_stem(name: str) -> str | None:
    """``ISIC_0000000.jpg`` -> ``ISIC_0000000``; None for masks and other files."""
    stem = image_stem(name)
    return stem if stem is not None and _ID_RE.match(stem) else None


def read_isic(root: str | Path, spec: str | None = None) -> pd.DataFrame:
    """Read an ISIC archive download into a sample table (classes melanoma / nevus / other).

    Images are found anywhere below the folder (isic-cli writes them flat). group = the images
    linked by ``patient_id`` or ``lesion_id`` (named by the patient where one is known, else the
    lesion, else the image; see :func:`medattn.data.table.link_groups`). Images without a usable
    diagnosis, with a value outside :mod:`medattn.data.labels`' maps, or without an image file are
    skipped and counted in ``attrs["skipped"]``.
    """
    root = Path(root).expanduser()
    spec = spec or f"isic:{root}"
    meta_path = root / "metadata.csv"
    df = read_csv(meta_path, required=["isic_id"])
    if "diagnosis_1" in df.columns:
        levels = [df[c].tolist() if c in df.columns else [None] * len(df)
                  for c in (f"diagnosis_{k}" for k in range(1, 6))]
        mapped = L.map_each(zip(*levels), L.isic_hierarchy)
    elif "diagnosis" in df.columns:
        mapped = L.map_each(df["diagnosis"].tolist(), L.isic_legacy)
    else:
        raise DataError(f"{meta_path}: required column 'diagnosis' (older downloads) or "
                        "'diagnosis_1'..'diagnosis_5' (newer downloads) missing; download the "
                        "metadata with `isic image download` or `isic metadata download`")

    index = ImageIndex(root, isic_stem)
    sub, table, skipped, missing = match_rows(df, mapped, df["isic_id"].astype(str), index)
    keys = {k: sub[f"{k}_id"] for k in ("patient", "lesion") if f"{k}_id" in sub.columns}
    table["group"] = link_groups(table["image_id"], keys)
    table["subset"] = pd.NA
    if "age_approx" in sub.columns:
        table["age"] = pd.to_numeric(sub["age_approx"], errors="coerce").values
    if "sex" in sub.columns:
        table["sex"] = sub["sex"].values
    if "fitzpatrick_skin_type" in sub.columns:
        table["skin_type"] = sub["fitzpatrick_skin_type"].values
    sites = ["anatom_site_general", *(f"anatom_site_{k}" for k in range(1, 6))]  # older, newer
    for col in ("lesion_id", "patient_id", *sites):
        if col in sub.columns:
            table[col] = sub[col].values
    masks = find_masks(root)
    ids = table["image_id"]
    if any(i in masks for i in ids):
        table["mask_path"] = [masks.get(i, {}).get("segmentation", pd.NA) for i in ids]
        for att in ATTRIBUTES:
            table[f"attr_{att}_path"] = [masks.get(i, {}).get(f"attribute_{att}", pd.NA) for i in ids]
        if any("patch" in masks.get(i, {}) for i in ids):
            table["patch_mask_path"] = [masks.get(i, {}).get("patch", pd.NA) for i in ids]
    copy_truth(sub, table)
    return finish_table(table, L.SKIN_CLASSES, "isic", spec, skipped,
                        index.missing(missing, "{}.jpg (or .png/.tif)"))
