"""Test-image sampling of the CMI effect sizes when every run is tested on the same images.

On a shared test set (an OOD set, or the in-distribution test set of runs that all used the fixed
official split) the spread of the runs' CMI holds no test-image sampling: another draw of the
images would move every run's estimate together. As Table 2 does for accuracy
(:mod:`medattn.analysis.shared_test`), the CIs of the mean CMI and of the variant-minus-base
differences then add the variance due to sampling those images to the corrected split variance,
``se^2 = s^2 (1/J + r) + V_img``, with Welch-Satterthwaite df (:func:`stats.shared_se_df`).

V_img is a delete-a-block jackknife over the images: each image falls in one of ``BLOCKS`` blocks
by a hash of its id (so the same block in every run, whatever the row order), and CMIknn's
estimate is recomputed with each block left out. Leaving images out, unlike resampling them with
replacement, never puts duplicate points into a nearest-neighbour estimator. The replicates of
a mean over runs, or of a mean of paired differences, are the same combination of the runs'
replicates, so one stored set per run serves every comparison; ``jackknife.csv`` keeps them and
an interrupted analysis resumes. The estimate is the one CMIknn computes (Frenzel-Pompe within
each stratum, the same standardisation, jitter and neighbour count); the shuffle mean that the
effect subtracts is treated as fixed (it is the estimator's bias under independence at this n,
which image sampling barely moves). The jackknife variance has about BLOCKS - 1 degrees of
freedom, which the Welch-Satterthwaite df use. Calibration: benchmarks/calibrate_shared_usage.py,
docs/features.md.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree
from scipy.special import digamma

from medattn.analysis.citests.cmiknn import DEFAULT_K, neighbours
from medattn.analysis.citests._common import standardize
from medattn.analysis.features.conditioning import strata_for

__all__ = ["BLOCKS", "ImageTerms", "VARIANCE_NO_TERM", "VARIANCE_SHARED", "VARIANCE_SPLITS",
           "cmi_jackknife", "image_blocks", "jackknife_variance", "run_jackknife", "shared_set"]

BLOCKS = 20  # jackknife blocks: about 19 df for the image term at 21 CMI estimates per test
# What the CIs' variance holds (usage.csv / differences.csv ``variance``), as Table 2 says it.
VARIANCE_SPLITS = "splits"
VARIANCE_SHARED = "splits + test images"
VARIANCE_NO_TERM = "splits only (shared test set, no image term)"
_SHRINK = 1.0 - 1e-9  # as CMIknn: strictly closer than the k-th neighbour


def image_blocks(image_ids, blocks: int = BLOCKS) -> np.ndarray:
    """The jackknife block of each image, from its id alone (the same in every run and row
    order), (n,) ints in [0, blocks)."""
    return np.array([zlib.crc32(str(i).encode("utf-8")) % blocks for i in image_ids], np.intp)


def _ksg_sum(u: np.ndarray, v: np.ndarray, k: int) -> float:
    """Sum over one stratum's samples of psi(k) + psi(n) - psi(n_u) - psi(n_v) (KSG-1), the
    terms whose sum over strata divided by the samples is CMIknn's estimate."""
    n = len(u)
    pts = np.hstack([u, v])
    eps = cKDTree(pts).query(pts, k=[k + 1], p=np.inf)[0][:, 0] * _SHRINK
    r = np.nextafter(eps, 0)
    n_u = cKDTree(u).query_ball_point(u, r, p=np.inf, return_length=True)
    n_v = cKDTree(v).query_ball_point(v, r, p=np.inf, return_length=True)
    return float(np.sum(digamma(k) + digamma(n) - digamma(n_u) - digamma(n_v)))


def cmi_jackknife(x, y, z, image_ids, *, k: float = DEFAULT_K, jitter: float = 1e-6,
                  seed: int = 0, blocks: int = BLOCKS) -> dict:
    """CMIknn's estimate (nats) of ``x _||_ y | z`` (z: class labels) on all images and with each
    block of images left out: ``{"full", "without" (blocks,), "n", "n_out" (blocks,)}``; NaN
    where no stratum can be estimated. Rows are put in image-id order first, so the result does
    not depend on the row order; each stratum keeps its full-sample neighbour count, so the
    replicates differ only by the images left out."""
    x = np.asarray(x, float).reshape(len(image_ids), -1)
    y = np.asarray(y, float).reshape(len(image_ids), -1)
    ids = np.asarray(image_ids).astype(str)
    order = np.argsort(ids, kind="stable")
    x, y, z, ids = x[order], y[order], np.asarray(z)[order], ids[order]
    rng = np.random.default_rng(seed)
    x = standardize(x) + jitter * rng.standard_normal(x.shape)
    y = standardize(y) + jitter * rng.standard_normal(y.shape)
    block = image_blocks(ids, blocks)
    n_out = np.bincount(block, minlength=blocks)
    full_sum, full_n = 0.0, 0
    without_sum, without_n = np.zeros(blocks), np.zeros(blocks)
    for c in np.unique(z):
        idx = np.flatnonzero(z == c)
        kc = neighbours(k, len(idx))
        if len(idx) <= kc + 1:
            continue
        full_sum += _ksg_sum(x[idx], y[idx], kc)
        full_n += len(idx)
        for g in range(blocks):
            keep = idx[block[idx] != g]
            if len(keep) > kc + 1:
                without_sum[g] += _ksg_sum(x[keep], y[keep], kc)
                without_n[g] += len(keep)
    with np.errstate(invalid="ignore", divide="ignore"):
        without = np.where(without_n > 0, without_sum / without_n, np.nan)
    return {"full": full_sum / full_n if full_n else math.nan, "without": without,
            "n": len(ids), "n_out": n_out}


