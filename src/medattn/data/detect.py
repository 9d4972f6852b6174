"""Recognising what a folder holds, so that "metadata file not found" comes with what to do.

Each source is recognised by its metadata file (and, where the name is shared, by columns of its
header): given the wrong source, a parent folder, the images folder or an unpacked archive, the
user is told which file was found where and the spec to use.
"""

from __future__ import annotations

import csv
import dataclasses
import os
from pathlib import Path

from medattn.data.table import is_archive


@dataclasses.dataclass(frozen=True)
class Signature:
    source: str
    name: str                       # metadata file name
    columns: tuple[str, ...] = ()   # header columns that must be present (shared file names)


SIGNATURES: tuple[Signature, ...] = (
    Signature("isic", "metadata.csv", ("isic_id",)),
    Signature("pad-ufes-20", "metadata.csv", ("img_id", "diagnostic")),
    Signature("camelyon17", "metadata.csv", ("tumor", "slide", "center")),
    Signature("ham10000", "HAM10000_metadata.csv"),
    Signature("ham10000", "HAM10000_metadata.tab"),
    Signature("isic2019", "ISIC_2019_Training_GroundTruth.csv"),
    Signature("isic2020", "ISIC_2020_Training_GroundTruth_v2.csv"),
    Signature("isic2020", "ISIC_2020_Training_GroundTruth.csv"),
    Signature("isic2020", "train.csv", ("image_name", "benign_malignant")),
)

# What the folder named in ``source:PATH`` must hold (docs/data.md has the full layouts).
EXPECTS: dict[str, str] = {
    "isic": "metadata.csv (with an isic_id column) and the ISIC_*.jpg images, as written by "
            "`isic image download`",
    "isic2019": "ISIC_2019_Training_GroundTruth.csv, ISIC_2019_Training_Metadata.csv and the "
                "unpacked ISIC_2019_Training_Input/",
    "isic2020": "ISIC_2020_Training_GroundTruth_v2.csv (or ISIC_2020_Training_GroundTruth.csv) and "
                "the unpacked train/ of ISIC_2020_Training_JPEG.zip",
    "ham10000": "HAM10000_metadata.csv (or .tab) and HAM10000_images_part_1/, _part_2/",
    "pad-ufes-20": "metadata.csv (patient_id, lesion_id, ..., diagnostic, ..., img_id) and the "
                   "PAT_*.png images (imgs_part_1..3/)",
    "camelyon17": "camelyon17_v1.0/ with metadata.csv and patches/",
    "medmnist": "a MedMNIST file, {flag}.npz or {flag}_{64,128,224}.npz, named itself",
}
NAMES = {"isic": "ISIC archive", "isic2019": "ISIC 2019 challenge", "isic2020": "ISIC 2020 challenge",
         "ham10000": "HAM10000", "pad-ufes-20": "PAD-UFES-20", "camelyon17": "Camelyon17-WILDS",
         "medmnist": "MedMNIST"}
SHOW = 5


def header(path: Path) -> list[str]:
    """The column names of a CSV/TSV file's first line ([] if unreadable)."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            line = f.readline()
    except (OSError, UnicodeDecodeError):
        return []
    return [c.strip() for c in next(csv.reader([line], delimiter="\t" if "\t" in line else ","), [])]


def identify(folder: Path) -> list[tuple[str, Path]]:
    """``(source, metadata file)`` for every source whose metadata file is directly in ``folder``."""
    found = []
    for sig in SIGNATURES:
        path = folder / sig.name
        if path.is_file() and (not sig.columns or set(sig.columns) <= set(header(path))):
            found.append((sig.source, path))
    return found


def _subfolders(folder: Path) -> list[Path]:
    try:
        with os.scandir(folder) as it:
            return sorted(Path(e.path) for e in it
                          if e.is_dir() and not e.name.startswith((".", "__")))
    except OSError:
        return []


def unpack_command(archive: Path) -> tuple[str, Path]:
    """A shell command unpacking ``archive`` beside it, and the folder it is unpacked to."""
    name = archive.name
    double = [s for s in (".tar.gz", ".tar.bz2", ".tar.xz") if name.lower().endswith(s)]
    stem = name[: -len(double[0])] if double else archive.stem
    dest = archive.with_name(stem)
    low = name.lower()
    if low.endswith(".zip"):
        return f"unzip '{archive}' -d '{dest}'", dest
    if low.endswith((".7z", ".rar")):
        return f"7z x '{archive}' -o'{dest}'", dest
    return f"mkdir -p '{dest}' && tar -xf '{archive}' -C '{dest}'", dest


def archive_message(source: str, path: Path) -> str:
    cmd, dest = unpack_command(path)
    return (f"{path} is an archive; medattn reads unpacked folders: unpack it ({cmd}) and name "
            f"the folder that holds the metadata file, e.g. {source}:{dest}")


def hints(source: str, path: str | Path) -> list[str]:
    """Sentences telling a user whose ``source:path`` lacks the metadata file what to do instead."""
    path = Path(path).expanduser()
    if not path.exists():
        return [f"{path} does not exist"]
    if path.is_file():
        if is_archive(path):
            return [archive_message(source, path)]
        return [f"{path} is a file; name the folder that holds the download, e.g. "
                f"{source}:{path.parent}"]
    out = []
    for other, file in identify(path):
        if other != source:
            out.append(f"{path} holds {file.name} (the {NAMES[other]} download): read it as "
                       f"{other}:{path}")
    for sub in _subfolders(path):
        for found, file in identify(sub):
            use = "" if found == source else f" (the {NAMES[found]} download)"
            out.append(f"found {file} one level down{use}: use {found}:{sub}")
    for found, file in identify(path.parent) if path.parent != path else []:
        if found == source:
            out.append(f"found {file} in the parent folder: use {source}:{path.parent}")
    try:
        archives = sorted(p for p in path.iterdir() if p.is_file() and is_archive(p))
    except OSError:
        archives = []
    if archives:
        out.append("found archive(s) " + ", ".join(a.name for a in archives[:SHOW])
                   + (" ..." if len(archives) > SHOW else "") + f" in {path}: unpack them "
                   f"(e.g. {unpack_command(archives[0])[0]})")
    if not out and source in EXPECTS:
        out.append(f"{source}: reads a folder holding {EXPECTS[source]}")
    return out
