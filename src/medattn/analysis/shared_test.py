"""The per-image predictions of a comparison's pairs, and test-image sampling on shared test sets.

When every run of a comparison is tested on the same images (an out-of-distribution set, or a
fixed official split), the spread of the per-split differences holds no test-image sampling: a
different draw of test images would move every split's difference together. The marking test
then adds the variance of the mean difference due to sampling those images, estimated from the
stored predictions (:func:`medattn.analysis.bootstrap.image_sampling_variance`); see
docs/statistics.md, "Shared test sets".

Reading is shared with the bootstrap (:func:`medattn.analysis.paired.bootstrap_pairs`): a
prediction file that is missing, truncated or unreadable leaves its pair out, with a note that
names the file.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from medattn.analysis.bootstrap import SplitPredictions, image_sampling_variance, same_images
from medattn.errors import DataError, MedattnError
from medattn.runs import store

__all__ = ["PairPredictions", "VARIANCE_SHARED", "VARIANCE_SPLITS", "image_variance", "is_shared",
           "read_pair_predictions", "shared_variance"]

# What the marking test's variance holds (Table 2's ``variance`` column).
VARIANCE_SPLITS = "splits"
VARIANCE_SHARED = "splits + test images"
VARIANCE_NO_PREDICTIONS = "splits only (shared test set, no predictions)"


@dataclass
class PairPredictions:
    """The usable pairs of one comparison: ``splits`` (one per pair, image ids shared across the
    splits), ``n_classes``, ``seeds`` (their split seeds) and ``notes`` on the pairs left out."""

    splits: list[SplitPredictions] = field(default_factory=list)
    n_classes: int = 0
    seeds: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _read(runs_dir, run_id: str, set_name: str, cache: dict) -> tuple[pd.DataFrame | None, str]:
    """``(predictions, "")`` or ``(None, why)``; ``why`` names the file. Cached per run and set."""
    key = (run_id, set_name)
    if key not in cache:
        path = store.run_dir(runs_dir, run_id) / "predictions" / f"{set_name}.csv"
        cache[key] = (None, "missing")
        if not path.is_file():
            return cache[key]
        try:
            with open(path, "rb") as f:  # the writer ends every row with a newline
                f.seek(max(0, path.stat().st_size - 1))
                complete = f.read(1) == b"\n"
            p = store.read_predictions(runs_dir, run_id, set_name)
        except (DataError, OSError, ValueError, pd.errors.ParserError) as err:
            cache[key] = (None, f"{path} is unreadable ({type(err).__name__}: {err}); rerun "
                                f"`medattn study` to rewrite it")
            return cache[key]
        need = ["image_id", "label", "pred"]
        n_recorded = _recorded_n(runs_dir, run_id, set_name)
        if not set(need) <= set(p.columns):
            why = f"lacks column(s) {', '.join(c for c in need if c not in p.columns)}"
        elif not complete or p[need].isna().any().any():
            why = "is truncated (its last row is incomplete)"
        elif n_recorded is not None and len(p) < n_recorded:
            why = f"is truncated ({len(p)} rows; its run record counts {n_recorded} images)"
        else:
            slim = p[need].copy()  # what the bootstrap needs, no more
            slim.attrs["n_classes"] = sum(c.startswith("prob_") for c in p.columns)
            cache[key] = (slim, "")
            return cache[key]
        cache[key] = (None, f"{path} {why}; rerun `medattn study` to rewrite it")
    return cache[key]


def _recorded_n(runs_dir, run_id: str, set_name: str) -> int | None:
    """The number of images the run's record says it tested on ``set_name``, if it says."""
    try:
        rec = store.read_record(store.run_dir(runs_dir, run_id))
    except (MedattnError, OSError, ValueError):  # a broken record is reported elsewhere
        return None
    metrics = ((rec or {}).get("metrics") or {}).get(set_name) or {}
    n = metrics.get("n") if isinstance(metrics, dict) else None
    return int(n) if isinstance(n, (int, float)) and not isinstance(n, bool) else None


def _unit_name(p) -> str:
    """A pair's split as a reader names it: its seed, and its fold for k-fold runs."""
    fold = getattr(p, "fold", None)
    return (str(int(p.split_seed)) if fold is None or pd.isna(fold)
            else f"{int(p.split_seed)} fold {int(fold)}")