def run_jackknife(x: np.ndarray, y: np.ndarray, label: np.ndarray, diagnosis, image_ids,
                  conditions, options: dict | None = None, min_per_diagnosis: int = 1,
                  seed: int = 0, blocks: int = BLOCKS) -> list[dict]:
    """The jackknife rows of one feature of one run, per conditioning: one dict per (condition,
    block) with ``full``, ``without``, ``n`` and ``n_out``; the rows tested as
    :func:`medattn.analysis.features.decisions.feature_tests` tests them (images without the
    feature, and for the diagnosis those without one, left out)."""
    opts = (options or {}).get("cmiknn", {})
    keep = ~np.isnan(x).any(axis=1)
    x, y, label = x[keep], y[keep], label[keep]
    ids = np.asarray(image_ids)[keep]
    diagnosis = diagnosis[keep] if diagnosis is not None else None
    rows = []
    for condition in conditions:
        strata = strata_for(condition, label, diagnosis, min_per_diagnosis)
        tested = np.array([v is not None for v in strata.z], dtype=bool)
        jk = cmi_jackknife(x[tested], y[tested], strata.z[tested].astype(str), ids[tested],
                           k=opts.get("k", DEFAULT_K), jitter=opts.get("jitter", 1e-6),
                           seed=seed, blocks=blocks)
        rows += [{"condition": condition, "block": g, "n": jk["n"], "n_out": int(jk["n_out"][g]),
                  "full": jk["full"], "without": float(jk["without"][g])} for g in range(blocks)]
    return rows


def jackknife_variance(full: float, without: np.ndarray, n: float, n_out: np.ndarray) -> float:
    """Delete-a-group jackknife variance of a statistic with unequal groups (Busing, Meijer and
    van der Leeden 1999): pseudo-values ``h_g full - (h_g - 1) without_g`` with ``h_g = n /
    n_out_g``; blocks without images are skipped. Equal groups give ``(G - 1) / G *
    sum (without_g - mean)^2``. NaN with fewer than 2 usable blocks."""
    without, n_out = np.asarray(without, float), np.asarray(n_out, float)
    ok = (n_out > 0) & (n_out < n) & np.isfinite(without)
    g = int(ok.sum())
    if g < 2 or not math.isfinite(full):
        return math.nan
    h = n / n_out[ok]
    pseudo = h * full - (h - 1) * without[ok]
    centre = g * full - np.sum((1 - 1 / h) * without[ok])
    return float(np.mean((pseudo - centre) ** 2 / (h - 1)))


@dataclass
class ImageTerms:
    """The stored jackknife rows of the runs on one shared set (``run_id, condition, feature,
    block, n, n_out, full, without``): the image-sampling variance of any linear combination of
    the runs' CMI (:meth:`variance`)."""

    rows: pd.DataFrame
    blocks: int = BLOCKS

    def variance(self, condition: str, feature: str, weights: dict) -> float:
        """Image-sampling variance (nats^2) of ``sum_r weights[r] * CMI_r`` (e.g. 1/J each for a
        mean over runs; +1/J and -1/J for a mean of paired differences); NaN when a run has no
        jackknife rows."""
        sel = self.rows[(self.rows["condition"] == condition) & (self.rows["feature"] == feature)]
        by_run = {r: g.sort_values("block") for r, g in sel.groupby("run_id", sort=False)}
        w = {str(r): float(v) for r, v in weights.items() if v}
        if not w or any(r not in by_run or len(by_run[r]) != self.blocks for r in w):
            return math.nan
        full = sum(v * float(by_run[r]["full"].iloc[0]) for r, v in w.items())
        without = sum(v * by_run[r]["without"].to_numpy(float) for r, v in w.items())
        # the runs of one shared set have (nearly) the same images: their mean block sizes
        scale = sum(abs(v) for v in w.values())
        n = sum(abs(v) * float(by_run[r]["n"].iloc[0]) for r, v in w.items()) / scale
        n_out = sum(abs(v) * by_run[r]["n_out"].to_numpy(float) for r, v in w.items()) / scale
        return jackknife_variance(full, without, n, n_out)

    def term(self, condition: str, feature: str, weights: dict) -> tuple[float, float, str]:
        """``(image_var, n_images, variance label)`` for the corrected t-test: ``n_images`` is the
        number of blocks (the jackknife's df + 1); ``(0, inf, VARIANCE_NO_TERM)`` when the
        variance cannot be estimated."""
        v = self.variance(condition, feature, weights)
        if not (math.isfinite(v) and v >= 0):
            return 0.0, math.inf, VARIANCE_NO_TERM
        return v, float(self.blocks), VARIANCE_SHARED


def shared_set(set_name: str, kinds) -> bool:
    """Whether the runs share their test images: every OOD set; the in-distribution test set
    when every run used the fixed official split (``kinds``: the runs' split kinds)."""
    kinds = list(kinds)
    return set_name != "test" or (len(kinds) > 0 and all(k == "official" for k in kinds))
