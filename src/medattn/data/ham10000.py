"""HAM10000 as distributed (Harvard Dataverse / Kaggle).

Layout: ``HAM10000_metadata.csv`` (``lesion_id, image_id, dx, dx_type, age, sex, localization``;
the Dataverse ``HAM10000_metadata.tab`` is read too) with images in ``HAM10000_images_part_1/`` and
``HAM10000_images_part_2/``, or anywhere else below the folder (flat, or the Kaggle mirror's
duplicated lower-case folders: the first copy found is used). ``dx``: mel -> melanoma, nv ->
nevus, akiec/bcc/bkl/df/vasc -> other.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from medattn.data import labels as L
from medattn.data.table import (ImageIndex, finish_table, image_stem, link_groups, match_rows,
                                read_csv)


def read_ham10000(root: str | Path, spec: str | None = None) -> pd.DataFrame:
    """Read a HAM10000 folder into a sample table (classes melanoma / nevus / other); group = lesion."""
    root = Path(root).expanduser()
    spec = spec or f"ham10000:{root}"
    meta = root / "HAM10000_metadata.csv"
    sep = ","
    if not meta.is_file() and (root / "HAM10000_metadata.tab").is_file():
        meta, sep = root / "HAM10000_metadata.tab", "\t"
    df = read_csv(meta, required=["lesion_id", "image_id", "dx"], sep=sep)
    index = ImageIndex(root, image_stem)
    mapped = L.map_each(df["dx"].tolist(),
                        lambda d: L.map_code(d, L.HAM10000_DX, lambda v: v.strip().lower()))
    sub, table, skipped, missing = match_rows(df, mapped, df["image_id"].astype(str), index)
    table["group"] = link_groups(table["image_id"], {"lesion": sub["lesion_id"]})
    table["subset"] = pd.NA
    for col, new in (("age", "age"), ("sex", "sex"), ("localization", "localization"),
                     ("dx_type", "dx_type"), ("lesion_id", "lesion_id")):
        if col in sub.columns:
            table[new] = sub[col].values
    return finish_table(table, L.SKIN_CLASSES, "ham10000", spec, skipped,
                        index.missing(missing, "{}.jpg (or .png)"))
