"""PAD-UFES-20 (smartphone clinical photos; the out-of-distribution test set for skin).

Layout: ``metadata.csv`` (``patient_id, lesion_id, ..., age, ..., gender, ..., fitspatrick, ...,
diagnostic, ..., img_id, biopsed``) and the images ``PAT_<p>_<l>_<n>.png`` anywhere below the
folder: ``imgs_part_{1,2,3}/`` (the paper's layout), ``images/imgs_part_N/`` (the publisher's
``images/imgs_part_N.zip`` unpacked), ``imgs_part_N/imgs_part_N/`` (the Kaggle mirror) or flat.
``diagnostic``: MEL -> melanoma, NEV -> nevus, ACK/BCC/SCC/SEK -> other.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from medattn.data import labels as L
from medattn.data.table import (ImageIndex, copy_truth, finish_table, link_groups, match_rows,
                                read_csv)

ROMAN = {1: "I", 2: "II", 3: "III", 4: "IV", 5: "V", 6: "VI"}


def _png(name: str) -> str | None:
    return name if name.lower().endswith(".png") else None


def read_pad_ufes(root: str | Path, spec: str | None = None) -> pd.DataFrame:
    """Read a PAD-UFES-20 folder into a sample table (classes melanoma / nevus / other).

    ``lesion_id`` is made unique as ``<patient_id>_<lesion_id>`` (``PAT_46_881``, the prefix of the
    image names): the release numbers lesions per patient, and the same number is used by different
    patients. group = the patient. Rows with a ``diagnostic`` outside the codes or without an image
    file are skipped and counted.
    """
    root = Path(root).expanduser()
    spec = spec or f"pad-ufes-20:{root}"
    df = read_csv(root / "metadata.csv", required=["patient_id", "lesion_id", "diagnostic", "img_id"])
    index = ImageIndex(root, _png)
    mapped = L.map_each(df["diagnostic"].tolist(),
                        lambda d: L.map_code(d, L.PAD_UFES_DIAGNOSTIC, lambda v: v.strip().upper()))
    sub, table, skipped, missing = match_rows(df, mapped, df["img_id"].astype(str), index,
                                              image_id=lambda name: name.rsplit(".", 1)[0])
    patient = sub["patient_id"].map(L.clean)
    lesion = [f"{p}_{L.clean(les)}" if p and L.clean(les) else "" for p, les in
              zip(patient, sub["lesion_id"])]
    table["group"] = link_groups(table["image_id"], {"patient": patient, "lesion": lesion})
    table["subset"] = pd.NA
    if "age" in sub.columns:
        table["age"] = pd.to_numeric(sub["age"], errors="coerce").values
    if "gender" in sub.columns:
        table["sex"] = sub["gender"].values
    if "fitspatrick" in sub.columns:
        # PAD codes Fitzpatrick as 1..6 (floats); ISIC as I..VI: use ISIC's spelling
        num = pd.to_numeric(sub["fitspatrick"], errors="coerce")
        table["skin_type"] = num.map(lambda v: ROMAN.get(int(v)) if v == v else pd.NA).values
    table["lesion_id"] = [les or pd.NA for les in lesion]
    table["patient_id"] = patient.values
    copy_truth(sub, table)
    return finish_table(table, L.SKIN_CLASSES, "pad-ufes-20", spec, skipped, index.missing(missing))
