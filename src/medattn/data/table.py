"""The sample table every reader returns, and the helpers the readers share.

A sample table is a :class:`pandas.DataFrame` with one row per image and the columns listed in
``docs/architecture.md`` (``image_id``, ``path``, ``label``, ``group``, ``subset`` plus optional
metadata). ``attrs`` carries ``classes``, ``source``, ``spec`` and ``skipped`` (reason -> count).
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from medattn.errors import DataError

REQUIRED_COLUMNS = ("image_id", "path", "label", "group", "subset")


def read_csv(path: Path, required: Sequence[str], sep: str = ",", **kwargs) -> pd.DataFrame:
    """Read a metadata CSV as strings (keeps zero-padded ids) and check its columns.

    Raises:
        DataError: the file is missing or unreadable, or a required column is absent.
    """
    if not path.is_file():
        raise DataError(f"{path}: metadata file not found; point the data spec at the folder "
                        "that holds it as downloaded")
    try:
        # utf-8-sig: tolerate a byte-order mark; CRLF line ends are handled by the C parser.
        df = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""], sep=sep,
                         encoding="utf-8-sig", **kwargs)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as err:
        raise DataError(f"{path}: cannot be read as a CSV table ({err}); re-download the file") from err
    df.columns = [str(c).strip() for c in df.columns]
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise DataError(f"{path}: required column(s) {', '.join(repr(m) for m in missing)} missing "
                        f"(found: {', '.join(map(str, df.columns[:12]))}"
                        f"{', ...' if len(df.columns) > 12 else ''}); is this the right file and source?")
    return df


def list_files(folder: Path) -> set[str]:
    """Names of the plain files in ``folder`` (one ``scandir``: far cheaper than a stat per image)."""
    try:
        with os.scandir(folder) as it:
            return {e.name for e in it if e.is_file()}
    except FileNotFoundError:
        return set()


def index_images(root: Path, folders: Iterable[str], key: Callable[[str], str | None]) -> dict[str, str]:
    """``key(file name) -> absolute path`` over image ``folders`` below ``root`` (first folder wins;
    names for which ``key`` returns None are ignored)."""
    where: dict[str, str] = {}
    for folder in folders:
        for name in list_files(root / folder):
            k = key(name)
            if k is not None:
                where.setdefault(k, str((root / folder / name).resolve()))
    return where


def diagnosed_rows(df: pd.DataFrame, dx_col: str, id_col: str, codes: dict[str, int],
                   normalise: Callable[[str], str], where: dict[str, str],
                   image_id: Callable[[str], str] = lambda s: s,
                   ) -> tuple[pd.DataFrame, pd.DataFrame, Counter]:
    """Match metadata rows to labels and image files.

    Each row's ``normalise(dx_col)`` is looked up in ``codes`` and its stripped ``id_col`` in
    ``where``; rows with no, or an unknown, diagnosis or with no image are skipped and counted.
    Returns (the kept metadata rows, a frame ``image_id, path, label`` aligned with them, skips).
    """
    rows, keep, skipped = [], [], Counter()
    for i, (dx, ident) in enumerate(zip(df[dx_col], df[id_col])):
        code = normalise(dx.strip()) if isinstance(dx, str) else ""
        if code not in codes:
            skipped["no diagnosis" if not code else f"unknown diagnosis {code!r}"] += 1
            continue
        path = where.get(str(ident).strip())
        if path is None:
            skipped["missing image"] += 1
            continue
        keep.append(i)
        rows.append((image_id(str(ident).strip()), path, codes[code]))
    return (df.iloc[keep].reset_index(drop=True),
            pd.DataFrame(rows, columns=["image_id", "path", "label"]), skipped)


def finish_table(rows: pd.DataFrame, classes: Sequence[str], source: str, spec: str,
                 skipped: Counter | dict) -> pd.DataFrame:
    """Put columns in contract order and types, attach ``attrs``, check ids are unique."""
    table = rows.reset_index(drop=True)
    for col in REQUIRED_COLUMNS:
        if col not in table.columns:
            table[col] = pd.NA
    table["image_id"] = table["image_id"].astype(str)
    table["path"] = table["path"].astype(str)
    table["label"] = table["label"].astype(np.int64)
    table["group"] = table["group"].astype(str)
    if "age" in table.columns:
        table["age"] = pd.to_numeric(table["age"], errors="coerce").astype(float)
    if "sex" in table.columns:
        sex = table["sex"].astype("string").str.strip().str.lower()
        table["sex"] = sex.where(sex.isin(["male", "female"]))
    dup = table["image_id"][table["image_id"].duplicated()]
    if len(dup):
        raise DataError(f"{spec}: image id {dup.iloc[0]!r} appears more than once in the metadata; "
                        "remove the duplicate rows")
    first = list(REQUIRED_COLUMNS)
    table = table[first + [c for c in table.columns if c not in first]]
    table.attrs.update(classes=list(classes), source=source, spec=spec,
                       skipped={k: int(v) for k, v in sorted(dict(skipped).items())})
    return table


def fingerprint(table: pd.DataFrame) -> str:
    """A short hash of what a split and a run depend on: ids, labels, groups (order-independent)."""
    key = table[["image_id", "label", "group"]].astype(str).sort_values("image_id")
    h = hashlib.sha1()
    for col in key.columns:
        h.update("\x1f".join(key[col].tolist()).encode())
        h.update(b"\x1e")
    return h.hexdigest()[:16]


def count(reasons: Iterable[str]) -> Counter:
    return Counter(r for r in reasons if r)
