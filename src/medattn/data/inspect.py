"""``medattn data inspect source:PATH``: what a data set holds and what is wrong with it."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
from PIL import Image

from medattn.data.load import load_dataset

SHOW = 10  # corrupt files listed by name
TOP_DIAGNOSES = 12


@dataclasses.dataclass
class Inspection:
    """Summary of a loaded data set; ``str()`` gives the printed report."""

    spec: str
    table: pd.DataFrame
    problems: list[str]

    @property
    def skipped(self) -> dict[str, int]:
        return dict(self.table.attrs.get("skipped", {}))

    @property
    def usable(self) -> bool:
        """False when no image can be used (``medattn data inspect`` then exits 1)."""
        return len(self.table) > 0

    def __str__(self) -> str:
        t, classes = self.table, self.table.attrs["classes"]
        lines = [f"data set   {self.spec}", f"source     {t.attrs['source']}",
                 f"images     {len(t)} usable, {sum(self.skipped.values())} skipped"]
        lines += _class_lines(t, classes)
        lines += _diagnosis_lines(t)
        sizes = t.groupby("group").size()
        if len(sizes):
            lines.append(f"groups     {len(sizes)} (images per group: min {sizes.min()}, median "
                         f"{sizes.median():g}, max {sizes.max()})")
        if self.skipped:
            lines.append("skipped    " + ", ".join(f"{k}: {v}" for k, v in self.skipped.items()))
        optional = [c for c in t.columns if c not in ("image_id", "path", "label", "group", "subset")
                    and not c.startswith("true_")]
        missing = {c: int(t[c].isna().sum()) for c in optional}
        if any(missing.values()):
            lines.append("missing    " + ", ".join(f"{c}: {n}" for c, n in missing.items() if n))
        truth = [c for c in t.columns if c.startswith("true_")]
        if truth:
            lines.append("truth      " + ", ".join(truth))
        lines.append("problems   " + ("none found" if not self.problems else ""))
        lines += [f"  - {p}" for p in self.problems]
        return "\n".join(lines)


def _class_lines(t: pd.DataFrame, classes: list[str]) -> list[str]:
    counts = t["label"].value_counts().reindex(range(len(classes)), fill_value=0)
    lines = ["classes    " + ", ".join(f"{c}: {int(n)}" for c, n in zip(classes, counts))]
    if t["subset"].notna().any():
        by = pd.crosstab(t["subset"], t["label"]).reindex(columns=range(len(classes)), fill_value=0)
        for subset, row in by.iterrows():
            lines.append(f"  {subset:<9s}" + ", ".join(f"{c}: {int(n)}" for c, n in zip(classes, row)))
    return lines


def _diagnosis_lines(t: pd.DataFrame) -> list[str]:
    """The fine diagnoses (what the feature analysis conditions on), most frequent first."""
    if "diagnosis" not in t.columns or not len(t):
        return []
    counts = t["diagnosis"].value_counts()
    more = f", ... ({len(counts) - TOP_DIAGNOSES} more)" if len(counts) > TOP_DIAGNOSES else ""
    top = counts.head(TOP_DIAGNOSES).items()
    return ["diagnoses  " + ", ".join(f"{d}: {n}" for d, n in top) + more]


def inspect_dataset(spec: str, verify: bool = True) -> Inspection:
    """Load ``spec`` (decoding every image when ``verify``) and collect what looks wrong."""
    table = load_dataset(spec, verify=verify)
    problems = (_unusable_problems(table) + _image_problems(table) + _skip_problems(table)
                + _class_problems(table) + _group_problems(table) + _mask_problems(table))
    if verify:
        problems += _mode_problems(table)
    return Inspection(spec=spec, table=table, problems=problems)


def _unusable_problems(table: pd.DataFrame) -> list[str]:
    if len(table):
        return []
    return ["no usable image: nothing can be trained or evaluated on this data set; the skips below "
            "say why"]


def _image_problems(table: pd.DataFrame) -> list[str]:
    """Missing and corrupt images, named: first ids, what was looked for, where, archives."""
    out = []
    missing = table.attrs.get("missing")
    if missing:
        ids = ", ".join(missing["ids"]) + (" ..." if missing["count"] > len(missing["ids"]) else "")
        text = (f"{missing['count']} image(s) not found ({ids}); looked for e.g. "
                f"{missing['looked_for']} (** = any sub-folder); {missing['searched']}")
        if missing.get("archives"):
            text += ("; unpack the archive(s) found there: " + ", ".join(missing["archives"]))
        out.append(text)
    corrupt = table.attrs.get("corrupt", [])
    if corrupt:
        out.append(f"{len(corrupt)} corrupt image(s) left out (replace or delete them): "
                   + ", ".join(corrupt[:SHOW]) + (" ..." if len(corrupt) > SHOW else ""))
    return out


def _skip_problems(table: pd.DataFrame) -> list[str]:
    return [f"{n} row(s) skipped: {reason}" for reason, n in table.attrs.get("skipped", {}).items()
            if reason not in ("corrupt image", "missing image")]


def _class_problems(table: pd.DataFrame) -> list[str]:
    if not len(table):
        return []
    counts = table["label"].value_counts()
    return [f"class {c!r} has no images" for k, c in enumerate(table.attrs["classes"])
            if counts.get(k, 0) == 0]


def _group_problems(table: pd.DataFrame) -> list[str]:
    out = []
    if table["subset"].notna().any():
        # WILDS id_val is drawn from the training slides on purpose: compare it as train
        subset = table["subset"].replace({"id_val": "train"})
        shared = subset.groupby(table["group"]).nunique()
        if (shared > 1).any():
            out.append(f"{int((shared > 1).sum())} group(s) appear in more than one official "
                       f"subset (e.g. {shared[shared > 1].index[0]!r}): that split leaks")
    mixed = table.groupby("group")["label"].nunique()
    if (mixed > 1).any():
        out.append(f"note: {int((mixed > 1).sum())} group(s) hold images of several classes "
                   "(a patient with several lesions, a slide with tumour and normal tissue); "
                   "splits keep each group on one side")
    alone = table["group"].astype(str).str.startswith("image:")
    if alone.any() and not alone.all() and table.attrs.get("source") != "medmnist":
        out.append(f"note: {int(alone.sum())} image(s) have no patient or lesion id and form a "
                   "group of their own; images of the same lesion among them cannot be kept "
                   "together")
    return out


def _mask_problems(table: pd.DataFrame) -> list[str]:
    if "mask_path" in table.columns and table["mask_path"].isna().any():
        return [f"{int(table['mask_path'].isna().sum())} image(s) without a task-1 segmentation mask"]
    return []


USUAL_MODES = ("RGB", "RGBA", "L", "LA", "P", "PA")  # 8 bits per channel: converted as is
_MODE_NOTES = {"I;16": "16-bit greyscale, scaled to 8 bits (value / 257)",
               "I": "32-bit integer: refused when read (convert to an 8- or 16-bit PNG)",
               "F": "32-bit float: refused when read (convert to an 8- or 16-bit PNG)",
               "CMYK": "converted to RGB by Pillow (colours may differ from the original)",
               "1": "1-bit black and white"}


def unusual_modes(table: pd.DataFrame) -> dict[str, list[str]]:
    """Images whose pixel mode is not plain 8-bit (PIL mode -> paths), from file headers only;
    MedMNIST members are judged by their array's type."""
    out: dict[str, list[str]] = {}
    npz_modes: dict[str, str] = {}  # one look per FILE.npz#split
    for path in table["path"].astype(str):
        try:
            if ".npz#" in path:
                file, _, member = path.rpartition("#")
                key = f"{file}#{member.partition('/')[0]}"
                if key not in npz_modes:
                    with np.load(file, allow_pickle=False) as npz:
                        dtype = npz[f"{member.partition('/')[0]}_images"].dtype
                    npz_modes[key] = "RGB" if dtype == np.uint8 else str(dtype)
                mode = npz_modes[key]
            else:
                with Image.open(path) as im:
                    mode = "I;16" if im.mode.startswith("I;16") or (
                        im.mode == "I" and im.format == "PNG") else im.mode
        except (OSError, KeyError, ValueError, SyntaxError):
            continue  # unreadable files are reported as corrupt
        if mode not in USUAL_MODES:
            out.setdefault(mode, []).append(path)
    return out


def _mode_problems(table: pd.DataFrame) -> list[str]:
    return [f"{len(paths)} image(s) in mode {mode} "
            f"({_MODE_NOTES.get(mode, 'converted to RGB by Pillow')}), e.g. {paths[0]}"
            for mode, paths in unusual_modes(table).items()]
