"""Feature usage on a shared (OOD) test set: the CMI CIs and model differences add the variance
due to sampling the shared images (a jackknife over image blocks); in-distribution they do not."""

import json

import numpy as np
import pandas as pd
import pytest

from medattn.analysis.features import shared_usage_runs
from medattn.analysis.features.shared_test_usage import (
    BLOCKS,
    VARIANCE_NO_TERM,
    VARIANCE_SHARED,
    VARIANCE_SPLITS,
    ImageTerms,
    cmi_jackknife,
    image_blocks,
    jackknife_variance,
    run_jackknife,
    shared_set,
)
from medattn.analysis.features.summary import corrected_t, model_differences, usage_summary
from medattn.analysis.features.usage import feature_usage

CLASSES = ["melanoma", "nevus", "other"]


def test_blocks_come_from_the_image_id_alone():
    ids = [f"ISIC_{i:07d}" for i in range(500)]
    b = image_blocks(ids)
    assert b.min() >= 0 and b.max() < BLOCKS and len(set(b)) == BLOCKS
    perm = np.random.default_rng(0).permutation(500)
    assert np.array_equal(image_blocks([ids[i] for i in perm]), b[perm])


def test_jackknife_of_a_mean_gives_its_sampling_variance():
    rng = np.random.default_rng(1)
    values = rng.standard_normal(4000) * 2.0
    for blocks in (20, 200):
        block = rng.integers(0, blocks, values.size)  # unequal groups
        n_out = np.bincount(block, minlength=blocks)
        without = np.array([values[block != g].mean() for g in range(blocks)])
        v = jackknife_variance(values.mean(), without, values.size, n_out)
        if blocks == 200:  # 199 df: within 30% of s^2 / n
            assert v == pytest.approx(values.var(ddof=1) / values.size, rel=0.3)
    # equal groups: the textbook (G - 1) / G * sum (theta_g - mean)^2
    without = rng.standard_normal(10)
    v = jackknife_variance(0.3, without, 100, np.full(10, 10))
    assert v == pytest.approx(0.9 * np.sum((without - without.mean()) ** 2))
    assert np.isnan(jackknife_variance(0.3, without[:1], 100, np.array([10])))


