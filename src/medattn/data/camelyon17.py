"""Camelyon17-WILDS (v1.0) patches with the official hospital split.

Layout: ``camelyon17_v1.0/`` with ``RELEASE_v1.0.txt``, ``metadata.csv`` (``,patient,node,x_coord,
y_coord,tumor,slide,center,split``; patient zero-padded) and patches
``patches/patient_{p}_node_{n}/patch_patient_{p}_node_{n}_x_{x}_y_{y}.png`` (96 x 96, maybe RGBA).

``subset`` follows WILDS: centers 0, 3, 4 -> ``train`` (``split == 0``) or ``id_val``
(``split == 1``); center 1 -> ``val`` (OOD validation); center 2 -> ``test`` (OOD test).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pandas as pd

from medattn.data import labels as L
from medattn.data.table import finish_table, list_files, read_csv
from medattn.errors import DataError

TRAIN_CENTERS = (0, 3, 4)
VAL_CENTER, TEST_CENTER = 1, 2
REQUIRED = ["patient", "node", "x_coord", "y_coord", "tumor", "slide", "center", "split"]


def camelyon_root(path: str | Path) -> Path:
    """The ``camelyon17_v1.0`` folder, given it or the folder that holds it."""
    path = Path(path).expanduser()
    if (path / "camelyon17_v1.0" / "metadata.csv").is_file():
        return path / "camelyon17_v1.0"
    return path


def read_camelyon17(root: str | Path, spec: str | None = None) -> pd.DataFrame:
    """Read Camelyon17-WILDS into a sample table (classes normal / tumor); group = slide."""
    root = camelyon_root(root)
    spec = spec or f"camelyon17:{root}"
    meta = root / "metadata.csv"
    df = read_csv(meta, required=REQUIRED)
    try:
        center = df["center"].astype(int)
        split = df["split"].astype(int)
        patient = df["patient"].astype(int).map("{:03d}".format)
        node = df["node"].astype(int).astype(str)
        x, y = df["x_coord"].astype(int).astype(str), df["y_coord"].astype(int).astype(str)
    except (ValueError, TypeError) as err:
        raise DataError(f"{meta}: a patient/node/x_coord/y_coord/center/split value is not an "
                        f"integer ({err}); the file is damaged, re-download it") from err
    folder = "patient_" + patient + "_node_" + node
    name = "patch_" + folder + "_x_" + x + "_y_" + y + ".png"
    skipped = Counter()
    tumor = df["tumor"].str.strip()
    ok_label = tumor.isin(["0", "1"])
    skipped.update({"unknown label": int((~ok_label).sum())})
    # one directory listing per slide folder, then one vectorised membership test
    existing = {f"{f}/{n}" for f in folder[ok_label].unique() for n in list_files(root / "patches" / f)}
    present = (folder + "/" + name).isin(existing)
    skipped.update({"missing image": int((ok_label & ~present).sum())})
    keep = ok_label & present
    subset = pd.Series("train", index=df.index)
    subset[split == 1] = "id_val"
    subset[center == VAL_CENTER] = "val"
    subset[center == TEST_CENTER] = "test"
    table = pd.DataFrame({
        "image_id": name.str[:-4],
        "path": str(root / "patches") + "/" + folder + "/" + name,
        "label": tumor.where(ok_label, "0").astype(int),
        "group": "slide:" + df["slide"].str.strip(),
        "subset": subset,
        "center": center,
        "slide": df["slide"].str.strip(),
        "patient": patient,
        "node": node.astype(int),
    })[keep.values]
    table["diagnosis"] = table["label"].map(dict(enumerate(L.CAMELYON_CLASSES)))
    for col in df.columns:
        if col.startswith("true_"):
            table[col] = pd.to_numeric(df.loc[keep.values, col], errors="coerce")
    return finish_table(table, L.CAMELYON_CLASSES, "camelyon17", spec,
                        {k: v for k, v in skipped.items() if v})
