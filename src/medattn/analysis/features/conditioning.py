"""What the feature tests condition on: the 3-class label, or the fine diagnosis inside it.

A coarse class mixes diagnoses that differ in age, skin colour and appearance ("other" holds
keratoses of the old and dermatofibromas of the young). A model that tells them apart from the image
alone then has predictions that vary with age *within the class*, so ``age _||_ prediction | label``
fails although the model never sees age. Conditioning on the fine diagnosis removes that path
(docs/features.md).

Every diagnosis keeps its own stratum (the default, ``min_size=1``): the tests permute within
strata, which is exact at any stratum size, and a stratum too small for a test (a single image;
CMIknn's k neighbours) is left out of that test and counted. Merging rare diagnoses into a rest
stratum (``min_size > 1``, opt-in) brings the confound back: rare diagnoses of different ages
(dermatofibroma ~35 y, actinic keratosis ~75 y inside "other") merged into one stratum make an
image-only model look like an age user again (benchmarks/calibrate_features.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from medattn.errors import ConfigError

CONDITIONS = ("diagnosis", "label")
MIN_PER_DIAGNOSIS = 1  # 1: no merging (the default); > 1: the opt-in merging into a rest stratum
REST = "*"  # the stratum of a class's merged diagnoses (and images without a diagnosis)


@dataclass(frozen=True)
class Strata:
    """The conditioning strata of the tested images."""

    z: np.ndarray  # (n,) str: "<label>:<diagnosis>", "<label>:*" for a merged rest, None = untested
    n_strata: int
    merged_diagnoses: int  # diagnoses merged into their class's rest (missing ones count as one)
    merged_images: int  # images in the merged rests
    no_diagnosis: int = 0  # images without a diagnosis, left out (no merging)


def normalise_diagnosis(values) -> np.ndarray:
    """Diagnoses as lower-case strings with single spaces; missing or empty values become None."""
    out = np.empty(len(values), dtype=object)
    for i, v in enumerate(values):
        text = "" if v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NA else str(v)
        text = re.sub(r"\s+", " ", text.strip().lower())
        out[i] = text or None
    return out


def finer_than_label(label: np.ndarray, diagnosis: np.ndarray) -> bool:
    """Whether the diagnoses split at least one class (else conditioning on them is the label)."""
    pairs = {(lab, d) for lab, d in zip(label, diagnosis) if d is not None}
    return len(pairs) > len({lab for lab, _ in pairs})


def label_strata(label: np.ndarray) -> Strata:
    """The 3-class label itself (the paper's conditioning)."""
    z = np.array([str(v) for v in label], dtype=object)
    return Strata(z=z, n_strata=len(set(z)), merged_diagnoses=0, merged_images=0)


def diagnosis_strata(label: np.ndarray, diagnosis: np.ndarray,
                     min_size: int = MIN_PER_DIAGNOSIS) -> Strata:
    """Strata of (label, fine diagnosis).

    ``min_size=1`` (default): every diagnosis is its own stratum, however small; images without
    a diagnosis get ``None`` (left out of the tests and counted in ``no_diagnosis``), since
    pooling unknown diagnoses would be a merge.

    ``min_size > 1`` (opt-in, the old default 10; it can bring the coarse-label confound back):
    within each class, diagnoses with fewer than ``min_size`` images (and images without a
    diagnosis) form the class's rest stratum ``"<label>:*"``; while that rest is non-empty but
    still smaller than ``min_size``, the class's smallest remaining diagnosis joins it, so no
    stratum is too small unless its whole class is. Nothing is dropped.
    """
    if int(min_size) != min_size or min_size < 1:
        raise ConfigError(f"features: min_size={min_size!r} must be a whole number >= 1")
    label = np.asarray(label)
    z = np.empty(len(label), dtype=object)
    if min_size == 1:
        known = np.array([d is not None for d in diagnosis], dtype=bool)
        z[known] = [f"{lab}:{d}" for lab, d in zip(label[known], diagnosis[known])]
        return Strata(z=z, n_strata=len(set(z[known])), merged_diagnoses=0, merged_images=0,
                      no_diagnosis=int((~known).sum()))
    merged_dx, merged_img = 0, 0
    for lab in pd.unique(label):
        rows = np.flatnonzero(label == lab)
        dx = pd.Series(diagnosis[rows], dtype=object)
        counts = dx.value_counts(dropna=True)  # largest first; ties by first appearance
        keep = [d for d, c in counts.items() if c >= min_size]
        rest = int((~dx.isin(keep)).sum())
        while 0 < rest < min_size and keep:
            rest += int(counts[keep.pop()])  # the smallest kept diagnosis joins the rest
        in_rest = ~dx.isin(keep).to_numpy()
        z[rows] = [f"{lab}:{REST}" if r else f"{lab}:{d}" for r, d in zip(in_rest, dx)]
        if in_rest.any():
            merged_dx += int(dx[in_rest].nunique(dropna=True) + dx[in_rest].isna().any())
            merged_img += int(in_rest.sum())
    return Strata(z=z, n_strata=len(set(z)), merged_diagnoses=merged_dx, merged_images=merged_img)


def strata_for(condition: str, label: np.ndarray, diagnosis: np.ndarray | None,
               min_size: int = MIN_PER_DIAGNOSIS) -> Strata:
    """The strata of one conditioning (``diagnosis`` needs the diagnoses)."""
    if condition == "label" or diagnosis is None:
        return label_strata(label)
    return diagnosis_strata(label, diagnosis, min_size)
