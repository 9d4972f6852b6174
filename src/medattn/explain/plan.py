"""The plan of ``medattn explain`` for each data set: its table, the images in the test set of
every selected run, one example per class and the images averaged for the mean map."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from medattn.data import load_dataset
from medattn.errors import ArgumentError, DataError
from medattn.explain.images import ExplainImages, area_shares
from medattn.runs.store import read_predictions


@dataclass
class DatasetPlan:
    """What ``explain_runs`` does on one data set: the selected run per model, the data set's
    table, one example image per class and the images averaged for the mean map."""

    dataset: str
    runs: pd.DataFrame  # select_runs rows of this data set, in table order
    table: pd.DataFrame  # the sample table (load_dataset)
    classes: list[str]
    examples: list[str]  # one image id per class ("" where a class has none)
    pool: list[str]  # image ids of the mean map
    pool_source: str  # "common test set" or "whole table"
    border: float = 0.1
    _images: dict[int, ExplainImages] = field(default_factory=dict, repr=False)

    @property
    def n_images(self) -> int:
        """Images each run of this data set goes through."""
        return len([e for e in self.examples if e]) + len(self.pool)

    def images(self, size: int) -> ExplainImages:
        """The data set's images at ``size`` px (decoded once per size)."""
        if size not in self._images:
            self._images[size] = ExplainImages(self.table, size, self.border)
        return self._images[size]

    def areas(self) -> dict[str, float]:
        """Mean area share of each region over the pool at the first size drawn."""
        return area_shares(next(iter(self._images.values())), self.pool) if self._images else {}

    def display(self) -> dict[tuple[str, str], torch.Tensor]:
        """``{(dataset, image_id): (3, S, S) uint8}`` of the examples, for the grid."""
        return {(self.dataset, i): im.image(i) for im in self._images.values()
                for i in self.examples if i}

    def mean_image(self) -> torch.Tensor | None:
        """(3, S, S) uint8 mean of the pool's images, or None."""
        if not self.pool or not self._images:
            return None
        im = next(iter(self._images.values()))
        return torch.stack([im.image(i).float() for i in self.pool]).mean(0).round().to(torch.uint8)


def plan_datasets(runs_dir: str | os.PathLike, selected: pd.DataFrame, n_mean: int,
                  seed: int = 0, image_ids: list[str] | None = None,
                  border: float = 0.1) -> list[DatasetPlan]:
    """One :class:`DatasetPlan` per data set of ``selected`` (:func:`select_runs`): its table, the
    images in the test set of every selected run, and the examples and pool chosen from them
    (:func:`choose_images`). ``image_ids`` not found in any of the data sets raise an ArgumentError."""
    plans, found = [], set()
    for dataset, runs in selected.groupby("dataset", sort=False):
        table = load_dataset(str(runs.iloc[0]["data"]))
        candidates, source = _common_test_ids(Path(runs_dir), runs, table)
        examples, pool = choose_images(table, candidates, n_mean, seed, image_ids)
        found |= set(image_ids or []) & set(table["image_id"])
        plans.append(DatasetPlan(dataset, runs, table, list(table.attrs.get("classes", [])),
                                 examples, pool, source, border))
    missing = sorted(set(image_ids or []) - found)
    if missing:
        raise ArgumentError(f"{{image_ids}}: {', '.join(missing)} not found in the studied data "
                            "sets.", "image_ids")
    return plans


def choose_images(table: pd.DataFrame, candidates: list[str], n_mean: int, seed: int = 0,
                  image_ids: list[str] | None = None) -> tuple[list[str], list[str]]:
    """Example ids (one per class, in class order) and the ids averaged for the mean map.

    Candidates are shuffled with ``seed`` after sorting, so the choice depends only on the data and
    the seed; the first candidate of each class becomes its example unless ``image_ids`` names
    one. A class without candidates gets an empty example id.
    """
    classes = list(table.attrs.get("classes", []))
    labels = table.set_index("image_id")["label"]
    rng = np.random.default_rng(seed)
    pool = list(rng.permutation(sorted(candidates)))
    given = {int(labels[i]): i for i in (image_ids or []) if i in labels.index}
    examples = []
    for c in range(len(classes)):
        if c in given:
            examples.append(given[c])
        else:
            examples.append(next((i for i in pool if int(labels[i]) == c), ""))
    return examples, pool[:n_mean]



def _common_test_ids(runs_dir: Path, runs: pd.DataFrame, table: pd.DataFrame) -> tuple[list[str], str]:
    """Images in the test set of every selected run (so no map is drawn on a training image), and
    where they came from; the whole table (with a warning) when predictions are missing or the test
    sets do not overlap."""
    everything = table["image_id"].astype(str).tolist()
    common: set[str] | None = None
    for run_id in runs["run_id"]:
        try:
            ids = set(read_predictions(runs_dir, run_id, "test")["image_id"].astype(str))
        except DataError:
            warnings.warn(f"run {run_id} has no test predictions: explaining images from the whole "
                          "table, training images included", stacklevel=3)
            return everything, "whole table"
        common = ids if common is None else common & ids
    common = (common or set()) & set(everything)
    if not common:
        warnings.warn(f"the test sets of runs {', '.join(runs['run_id'])} share no image: explaining "
                      "images from the whole table, training images included (choosing the runs of "
                      "one split avoids this: choose='split', `medattn explain --choose split`)", stacklevel=3)
        return everything, "whole table"
    return sorted(common), "common test set"


