"""``medattn data inspect source:PATH``: what a data set holds and what is wrong with it."""

from __future__ import annotations

import dataclasses

import pandas as pd

from medattn.data.load import load_dataset

SHOW = 10  # corrupt files listed by name


@dataclasses.dataclass
class Inspection:
    """Summary of a loaded data set; ``str()`` gives the printed report."""

    spec: str
    table: pd.DataFrame
    problems: list[str]

    @property
    def skipped(self) -> dict[str, int]:
        return dict(self.table.attrs.get("skipped", {}))

    def __str__(self) -> str:
        t, classes = self.table, self.table.attrs["classes"]
        lines = [f"data set   {self.spec}", f"source     {t.attrs['source']}",
                 f"images     {len(t)} usable, {sum(self.skipped.values())} skipped"]
        counts = t["label"].value_counts().reindex(range(len(classes)), fill_value=0)
        lines.append("classes    " + ", ".join(f"{c}: {int(n)}" for c, n in zip(classes, counts)))
        if t["subset"].notna().any():
            by = pd.crosstab(t["subset"], t["label"]).reindex(columns=range(len(classes)), fill_value=0)
            for subset, row in by.iterrows():
                lines.append(f"  {subset:<9s}" + ", ".join(f"{c}: {int(n)}" for c, n in zip(classes, row)))
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


def inspect_dataset(spec: str, verify: bool = True) -> Inspection:
    """Load ``spec`` (decoding every image when ``verify``) and collect what looks wrong."""
    table = load_dataset(spec, verify=verify)
    problems: list[str] = []
    corrupt = table.attrs.get("corrupt", [])
    if corrupt:
        problems.append(f"{len(corrupt)} corrupt image(s) left out: "
                        + ", ".join(corrupt[:SHOW]) + (" ..." if len(corrupt) > SHOW else ""))
    for reason, n in table.attrs.get("skipped", {}).items():
        if reason != "corrupt image":
            problems.append(f"{n} row(s) skipped: {reason}")
    classes = table.attrs["classes"]
    counts = table["label"].value_counts()
    for k, c in enumerate(classes):
        if counts.get(k, 0) == 0:
            problems.append(f"class {c!r} has no images")
    if table["subset"].notna().any():
        # WILDS id_val is drawn from the training slides on purpose: compare it as train
        subset = table["subset"].replace({"id_val": "train"})
        shared = subset.groupby(table["group"]).nunique()
        if (shared > 1).any():
            problems.append(f"{int((shared > 1).sum())} group(s) appear in more than one official "
                            f"subset (e.g. {shared[shared > 1].index[0]!r}): that split leaks")
    mixed = table.groupby("group")["label"].nunique()
    if (mixed > 1).any():
        problems.append(f"note: {int((mixed > 1).sum())} group(s) hold images of several classes "
                        "(a patient with several lesions, a slide with tumour and normal tissue); "
                        "splits keep each group on one side")
    if "mask_path" in table.columns and table["mask_path"].isna().any():
        problems.append(f"{int(table['mask_path'].isna().sum())} image(s) without a task-1 "
                        "segmentation mask")
    return Inspection(spec=spec, table=table, problems=problems)
