"""Table 2 from runs: pairing on split seeds, the corrected/paired/Welch choice, split ratios,
divergence rates, converged vs all runs, and the bootstrap from stored predictions."""

import json
import math
import shutil

import numpy as np
import pandas as pd
import pytest
from scipy import stats as ss
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import proportion_confint

from medattn import cli
from medattn.analysis import compare, paired
from medattn.analysis.summary import read_summary
from medattn.analysis.bootstrap import SplitPredictions, paired_bootstrap
from medattn.errors import ConfigError
from medattn.report import table2

from tests.fake_study import DIVERGED_RUN, N_FINAL, SPLIT, write_fake_study
from medattn.analysis.settings import CompareSettings

R = SPLIT["n_test"] / SPLIT["n_train"]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    return root, write_fake_study(root)


@pytest.fixture(scope="module")
def result(study):
    return compare.compare_runs(study[0], settings=CompareSettings(bootstrap=2000, seed=0))


def _row(table, backbone, model, set_="id", reference=None):
    sel = table[(table.backbone == backbone) & (table.model == model) & (table.set == set_)]
    if reference is not None:
        sel = sel[sel.reference == reference]
    assert len(sel) == 1, sel
    return sel.iloc[0]


def _joined(values, variant, reference=("resnet18", "base"), key=""):
    a = dict(zip(values[(*variant, "seeds")], values[(*variant, key)] if key else values[variant]))
    b = dict(zip(values[(*reference, "seeds")],
                 values[(*reference, key)] if key else values[reference]))
    seeds = sorted(set(a) & set(b))
    return seeds, np.array([a[s] for s in seeds]), np.array([b[s] for s in seeds])


@pytest.mark.slow
def test_variant_and_base_are_paired_on_the_split_seed(study, result):
    _, values = study
    for set_, key in (("id", ""), ("ood-pad-ufes-20", "ood")):
        seeds, a, b = _joined(values, ("resnet18", "ga"), key=key)
        assert seeds == [0, 1, 2, 3]  # seed 4 of +GA diverged: no pair
        row = _row(result.table, "resnet18", "ga", set_)
        assert row.n_pairs == 4
        # OOD: every run is tested on the same images, so the variance of a shared test set
        # adds the test-image sampling term, with Welch-Satterthwaite df (docs/statistics.md).
        v_img = row.image_var if set_ != "id" else 0.0
        assert (set_ == "id") == (row.variance == compare.VARIANCE_SPLITS)
        assert (set_ != "id") == (row.variance == compare.VARIANCE_SHARED and v_img > 0)
        s2 = np.var(a - b, ddof=1)

        def df_ws(split_var):
            if not v_img:
                return 3
            return (split_var + v_img) ** 2 / (split_var**2 / 3 + v_img**2 / (row.n_images - 1))

        naive_se = math.sqrt(s2 / 4 + v_img)
        naive_p = 2 * ss.t.sf(abs(np.mean(a - b)) / naive_se, df_ws(s2 / 4))
        if set_ == "id":
            assert naive_p == pytest.approx(ss.ttest_rel(a, b).pvalue, rel=1e-10)
        assert (row.paired_diff, row.paired_p) == pytest.approx((np.mean(a - b), naive_p),
                                                                rel=1e-10)
        # The corrected test, with r = n_test / n_train from the records, marks the table.
        se = math.sqrt(s2 * (1 / 4 + R) + v_img)
        df = df_ws(s2 * (1 / 4 + R))
        assert row.test_train_ratio == pytest.approx(R)
        assert row.corrected_p == pytest.approx(2 * ss.t.sf(abs(np.mean(a - b)) / se, df))
        assert (row.test, row.p, row["diff"]) == ("corrected", row.corrected_p, row.paired_diff)
        post = ss.t(df, loc=np.mean(a - b), scale=se)
        assert row.p_better == pytest.approx(post.sf(1.0))
    pairs = result.pairs[(result.pairs.backbone == "resnet18") & (result.pairs.model == "ga")
                         & (result.pairs.set == "id")]
    assert list(pairs.split_seed) == [0, 1, 2, 3]
    assert (pairs["diff"] == pairs.bacc_pct - pairs.ref_bacc_pct).all()
    assert any("split seed(s) 4" in n and "+GA" in n for n in result.notes)


