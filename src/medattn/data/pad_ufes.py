"""PAD-UFES-20 (smartphone clinical photos; the out-of-distribution test set for skin).

Layout: ``metadata.csv`` (``patient_id, lesion_id, ..., age, ..., gender, ..., fitspatrick, ...,
diagnostic, ..., img_id, biopsed``) and images ``imgs_part_{1,2,3}/PAT_<p>_<l>_<n>.png``.
``diagnostic``: MEL -> melanoma, NEV -> nevus, ACK/BCC/SCC/SEK -> other.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from medattn.data import labels as L
from medattn.data.table import diagnosed_rows, finish_table, index_images, read_csv

ROMAN = {1: "I", 2: "II", 3: "III", 4: "IV", 5: "V", 6: "VI"}
IMAGE_FOLDERS = ("imgs_part_1", "imgs_part_2", "imgs_part_3", "images", ".")


def read_pad_ufes(root: str | Path, spec: str | None = None) -> pd.DataFrame:
    """Read a PAD-UFES-20 folder into a sample table (classes melanoma / nevus / other).

    group = ``patient_id``. Rows with a ``diagnostic`` outside the six codes or without an image
    file are skipped and counted.
    """
    root = Path(root).expanduser()
    spec = spec or f"pad-ufes-20:{root}"
    df = read_csv(root / "metadata.csv", required=["patient_id", "lesion_id", "diagnostic", "img_id"])
    where = index_images(root, IMAGE_FOLDERS, lambda name: name)
    sub, table, skipped = diagnosed_rows(df, "diagnostic", "img_id", L.PAD_UFES_DIAGNOSTIC, str.upper,
                                         where, image_id=lambda name: name.rsplit(".", 1)[0])
    table["group"] = ("patient:" + sub["patient_id"].astype(str)).values
    table["subset"] = pd.NA
    table["diagnosis"] = sub["diagnostic"].values
    if "age" in sub.columns:
        table["age"] = pd.to_numeric(sub["age"], errors="coerce").values
    if "gender" in sub.columns:
        table["sex"] = sub["gender"].values
    if "fitspatrick" in sub.columns:
        # PAD codes Fitzpatrick as 1..6 (floats); ISIC as I..VI: use ISIC's spelling
        num = pd.to_numeric(sub["fitspatrick"], errors="coerce")
        table["skin_type"] = num.map(lambda v: ROMAN.get(int(v)) if v == v else pd.NA).values
    table["lesion_id"] = sub["lesion_id"].values
    table["patient_id"] = sub["patient_id"].values
    for col in sub.columns:
        if col.startswith("true_"):
            values = pd.to_numeric(sub[col], errors="coerce")
            table[col] = (values if values.notna().sum() == sub[col].notna().sum() else sub[col]).values
    return finish_table(table, L.SKIN_CLASSES, "pad-ufes-20", spec, skipped)
