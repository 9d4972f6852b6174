"""MedMNIST v2 ``.npz`` files (``{flag}.npz`` or ``{flag}_{64,128,224}.npz``).

Each file holds ``train_images, train_labels, val_images, val_labels, test_images, test_labels``
(uint8 images N x S x S x 3 or N x S x S, labels N x 1). DermaMNIST (labels 0..6: akiec, bcc, bkl,
df, melanoma, nevus, vasc) is mapped to melanoma / nevus / other, its seven classes kept as the fine
``diagnosis``; any other 2D single-label flag keeps its own classes. Images stay in the file: a
row's ``path`` is ``FILE.npz#split/index``.
MedMNIST has no patient ids, so each image is its own group (leakage cannot be controlled).
"""

from __future__ import annotations

import re
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from medattn.data import labels as L
from medattn.data.table import finish_table
from medattn.errors import DataError

SPLITS = ("train", "val", "test")


def medmnist_flag(path: Path) -> str:
    """``dermamnist`` from ``dermamnist.npz`` or ``dermamnist_224.npz``."""
    return re.sub(r"_(28|64|128|224)$", "", path.stem.lower())


def read_medmnist(file: str | Path, spec: str | None = None) -> pd.DataFrame:
    """Read a MedMNIST npz into a sample table; ``subset`` is the official train/val/test."""
    file = Path(file).expanduser().resolve()
    spec = spec or f"medmnist:{file}"
    if not file.is_file():
        found = sorted(file.glob("*.npz")) if file.is_dir() else []
        use = (f"; found {', '.join(f.name for f in found[:5])} there: use medmnist:{found[0]}"
               if found else "")
        raise DataError(f"{file}: MedMNIST file not found; name the .npz file itself, "
                        f"e.g. medmnist:~/data/dermamnist_64.npz{use}")
    flag = medmnist_flag(file)
    if flag in L.MEDMNIST_MULTILABEL:
        raise DataError(f"{file}: {flag} is multi-label; only single-label MedMNIST flags are supported")
    try:
        npz = np.load(file, allow_pickle=False)
        keys = set(npz.files)
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise DataError(f"{file}: not a readable .npz file ({err}); re-download it") from err
    frames = []
    with npz:
        for split in SPLITS:
            if f"{split}_images" not in keys or f"{split}_labels" not in keys:
                raise DataError(f"{file}: required array '{split}_images' or '{split}_labels' "
                                "missing; is this a MedMNIST file?")
            shape = _shape(npz, split)
            if len(shape) not in (3, 4) or (len(shape) == 4 and shape[-1] != 3):
                raise DataError(f"{file}: '{split}_images' has shape {shape}; expected N x S x S "
                                "(x 3): 3D MedMNIST flags are not supported")
            y = npz[f"{split}_labels"]
            if y.ndim == 2 and y.shape[1] != 1:
                raise DataError(f"{file}: '{split}_labels' has shape {y.shape}: multi-label data "
                                "is not supported")
            y = y.reshape(-1).astype(np.int64)
            if len(y) != shape[0]:
                raise DataError(f"{file}: {len(y)} labels but {shape[0]} images in split {split!r}")
            ids = [f"{flag}_{split}_{i}" for i in range(len(y))]
            frames.append(pd.DataFrame({
                "image_id": ids, "path": [f"{file}#{split}/{i}" for i in range(len(y))],
                "label": y, "group": ids, "subset": split}))
    table = pd.concat(frames, ignore_index=True)
    n = int(table["label"].max()) + 1
    if int(table["label"].min()) < 0:
        raise DataError(f"{file}: negative label {int(table['label'].min())}; "
                        "is this a MedMNIST file?")
    if flag == "dermamnist":
        if n > len(L.DERMAMNIST):
            raise DataError(f"{file}: label {n - 1} is outside the {len(L.DERMAMNIST)} classes of "
                            "dermamnist")
        table["diagnosis"] = [L.DERMAMNIST[k][0] for k in table["label"]]
        table["label"] = np.asarray(L.DERMAMNIST_TO_SKIN)[table["label"].to_numpy()]
        classes = L.SKIN_CLASSES
    else:
        classes = L.MEDMNIST_CLASSES.get(flag, [f"class_{k}" for k in range(n)])
        if n > len(classes):
            raise DataError(f"{file}: label {n - 1} is outside the {len(classes)} classes of {flag}")
        table["diagnosis"] = [classes[k].lower() for k in table["label"]]
    return finish_table(table, classes, "medmnist", spec, Counter())


def _shape(npz, split: str) -> tuple:
    # Only the header is needed; NpzFile has no lazy shape, so read the .npy header directly.
    with npz.zip.open(f"{split}_images.npy") as f:
        major, _ = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
        shape, _, _ = read(f)
    return shape
