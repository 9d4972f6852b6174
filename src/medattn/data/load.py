"""Naming a data set as ``source:PATH``: loading it, and assembling a task with its OOD test sets."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd

from medattn.data.camelyon17 import TEST_CENTER, TRAIN_CENTERS, VAL_CENTER, read_camelyon17
from medattn.data.dataset import verify_image
from medattn.data.detect import archive_message, hints
from medattn.data.ham10000 import read_ham10000
from medattn.data.isic import read_isic
from medattn.data.isic2019 import read_isic2019
from medattn.data.isic2020 import read_isic2020
from medattn.data.medmnist import read_medmnist
from medattn.data.pad_ufes import read_pad_ufes
from medattn.data.table import MetadataProblem, is_archive
from medattn.errors import DataError
from medattn.progress import progress_bar

# The sources, in one place: ``source:PATH`` -> reader (docs/data.md describes each layout).
READERS: dict[str, Callable[..., pd.DataFrame]] = {
    "isic": read_isic,
    "isic2019": read_isic2019,
    "isic2020": read_isic2020,
    "ham10000": read_ham10000,
    "medmnist": read_medmnist,
    "pad-ufes-20": read_pad_ufes,
    "camelyon17": read_camelyon17,
}
ALIASES = {"pad-ufes": "pad-ufes-20", "pad_ufes_20": "pad-ufes-20", "padufes20": "pad-ufes-20",
           "ham": "ham10000", "camelyon": "camelyon17", "camelyon17-wilds": "camelyon17",
           "isic-2019": "isic2019", "isic_2019": "isic2019", "isic-2020": "isic2020",
           "isic_2020": "isic2020", "siim-isic": "isic2020"}


def parse_spec(spec: str) -> tuple[str, str]:
    """``"isic:~/data/isic"`` -> ``("isic", "~/data/isic")``; raises DataError for unknown sources."""
    source, sep, path = str(spec).partition(":")
    source = ALIASES.get(source.strip().lower(), source.strip().lower())
    if not sep or not path:
        raise DataError(f"data set {spec!r}: name it as SOURCE:PATH, e.g. isic:~/data/isic "
                        f"(sources: {', '.join(READERS)})")
    if source not in READERS:
        raise DataError(f"data set {spec!r}: unknown source {source!r}; "
                        f"use one of {', '.join(READERS)}")
    return source, path


def load_dataset(spec: str, verify: bool = False) -> pd.DataFrame:
    """Read ``source:PATH`` into a sample table (see ``docs/data.md`` for the columns).

    Args:
        spec: ``source:PATH``, e.g. ``isic:~/data/isic`` or ``medmnist:dermamnist_64.npz``.
        verify: decode every image once and skip corrupt ones (see below).

    Returns:
        One row per usable image; what was skipped is counted in ``attrs["skipped"]``.

    Missing images and unusable diagnoses are skipped and counted in ``attrs["skipped"]``. With
    ``verify=True`` every image is also decoded once and corrupt ones are skipped and counted as
    ``"corrupt image"`` (slow on full-size data; ``medattn data inspect`` does this). Without it a
    corrupt image raises :class:`DataError` naming the file when it is first read.
    """
    source, path = parse_spec(spec)
    # an archive, or a path into one (archive.zip/images): never read inside archives
    where = Path(path).expanduser()
    archive = next((p for p in (where, *where.parents)
                    if is_archive(p) and (p == where or p.is_file())), None)
    if archive is not None:
        raise DataError(f"data set {spec!r}: {archive_message(source, archive)}")
    try:
        table = READERS[source](path, spec=spec)
    except MetadataProblem as err:
        raise DataError("; ".join([f"data set {spec!r}: {err}", *hints(source, path)])) from None
    if verify:
        bad = [verify_image(p) is not None
               for p in progress_bar(table["path"], desc="verify images", leave=False,
                                     disable=len(table) < 500)]
        if any(bad):
            attrs = dict(table.attrs)
            attrs["corrupt"] = [p for p, b in zip(table["path"], bad) if b]
            attrs["skipped"] = dict(attrs["skipped"], **{"corrupt image": sum(bad)})
            table = table[[not b for b in bad]].reset_index(drop=True)
            table.attrs = attrs
    return table


@dataclasses.dataclass
class Task:
    """What a study trains and evaluates on.

    ``table`` is the in-distribution pool that :func:`make_split` draws train/val/test from;
    ``ood`` maps a name to an out-of-distribution test table with the same classes.
    """

    name: str
    table: pd.DataFrame
    ood: dict[str, pd.DataFrame]
    classes: list[str]


def load_task(data: str, ood: Sequence[str] = (), verify: bool = False) -> Task:
    """Load the in-distribution data set ``data`` and the OOD test sets ``ood`` (specs).

    Args:
        data: the in-distribution data set, ``source:PATH``.
        ood: the OOD test sets, each ``source:PATH``.
        verify: decode every image once (as :func:`load_dataset`).

    Returns:
        The task: ``table`` (the pool), ``ood`` (name -> table) and ``classes``.

    Camelyon17 contributes its official OOD hospitals itself: the pool is centers 0, 3, 4 and
    ``task.ood`` gets ``center1`` (WILDS ``val``) and ``center2`` (WILDS ``test``).
    OOD sets are named by their source (``pad-ufes-20``), with ``-2``, ``-3`` for repeats.
    """
    table = load_dataset(data, verify=verify)
    source = table.attrs["source"]
    classes = table.attrs["classes"]
    ood_tables: dict[str, pd.DataFrame] = {}
    if source == "camelyon17":
        pool = table[table["center"].isin(TRAIN_CENTERS)].reset_index(drop=True)
        pool.attrs = dict(table.attrs)
        for center in (VAL_CENTER, TEST_CENTER):
            part = table[table["center"] == center].reset_index(drop=True)
            part.attrs = dict(table.attrs)
            ood_tables[f"center{center}"] = part
        table = pool
    for spec in ood:
        other = load_dataset(spec, verify=verify)
        if other.attrs["classes"] != classes:
            raise DataError(f"OOD data set {spec!r} has classes {other.attrs['classes']}, but "
                            f"{data!r} has {classes}; an OOD test set needs the same classes")
        name, k = other.attrs["source"], 2
        while name in ood_tables:
            name, k = f"{other.attrs['source']}-{k}", k + 1
        ood_tables[name] = other
    if len(table) == 0:
        raise DataError(f"data set {data!r}: no usable images (skipped: {table.attrs['skipped']}); "
                        f"run `medattn data inspect {data}`")
    return Task(name=source, table=table, ood=ood_tables, classes=list(classes))
