"""The jackknife rows of every run on a shared test set, stored in ``jackknife.csv`` so that an
interrupted analysis resumes (:mod:`.shared_test_usage` turns them into variances)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from medattn.analysis.features.decisions import (
    MAGNITUDE,
    derive_seed,
    one_image_per_group,
    prediction_matrix,
)
from medattn.analysis.features.shared_test_usage import (
    BLOCKS,
    ImageTerms,
    run_jackknife,
    shared_set,
)
from medattn.analysis.features.table3 import TABLE3_FEATURES
from medattn.analysis.paired import run_info
from medattn.runs.atomic import atomic_write
from medattn.runs.store import iter_records, read_predictions

__all__ = ["JACKKNIFE_TEST", "image_terms", "run_split_kinds"]

JACKKNIFE_TEST = 99  # the "test" index of derive_seed for the jackknife's jitter
COLUMNS = ["run_id", "condition", "feature", "block", "n", "n_out", "full", "without", "key"]


def run_split_kinds(runs_dir: Path, run_ids) -> list[str]:
    """The split kind (``random``, ``official``, ``kfold``) of each of the runs."""
    wanted = set(map(str, run_ids))
    info = run_info([r for r in iter_records(runs_dir) if str(r.get("run_id")) in wanted])
    return list(info["kind"])


def _needed(decisions: pd.DataFrame) -> pd.DataFrame:
    """(run_id, condition, feature) with a CMI effect: those whose CI or comparison needs it."""
    col = f"effect_{MAGNITUDE}"
    if col not in decisions:
        return pd.DataFrame(columns=["run_id", "condition", "feature"])
    have = decisions[np.isfinite(decisions[col].to_numpy(float))]
    return have[["run_id", "condition", "feature"]].astype({"run_id": str}).drop_duplicates()


def _read_previous(path: Path, key: str) -> pd.DataFrame:
    if not path.exists():
        return pd.DataFrame(columns=COLUMNS)
    old = pd.read_csv(path, dtype={"run_id": str, "key": str})
    if not set(COLUMNS) <= set(old):
        return pd.DataFrame(columns=COLUMNS)
    return old


def _save(path: Path, frame: pd.DataFrame) -> None:
    atomic_write(path, lambda tmp: frame.to_csv(tmp, index=False))


def image_terms(runs_dir, chosen: pd.DataFrame, decisions: pd.DataFrame, set_name: str, *,
                key: str, load: Callable, prediction: str, seed: int, one_per_group: bool,
                test_options: dict | None, min_per_diagnosis: int,
                out_dir: Path, blocks: int = BLOCKS) -> ImageTerms | None:
    """The jackknife rows of the chosen runs on ``set_name`` when they share their test images
    (:func:`.shared_test_usage.shared_set`), else None (in-distribution: no image term).

    ``key``: the analysis's settings key (rows of other settings are kept but not used);
    ``load(spec)``: the data set's features, groups and diagnoses (``usage._Data``), called only
    for runs whose rows are not stored yet. Each run's rows are saved when computed."""
    runs_dir = Path(runs_dir)
    if f"effect_{MAGNITUDE}" not in decisions:  # no CMIknn: no magnitude, no CI
        return None
    if not shared_set(set_name, run_split_kinds(runs_dir, chosen["run_id"])):
        return None
    key = f"{key}-b{blocks}"
    path = out_dir / "jackknife.csv"
    table = _read_previous(path, key)
    mine = table[table["key"] == key]
    needed = _needed(decisions)
    for rec in chosen.itertuples(index=False):
        want = needed[needed["run_id"] == str(rec.run_id)]
        have = set(zip(mine.loc[mine["run_id"] == str(rec.run_id), "condition"],
                       mine.loc[mine["run_id"] == str(rec.run_id), "feature"]))
        todo = [(c, f) for c, f in zip(want["condition"], want["feature"]) if (c, f) not in have]
        if not todo:
            continue
        d = load(rec.data)
        preds = read_predictions(runs_dir, rec.run_id, set_name)
        classes = [c[len("prob_"):] for c in preds.columns if c.startswith("prob_")]
        if one_per_group and d.groups is not None:  # the images the tests used
            preds = one_image_per_group(preds, d.groups, seed)
        y = prediction_matrix(preds, classes, prediction)
        label = preds["label"].to_numpy(dtype=int)
        dx = (d.diagnosis.reindex(preds["image_id"]).to_numpy(dtype=object)
              if d.diagnosis is not None else None)
        fx = d.features.loc[preds["image_id"]]
        rows = []
        for f_i, (feature, cols) in enumerate(TABLE3_FEATURES.items()):
            conds = [c for c, f in todo if f == feature]
            if not conds:
                continue
            x = fx[list(cols)].to_numpy(dtype=float)
            for r in run_jackknife(x, y, label, dx, preds["image_id"].to_numpy(), conds,
                                   test_options, min_per_diagnosis,
                                   derive_seed(seed, rec.run_id, f_i, JACKKNIFE_TEST), blocks):
                rows.append({"run_id": str(rec.run_id), "feature": feature, **r, "key": key})
        table = pd.concat([table, pd.DataFrame(rows, columns=COLUMNS)], ignore_index=True)
        mine = table[table["key"] == key]
        _save(path, table[COLUMNS])
    return ImageTerms(mine[COLUMNS].reset_index(drop=True), blocks)