def test_vit_is_paired_with_every_base(result):
    for ref in ("resnet18", "efficientnet_b0"):
        row = _row(result.table, "vit", "21k", reference=ref)
        # efficientnet_b0's seed 4 failed: only 4 pairs there.
        assert row.n_pairs == (N_FINAL if ref == "resnet18" else N_FINAL - 1)


@pytest.mark.slow
@pytest.mark.parametrize("test", ["paired", "welch", "corrected"])
def test_the_chosen_test_marks_the_table_and_holm_follows_it(study, test):
    t = compare.compare_runs(study[0], settings=CompareSettings(test=test, bootstrap=0)).table
    has = t.reference.notna()
    src = {"paired": "paired_p", "welch": "welch_p", "corrected": "corrected_p"}[test]
    np.testing.assert_allclose(t.p[has], t[src][has].astype(float))
    assert (t.test[has] == test).all()
    for _, g in t[has].groupby(["dataset", "set", "reference"]):
        np.testing.assert_allclose(g.p_adjusted, multipletests(g.p, method="holm")[1])
        np.testing.assert_array_equal(g.significant.astype(bool), g.p < 0.05)
    ga = _row(t, "resnet18", "ga")
    lo, hi = {"paired": (ga.paired_ci_low, ga.paired_ci_high),
              "welch": (ga.welch_ci_low, ga.welch_ci_high),
              "corrected": (ga.corrected_ci_low, ga.corrected_ci_high)}[test]
    assert (ga.diff_ci_low, ga.diff_ci_high) == (lo, hi)
    # TOST uses the marking test's error: equivalent <=> its 90% CI inside +-margin.
    se, df = ga.se, ga.df
    assert ga.tost_p == pytest.approx(max(ss.t.sf((ga["diff"] + 1) / se, df),
                                          ss.t.cdf((ga["diff"] - 1) / se, df)))


def test_corrected_p_is_never_below_the_naive_paired_p(result):
    t = result.table[result.table.n_pairs > 1]
    assert (t.corrected_p >= t.paired_p - 1e-12).all()
    assert (t.corrected_ci_high - t.corrected_ci_low > t.paired_ci_high - t.paired_ci_low).all()


def _rewrite(root, edit):
    for path in (root / "runs").glob("final-*/record.json"):
        rec = json.loads(path.read_text())
        edit(rec)
        path.write_text(json.dumps(rec))


@pytest.mark.slow
def test_split_ratio_comes_from_the_recorded_split(tmp_path):
    write_fake_study(tmp_path)
    _rewrite(tmp_path, lambda rec: rec.update(split={"kind": "random", "n_train": 400,
                                                     "n_val": 60, "n_test": 100}))
    res = compare.compare_runs(tmp_path, settings=CompareSettings(bootstrap=0))
    assert _row(res.table, "resnet18", "ga").test_train_ratio == pytest.approx(0.25)
    assert any("from the runs' recorded split sizes" in n for n in res.notes)

    # split sizes are read from `split` only: records without it get the stated 70/10/20 guess
    _rewrite(tmp_path, lambda rec: (rec.pop("split"), rec.update(
        split_sizes={"train": 400, "val": 60, "test": 100})))
    rec_path = tmp_path / "runs" / "final-isic-resnet18+ela-s1" / "record.json"
    rec = json.loads(rec_path.read_text())
    rec_path.write_text(json.dumps({**rec, "split_seed": None}))
    res = compare.compare_runs(tmp_path, settings=CompareSettings(bootstrap=0))
    assert _row(res.table, "resnet18", "ga").test_train_ratio == pytest.approx(0.2 / 0.7)
    assert any("split sizes unknown" in n for n in res.notes)
    assert _row(res.table, "resnet18", "ela").n_pairs == N_FINAL - 1
    assert any("final-isic-resnet18+ela-s1 records no split seed" in n for n in res.notes)
    # An explicit ratio wins, and says so.
    res = compare.compare_runs(tmp_path, settings=CompareSettings(bootstrap=0, test_train_ratio=0.5))
    assert _row(res.table, "resnet18", "ga").test_train_ratio == 0.5
    assert any("--test-train-ratio" in n for n in res.notes)


