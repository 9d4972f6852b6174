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
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from medattn.errors import DataError

REQUIRED_COLUMNS = ("image_id", "path", "label", "group", "subset")


IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "tif", "tiff")
ARCHIVES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".7z", ".rar")
SHOW = 5  # ids, folders and archives named in a report


class MetadataProblem(DataError):
    """The metadata file of a source is missing or is another file (``load_dataset`` adds hints:
    which source the folder holds, the metadata found one level down, ...)."""

    def __init__(self, path: Path, message: str):
        self.path = Path(path)
        super().__init__(message)


class MetadataNotFound(MetadataProblem):
    def __init__(self, path: Path):
        super().__init__(path, f"{path}: metadata file not found; point the data spec at the "
                         "folder that holds it as downloaded")


def read_csv(path: Path, required: Sequence[str], sep: str = ",", **kwargs) -> pd.DataFrame:
    """Read a metadata CSV as strings (keeps zero-padded ids) and check its columns.

    Raises:
        DataError: the file is missing or unreadable, or a required column is absent.
    """
    if not path.is_file():
        raise MetadataNotFound(path)
    try:
        # utf-8-sig: tolerate a byte-order mark; CRLF line ends are handled by the C parser.
        df = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""], sep=sep,
                         encoding="utf-8-sig", **kwargs)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as err:
        raise DataError(f"{path}: cannot be read as a CSV table ({err}); re-download the file") from err
    df.columns = [str(c).strip() for c in df.columns]
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise MetadataProblem(path, f"{path}: required column(s) {', '.join(repr(m) for m in missing)} "
                              f"missing (found: {', '.join(map(str, df.columns[:12]))}"
                              f"{', ...' if len(df.columns) > 12 else ''}); is this the right file "
                              "and source?")
    return df


def is_archive(name: str | Path) -> bool:
    """True for names of archives users forget to unpack (.zip, .tar.gz, ...)."""
    return str(name).lower().endswith(ARCHIVES)


def image_stem(name: str) -> str | None:
    """``ISIC_0024306.jpg`` -> ``ISIC_0024306``; None for files that are not images."""
    stem, dot, ext = name.rpartition(".")
    return stem if dot and ext.lower() in IMAGE_EXTENSIONS else None


def list_files(folder: Path) -> set[str]:
    """Names of the plain files in ``folder`` (one ``scandir``: far cheaper than a stat per image)."""
    try:
        with os.scandir(folder) as it:
            return {e.name for e in it if e.is_file()}
    except FileNotFoundError:
        return set()


class ImageIndex:
    """Image files anywhere below ``root``, found by ``key(file name)`` from one walk of the tree.

    Releases nest images differently (``imgs_part_1/``, ``images/imgs_part_1/``,
    ``imgs_part_1/imgs_part_1/``, ``train/``, ``jpeg/train/``), so readers look files up here instead
    of in fixed folders: one directory listing per folder, never a search per row. Folders are walked
    in sorted order, files directly in ``root`` first; the first file of a key wins. Hidden folders,
    macOS resource forks (``__MACOSX``, ``._*``) and names for which ``key`` returns None are ignored;
    archives found on the way are remembered, to tell the user to unpack them.
    """

    def __init__(self, root: str | Path, key: Callable[[str], str | None]):
        self.root = os.path.abspath(os.path.expanduser(str(root)))
        self.paths: dict[str, str] = {}
        self.folders: list[str] = []    # folders that held at least one indexed file
        self.archives: list[str] = []
        self.n_folders = 0
        seen: set[str] = set()
        for dirpath, dirnames, filenames in os.walk(self.root, followlinks=True):
            real = os.path.realpath(dirpath)
            if real in seen:            # a symlink loop
                dirnames[:] = []
                continue
            seen.add(real)
            dirnames[:] = sorted(d for d in dirnames if not d.startswith((".", "__MACOSX")))
            self.n_folders += 1
            found, prefix = False, os.path.join(dirpath, "")
            for name in sorted(filenames):
                if name.startswith("._"):
                    continue
                if is_archive(name):
                    self.archives.append(os.path.join(dirpath, name))
                    continue
                k = key(name)
                if k is not None:
                    found = True
                    self.paths.setdefault(k, prefix + name)
            if found:
                self.folders.append(dirpath)

    def get(self, key: str) -> str | None:
        return self.paths.get(key)

    def missing(self, keys: Sequence[str], name: str = "{}") -> dict:
        """What ``data inspect`` says about images not found: how many, the first ids, an example
        path looked for (``ROOT/**/`` + ``name`` formatted with the first key), which folders were
        searched and archives that may hold the images. Empty when nothing is missing."""
        if not len(keys):
            return {}
        rel = [os.path.relpath(f, self.root) for f in self.folders]
        where = (f"{self.n_folders} folder(s) searched below {self.root}; image files found in "
                 + (", ".join(rel[:SHOW]) + (" ..." if len(rel) > SHOW else "") if rel else "none"))
        return {"count": len(keys), "ids": list(keys[:SHOW]),
                "looked_for": os.path.join(self.root, "**", name.format(keys[0])),
                "searched": where, "archives": self.archives[:SHOW]}


def copy_truth(sub: pd.DataFrame, table: pd.DataFrame) -> None:
    """Copy the synthetic sets' ``true_*`` columns of ``sub`` into ``table`` (numeric where all are)."""
    for col in sub.columns:
        if col.startswith("true_"):
            values = pd.to_numeric(sub[col], errors="coerce")
            table[col] = (values if values.notna().sum() == sub[col].notna().sum() else sub[col]).values


