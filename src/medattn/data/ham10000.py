"""HAM10000 as distributed (Harvard Dataverse / Kaggle).

Layout: ``HAM10000_metadata.csv`` (``lesion_id, image_id, dx, dx_type, age, sex, localization``;
the Dataverse ``HAM10000_metadata.tab`` is read too) with images in ``HAM10000_images_part_1/`` and
``HAM10000_images_part_2/`` (or flat beside the metadata). ``dx``: mel -> melanoma, nv -> nevus,
akiec/bcc/bkl/df/vasc -> other.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from medattn.data import labels as L
from medattn.data.table import diagnosed_rows, finish_table, index_images, read_csv

IMAGE_FOLDERS = ("HAM10000_images_part_1", "HAM10000_images_part_2", "HAM10000_images", ".")


def _image_stem(name: str) -> str | None:
    """``ISIC_0024306.jpg`` -> ``ISIC_0024306``; None for files that are not images."""
    stem, _, ext = name.rpartition(".")
    return stem if ext.lower() in ("jpg", "jpeg", "png") else None


def read_ham10000(root: str | Path, spec: str | None = None) -> pd.DataFrame:
    """Read a HAM10000 folder into a sample table (classes melanoma / nevus / other); group = lesion."""
    root = Path(root).expanduser()
    spec = spec or f"ham10000:{root}"
    meta = root / "HAM10000_metadata.csv"
    sep = ","
    if not meta.is_file() and (root / "HAM10000_metadata.tab").is_file():
        meta, sep = root / "HAM10000_metadata.tab", "\t"
    df = read_csv(meta, required=["lesion_id", "image_id", "dx"], sep=sep)
    where = index_images(root, IMAGE_FOLDERS, _image_stem)
    sub, table, skipped = diagnosed_rows(df, "dx", "image_id", L.HAM10000_DX, str.lower, where)
    table["group"] = ("lesion:" + sub["lesion_id"].astype(str)).values
    table["subset"] = pd.NA
    table["diagnosis"] = sub["dx"].values
    for col, new in (("age", "age"), ("sex", "sex"), ("localization", "localization"),
                     ("dx_type", "dx_type"), ("lesion_id", "lesion_id")):
        if col in sub.columns:
            table[new] = sub[col].values
    return finish_table(table, L.SKIN_CLASSES, "ham10000", spec, skipped)
