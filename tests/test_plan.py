"""``medattn plan``: the pilot's statistics, the design table, the saved plan, compare's note on
another margin and the report's Design section."""

from __future__ import annotations

import json
import math
import stat

import numpy as np
import pytest

from medattn.analysis import design as D
from medattn.analysis import plan as P
from medattn.cli import main
from medattn.errors import ConfigError
from tests.fake_study import write_fake_study
from medattn.analysis.settings import CompareSettings
from medattn.analysis.settings import PlanSettings

SETTINGS = dict(delta=2.0, margin=1.0, power=0.8, threshold=0.95, alpha=0.05, budget=None,
                seconds_per_run=60.0, models=2, hours_unit="hours")


@pytest.fixture(scope="module")
def planned(tmp_path_factory):
    root = tmp_path_factory.mktemp("pilot")
    write_fake_study(root)
    return root, P.plan_runs(root)


@pytest.mark.slow
def test_plan_reads_the_pilot_as_compare_pairs_it_and_saves_it(planned):
    from medattn.analysis import compare

    root, plan = planned
    table = compare.compare_runs(root, settings=CompareSettings(bootstrap=0)).table
    row = table[(table["model"] == "ela") & (table["set"] == "id")].iloc[0]
    pilot = next(p for p in plan.pilots if p.label.startswith("isic id: ResNet18 +ELA"))
    assert pilot.n_pairs == row["n_pairs"] and pilot.sd_diff == pytest.approx(row["paired_sd"])
    assert pilot.pool == 600 and pilot.n_test == 120 and pilot.a_source == "per-image predictions"
    assert plan.settings["seconds_per_run"] == 6.0  # the records' timings
    saved = root / P.PLAN_FILE
    assert stat.S_IMODE(saved.stat().st_mode) == 0o644
    again = P.load_plan(root)
    assert [p.label for p in again.pilots] == [p.label for p in plan.pilots]
    assert json.loads(saved.read_text())["settings"]["margin"] == 1.0
    for t, rec in zip(plan.tables, plan.recommendations):
        assert list(t["design"]) == [d.name for d in D.DESIGNS]
        calibrated = {d.name for d in D.DESIGNS if d.calibrated}
        for r in rec.values():  # only a calibrated design is ever recommended
            assert r["design"] is None or r["design"] in calibrated


def test_the_table_matches_the_design_functions(planned):
    _, plan = planned
    p, t = plan.pilots[1], plan.tables[1]
    a, b = p.ab(p.sd_diff)
    r = 0.2 / 0.7
    sd = math.sqrt(b + a / p.n_test)
    assert t.loc[0, "power"] == pytest.approx(float(D.power(sd, 2.0, 10, r)), abs=1e-3)
    assert t.loc[0, "p_right"] == pytest.approx(
        float(D.decision_probability(sd, 2.0, 10, r, 1.0)[2]), abs=1e-3)
    assert (t["p_right_upper"] <= t["p_right"] + 1e-12).all()  # the bound plans for more noise


def test_test_sampling_a_predicts_the_variance_over_test_sets():
    rng = np.random.default_rng(0)
    shares, rate_a, rate_b = np.array([0.6, 0.3, 0.1]), [0.9, 0.7, 0.5], [0.85, 0.75, 0.4]

    def draw(shape):
        label = rng.choice(3, size=shape, p=shares)
        ok_a = rng.random(shape) < np.take(rate_a, label)
        ok_b = np.where(rng.random(shape) < 0.7, ok_a, rng.random(shape) < np.take(rate_b, label))
        return label, ok_a, ok_b

    label, ok_a, ok_b = draw(20000)
    a = P.test_sampling_a(label, ok_a, ok_b)
    label, ok_a, ok_b = draw((2000, 400))  # 2000 test sets of 400 images
    per_class = [((ok_a.astype(float) - ok_b) * (label == k)).sum(1) / (label == k).sum(1)
                 for k in range(3)]
    observed = np.var(100 * np.mean(per_class, axis=0), ddof=1)
    assert a / 400 == pytest.approx(observed, rel=0.12)


def test_sd_upper_bound_covers_the_true_sd_in_80_percent_of_pilots():
    rng = np.random.default_rng(3)
    sds = rng.standard_normal((4000, 3)).std(axis=1, ddof=1)  # true sd 1, 3-pair pilots
    covered = np.mean([P.sd_upper(s, 3) >= 1.0 for s in sds])
    assert abs(covered - 0.8) < 0.02


def _pilot(sd, a, ood=False):
    return P.Pilot("x", "ood-x" if ood else "id", 3, sd, 200.0, 1000.0, 0.2, 0.1, a,
                   "per-image predictions")


