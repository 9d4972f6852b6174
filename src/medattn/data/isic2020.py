"""The ISIC 2020 challenge (SIIM-ISIC melanoma) training data, as released.

Layout (https://challenge.isic-archive.com/data/#2020): ``ISIC_2020_Training_GroundTruth_v2.csv``
(``image_name,patient_id,lesion_id,sex,age_approx,anatom_site_general_challenge,diagnosis,
benign_malignant,target``, CRLF) or the first release ``ISIC_2020_Training_GroundTruth.csv`` (the same
without ``lesion_id``; the Kaggle competition's ``train.csv`` is this file), optionally
``ISIC_2020_Training_Duplicates.csv`` (``image_name_1,image_name_2``), and the JPEGs of
``ISIC_2020_Training_JPEG.zip`` (``train/ISIC_*.jpg``; Kaggle: ``jpeg/train/``), found anywhere below
the folder. ``diagnosis`` holds older-generation ISIC archive values (``nevus``, ``melanoma``,
``seborrheic keratosis``, ...); ``unknown`` (about 27,000 benign images) has no diagnosis.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from medattn.data import labels as L
from medattn.data.isic import isic_stem
from medattn.data.table import (ImageIndex, MetadataNotFound, finish_table, link_groups,
                                match_rows, read_csv)

GROUND_TRUTH = ("ISIC_2020_Training_GroundTruth_v2.csv", "ISIC_2020_Training_GroundTruth.csv",
                "train.csv")
DUPLICATES = "ISIC_2020_Training_Duplicates.csv"


def read_isic2020(root: str | Path, spec: str | None = None) -> pd.DataFrame:
    """Read the ISIC 2020 training download into a sample table (melanoma / nevus / other).

    ``diagnosis`` is mapped as the older ISIC generation (melanoma, nevus, the rest other).
    group = the images linked by ``patient_id`` (always given), ``lesion_id`` (v2) and the pairs of
    the duplicates file: a patient is the leakage unit, and a duplicated image stays with its twin.
    """
    root = Path(root).expanduser()
    spec = spec or f"isic2020:{root}"
    found = [root / name for name in GROUND_TRUTH if (root / name).is_file()]
    if not found:
        raise MetadataNotFound(root / GROUND_TRUTH[0])
    gt = read_csv(found[0], required=["image_name", "patient_id", "diagnosis"])
    ids = gt["image_name"].map(L.clean)
    index = ImageIndex(root, isic_stem)
    sub, table, skipped, missing = match_rows(gt, L.map_each(gt["diagnosis"].tolist(), L.isic_legacy),
                                              ids, index)
    pairs = []
    if (root / DUPLICATES).is_file():
        dup = read_csv(root / DUPLICATES, required=["image_name_1", "image_name_2"])
        pairs = list(zip(dup["image_name_1"].map(L.clean), dup["image_name_2"].map(L.clean)))
    keys = {"patient": sub["patient_id"]}
    if "lesion_id" in sub.columns:
        keys["lesion"] = sub["lesion_id"]
    table["group"] = link_groups(table["image_id"], keys, pairs)
    table["subset"] = pd.NA
    if "age_approx" in sub.columns:
        table["age"] = pd.to_numeric(sub["age_approx"], errors="coerce").values
    if "anatom_site_general_challenge" in sub.columns:
        table["anatom_site_general"] = sub["anatom_site_general_challenge"].values
    for col in ("sex", "patient_id", "lesion_id", "benign_malignant"):
        if col in sub.columns:
            table[col] = sub[col].values
    return finish_table(table, L.SKIN_CLASSES, "isic2020", spec, skipped,
                        index.missing(missing, "{}.jpg"))