def _data(n=240, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.integers(0, 2, n).astype(str)
    x = rng.standard_normal(n)
    ids = np.array([f"img{i}" for i in rng.permutation(n)])
    return rng, z, x, ids


def test_jackknife_does_not_depend_on_the_row_order():
    rng, z, x, ids = _data()
    y = 0.7 * x + rng.standard_normal(len(x))
    a = cmi_jackknife(x, y, z, ids, seed=3)
    perm = rng.permutation(len(x))
    b = cmi_jackknife(x[perm], y[perm], z[perm], ids[perm], seed=3)
    assert a["full"] == b["full"] and np.array_equal(a["without"], b["without"])
    assert a["full"] > 0.1 and np.isfinite(a["without"]).all()
    assert not np.allclose(a["without"], a["full"])  # each block's images matter


def _shared_study(runs=5, tau=1.2, seed=0):
    """Two models on the same images, each with its own per-image affinity (the same in every
    split): decisions (effect = the CMI estimate) and the jackknife rows of every run."""
    rng, z, x, ids = _data(seed=seed)
    u = rng.standard_normal((2, len(x))) * tau
    dec, jack = [], []
    for m, (model, coef) in enumerate((("resnet18", 0.8), ("resnet18+ga", 0.6))):
        for s in range(runs):
            y = (coef + 0.03 * rng.standard_normal()) * x + u[m] + 0.3 * rng.standard_normal(len(x))
            run = f"{model}-s{s}"
            rows = run_jackknife(x[:, None], y[:, None], z, None, ids, ["label"], seed=s)
            jack += [{"run_id": run, "feature": "A", **r} for r in rows]
            dec.append({"model": model, "run_id": run, "split_seed": s, "condition": "label",
                        "feature": "A", "used": 1.0, "p_cmiknn": 0.001,
                        "effect_cmiknn": rows[0]["full"]})
    return pd.DataFrame(dec), ImageTerms(pd.DataFrame(jack))


MODELS = pd.DataFrame({"model": ["resnet18", "resnet18+ga"], "backbone": "resnet18",
                       "variant": ["base", "ga"]})


def test_in_distribution_sets_have_no_image_term():
    assert not shared_set("test", ["random", "random"])
    assert not shared_set("test", ["kfold"])
    assert shared_set("test", ["official", "official"]) and shared_set("ood-pad", ["random"])
    dec, _ = _shared_study()
    summary = usage_summary(dec, ["cmiknn"], ratio=0.25)
    assert (summary["variance"] == VARIANCE_SPLITS).all()
    assert summary["image_var_cmiknn"].isna().all()
    row = summary[summary["model"] == "resnet18"].iloc[0]
    plain = corrected_t(dec.loc[dec["model"] == "resnet18", "effect_cmiknn"], 0.25)
    assert (row["effect_cmiknn_low"], row["effect_cmiknn_high"]) == (plain["low"], plain["high"])
    diff = model_differences(dec, MODELS, ["cmiknn"], ratio=0.25)
    assert (diff["variance"] == VARIANCE_SPLITS).all() and diff["image_var"].isna().all()


def test_shared_set_adds_image_sampling_to_the_split_variance():
    dec, terms = _shared_study()
    ids_only = usage_summary(dec, ["cmiknn"], ratio=0.25)
    shared = usage_summary(dec, ["cmiknn"], ratio=0.25, image=terms)
    assert (shared["variance"] == VARIANCE_SHARED).all()
    for model in ("resnet18", "resnet18+ga"):
        s = shared[shared["model"] == model].iloc[0]
        i = ids_only[ids_only["model"] == model].iloc[0]
        vals = dec.loc[dec["model"] == model, "effect_cmiknn"]
        split_var = vals.var(ddof=1) * (1 / len(vals) + 0.25)
        # the images dominate: each model's per-image affinity is the same in every split
        assert s["image_var_cmiknn"] > split_var
        assert s["effect_cmiknn_high"] - s["effect_cmiknn_low"] > \
            2 * (i["effect_cmiknn_high"] - i["effect_cmiknn_low"])
    diff = model_differences(dec, MODELS, ["cmiknn"], ratio=0.25, image=terms).iloc[0]
    plain = model_differences(dec, MODELS, ["cmiknn"], ratio=0.25).iloc[0]
    assert diff["variance"] == VARIANCE_SHARED and diff["image_var"] > 0
    assert diff["high"] - diff["low"] > plain["high"] - plain["low"]
    assert diff["df"] != plain["df"] == 4  # Welch-Satterthwaite, not J - 1
    # the difference's term is the jackknife of the difference, not the sum of two variances:
    # the same blocks are left out of every run
    rows = terms.rows
    wide = rows.pivot_table(index="block", columns="run_id", values="without")
    full = rows.groupby("run_id")["full"].first()
    va = [c for c in wide if c.startswith("resnet18+ga")]
    vb = [c for c in wide if not c.startswith("resnet18+ga")]
    combo = wide[va].mean(axis=1) - wide[vb].mean(axis=1)
    n_out = rows[rows["run_id"] == va[0]].sort_values("block")["n_out"].to_numpy()
    direct = jackknife_variance(full[va].mean() - full[vb].mean(), combo.to_numpy(), 240, n_out)
    assert diff["image_var"] == pytest.approx(direct)


def test_identical_runs_have_no_image_variance_in_their_difference():
    """The same image blocks are left out of both runs: two runs with the same output differ by
    exactly 0 on every replicate, however much each run moves with the images."""
    dec, terms = _shared_study(runs=2)
    rows = terms.rows.copy()
    twin = rows[rows["run_id"] == "resnet18-s0"].assign(run_id="twin")
    terms = ImageTerms(pd.concat([rows, twin], ignore_index=True))
    assert terms.variance("label", "A", {"resnet18-s0": 1.0}) > 0
    assert terms.variance("label", "A", {"resnet18-s0": 1.0, "twin": -1.0}) == 0
    # a run without jackknife rows: no term, said so
    assert terms.term("label", "A", {"missing": 1.0}) == (0.0, np.inf, VARIANCE_NO_TERM)


# ------------------------------------------------------------------------------------------------
# End to end: feature_usage on an OOD set, resumed
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ood_study(tmp_path_factory):
    from medattn.data import load_dataset
    from medattn.data.synthetic import write_derm

    out = tmp_path_factory.mktemp("derm_shared")
    spec, _ = write_derm(out, n=300, n_ood=1, seed=7, image_size=96, patch_bias=0.3, workers=1)
    table = load_dataset(spec)
    runs_dir = tmp_path_factory.mktemp("study_shared")
    affinity = np.random.default_rng(0).standard_normal((2, len(table), 3))
    for m, model in enumerate(("resnet18", "resnet18+ga")):
        for s in range(3):
            rng = np.random.default_rng([m, s])
            logits = affinity[m] + 0.3 * rng.standard_normal((len(table), 3))
            logits[:, 1] += (1.0 + 2.0 * m) * table["true_patch"].to_numpy()
            prob = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
            preds = pd.DataFrame({"image_id": table["image_id"], "label": table["label"],
                                  "pred": prob.argmax(1)})
            for i, c in enumerate(CLASSES):
                preds[f"prob_{c}"] = prob[:, i]
            d = runs_dir / "runs" / f"{model}-s{s}"
            (d / "predictions").mkdir(parents=True)
            # every run is tested on all the images: a shared set (and the test set is too, but
            # the runs are on random splits, so there it is not treated as shared)
            for name in ("ood-pad", "test"):
                preds.to_csv(d / "predictions" / f"{name}.csv", index=False)
            rec = {"run_id": f"{model}-s{s}", "status": "done", "phase": "final",
                   "model": model, "backbone": "resnet18", "variant": "ga" if m else "base",
                   "dataset": "isic", "data": spec, "classes": CLASSES, "split_seed": s,
                   "split": {"kind": "random", "n_train": 200, "n_val": 30, "n_test": 70},
                   "metrics": {"test": {"balanced_accuracy": 0.7}, "val": {"balanced_accuracy": 0.7}}}
            (d / "record.json").write_text(json.dumps(rec))
    return runs_dir


FAST = {"cmiknn": {"permutations": 199}}


@pytest.mark.slow
def test_ood_set_marks_with_splits_and_images_and_resumes(ood_study, monkeypatch):
    kw = dict(tests=("cmiknn",), test_options=FAST, alpha=0.05, progress=False,
              conditions=("label",))
    res = feature_usage(ood_study, set_name="ood-pad", **kw)
    path = ood_study / "analysis" / "features" / "jackknife.csv"
    jack = pd.read_csv(path)
    assert len(jack) == 6 * 8 * BLOCKS  # runs x features x blocks (label conditioning)
    cmi = res.summary.dropna(subset=["effect_cmiknn_low"])
    assert len(cmi) and (cmi["variance"] == VARIANCE_SHARED).all()
    assert (cmi["image_var_cmiknn"] > 0).all()
    assert (res.differences["variance"] == VARIANCE_SHARED).all()
    assert "Variance of the CIs and of the differences: splits + test images" in res.markdown

    def refuse(*args, **kwargs):
        raise AssertionError("resumed rows were recomputed")

    monkeypatch.setattr(shared_usage_runs, "run_jackknife", refuse)
    again = feature_usage(ood_study, set_name="ood-pad", **kw)
    pd.testing.assert_frame_equal(again.summary, res.summary)
    pd.testing.assert_frame_equal(again.differences, res.differences)
    assert len(pd.read_csv(path)) == len(jack)

    # the in-distribution test set of random splits: splits only, and no jackknife computed
    # (run_jackknife still refuses)
    ind = feature_usage(ood_study, set_name="test", **kw)
    assert (ind.summary["variance"] == VARIANCE_SPLITS).all()
    assert ind.summary["image_var_cmiknn"].isna().all()
    assert "Variance of the CIs and of the differences: splits (" in ind.markdown


def _tiny_study(root, runs, set_name="ood-pad", n=120):
    """Runs with predictions on the same ``n`` images and a data set of one feature (asymmetry),
    without images: what ``image_terms`` reads."""
    from types import SimpleNamespace

    rng = np.random.default_rng(5)
    ids = [f"img{i}" for i in range(n)]
    label = rng.integers(0, 3, n)
    asym = rng.standard_normal(n)
    for r in runs:
        logits = rng.standard_normal((n, 3))
        logits[:, 0] += asym
        prob = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        preds = pd.DataFrame({"image_id": ids, "label": label, "pred": prob.argmax(1),
                              **{f"prob_{c}": prob[:, i] for i, c in enumerate(CLASSES)}})
        d = root / "runs" / r
        (d / "predictions").mkdir(parents=True, exist_ok=True)
        preds.to_csv(d / "predictions" / f"{set_name}.csv", index=False)
        (d / "record.json").write_text(json.dumps({
            "run_id": r, "status": "done", "phase": "final", "classes": CLASSES,
            "model": "resnet18", "dataset": "isic", "split_seed": 0,
            "metrics": {"test": {"balanced_accuracy": 0.7}},
            "split": {"kind": "random", "n_train": 200, "n_val": 30, "n_test": 70}}))
    data = SimpleNamespace(features=pd.DataFrame({"asymmetry": asym}, index=ids), groups=None,
                           diagnosis=None)
    chosen = pd.DataFrame({"run_id": runs, "data": "tiny"})
    decisions = pd.DataFrame({"run_id": runs, "condition": "label", "feature": "A",
                              "effect_cmiknn": 0.05})
    return data, chosen, decisions


def test_jackknife_rows_are_stored_and_resumed(tmp_path, monkeypatch):
    data, chosen, decisions = _tiny_study(tmp_path, ["r0", "r1"])
    out = tmp_path / "analysis"
    out.mkdir()
    loads = []
    kw = dict(key="k1", prediction="softmax", seed=0, one_per_group=False, test_options=None,
              min_per_diagnosis=1, out_dir=out, load=lambda spec: loads.append(spec) or data)
    first = shared_usage_runs.image_terms(tmp_path, chosen, decisions, "ood-pad", **kw)
    assert len(first.rows) == 2 * BLOCKS and loads == ["tiny", "tiny"]  # (usage.py caches)
    v = first.variance("label", "A", {"r0": 0.5, "r1": 0.5})
    assert v > 0

    def refuse(*args, **kwargs):
        raise AssertionError("resumed rows were recomputed")

    monkeypatch.setattr(shared_usage_runs, "run_jackknife", refuse)
    again = shared_usage_runs.image_terms(tmp_path, chosen, decisions, "ood-pad", **kw)
    pd.testing.assert_frame_equal(again.rows, first.rows, check_dtype=False)
    assert again.variance("label", "A", {"r0": 0.5, "r1": 0.5}) == pytest.approx(v)
    assert loads == ["tiny", "tiny"]  # nothing to compute: the data set is not even loaded
    # other settings: computed anew, the first rows kept in the file
    monkeypatch.undo()
    other = shared_usage_runs.image_terms(tmp_path, chosen, decisions, "ood-pad",
                                          **{**kw, "key": "k2"})
    assert len(other.rows) == 2 * BLOCKS
    assert len(pd.read_csv(out / "jackknife.csv")) == 4 * BLOCKS


def test_no_jackknife_on_the_test_set_of_random_splits(tmp_path):
    data, chosen, decisions = _tiny_study(tmp_path, ["r0", "r1"], set_name="test")
    out = tmp_path / "analysis"
    out.mkdir()
    got = shared_usage_runs.image_terms(
        tmp_path, chosen, decisions, "test", key="k", prediction="softmax", seed=0,
        one_per_group=False, test_options=None, min_per_diagnosis=1, out_dir=out,
        load=lambda spec: data)
    assert got is None and not (out / "jackknife.csv").exists()