def test_fixed_official_split_uses_no_correction(tmp_path):
    write_fake_study(tmp_path)
    _rewrite(tmp_path, lambda rec: rec.update(split={"kind": "official", "fractions": None,
                                                     "n_train": 700, "n_val": 100,
                                                     "n_test": 200}))
    res = compare.compare_runs(tmp_path, settings=CompareSettings(bootstrap=0))
    ga = _row(res.table, "resnet18", "ga")
    assert ga.test_train_ratio == 0 and ga.corrected_p == pytest.approx(ga.paired_p)
    assert any("fixed split: runs differ only by seed" in n for n in res.notes)
    assert "fixed split: runs differ only by seed" in table2.format_result(res, "md")


def test_divergence_rates_with_clopper_pearson(result):
    d = result.divergence.set_index(["backbone", "model"])
    ga = d.loc[("resnet18", "ga")]
    assert (ga.finished, ga.diverged, ga.rate) == (N_FINAL, 1, 1 / N_FINAL)
    assert (ga.ci_low, ga.ci_high) == pytest.approx(proportion_confint(1, N_FINAL, method="beta"))
    # The failed EfficientNet run is not a trial of the model.
    eff = d.loc[("efficientnet_b0", "base")]
    assert (eff.finished, eff.diverged, eff.ci_low) == (N_FINAL - 1, 0, 0.0)


def test_converged_and_all_runs_side_by_side(study, result):
    _, values = study
    s = result.sensitivity
    ga = s[(s.model == "ga") & (s.set == "id") & (s.reference == "resnet18")].iloc[0]
    seeds, a, b = _joined(values, ("resnet18", "ga"))
    assert (ga.converged_n_pairs, ga.converged_diff) == (4, pytest.approx(np.mean(a - b)))
    # All runs: the diverged +GA run enters at its recorded accuracy (chance, 1/3).
    all_a = np.append(a, 100 / 3)
    all_b = np.append(b, dict(zip(values[("resnet18", "base", "seeds")],
                                  values[("resnet18", "base")]))[4])
    assert ga.all_n_pairs == 5 and ga.all_diff == pytest.approx(np.mean(all_a - all_b))
    md = table2.format_result(result, "md")
    assert "### Converged runs and all runs" in md and "all runs: p" in md


@pytest.mark.slow
def test_diverged_run_without_accuracy_counts_at_chance_in_all_runs(tmp_path):
    values = write_fake_study(tmp_path)
    path = tmp_path / "runs" / DIVERGED_RUN / "record.json"
    rec = json.loads(path.read_text())
    rec.update(metrics={}, message="loss became non-finite at epoch 2")
    path.write_text(json.dumps(rec))
    shutil.rmtree(path.parent / "predictions")
    res = compare.compare_runs(tmp_path, settings=CompareSettings(include_diverged=True, bootstrap=500))
    ga = _row(res.table, "resnet18", "ga", "ood-pad-ufes-20")
    assert ga.n == N_FINAL and ga["mean"] == pytest.approx(np.mean(values[("resnet18", "ga",
                                                                           "ood")] + [100 / 3]))
    assert any("chance level" in n for n in res.notes)
    # The bootstrap has no predictions for it: 4 of the 5 pairs, and says so.
    assert ga.boot_n_pairs == N_FINAL - 1
    assert any("no stored predictions" in n for n in res.notes)
    imputed = res.runs[res.runs.imputed.astype(bool)]
    assert set(imputed.run_id) == {DIVERGED_RUN} and set(imputed.set) == {"id", "ood-pad-ufes-20"}


