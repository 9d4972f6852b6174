"""The tests of one run: its predictions as Y (one image per patient or lesion), each feature
against them under each conditioning, and the majority decision per (run, conditioning, feature)."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from medattn.analysis.features.conditioning import CONDITIONS, MIN_PER_DIAGNOSIS, strata_for
from medattn.analysis.citests import TESTS
from medattn.analysis.stats import adjust_pvalues
from medattn.errors import ConfigError, DataError

DEFAULT_TESTS = ("chsic", "rcot", "cmiknn")
PREDICTIONS = ("softmax", "logits", "class")
MIN_SAMPLES = 20
# The test whose effect is a magnitude (CMI in nats, about the same at any n for a fixed
# dependence): the one effect size with CIs and model differences. cHSIC's and RCoT's effects are
# z-values, (T - mean) / sd, which grow about like n: evidence, never compared between models.
MAGNITUDE = "cmiknn"


def derive_seed(seed: int, run_id: str, feature: int, test: int) -> int:
    """A test's seed from the base seed, the run id (not its position, so selecting other runs
    does not change a run's p-values), the feature and the test."""
    run = int(hashlib.sha1(str(run_id).encode()).hexdigest()[:8], 16)
    return int(np.random.SeedSequence([seed, run, feature, test]).generate_state(1)[0])


def feature_tests(x: np.ndarray, y: np.ndarray, label: np.ndarray, diagnosis: np.ndarray | None,
                  conditions=CONDITIONS, tests=DEFAULT_TESTS, seeds=None,
                  options: dict | None = None,
                  min_per_diagnosis: int = MIN_PER_DIAGNOSIS) -> list[dict]:
    """Each test of ``x _||_ y | z`` for each conditioning z: one dict per (condition, test) with
    the p-value, statistic, effect size and counts (NaN p when fewer than MIN_SAMPLES samples have
    the feature, or it is constant within every stratum). Rows without x, and for the diagnosis
    images without one (``no_diagnosis``), are left out first; strata too small for a test are
    left out of that test by the test itself and counted (``n_unused``), never merged."""
    keep = ~np.isnan(x).any(axis=1)
    x, y, label = x[keep], y[keep], label[keep]
    diagnosis = diagnosis[keep] if diagnosis is not None else None
    seeds = list(seeds) if seeds is not None else list(range(len(tests)))
    rows = []
    for condition in conditions:
        strata = strata_for(condition, label, diagnosis, min_per_diagnosis)
        tested = np.array([v is not None for v in strata.z], dtype=bool)  # no diagnosis: out
        xs, ys, z = x[tested], y[tested], strata.z[tested].astype(str)
        informative = any(np.ptp(xs[z == c], axis=0).max() > 0 for c in set(z)
                          if (z == c).sum() > 1)
        for name, derive_seed in zip(tests, seeds):
            row = {"condition": condition, "test": name, "n": len(xs), "n_strata": strata.n_strata,
                   "merged_diagnoses": strata.merged_diagnoses,
                   "merged_images": strata.merged_images, "no_diagnosis": strata.no_diagnosis,
                   "p_value": np.nan, "statistic": np.nan, "effect": np.nan, "n_unused": 0}
            if len(xs) >= MIN_SAMPLES and informative:
                r = TESTS[name](xs, ys, z, seed=derive_seed, full=True,
                                **(options or {}).get(name, {}))
                row.update(p_value=r.p_value, statistic=r.statistic, effect=r.effect,
                           n_unused=r.n_left_out)
            rows.append(row)
    return rows


def tests_job(*args, **kwargs) -> list[dict]:
    """:func:`feature_tests` in a worker process, with BLAS on one thread."""
    with threadpool_limits(1):
        return feature_tests(*args, **kwargs)


def holm(p) -> np.ndarray:
    """Holm-adjusted p-values of one family (:func:`medattn.analysis.stats.adjust_pvalues`),
    (m,) -> (m,); NaN entries (tests that could not run) stay NaN and are not counted."""
    return np.asarray(adjust_pvalues(np.asarray(p, dtype=float), "holm"), dtype=float)