def link_groups(image_ids: Sequence[str], keys: dict[str, Sequence],
                pairs: Iterable[tuple[str, str]] = ()) -> np.ndarray:
    """The leakage unit of every image: images that share any id are one group.

    ``keys`` maps a kind (``patient``, ``lesion``, in order of preference for the name) to one value
    per image (missing values link nothing); ``pairs`` links images directly (known duplicates).
    Groups are the connected components of that graph, so a lesion whose images carry a patient id
    only in some rows, or a duplicate filed under two patients, never ends up on two sides of a
    split. A group is named by the first kind present in it (``patient:<smallest id>``), else by its
    smallest image id (``image:<id>``).
    """
    ids = _strings(image_ids)
    n = len(ids)
    values = {kind: _strings(v) for kind, v in keys.items()}
    rows, cols, offset = [np.arange(n)], [np.arange(n)], n
    for v in values.values():
        present = (v != "").to_numpy()
        codes, uniques = pd.factorize(v[present])
        rows.append(np.flatnonzero(present))
        cols.append(codes + offset)
        offset += len(uniques)
    pairs = list(pairs)
    at = dict(zip(ids, range(n))) if pairs else {}
    linked = [(at[a], at[b]) for a, b in pairs if a in at and b in at]
    if linked:
        rows.append(np.array([a for a, _ in linked]))
        cols.append(np.array([b for _, b in linked]))
    r, c = np.concatenate(rows), np.concatenate(cols)
    graph = coo_matrix((np.ones(len(r), dtype=np.int8), (r, c)), shape=(offset, offset))
    comp = connected_components(graph, directed=False)[1][:n]
    name = np.full(n, None, dtype=object)
    for kind, v in [*values.items(), ("image", ids)]:
        present = (v != "").to_numpy()
        # smallest id of this kind per component: sort by (component, id), keep the first
        first = (pd.DataFrame({"c": comp[present], "v": v[present].to_numpy(dtype=object)})
                 .sort_values(["c", "v"]).drop_duplicates("c"))
        smallest = np.full(len(comp) and comp.max() + 1, None, dtype=object)
        smallest[first["c"].to_numpy()] = (kind + ":" + first["v"]).to_numpy(dtype=object)
        todo = pd.isna(name)
        name[todo] = smallest[comp[todo]]
    return name


def _strings(values: Sequence) -> pd.Series:
    """Cells as stripped Python strings, '' where missing (vectorised :func:`labels.clean`)."""
    v = pd.Series(values.to_numpy(dtype=object) if isinstance(values, pd.Series) else list(values),
                  dtype=object)
    return v.where(v.notna(), "").astype(str).str.strip().astype(object)


def match_rows(df: pd.DataFrame, mapped: Sequence[tuple[int | str, str]], keys: Sequence[str],
               index: ImageIndex, image_id: Callable[[str], str] = lambda s: s,
               ) -> tuple[pd.DataFrame, pd.DataFrame, Counter, list[str]]:
    """Match metadata rows to their (class, fine diagnosis) and image files.

    ``mapped[i]`` is row i's (class, fine diagnosis), or (skip reason, "") from
    :mod:`medattn.data.labels`; ``keys[i]`` is looked up in ``index``. Rows with a skip reason or
    without an image are counted in the returned Counter. Returns (the kept metadata rows, a frame
    ``image_id, path, label, diagnosis`` aligned with them, skips, the keys of missing images).
    """
    labels = [label for label, _ in mapped]
    reason = np.array([isinstance(label, str) for label in labels], dtype=bool)
    keys = _strings(keys)
    paths = keys.map(index.paths)
    found = paths.notna().to_numpy()
    skipped = Counter(label for label, r in zip(labels, reason) if r)
    missing = keys[~reason & ~found].tolist()
    if missing:
        skipped["missing image"] = len(missing)
    keep = np.flatnonzero(~reason & found)
    rows = pd.DataFrame({"image_id": [image_id(k) for k in keys.iloc[keep]],
                         "path": paths.iloc[keep].to_numpy(dtype=object),
                         "label": [labels[i] for i in keep],
                         "diagnosis": [mapped[i][1] for i in keep]})
    return df.iloc[keep].reset_index(drop=True), rows, skipped, missing


def finish_table(rows: pd.DataFrame, classes: Sequence[str], source: str, spec: str,
                 skipped: Counter | dict, missing: dict | None = None) -> pd.DataFrame:
    """Put columns in contract order and types, attach ``attrs``, check ids are unique.

    ``missing`` (from :meth:`ImageIndex.missing`) describes images not found, for ``data inspect``.
    """
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
    if "diagnosis" in table.columns:
        table["diagnosis"] = table["diagnosis"].astype(str)
    table.attrs.update(classes=list(classes), source=source, spec=spec,
                       skipped={k: int(v) for k, v in sorted(dict(skipped).items())})
    if missing and missing.get("count"):
        table.attrs["missing"] = missing
    return table


def fingerprint(table: pd.DataFrame) -> str:
    """A short hash of what a split and a run depend on: ids, labels, groups (order-independent)."""
    key = table[["image_id", "label", "group"]].astype(str).sort_values("image_id")
    h = hashlib.sha1()
    for col in key.columns:
        h.update("\x1f".join(key[col].tolist()).encode())
        h.update(b"\x1e")
    return h.hexdigest()[:16]