@pytest.mark.slow
def test_bootstrap_column_is_the_paired_bootstrap_of_the_stored_predictions(study, result):
    root, _ = study
    row = _row(result.table, "resnet18", "ela", "ood-pad-ufes-20")
    pairs = result.pairs[(result.pairs.model == "ela") & (result.pairs.set == "ood-pad-ufes-20")]
    splits, ids = [], {}
    for p in pairs.itertuples():
        a = pd.read_csv(root / "runs" / p.run_id / "predictions" / "ood-pad-ufes-20.csv")
        b = pd.read_csv(root / "runs" / p.ref_run_id / "predictions" / "ood-pad-ufes-20.csv")
        assert (a.image_id == b.image_id).all()
        img = np.array([ids.setdefault(i, len(ids)) for i in a.image_id])
        splits.append(SplitPredictions(img, a.label.to_numpy(), (a.pred == a.label).to_numpy(),
                                       (b.pred == b.label).to_numpy()))
    key = "isic/resnet18/ela/ood-pad-ufes-20/resnet18"
    ref = paired_bootstrap(splits, 3, n_resamples=2000, seed=paired._mix(0, key))
    assert (row.boot_ci_low, row.boot_ci_high) == pytest.approx((ref.ci_low, ref.ci_high))
    assert row.boot_n_pairs == N_FINAL
    # The point estimate from the predictions is the recorded paired difference.
    assert ref.diff == pytest.approx(row.paired_diff)
    # Seeded: the same call gives the same CI; the order of comparisons does not matter.
    again = compare.compare_runs(root, settings=CompareSettings(bootstrap=2000, seed=0)).table
    np.testing.assert_array_equal(again.boot_ci_low, result.table.boot_ci_low)


def test_markdown_shows_every_part(result):
    md = table2.format_result(result, "md")
    for part in ["### Statistics per comparison", "P(worse / equiv. / better)", "bootstrap 95% CI",
                 "p (corrected t-test)", "### Per-split differences (pp)", "| s0 | s1 |",
                 "### Divergence rate per model", "1 / 5", "### Notes",
                 "r = n_test / n_train = 0.2857 from the runs' recorded split sizes",
                 "Welch p (paper)", "corrected resampled t-test (Nadeau-Bengio)"]:
        assert part in md, part
    tex = table2.format_result(result, "latex")
    assert "corrected t-test" in tex and r"\begin{tabular}" in tex