def decide(pvalues: pd.DataFrame, tests) -> pd.DataFrame:
    """Majority decision per (run, condition, feature): used when more than half of the tests
    reject after each test's p-values are Holm-adjusted over the features of that run and
    conditioning (the family of Table 3's row), with each test's raw and adjusted p-value and
    effect beside it (``effect_cmiknn``: CMI in nats; ``z_chsic``, ``z_rcot``: standardised
    statistics, evidence only: they grow with n).

    A test that could not run (NaN p-value: too few samples, or a feature constant within every
    stratum) does not reject; when no test ran the decision is missing.
    """
    pv = pvalues.copy()
    if "no_diagnosis" not in pv:  # rows written before images without a diagnosis were counted
        pv["no_diagnosis"] = 0
    pv["p_adjusted"] = pv.groupby(["run_id", "condition", "test"], sort=False)["p_value"] \
        .transform(holm)
    pv = pv.assign(reject=pv["p_adjusted"] < pv["alpha"], ran=pv["p_value"].notna())
    keys = ["model", "run_id", "split_seed", "condition", "feature"]
    out = pv.groupby(keys, sort=False, dropna=False).agg(
        n=("n", "first"), n_left_out=("n_left_out", "first"), n_strata=("n_strata", "first"),
        merged_diagnoses=("merged_diagnoses", "first"), merged_images=("merged_images", "first"),
        no_diagnosis=("no_diagnosis", "first"),
        rejections=("reject", "sum"), tests_run=("ran", "sum")).reset_index()
    out["used"] = np.where(out["tests_run"] > 0, out["rejections"] > len(tests) / 2, np.nan)
    for col, prefix in (("p_value", "p"), ("p_adjusted", "p_holm"), ("effect", None)):
        wide = pv.pivot_table(index=["run_id", "condition", "feature"], columns="test",
                              values=col, dropna=False)
        for name in tests:
            values = wide[name] if name in wide else pd.Series(dtype=float)
            head = prefix or ("effect" if name == MAGNITUDE else "z")
            out[f"{head}_{name}"] = [values.get((r, c, f), np.nan) for r, c, f in
                                     zip(out["run_id"], out["condition"], out["feature"])]
    return out


def prediction_matrix(preds: pd.DataFrame, classes: list[str], kind: str = "softmax") -> np.ndarray:
    """The model output used as Y, (n, d).

    ``softmax``: the class probabilities without the last one (they sum to 1, so C - 1 columns carry
    all the information and kNN distances are not distorted by the redundant coordinate);
    ``logits``: all C logits; ``class``: the predicted class one-hot, without the last column.
    """
    if kind not in PREDICTIONS:
        raise ConfigError(f"features: kind={kind!r} is not one of {', '.join(PREDICTIONS)}")
    if kind == "class":
        onehot = np.eye(len(classes))[preds["pred"].to_numpy(dtype=int)]
        return onehot[:, :-1]
    prefix = "prob_" if kind == "softmax" else "logit_"
    cols = [f"{prefix}{c}" for c in classes]
    missing = [c for c in cols if c not in preds]
    if missing:
        raise DataError(f"predictions lack columns {missing}; they are written by `medattn train`")
    values = preds[cols].to_numpy(dtype=float)
    return values[:, :-1] if kind == "softmax" else values


def one_image_per_group(preds: pd.DataFrame, group: pd.Series, seed: int = 0) -> pd.DataFrame:
    """Keep one randomly chosen (seeded) prediction row per group (``group``: image_id -> group)."""
    order = np.random.default_rng(seed).permutation(len(preds))
    shuffled = preds.iloc[order]
    ids = shuffled["image_id"].to_numpy()
    g = group.reindex(ids).to_numpy(dtype=object)
    g = np.where(pd.isna(g), ids, g)  # an image without a group is its own group
    return shuffled[~pd.Series(g).duplicated().to_numpy()].sort_index()
