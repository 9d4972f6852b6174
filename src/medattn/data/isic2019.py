"""The ISIC 2019 challenge training data, as released.

Layout (https://challenge.isic-archive.com/data/#2019): ``ISIC_2019_Training_GroundTruth.csv``
(``image,MEL,NV,BCC,AK,BKL,DF,VASC,SCC,UNK``, one-hot ``1.0``/``0.0``, ``1``/``0`` in re-saved
copies), ``ISIC_2019_Training_Metadata.csv`` (``image,age_approx,anatom_site_general,lesion_id,
sex``) and the images of ``ISIC_2019_Training_Input.zip`` unpacked beside them
(``ISIC_2019_Training_Input/``; found anywhere below the folder). About 2,000 ids carry a
``_downsampled`` suffix (the file name has it too): the image id in the table is the ISIC id
without it, and ``downsampled`` records it.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from medattn.data import labels as L
from medattn.data.table import (ImageIndex, MetadataNotFound, finish_table, image_stem,
                                link_groups, match_rows, read_csv)
from medattn.errors import DataError

GROUND_TRUTH = "ISIC_2019_Training_GroundTruth.csv"
METADATA = "ISIC_2019_Training_Metadata.csv"
_ID_RE = re.compile(r"^ISIC_\d+(_downsampled)?$")
SUFFIX = "_downsampled"


def _stem(name: str) -> str | None:
    stem = image_stem(name)
    return stem if stem is not None and _ID_RE.match(stem) else None


def one_hot_labels(gt: pd.DataFrame, path: Path) -> list[tuple[int | str, str]]:
    """(class, fine diagnosis) of every GroundTruth row from its one-hot columns, or (reason, "").

    Raises:
        DataError: a cell is not a number (names the row and column).
    """
    cols = [c for c in L.ISIC2019_COLUMNS if c in gt.columns]
    values = gt[cols].apply(pd.to_numeric, errors="coerce")
    bad = values.isna() & gt[cols].notna()
    if bad.any(axis=None):
        row, col = np.argwhere(bad.to_numpy())[0]
        raise DataError(f"{path}: row {row + 2} ({gt['image'].iloc[row]}): column {cols[col]!r} is "
                        f"{gt[cols[col]].iloc[row]!r}, expected 0 or 1; re-download the file")
    hot = values.fillna(0).to_numpy() == 1
    out: list[tuple[int | str, str]] = []
    for row in hot:
        on = [cols[k] for k in np.flatnonzero(row)]
        if len(on) > 1:
            out.append((f"several classes in one row ({'+'.join(on)})", ""))
        elif not on or on[0] == "UNK":
            out.append(("no diagnosis", ""))
        else:
            diagnosis, label = L.ISIC2019_DX[on[0]]
            out.append((label, diagnosis))
    return out


def read_isic2019(root: str | Path, spec: str | None = None) -> pd.DataFrame:
    """Read the ISIC 2019 training download into a sample table (melanoma / nevus / other).

    MEL -> melanoma, NV -> nevus, BCC/AK/BKL/DF/VASC/SCC -> other; UNK or no class -> skipped.
    group = ``lesion_id`` from the metadata file (required: without it the many images per lesion
    of HAM10000 and BCN20000 would leak across splits). About 2,000 images (the older ISIC archive
    part) have no lesion id and no patient id in this release: each is its own group, the best the
    release allows (``data inspect`` counts them).
    """
    root = Path(root).expanduser()
    spec = spec or f"isic2019:{root}"
    gt = read_csv(root / GROUND_TRUTH, required=["image", *L.ISIC2019_COLUMNS[:-1]])
    try:
        meta = read_csv(root / METADATA, required=["image", "lesion_id"])
    except MetadataNotFound:
        raise DataError(f"{root / METADATA}: not found; it holds the lesion ids that keep images "
                        "of one lesion on one side of a split. Download it from "
                        "https://challenge.isic-archive.com/data/#2019 and put it beside "
                        f"{GROUND_TRUTH}") from None
    ids = gt["image"].map(L.clean)
    meta = meta.assign(image=meta["image"].map(L.clean)).drop_duplicates("image")
    meta = meta.set_index("image").reindex(ids).reset_index()
    index = ImageIndex(root, _stem)
    sub, table, skipped, missing = match_rows(meta, one_hot_labels(gt, root / GROUND_TRUTH), ids,
                                              index, image_id=lambda s: s.removesuffix(SUFFIX))
    table["downsampled"] = sub["image"].str.endswith(SUFFIX).to_numpy()
    table["group"] = link_groups(table["image_id"], {"lesion": sub["lesion_id"]})
    table["subset"] = pd.NA
    if "age_approx" in sub.columns:
        table["age"] = pd.to_numeric(sub["age_approx"], errors="coerce").values
    for col in ("sex", "anatom_site_general", "lesion_id"):
        if col in sub.columns:
            table[col] = sub[col].values
    return finish_table(table, L.SKIN_CLASSES, "isic2019", spec, skipped,
                        index.missing(missing, "{}.jpg"))
