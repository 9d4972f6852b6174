"""The answer first (issue 26, item 1): one plain-words line per comparison, from the result's
columns, at the top of `medattn compare`'s output, of the demo's hand-over and of the report."""

import io

import pandas as pd
import pytest

from medattn.analysis.compare import CompareResult, compare_runs, compare_summary
from medattn.analysis.settings import CompareSettings
from medattn.demo import DemoContext, handover
from medattn.report.table2 import run_compare
from medattn.report.verdict import deciding_table, verdict_lines, verdict_text, verdicts

from tests.fake_study import write_fake_study

SETTINGS = CompareSettings(test="welch")


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    write_fake_study(root)
    return root, compare_runs(root)


def _summary(rows) -> pd.DataFrame:
    return pd.read_csv(io.StringIO("dataset,backbone,model,set,mean,sd,n\n" + rows))


def test_lines_read_the_result_columns(fake):
    _, result = fake
    t = result.table[result.table.reference.notna()]
    vs = verdicts(result)
    assert len(vs) == len(t)
    first, row = vs[0], t.iloc[0]
    assert first.decision == row.decision == "undecided"
    assert first.line.startswith("+GA vs ResNet18 base on isic, in-distribution test: undecided: "
                                 "the data allow anything from ")
    assert (f"{abs(row.diff_ci_low):.1f} pp worse to {row.diff_ci_high:.1f} pp better"
            in first.line)
    assert f"{row.n} vs {row.ref_n} runs" in first.line
    assert f"{row.detectable_diff:.1f} pp or more would be found (80% power)" in first.line
    # The marking test marks +GA vs EfficientNet-B0 while Bayes is undecided: the line says so.
    eff = next(v for v in vs if v.who == "+GA vs EfficientNet-B0 base on isic, in-distribution "
                                         "test")
    assert "marks it (p 0.042)" in eff.line
    assert "a design that could decide: see Design" in verdict_lines(result, "see Design")[0]


def test_clear_differences_read_better_worse_and_unmarked():
    s = _summary("d,resnet18,base,id,70,1,10\nd,resnet18,ga,id,75,1,10\n"
                 "d,resnet18,la,id,65,1,10\nd,resnet18,ela,id,70.2,3,10\n")
    result = CompareResult(compare_summary(s, settings=SETTINGS), settings=SETTINGS.as_dict())
    lines = verdict_lines(result)
    assert lines[0].startswith("+GA vs ResNet18 base on d, in-distribution test: better: 5.0 pp "
                               "better on average; the data allow ")
    assert lines[1].startswith("+LA vs ResNet18 base on d, in-distribution test: worse: 5.0 pp "
                               "worse")
    assert "+ELA vs ResNet18 base on d, in-distribution test: no difference shown: " in lines[2]
    assert verdict_text(result).startswith("What the study found (each variant minus its base; "
                                           "decision by Welch's t-test at alpha 0.05")
    table = deciding_table(result)
    assert list(table.columns) == ["data set", "test set", "model", "vs", "difference (pp)",
                                   "95% CI (pp)", "decision", "n (runs)"]
    assert table["decision"].tolist() == ["better", "worse", "no difference shown"]
    assert table["n (runs)"].iloc[0] == "10 vs 10"


@pytest.mark.slow
def test_compare_prints_the_verdict_first(fake):
    root, _ = fake
    text = run_compare(str(root)).text
    assert text.startswith("## What the study found\n\nWhat the study found (each variant minus "
                           "its base; decision by the Bayesian correlated t-test")
    assert text.index("- +GA vs ResNet18 base on isic") < text.index("## Table 2")


def test_demo_handover_starts_with_the_verdict(fake, tmp_path):
    root, result = fake
    ctx = DemoContext(out=tmp_path)
    ctx.table2 = result
    text = handover(ctx, 12.0)
    assert text.startswith("What the study found")
    assert text.splitlines()[1].startswith("- +GA vs ResNet18 base on isic, in-distribution "
                                           "test: undecided")
    assert text.index("What the study found") < text.index("medattn demo finished in 12 s")


def test_intervals_wider_than_the_scale_are_said_so():
    # two runs each, as `medattn demo --quick`: the CI spans more than ±100 pp
    s = _summary("d,resnet18,base,id,42,30,2\nd,resnet18,ga,id,38,30,2\n")
    result = CompareResult(compare_summary(s, settings=SETTINGS), settings=SETTINGS.as_dict())
    line = verdict_lines(result)[0]
    assert "the data allow anything: the CI [" in line and "wider than the whole scale" in line
    assert "no possible difference (at most 100 pp) would be found with 80% power" in line