def test_more_images_reach_the_target_when_splits_cannot():
    p = _pilot(2.0, 800.0)  # all of s_d^2 = 4 is test sampling: b = 0
    t = P.design_table(p, SETTINGS)
    assert (t["p_right"] < 0.8).all()
    n = t.loc[0, "images"]
    assert np.isfinite(n) and n > 1000
    at = math.sqrt(800.0 / (0.2 * n))  # the design at n images
    assert D.decided_right(at, 2.0, 10, 0.2 / 0.7, 1.0) >= 0.8
    assert D.decided_right(math.sqrt(800.0 / (0.2 * n * 0.9)), 2.0, 10, 0.2 / 0.7, 1.0) < 0.8
    rec = P.recommend(t, SETTINGS, "")
    cal = t[t["calibrated"]]
    cost = cal["runs_per_model"] * cal["images"]  # no timings: runs x images
    assert rec["more_data"] and rec["design"] == cal.loc[cost.idxmin(), "design"]
    assert rec["images"] == cal.loc[cost.idxmin(), "images"]


def test_a_training_noise_floor_says_no_data_size_helps():
    p = _pilot(4.0, 200.0)  # b = 16 - 1 = 15 pp^2 that more test images cannot remove
    t = P.design_table(p, SETTINGS)
    assert not np.isfinite(t["images"]).any()
    assert set(t["images_why"]) == {"training-noise floor"}
    assert P.recommend(t, SETTINGS, "")["design"] is None


def test_ood_images_leave_the_training_cost_alone():
    t = P.design_table(_pilot(2.0, 800.0, ood=True), SETTINGS)
    fin = np.isfinite(t["images"])
    assert fin.any() and (t["hours_at_images"][fin] == t["hours"][fin]).all()


def test_delta_must_exceed_the_margin(tmp_path):
    with pytest.raises(ConfigError, match="delta 1.0 pp does not exceed margin 1.0"):
        P.plan_runs(tmp_path, settings=PlanSettings(delta=1.0, margin=1.0))


@pytest.mark.slow
def test_compare_with_another_margin_says_the_plan_had_another(planned):
    from medattn.analysis import compare

    root, _ = planned
    other = compare.compare_runs(root, settings=CompareSettings(bootstrap=0, margin=0.5)).notes
    assert any("planned" in n and "margin of 1 pp" in n for n in other)
    assert not any("planned" in n for n in compare.compare_runs(root, settings=CompareSettings(bootstrap=0)).notes)


@pytest.mark.slow
def test_report_design_section_shows_the_table_and_a_plot(planned, tmp_path):
    from medattn.report.design import design_section
    from medattn.report.html import Figure, Table, Text

    root, plan = planned
    blocks = design_section(root).blocks
    tables = [b for b in blocks if isinstance(b, Table)]
    assert len(tables) == len(plan.pilots) and any(isinstance(b, Figure) for b in blocks)
    assert "5-fold x 2" in list(tables[0].frame["design"])
    (tmp_path / "runs").mkdir()
    assert "medattn plan" in design_section(tmp_path).blocks[0].text
    assert isinstance(design_section(tmp_path).blocks[0], Text)


def test_cli_plan_from_a_summary_and_refuses_a_delta_inside_the_margin(tmp_path, capsys):
    csv = tmp_path / "published.csv"
    csv.write_text("dataset,backbone,model,set,mean,sd,n\nisic,resnet18,base,id,74.0,1.5,10\n"
                   "isic,resnet18,ga,id,75.0,1.4,10\n", encoding="utf-8")
    assert main(["plan", "--summary", str(csv), "--sd-diff", "2", "--n-test", "500"]) == 0
    out = capsys.readouterr().out
    assert "random J=10" in out and "differences: as given" in out and "ResNet18 +GA" in out
    assert main(["plan", "--summary", str(csv), "--delta", "0.5"]) != 0
    assert "--delta 0.5 pp does not exceed --margin" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_plan_on_runs_prints_and_saves(planned, capsys):
    root, _ = planned
    assert main(["plan", str(root), "--delta", "3"]) == 0
    out = capsys.readouterr().out
    assert "isic id: ResNet18 +ELA vs ResNet18 base" in out and "80 % upper bound" in out
    assert P.load_plan(root).settings["delta"] == 3.0


