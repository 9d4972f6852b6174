"""Table 2 from summary CSVs (the paper's own included) and from run records."""

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as ss
from statsmodels.stats.multitest import multipletests

from medattn import cli
from medattn.analysis import compare
from medattn.analysis.summary import read_summary
from medattn.errors import ConfigError, DataError
from medattn.report import table2

from tests.fake_study import DIVERGED_RUN, FAILED_RUN, N_FINAL, write_fake_study
from medattn.analysis.settings import CompareSettings


@pytest.fixture(scope="module")
def paper():
    return compare.compare_summary(read_summary(compare.PAPER_TABLE2))


def _row(table, dataset, backbone, model, set_, reference=None):
    sel = table[(table.dataset == dataset) & (table.backbone == backbone) & (table.model == model)
                & (table.set == set_)]
    if reference is not None:
        sel = sel[sel.reference == reference]
    assert len(sel) == 1, sel
    return sel.iloc[0]


def test_paper_isic_resnet_id_marks_as_printed(paper):
    marks = {m: bool(_row(paper, "isic", "resnet18", m, "id").significant)
             for m in ["ga", "la", "ga+la", "ela", "ga+ela"]}
    assert marks == {"ga": True, "la": True, "ga+la": True, "ela": True, "ga+ela": False}


def test_paper_efficientnet_isic_has_no_significant_difference(paper):
    # The paper: "these improvements are not statistically significant"; only ELA on Camelyon17.
    eff = paper[(paper.backbone == "efficientnet_b0") & paper.reference.notna()]
    sig = eff[eff.significant.astype(bool)]
    assert set(zip(sig.dataset, sig.model, sig.set)) == {("camelyon17", "ela", "id")}


def test_paper_camelyon_ood_marks_do_not_follow_from_the_printed_numbers(paper):
    # The paper bolds ResNet +LA, +GA+LA, +ELA on Camelyon17 OOD; Welch on its own means/sds
    # (n = 10) gives p > 0.2 for all three (documented in docs/statistics.md).
    for m in ["la", "ga+la", "ela"]:
        assert _row(paper, "camelyon17", "resnet18", m, "ood").p > 0.2


def test_paper_table_has_one_row_per_key_and_vit_against_each_base(paper):
    cnn = paper[paper.backbone != "vit"]
    assert not cnn.duplicated(["dataset", "backbone", "model", "set"]).any()
    vit = paper[paper.backbone == "vit"]
    assert len(vit) == 2 * 2 * 2 * 2  # datasets x sets x {1k, 21k} x references
    assert set(vit.reference) == {"resnet18", "efficientnet_b0"}
    assert paper[paper.model == "base"].reference.isna().all()


def test_paper_p_values_equal_scipy_from_stats(paper):
    for _, r in paper[paper.reference.notna()].iterrows():
        ref = ss.ttest_ind_from_stats(r["mean"], r.sd, r.n, r.ref_mean, r.ref_sd, r.ref_n,
                                      equal_var=False)
        assert r.p == pytest.approx(ref.pvalue, rel=1e-10)


@pytest.mark.slow
def test_holm_within_each_column_equals_statsmodels(paper):
    groups = paper[paper.reference.notna()].groupby(["dataset", "set", "reference"])
    assert len(groups) == 2 * 2 * 2
    for _, g in groups:
        assert len(g) == 7  # five variants and the two ViTs
        np.testing.assert_allclose(g.p_adjusted, multipletests(g.p, method="holm")[1])
        np.testing.assert_array_equal(g.significant_adjusted.astype(bool), g.p_adjusted < 0.05)
    # Holm removes most of the paper's marks in the ISIC ResNet column; +GA+LA survives.
    col = paper[(paper.dataset == "isic") & (paper.set == "id") & (paper.reference == "resnet18")]
    assert set(col[col.significant_adjusted.astype(bool)].model) == {"ga+la"}


def test_variant_without_its_base_is_not_compared_with_another_backbone():
    s = read_summary(compare.PAPER_TABLE2)
    s = s[~((s.backbone == "efficientnet_b0") & (s.model == "base"))]
    t = compare.compare_summary(s, settings=CompareSettings(correction="none"))
    eff = t[t.backbone == "efficientnet_b0"]
    assert len(eff) == 20 and eff.reference.isna().all() and eff.p.isna().all()
    assert set(t[t.backbone == "vit"].reference) == {"resnet18"}
    wide = table2.wide_table(t)  # still shown, unmarked, in its own column
    col = wide["isic · EfficientNet-B0"]
    assert col["+GA"].startswith("76.6 ± 1.83") and "**" not in "".join(col)
    assert list(wide.columns).count("isic · ResNet18") == 1 and "isic · ViT-tiny" not in wide