def read_pair_predictions(runs_dir, pairs: pd.DataFrame, set_name: str,
                          cache: dict | None = None) -> PairPredictions:
    """The predictions of both models of every pair (``pair_runs`` output) on ``set_name``
    (``test`` or ``ood-<name>``), as :class:`SplitPredictions` with one integer id per image
    across the splits (an image in several test sets is one image)."""
    cache = {} if cache is None else cache
    merged, seeds, missing, mismatch, bad = [], [], [], [], []
    n_classes = 0
    for p in pairs.itertuples():
        (a, why_a), (b, why_b) = (_read(runs_dir, r, set_name, cache)
                                  for r in (p.run_id, p.ref_run_id))
        if a is None or b is None:
            whys = [w for w in (why_a, why_b) if w and w != "missing"]
            (bad if whys else missing).append((_unit_name(p), whys))
            continue
        m = a.merge(b, on="image_id", suffixes=("_a", "_b"))
        if len(m) != len(a) or len(m) != len(b) or (m["label_a"] != m["label_b"]).any():
            mismatch.append(_unit_name(p))
            continue
        merged.append(m)
        seeds.append(int(p.split_seed))
        n_classes = max(n_classes, a.attrs["n_classes"], int(m["label_a"].max()) + 1)
    ids = pd.factorize(pd.concat([m["image_id"] for m in merged]))[0] if merged else []
    out, start = PairPredictions(n_classes=n_classes, seeds=seeds), 0
    for m in merged:
        out.splits.append(SplitPredictions(ids[start:start + len(m)],
                                           m["label_a"].to_numpy(np.intp),
                                           (m["pred_a"] == m["label_a"]).to_numpy(),
                                           (m["pred_b"] == m["label_b"]).to_numpy()))
        start += len(m)
    if missing:
        out.notes.append(f"no stored predictions on `{set_name}` for split seed(s) "
                         f"{', '.join(s for s, _ in missing)}; left out")
    for seed, whys in bad:
        out.notes.append(f"split seed {seed} left out: " + "; ".join(whys))
    if mismatch:
        out.notes.append(f"the two models' `{set_name}` predictions of split seed(s) "
                         f"{', '.join(mismatch)} are not on the same images; left "
                         f"out (were the runs trained on different data?)")
    return out


def is_shared(set_name: str, preds: PairPredictions, all_official: bool) -> bool:
    """Whether the runs of a comparison share their test images: always on an OOD set; on the
    in-distribution test set when every run used the fixed official split, or when the stored
    predictions of every pair (at least two) are on the same images."""
    if set_name != "test" or all_official:
        return True
    return len(preds.splits) >= 2 and same_images(preds.splits)


def image_variance(preds: PairPredictions) -> tuple[float, float]:
    """``(image_var, n_images)``: the test-image sampling variance (pp^2) of the mean difference
    from the usable pairs, and the number of distinct images; NaNs when there is none."""
    if not preds.splits:
        return math.nan, math.nan
    v, n = image_sampling_variance(preds.splits, max(preds.n_classes, 1))
    return v, float(n)


def shared_variance(runs_dir, cache: dict):
    """A function ``(set, pairs, used_runs) -> (image_var, n_images, label, notes)`` for the
    comparisons of ``runs_dir``: the test-image variance (pp^2) where the runs share their test
    images, else ``(0, inf, "splits", [])``. ``set``: ``id`` or ``ood-<name>``; ``pairs``:
    ``paired.pair_runs`` output; ``used_runs``: the runs with their split ``kind``; ``cache``:
    predictions already read (shared with the bootstrap)."""

    def shared(set_name: str, pairs: pd.DataFrame, used: pd.DataFrame):
        set_file = "test" if set_name == "id" else set_name
        preds = read_pair_predictions(runs_dir, pairs, set_file, cache)
        official = "kind" in used and len(used) > 0 and bool((used["kind"] == "official").all())
        if not len(pairs) or not is_shared(set_file, preds, official):
            return 0.0, math.inf, VARIANCE_SPLITS, []
        image_var, n_images = image_variance(preds)
        if not np.isfinite(image_var):
            return 0.0, math.inf, VARIANCE_NO_PREDICTIONS, preds.notes + [
                f"every run is tested on the same `{set_file}` images but no pair has usable "
                f"predictions: the mark ignores test-image sampling and is too liberal"]
        return image_var, n_images, VARIANCE_SHARED, [
            f"{n} (test-image variance)" for n in preds.notes]

    return shared
