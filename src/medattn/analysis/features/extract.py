"""One row of features per image of a sample table, cached on disk.

Columns written (units; NaN where an input is missing, so that image is left out of that feature's
test):

========================  =====================================================  =================
column                    definition                                             needs
========================  =====================================================  =================
``asymmetry``             A, mean reflection non-overlap, 0..1 (``shape.py``)   task-1 mask
``border``                B, P^2 / (4 pi A), 1 = disc (``shape.py``)            task-1 mask
``n_colours``             C, dermoscopic colours present, 0..6 (``colour.py``)  task-1 mask
``structures``            D, task-2 structures present, 0..5                     the 5 task-2 masks
``structures_area``       D, union of the structures / lesion area, 0..1         task-1 + task-2
``age``                   years (metadata)                                       ``age``
``sex``                   1 male, 0 female (metadata)                            ``sex``
``skin_ita``              ITA of the skin, degrees (``colour.py``)              task-1 mask
``patch``                 colourful patch present, 0/1 (detector or annotation)  task-1 mask*
``patch_area``            share of the image with colourful pixels (detector)    task-1 mask
========================  =====================================================  =================

(*) With ``patches="auto"`` (default) an annotation is used where the table has one: a column
``colorful_patch``/``colourful_patch`` (0/1), else ``patch_mask_path`` (patch = mask not empty);
otherwise the detector of ``colour.py`` runs. ``patches="detector"`` always runs the detector.

Images are read at their size, or reduced so that the longer side is ``max_side`` (256 by default)
for speed; masks are resized to the image with nearest-neighbour sampling.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from medattn.analysis.features.colour import colour_count, colourful_patch, skin_ita
from medattn.analysis.features.shape import asymmetry, border_irregularity, clean_mask
from medattn.runs.atomic import atomic_write
from medattn.errors import ConfigError, DataError
from medattn.progress import progress_bar

STRUCTURES = ("pigment_network", "negative_network", "streaks", "milia_like_cyst", "globules")
IMAGE_COLUMNS = ("asymmetry", "border", "n_colours", "structures", "structures_area", "skin_ita",
                 "patch", "patch_area")
COLUMNS = IMAGE_COLUMNS + ("age", "sex")
PATCH_SOURCES = ("auto", "detector", "annotation")
CACHE_VERSION = "1"


def _present(value) -> bool:
    return isinstance(value, str) and value != "" and os.path.exists(value)


def _read_mask(path: str, size: tuple[int, int]) -> np.ndarray:
    try:
        with Image.open(path) as im:
            im = im.convert("L")
            if im.size != size:
                im = im.resize(size, Image.Resampling.NEAREST)
            return np.asarray(im) > 127
    except OSError as err:
        raise DataError(f"mask {path}: cannot be read ({err}); replace or delete the file") from err


def _read_image(path: str, max_side: int) -> np.ndarray:
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            scale = max_side / max(im.size)
            if scale < 1:
                im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))),
                               Image.Resampling.BILINEAR)
            return np.asarray(im)
    except OSError as err:
        raise DataError(f"image {path}: cannot be read ({err}); replace or delete the file") from err


def image_features(row: pd.Series | dict, max_side: int = 256, patches: str = "auto") -> dict:
    """The image-based features of one sample-table row (see the module table), NaN where missing."""
    out = dict.fromkeys(IMAGE_COLUMNS, float("nan"))
    row = dict(row)
    attr_paths = [row.get(f"attr_{s}_path") for s in STRUCTURES]
    has_mask = _present(row.get("mask_path"))
    has_attrs = all(_present(p) for p in attr_paths)
    annotation = _patch_annotation(row) if patches != "detector" else None
    if not (has_mask or has_attrs) and annotation is None:
        return out
    rgb = _read_image(row["path"], max_side)
    size = (rgb.shape[1], rgb.shape[0])
    mask = clean_mask(_read_mask(row["mask_path"], size)) if has_mask else None
    if mask is not None and mask.any():
        out["asymmetry"] = asymmetry(mask)
        out["border"] = border_irregularity(mask)
        out["n_colours"] = colour_count(rgb, mask)
        present, share = colourful_patch(rgb, mask)
        out["patch_area"] = share
        out["patch"] = float(present)
        patch_px = None
        if _present(row.get("patch_mask_path")):
            patch_px = _read_mask(row["patch_mask_path"], size)
        out["skin_ita"] = skin_ita(rgb, mask, exclude=patch_px)
    if annotation is not None:
        out["patch"] = float(annotation)
    elif patches == "annotation":
        out["patch"] = float("nan")
    if has_attrs:
        attrs = [_read_mask(p, size) for p in attr_paths]
        out["structures"] = float(sum(a.any() for a in attrs))
        if mask is not None and mask.any():
            out["structures_area"] = float(np.logical_or.reduce(attrs).sum() / mask.sum())
    return out


def _patch_annotation(row: dict) -> float | None:
    for col in ("colorful_patch", "colourful_patch"):
        value = row.get(col)
        if value is not None and not pd.isna(value):
            return float(bool(value))
    path = row.get("patch_mask_path")
    if _present(path):
        with Image.open(path) as im:
            return float(np.asarray(im.convert("L")).max() > 127)
    return None


def metadata_features(table: pd.DataFrame) -> pd.DataFrame:
    """``age`` (years) and ``sex`` (1 male, 0 female, NaN otherwise) from the sample table."""
    age = pd.to_numeric(table["age"], errors="coerce") if "age" in table else np.nan
    sex = table["sex"].astype("string").str.lower().map({"male": 1.0, "female": 0.0}) \
        if "sex" in table else np.nan
    return pd.DataFrame({"age": age, "sex": sex}, index=table.index).astype(float)


def _cache_key(table: pd.DataFrame, max_side: int, patches: str) -> str:
    h = hashlib.sha1(f"{CACHE_VERSION}|{max_side}|{patches}".encode())
    return h.hexdigest()[:12]


def extract_features(table: pd.DataFrame, cache: str | Path | None = None, max_side: int = 256,
                     patches: str = "auto", progress: bool = True) -> pd.DataFrame:
    """Features of every row of a sample table, indexed by ``image_id`` (columns ``COLUMNS``).

    Args:
        table: a sample table (``medattn.data.load_dataset``).
        cache: CSV file of computed rows; rows already there are reused (resumable: the file is
            rewritten atomically every 200 images), new ones appended.
        max_side: longest image side used for the image features, pixels.
        patches: ``"auto"``, ``"detector"`` or ``"annotation"`` (see the module docstring).
        progress: show a progress bar.
    """
    if patches not in PATCH_SOURCES:
        raise ConfigError(f"features: patches={patches!r} is not one of {', '.join(PATCH_SOURCES)}")
    if "image_id" not in table or "path" not in table:
        raise DataError("features: the sample table needs columns image_id and path")
    key = _cache_key(table, max_side, patches)
    done = pd.DataFrame(columns=["image_id", "key", *IMAGE_COLUMNS]).set_index("image_id")
    if cache is not None and Path(cache).exists():
        try:
            done = pd.read_csv(cache, dtype={"image_id": str, "key": str}).set_index("image_id")
        except (OSError, ValueError, KeyError) as err:
            raise DataError(f"feature cache {cache}: unreadable ({err}); delete it to recompute") from err
        done = done[done["key"] == key]
    rows = {iid: done.loc[iid, list(IMAGE_COLUMNS)].to_dict() for iid in table["image_id"]
            if iid in done.index}
    todo = table[~table["image_id"].isin(list(rows))]

    for i, (_, row) in enumerate(progress_bar(todo.iterrows(), total=len(todo), desc="features",
                                              disable=not progress or len(todo) == 0)):
        rows[row["image_id"]] = image_features(row, max_side=max_side, patches=patches)
        if cache is not None and (i + 1) % 200 == 0:
            _write_cache(cache, rows, key)
    if cache is not None and len(todo):
        _write_cache(cache, rows, key)
    feats = pd.DataFrame.from_dict(rows, orient="index").reindex(table["image_id"])
    meta = metadata_features(table).set_axis(table["image_id"])
    feats = feats.join(meta)[list(COLUMNS)].astype(float)
    feats.index.name = "image_id"
    return feats


def _write_cache(path: str | Path, rows: dict, key: str) -> None:
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.index.name = "image_id"
    frame.insert(0, "key", key)
    atomic_write(path, frame.to_csv)