def test_the_printed_plan_says_when_only_more_images_would_reach_the_target():
    from medattn.report.design import format_plan

    pilots = [_pilot(2.0, 800.0), _pilot(4.0, 200.0)]
    plan = P._plan(pilots, {**SETTINGS, "source": "sim"}, [])
    text = format_plan(plan)
    n = plan.recommendations[0]["estimate"]["images"]  # the cheapest calibrated design's
    assert f"no calibrated design of this data reaches 80%; about {n:,.0f} images would" in text
    assert "no calibrated design reaches 80% at any data size" in text  # the floor case
    assert "5-fold x 2" in text and "(not calibrated)" not in text  # all offered are calibrated
    # a 3-pair pilot whose estimate and bound recommend different designs is warned about
    rec = plan.recommendations[0]
    assert rec["estimate"]["design"] != rec["upper"]["design"]
    assert text.count("with 3 pairs the two disagree") == 1  # not for the floor case (both None)
    big = P.Pilot("x", "id", 12, 2.0, 200.0, 1000.0, 0.2, 0.1, 800.0, "per-image predictions")
    big_plan = P._plan([big], {**SETTINGS, "source": "s"}, [])
    assert big_plan.recommendations[0]["estimate"]["design"] != big_plan.recommendations[0][
        "upper"]["design"]  # they disagree here too, but 12 pairs know their sd well enough
    assert "the two disagree" not in format_plan(big_plan)


def test_a_budget_leaves_out_designs_that_cost_more():
    t = P.design_table(_pilot(0.5, 40.0), SETTINGS)  # a small sd: designs of >= 10 runs decide
    cal = t[t["calibrated"]]
    assert (cal.loc[cal["runs_per_model"] >= 10, "p_right"] >= 0.8).all()
    ok = cal[cal["p_right"] >= 0.8]
    cheapest = ok.loc[ok["hours"].idxmin()]
    assert P.recommend(t, SETTINGS, "")["design"] == cheapest["design"]
    assert P.recommend(t, {**SETTINGS, "budget": cheapest["hours"] / 2}, "")["design"] is None


def test_design_for_a_config_is_the_candidate_of_the_same_name():
    by_name = {d.name: d for d in D.DESIGNS}
    for got, name in ((D.design_for("kfold", 2, 5), "5-fold x 2"),  # k-fold: splits = repeats
                      (D.design_for("random", 10), "random J=10")):
        want = by_name[name]
        assert (got.name, got.n_pairs, got.shares(0.2, 0.1), got.calibrated) == (
            want.name, want.n_pairs, want.shares(0.2, 0.1), want.calibrated)
        assert got.factor(got.n_pairs, 0.25) == want.factor(want.n_pairs, 0.25)
    three = D.design_for("random", 3)
    assert (three.n_pairs, three.runs, three.scheme, three.calibrated) == (3, 3, "random", True)
    assert not D.design_for("kfold", 3, 7).calibrated  # not offered: never recommended


def test_a_configured_design_gets_the_row_the_table_gives_it():
    p = _pilot(3.0, 900.0)
    t = P.design_table(p, SETTINGS, grid=np.array([1.0]))
    for design in D.DESIGNS:
        row = P.design_row(p, SETTINGS, design)
        assert row["p_right"] == t.loc[t["design"] == design.name, "p_right"].item()
    # a design outside the candidates: the design functions at its own J
    row = P.design_row(p, SETTINGS, D.design_for("random", 3))
    a, b = p.ab(p.sd_diff)
    sd = math.sqrt(b + a / p.n_test)
    assert row["p_right"] == pytest.approx(
        float(D.decided_right(sd, 2.0, 3, 0.2 / 0.7, 1.0)), abs=1e-6)
    assert row["p_right"] < P.design_row(p, SETTINGS, D.design_for("random", 10))["p_right"]



def test_a_design_of_fewer_pairs_than_a_decision_needs_never_decides():
    # Table 2 reports no Bayesian decision below 3 pairs (undecided (n<3)): the plan agrees
    p = _pilot(0.5, 40.0)  # so small an sd that 3 pairs decide almost surely
    assert P.design_row(p, SETTINGS, D.design_for("random", 3))["p_right"] > 0.5
    two = P.design_row(p, SETTINGS, D.design_for("random", 2))
    assert two["p_right"] == 0 and two["p_right_upper"] == 0
    assert two["power"] > 0  # the corrected t-test's p is reported at 2 pairs


def test_the_brief_names_the_configured_design_and_the_recommendation():
    from medattn.report.design import plan_brief

    pilots = [_pilot(2.0, 800.0), _pilot(4.0, 200.0)]
    plan = P._plan(pilots, {**SETTINGS, "source": "sim"}, [])
    lines = plan_brief(plan, D.design_for("random", 3))
    assert "a true difference of 2 pp, margin 1 pp, threshold 0.95" in lines[0]
    assert len(lines) == 3
    row = P.design_row(pilots[0], plan.settings, D.design_for("random", 3))
    n = plan.recommendations[0]["estimate"]["images"]
    assert row["p_right_upper"] < row["p_right"]  # the bound plans for more noise
    assert (f"random J=3 decides right with P = {row['p_right']:.2f} "
            f"({row['p_right_upper']:.2f} on the sd's upper bound)") in lines[1]
    assert f"about {n:,.0f} images would" in lines[1]
    assert "no calibrated design reaches 80% at any data size" in lines[2]  # the noise floor