def test_correction_none_and_margin_option(paper):
    s = read_summary(compare.PAPER_TABLE2)
    raw = compare.compare_summary(s, settings=CompareSettings(correction="none"))
    has = raw.reference.notna()
    np.testing.assert_allclose(raw.p_adjusted[has], raw.p[has])
    wide = compare.compare_summary(s, settings=CompareSettings(margin=5.0))
    # A wider margin can only make more comparisons equivalent.
    assert wide.equivalent[has].astype(bool).sum() > paper.equivalent[has].astype(bool).sum()
    with pytest.raises(ConfigError, match="correction"):
        compare.compare_summary(s, settings=CompareSettings(correction="tukey"))
    with pytest.raises(ConfigError, match="margin"):
        compare.compare_summary(s, settings=CompareSettings(margin=0))


@pytest.mark.slow
def test_from_runs_matches_scipy_and_excludes_diverged(tmp_path):
    values = write_fake_study(tmp_path)
    res = compare.compare_runs(tmp_path, settings=CompareSettings(bootstrap=0))
    t = res.table
    assert set(t.set) == {"id", "ood-pad-ufes-20"}
    ga = _row(t, "isic", "resnet18", "ga", "id")
    a, b = values[("resnet18", "ga")], values[("resnet18", "base")]
    assert ga.n == N_FINAL - 1 and ga.ref_n == N_FINAL  # the diverged run is left out
    assert ga["mean"] == pytest.approx(np.mean(a))
    ref = ss.ttest_ind(a, b, equal_var=False)  # the paper's test stays available
    assert (ga.welch_p, ga.welch_ci_low) == pytest.approx(
        (ref.pvalue, ref.confidence_interval().low), rel=1e-10)
    assert set(res.excluded.run_id) == {DIVERGED_RUN, FAILED_RUN}
    assert "diverged" in res.excluded.set_index("run_id").reason[DIVERGED_RUN]
    assert "CUDA out of memory" in res.excluded.set_index("run_id").reason[FAILED_RUN]
    # Search-phase runs never enter: every n is the count of final runs.
    assert t.n.max() == N_FINAL
    # The ViT has no base of its own and is compared with both CNN bases.
    assert set(t[t.backbone == "vit"].reference) == {"resnet18", "efficientnet_b0"}

    inc = compare.compare_runs(tmp_path, settings=CompareSettings(include_diverged=True, bootstrap=0)).table
    ga_inc = _row(inc, "isic", "resnet18", "ga", "id")
    assert ga_inc.n == N_FINAL
    assert ga_inc["mean"] == pytest.approx(np.mean(a + [100 / 3]))


def test_formats(tmp_path, paper):
    out = table2.run_compare(summary=str(compare.PAPER_TABLE2), fmt="json")
    assert out.settings["test"] == "welch" and out.paths == {}  # a summary: Welch by default
    rows = json.loads(out.text)
    assert len(rows) == len(paper)
    need = {"dataset", "backbone", "model", "set", "mean", "sd", "n", "diff", "diff_ci_low",
            "diff_ci_high", "p", "p_adjusted", "significant", "significant_adjusted", "hedges_g",
            "hedges_g_ci_low", "hedges_g_ci_high", "tost_p", "equivalent", "detectable_diff",
            "test", "welch_p", "corrected_p", "paired_p", "p_worse", "p_equivalent", "p_better",
            "decision", "n_pairs", "boot_ci_low", "boot_ci_high"}
    assert need <= set(rows[0]) and list(rows[0]) == compare.TABLE_COLUMNS
    ga = next(r for r in rows if r["dataset"] == "isic" and r["model"] == "ga"
              and r["backbone"] == "resnet18" and r["set"] == "id")
    assert ga["significant"] is True and ga["diff"] == pytest.approx(-1.8)
    assert next(r for r in rows if r["model"] == "base")["p"] is None

    path = tmp_path / "t2.csv"
    written = table2.run_compare(summary="paper", fmt="csv", out=str(path))
    assert written.paths == {"out": path}
    back = pd.read_csv(path)
    assert len(back) == len(paper)
    np.testing.assert_allclose(back.p.dropna(), paper.p.dropna(), rtol=1e-5)

    result = compare.CompareResult(paper, settings={"alpha": 0.05, "margin": 1.0, "test": "welch"})
    md = table2.format_result(result, "md")
    assert "| +GA | **72.1** ± 1.31 (56.3 ± 12.92)" in md
    assert "| +GA+ELA | 73.5 ± 1.35 (58.8 ± 10.41)" in md
    tex = table2.format_result(result, "latex")
    assert r"\begin{tabular}" in tex and r"\textbf{72.1} $\pm$ 1.31" in tex
    assert "efficientnet\\_b0" not in tex.split("Statistics")[0]  # labels, not raw names
    with pytest.raises(ConfigError, match="fmt 'xlsx' is unknown"):
        table2.format_result(result, "xlsx")