def test_cli_test_options(study, capsys):
    root, _ = study
    assert cli.main(["compare", str(root), "--test", "paired", "--bootstrap", "0", "--format",
                     "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    ga = next(r for r in rows if r["model"] == "ga" and r["set"] == "id")
    assert ga["test"] == "paired" and ga["p"] == pytest.approx(ga["paired_p"])
    assert ga["boot_ci_low"] is None
    assert cli.main(["compare", "--summary", "paper", "--test", "paired"]) == 2
    assert "--test paired needs" in capsys.readouterr().err
    assert cli.main(["compare", "--summary", "paper", "--test", "corrected"]) == 2
    assert "--test-train-ratio" in capsys.readouterr().err
    assert cli.main(["compare", str(root), "--bootstrap", "-1"]) == 2
    assert "--bootstrap" in capsys.readouterr().err
    # the library names its own argument (a notebook user never typed --test)
    with pytest.raises(ConfigError, match="^test 'ttest' is unknown") as err:
        compare.compare_runs(root, settings=CompareSettings(test="ttest"))
    assert "--" not in str(err.value)


def test_paper_rechecked_with_the_corrected_test(capsys):
    assert cli.main(["compare", "--summary", "paper", "--test", "corrected",
                     "--test-train-ratio", "0.2857", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    isic = {r["model"]: r for r in rows if r["dataset"] == "isic" and r["set"] == "id"
            and r["backbone"] == "resnet18" and r["model"] != "base"}
    # The figures: 0.018/0.012/0.0014/0.039 -> about 0.20/0.17/0.07/0.27.
    for m, p in {"ga": 0.20, "la": 0.17, "ga+la": 0.07, "ela": 0.27}.items():
        assert isic[m]["welch_significant"] is True
        assert isic[m]["p"] == pytest.approx(p, abs=0.006)
        assert isic[m]["significant"] is False and isic[m]["decision"] == "undecided"
    # No mark of Welch's test survives; on Camelyon17 they become "equivalent" (1 pp ROPE).
    marked = [r for r in rows if r["welch_significant"]]
    assert marked and not any(r["significant"] for r in marked)
    cam = {r["decision"] for r in marked if r["dataset"] == "camelyon17"}
    assert cam == {"equivalent"}
    assert cli.main(["compare", "--summary", "paper", "--test", "corrected",
                     "--test-train-ratio", "0.2857"]) == 0
    md = capsys.readouterr().out
    # the re-check comes first for a summary (issue 26), a section of its own
    assert "## Marks of Welch's test re-checked" in md and "| no | undecided |" in md


def test_tables_without_any_comparison_do_not_break(tmp_path):
    s = read_summary(compare.PAPER_TABLE2)
    t = compare.compare_summary(s[s.model == "base"], settings=CompareSettings(test="corrected", test_train_ratio=0.3))
    assert len(t) == 8 and t.p.isna().all() and t.reference.isna().all()
    write_fake_study(tmp_path)
    for d in (tmp_path / "runs").iterdir():
        if "+" in d.name or "vit" in d.name:  # keep only the two bases
            shutil.rmtree(d)
    res = compare.compare_runs(tmp_path)
    assert res.table.reference.isna().all() and res.pairs.empty
    assert "## Table 2" in table2.format_result(res, "md")


def test_bootstrap_leaves_out_pairs_whose_predictions_differ_in_images(tmp_path):
    write_fake_study(tmp_path)
    pred = tmp_path / "runs" / "final-isic-resnet18+ela-s2" / "predictions" / "test.csv"
    p = pd.read_csv(pred)
    p.loc[0, "image_id"] = "IMG_OTHER"  # one image its base was not tested on
    p.to_csv(pred, index=False)
    res = compare.compare_runs(tmp_path, settings=CompareSettings(bootstrap=300))
    ela = _row(res.table, "resnet18", "ela")
    assert ela.n_pairs == N_FINAL and ela.boot_n_pairs == N_FINAL - 1
    assert any("split seed(s) 2 are not on the same images" in n for n in res.notes)


def test_side_by_side_when_every_run_of_a_variant_diverged(tmp_path):
    """Included, the diverged variant is compared; on converged runs alone nothing is, and the
    side-by-side table says so instead of failing to join the two."""
    from medattn.runs import store

    for i, (variant, status) in enumerate([("base", "done"), ("base", "done"),
                                           ("ga", "diverged"), ("ga", "diverged")]):
        store.write_record(tmp_path, {
            "run_id": f"r{i}", "status": status, "phase": "final",
            "model": "resnet18" if variant == "base" else "resnet18+ga", "backbone": "resnet18",
            "variant": variant, "dataset": "isic", "split_seed": i % 2, "lr": 0.01,
            "weight_decay": 0.0, "message": "chance level" if status == "diverged" else "",
            "metrics": {"test": {"balanced_accuracy": 0.6 + 0.01 * i}}})
    result = compare.compare_runs(tmp_path, settings=CompareSettings(include_diverged=True, bootstrap=0))
    row = result.sensitivity.set_index("model").loc["ga"]
    assert row["all_n_pairs"] == 2 and pd.isna(row["converged_n_pairs"])


# ---------------------------------------------------------------------------------------------
# Shared test sets (issue 24): OOD sets and fixed splits add test-image sampling to the mark
# ---------------------------------------------------------------------------------------------


def _splits_from_files(root, pairs, set_name):
    from medattn.analysis.bootstrap import SplitPredictions

    splits, ids = [], {}
    for p in pairs.itertuples():
        a = pd.read_csv(root / "runs" / p.run_id / "predictions" / f"{set_name}.csv")
        b = pd.read_csv(root / "runs" / p.ref_run_id / "predictions" / f"{set_name}.csv")
        img = np.array([ids.setdefault(i, len(ids)) for i in a.image_id])
        splits.append(SplitPredictions(img, a.label.to_numpy(), (a.pred == a.label).to_numpy(),
                                       (b.pred == b.label).to_numpy()))
    return splits


def test_ood_marks_count_the_sampling_of_the_shared_test_images(study, result):
    from medattn.analysis.bootstrap import image_sampling_variance

    root, _ = study
    row = _row(result.table, "resnet18", "ela", "ood-pad-ufes-20")
    pairs = result.pairs[(result.pairs.model == "ela") & (result.pairs.set == "ood-pad-ufes-20")
                         & (result.pairs.backbone == "resnet18")]
    v, n = image_sampling_variance(_splits_from_files(root, pairs, "ood-pad-ufes-20"), 3)
    assert (row.image_var, row.n_images) == pytest.approx((v, n)) and v > 0
    assert row.variance == "splits + test images"
    # The mark, its CI and the Bayes decision all use the total variance.
    d = pairs["diff"].to_numpy()
    assert row.se == pytest.approx(math.sqrt(np.var(d, ddof=1) * (1 / len(d) + R) + v))
    assert row.diff_ci_high - row.diff_ci_low > (row.paired_ci_high - row.paired_ci_low) / 2
    # In-distribution random splits test different images: the corrected variance alone.
    assert _row(result.table, "resnet18", "ela").variance == "splits"
    assert math.isnan(_row(result.table, "resnet18", "ela").image_var)
    md = table2.format_result(result, "md")
    assert "splits + test images" in md and "also count the sampling of those images" in md


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["official", "random"])
def test_a_fixed_split_with_the_same_test_images_is_a_shared_test_set(tmp_path, kind):
    write_fake_study(tmp_path)
    first = {}
    for rec_path in sorted((tmp_path / "runs").glob("final-*/record.json")):
        pred = rec_path.parent / "predictions" / "test.csv"
        if not pred.exists():
            continue
        p = pd.read_csv(pred)
        ids = first.setdefault("ids", p[["image_id", "label"]])  # every run: the same images
        p["pred"] = np.where(p["pred"] == p["label"], ids["label"], (ids["label"] + 1) % 3)
        p["image_id"], p["label"] = ids["image_id"], ids["label"]
        p.to_csv(pred, index=False)
    if kind == "official":
        _rewrite(tmp_path, lambda rec: rec.update(split={"kind": "official", "n_train": 700,
                                                         "n_val": 100, "n_test": 200}))
    res = compare.compare_runs(tmp_path, settings=CompareSettings(bootstrap=0))
    ga = _row(res.table, "resnet18", "ga")
    assert ga.variance == "splits + test images" and ga.image_var > 0
    assert ga.n_images == 120


def test_no_bayes_decision_from_two_pairs_or_equal_differences(tmp_path):
    from medattn.runs import store

    def study(accs):
        for i, (variant, seed, acc) in enumerate(accs):
            store.write_record(tmp_path, {
                "run_id": f"r{i}", "status": "done", "phase": "final",
                "model": "resnet18" if variant == "base" else "resnet18+ga",
                "backbone": "resnet18", "variant": variant, "dataset": "isic",
                "split_seed": seed, "lr": 0.01, "weight_decay": 0.0, "message": "",
                "metrics": {"test": {"balanced_accuracy": acc}}})
        return _row(compare.compare_runs(tmp_path, settings=CompareSettings(bootstrap=0)).table, "resnet18", "ga")

    # Two pairs, clearly better: the posterior rests on one df; no decision.
    ga = study([("base", 0, 0.60), ("base", 1, 0.62), ("ga", 0, 0.70), ("ga", 1, 0.71)])
    assert ga.n_pairs == 2 and np.isfinite(ga.p_better) and ga.decision == "undecided (n<3)"
    # Both at chance on three splits: every difference is 0; a point mass, but no decision.
    for p in (tmp_path / "runs").glob("r*"):
        shutil.rmtree(p)
    ga = study([(v, s, 1 / 3) for v in ("base", "ga") for s in range(3)])
    assert (ga.p_worse, ga.p_equivalent, ga.p_better) == (0.0, 1.0, 0.0)
    assert ga.decision == "no variance"


def test_hedges_g_ci_agrees_with_the_marking_test(result):
    rows = result.table[result.table.reference.notna() & result.table.p.notna()]
    assert len(rows) > 5
    for r in rows.itertuples():
        excludes_zero = r.hedges_g_ci_low > 0 or r.hedges_g_ci_high < 0
        assert excludes_zero == (r.p < 0.05), r
        # On g's scale: the CI's centre is the marking test's difference times J / s_p.
        mid = (r.hedges_g_ci_low + r.hedges_g_ci_high) / 2
        if r.n == r.ref_n == r.n_pairs:  # then the unpaired and the paired means agree
            assert mid == pytest.approx(r.hedges_g)


@pytest.mark.slow
def test_a_truncated_prediction_file_is_named_not_blamed_on_different_data(tmp_path):
    write_fake_study(tmp_path)
    pred = tmp_path / "runs" / "final-isic-resnet18+ela-s2" / "predictions" / "ood-pad-ufes-20.csv"
    data = pred.read_bytes()
    pred.write_bytes(data[: len(data) // 2])  # a write cut off half-way
    res = compare.compare_runs(tmp_path, settings=CompareSettings(bootstrap=200))
    ela = _row(res.table, "resnet18", "ela", "ood-pad-ufes-20")
    assert ela.boot_n_pairs == N_FINAL - 1
    mine = [n for n in res.notes if "ResNet18 +ELA" in n and "ood-pad-ufes-20" in n]
    assert any(str(pred) in n and "truncated" in n for n in mine), mine
    assert not any("different data" in n for n in mine)
    # Cut at a row boundary: the file parses, but has fewer rows than its record counts.
    lines = data.decode().splitlines(keepends=True)
    pred.write_text("".join(lines[:50]))
    res = compare.compare_runs(tmp_path, settings=CompareSettings(bootstrap=200))
    mine = [n for n in res.notes if "ResNet18 +ELA" in n and "ood-pad-ufes-20" in n]
    assert any(str(pred) in n and "49 rows; its run record counts 120" in n for n in mine), mine
    assert not any("different data" in n for n in mine)


@pytest.mark.parametrize("value", ["inf", "nan", "0", "-0.5"])
def test_test_train_ratio_out_of_range_is_refused(study, capsys, value):
    assert cli.main(["compare", str(study[0]), "--bootstrap", "0", "--test-train-ratio",
                     value]) == 2
    err = capsys.readouterr().err
    assert "--test-train-ratio must be a finite number > 0" in err
    assert cli.main(["compare", "--summary", "paper", "--test", "corrected",
                     "--test-train-ratio", value]) == 2
    assert "--test-train-ratio must be a finite number > 0" in capsys.readouterr().err


def test_a_shared_set_without_predictions_says_its_mark_ignores_the_images(tmp_path):
    write_fake_study(tmp_path)
    for pred in (tmp_path / "runs").glob("final-*/predictions/ood-pad-ufes-20.csv"):
        pred.unlink()
    res = compare.compare_runs(tmp_path, settings=CompareSettings(bootstrap=0))
    ela = _row(res.table, "resnet18", "ela", "ood-pad-ufes-20")
    assert ela.variance == "splits only (shared test set, no predictions)"
    assert math.isnan(ela.image_var)
    assert any("ignores test-image sampling" in n for n in res.notes)
