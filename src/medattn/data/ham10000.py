"""HAM10000 as distributed (Harvard Dataverse / Kaggle).

Layout: ``HAM10000_metadata.csv`` (``lesion_id, image_id, dx, dx_type, age, sex, localization``;
the Dataverse ``HAM10000_metadata.tab`` is read too) with images in ``HAM10000_images_part_1/`` and
``HAM10000_images_part_2/`` (or flat beside the metadata). ``dx``: mel -> melanoma, nv -> nevus,
akiec/bcc/bkl/df/vasc -> other.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pandas as pd

from medattn.data import labels as L
from medattn.data.table import finish_table, list_files, read_csv

IMAGE_FOLDERS = ("HAM10000_images_part_1", "HAM10000_images_part_2", "HAM10000_images", ".")


def read_ham10000(root: str | Path, spec: str | None = None) -> pd.DataFrame:
    """Read a HAM10000 folder into a sample table (classes melanoma / nevus / other); group = lesion."""
    root = Path(root).expanduser()
    spec = spec or f"ham10000:{root}"
    meta = root / "HAM10000_metadata.csv"
    sep = ","
    if not meta.is_file() and (root / "HAM10000_metadata.tab").is_file():
        meta, sep = root / "HAM10000_metadata.tab", "\t"
    df = read_csv(meta, required=["lesion_id", "image_id", "dx"], sep=sep)
    where: dict[str, str] = {}
    for folder in IMAGE_FOLDERS:
        for name in list_files(root / folder):
            stem, _, ext = name.rpartition(".")
            if ext.lower() in ("jpg", "jpeg", "png"):
                where.setdefault(stem, str((root / folder / name).resolve()))
    rows, keep, skipped = [], [], Counter()
    for i, (dx, image_id) in enumerate(zip(df["dx"], df["image_id"])):
        code = str(dx).strip().lower() if isinstance(dx, str) else ""
        if code not in L.HAM10000_DX:
            skipped["no diagnosis" if not code else f"unknown diagnosis {code!r}"] += 1
            continue
        path = where.get(str(image_id).strip())
        if path is None:
            skipped["missing image"] += 1
            continue
        keep.append(i)
        rows.append((str(image_id).strip(), path, L.HAM10000_DX[code]))
    sub = df.iloc[keep].reset_index(drop=True)
    table = pd.DataFrame(rows, columns=["image_id", "path", "label"])
    table["group"] = ("lesion:" + sub["lesion_id"].astype(str)).values
    table["subset"] = pd.NA
    table["diagnosis"] = sub["dx"].values
    for col, new in (("age", "age"), ("sex", "sex"), ("localization", "localization"),
                     ("dx_type", "dx_type"), ("lesion_id", "lesion_id")):
        if col in sub.columns:
            table[new] = sub[col].values
    return finish_table(table, L.SKIN_CLASSES, "ham10000", spec, skipped)