@pytest.mark.slow
def test_wide_table_flags_unequal_n(tmp_path):
    write_fake_study(tmp_path)
    md = table2.format_result(compare.compare_runs(tmp_path, settings=CompareSettings(bootstrap=0)), "md")
    assert f"[n={N_FINAL - 1}]" in md  # the +GA cell lost its diverged run
    assert DIVERGED_RUN in md and "Final runs not included" in md


@pytest.mark.parametrize("text, match", [
    ("dataset,backbone,model,mean,sd,n\nisic,resnet18,base,70,1,10\n", "missing column.*set"),
    ("dataset,backbone,model,set,mean,sd,n\nisic,resnet18,base,test,70,1,10\n", "line 2.*set"),
    ("dataset,backbone,model,set,mean,sd,n\nisic,resnet18,base,id,70,x,10\n", "line 2.*sd"),
    ("dataset,backbone,model,set,mean,sd,n\nisic,resnet18,base,id,70,1,10\n"
     "isic,resnet18,ga,id,70,-1,10\n", "line 3.*negative"),
    ("dataset,backbone,model,set,mean,sd,n\nisic,resnet18,base,id,70,1,2.5\n", "line 2.*whole"),
    ("dataset,backbone,model,set,mean,sd,n\nisic,resnet18,base,id,70,1,10\n"
     "isic,resnet18,base,id,71,1,10\n", "line 3.*more than once"),
    ("dataset,backbone,model,set,mean,sd,n\nisic,resnet18,base,id,0.7,0.01,10\n", "percent"),
    ("# a comment\n\ndataset,backbone,model,set,mean,sd,n\nisic,resnet18,base,ID,70,1,10\n"
     "isic,resnet18,ga,idd,70,1,10\n", "line 5.*set='idd'"),
])
def test_summary_errors_name_the_line(tmp_path, text, match):
    path = tmp_path / "s.csv"
    path.write_text(text)
    with pytest.raises(DataError, match=match):
        read_summary(path)


@pytest.mark.slow
def test_cli(tmp_path, capsys):
    assert cli.main(["compare", "--summary", "paper", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert any(r["model"] == "ga+ela" for r in rows)
    assert cli.main(["compare", str(tmp_path)]) == 2
    assert "runs/" in capsys.readouterr().err
    assert cli.main(["compare"]) == 2
    assert "exactly one" in capsys.readouterr().err
    write_fake_study(tmp_path)
    assert cli.main(["compare", str(tmp_path), "--include-diverged", "--format", "csv",
                     "--bootstrap", "0"]) == 0
    t = pd.read_csv(__import__("io").StringIO(capsys.readouterr().out))
    assert t[(t.model == "ga") & (t.set == "id")].n.iloc[0] == N_FINAL
    assert not math.isnan(t.p.dropna().iloc[0])


def test_a_cells_marks_follow_its_sd_so_they_do_not_read_as_part_of_the_mean():
    from medattn.report.table2 import _cell

    row = {"mean": 98.4, "sd": 0.07, "n": 10, "significant": True, "significant_adjusted": True,
           "equivalent": False}
    assert _cell(row, 10, "md") == "**98.4** ± 0.07 †"
    assert _cell({**row, "significant": False, "significant_adjusted": False,
                  "equivalent": True}, 10, "md") == "98.4 ± 0.07 ≈"
    assert _cell({**row, "significant_adjusted": False}, 10, "md") == "**98.4** ± 0.07"
