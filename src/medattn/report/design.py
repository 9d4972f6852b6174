"""The plan of a study's design (``medattn plan``) as text, and the report's "Design" section:
the design table per comparison and a plot of P(decided right) against runs per design family.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from medattn.analysis import design as D
from medattn.analysis.plan import PLAN_FILE, Pilot, Plan, design_row, design_table, load_plan
from medattn.kfold_designs import KFOLD_DESIGNS
from medattn.render import markdown_table
from medattn.report.html import Figure, Section, Table, Text

__all__ = ["design_section", "format_plan", "plan_brief", "power_curves"]

# report.figures (matplotlib, about 1.5 s) is imported inside the functions that draw: `medattn
# plan` imports this module for format_plan's text only.

PLAN_HINT = "not planned yet (run `medattn plan RUNS_DIR` on a pilot's runs)"
MAX_FIGURES = 6  # power-vs-runs plots in the report; the rest are in plan.json
SMALL_PILOT = 5  # pairs below which a pilot's sd estimate is a weak guide (bound > 1.6 x estimate)


def _num(v, fmt: str = ".2f") -> str:
    try:
        v = float(v)
    except (TypeError, ValueError):
        return "-"
    if math.isnan(v):
        return "-"
    return "never" if math.isinf(v) else format(v, fmt)


def _images(v, why) -> str:
    v = float("nan") if v is None else float(v)
    if math.isfinite(v):
        return f"{v:,.0f}"
    return f"none ({why})" if isinstance(why, str) and why else "-"


def display_table(table: pd.DataFrame, settings: dict) -> pd.DataFrame:
    """The design table as shown: one row per design, probabilities to 2 decimals."""
    unit = settings.get("hours_unit", "hours")
    seeds = table["p_right_seeds"].astype(float)
    p_right = [_num(p) + (f" (up to {_num(s)})" if np.isfinite(s) else "")
               for p, s in zip(table["p_right"], seeds)]
    return pd.DataFrame({
        "design": [d + ("" if c else " (not calibrated)") for d, c in
                   zip(table["design"], table["calibrated"])],
        "runs/model": table["runs_per_model"], unit: [_num(h, ".1f") for h in table["hours"]],
        "power": [_num(p) for p in table["power"]], "P(right)": p_right,
        "P(right), sd bound": [_num(p) for p in table["p_right_upper"]],
        "images for target": [_images(v, w) for v, w in zip(table["images"],
                                                          table["images_why"])],
        "images, sd bound": [_images(v, w) for v, w in zip(table["images_upper"],
                                                         table["images_why_upper"])]})


def _pilot_line(p: Pilot) -> str:
    a, b = p.ab(p.sd_diff)
    what = "OOD images" if p.ood else f"test images of a pool of {p.pool:,.0f}"
    line = (f"pilot: {p.n_pairs} pairs, s_d = {p.sd_diff:.2f} pp (80 % upper bound "
            f"{p.sd_upper:.2f} pp"
            + ("; a pilot this small knows its sd poorly" if p.n_pairs < 10 else "")
            + f"); {p.n_test:,.0f} {what}; ")
    if p.a_source == "per-image predictions":
        return line + (f"test sampling a / n_test = {a / p.n_test:.2f} pp^2 (a = {a:,.0f} "
                       f"pp^2 x images, from per-image predictions), the rest b = {b:.2f} pp^2")
    return line + f"a unknown ({p.a_source})"


def _recommended(rec: dict, settings: dict) -> str:
    """A recommendation of :func:`medattn.analysis.plan.recommend` in words."""
    target = f"{settings['power']:.0%}"
    unit = settings.get("hours_unit", "hours")
    if rec["design"] is None:
        return (f"no calibrated design reaches {target} at any data size searched (training "
                "noise b alone is too large, or over 1000x the data)")
    hours = f", {rec['hours']:.1f} {unit}" if np.isfinite(rec["hours"] or np.nan) else ""
    if rec["more_data"]:
        return (f"no calibrated design of this data reaches {target}; about "
                f"{rec['images']:,.0f} images would ({rec['design']}{hours})")
    return f"{rec['design']} (P(right) {rec['p_right']:.2f}{hours})"


def _recommendation(rec: dict, settings: dict, what: str) -> str:
    return f"on the {what}: {_recommended(rec, settings)}"


def format_plan(plan: Plan, saved: str | None = None) -> str:
    """The plan as Markdown text (what ``medattn plan`` prints)."""
    s = plan.settings
    hours = (f"{s['seconds_per_run']:.0f} s per run x {s['models']} models"
             if np.isfinite(s.get("seconds_per_run") or np.nan) else "time per run unknown")
    out = [f"# Design plan from {s['source']}", "",
           f"Target: the Bayesian test (ROPE +-{s['margin']:g} pp, threshold {s['threshold']:g}) "
           f"decides 'better' with probability >= {s['power']:g} at a true difference of "
           f"{s['delta']:g} pp (P(right)); the corrected t-test's power (alpha {s['alpha']:g}) "
           f"beside it. Hours: {hours}"
           + (f"; budget {s['budget']:g} h" if s.get("budget") else "") + ".", ""]
    for p, t, rec in zip(plan.pilots, plan.tables, plan.recommendations):
        out += [f"## {p.label}", "", _pilot_line(p), "",
                markdown_table(display_table(t, s)), ""]
        est, up = rec["estimate"], rec["upper"]
        out += [f"- {_recommendation(est, s, 'sd estimate')}",
                f"- {_recommendation(up, s, 'sd upper bound')}"]
        if np.isfinite(est.get("hours") or np.nan) and np.isfinite(up.get("hours") or np.nan):
            out.append(f"- planning on the bound costs {up['hours'] - est['hours']:.1f} "
                       f"{s.get('hours_unit', 'hours')} more than on the estimate")
        if p.n_pairs < SMALL_PILOT and est["design"] != up["design"]:
            out.append(f"- with {p.n_pairs} pairs the two disagree: in the planner benchmark a "
                       "design chosen on a 3-pair estimate truly fell short of the target in "
                       "about 2 of 3 pilots when the answer was close, one chosen on the bound "
                       "in about 1 of 5 (docs/statistics.md); plan on the bound unless a "
                       "shortfall is cheap")
        out.append("")
    out += ["Notes:", ""] + [f"- {n}" for n in plan.notes + _standing_notes()]
    if saved:
        out += ["", f"Plan saved to {saved}."]
    return "\n".join(out) + "\n"


def plan_brief(plan: Plan, design: D.Design) -> list[str]:
    """A few lines for a terminal: per comparison, what ``design`` (the study as configured)
    decides at the plan's delta (on the sd estimate and on its 80 % upper bound), and the plan's
    recommendation on the sd estimate."""
    s = plan.settings
    out = [f"Design check (`medattn plan`: a true difference of {s['delta']:g} pp, margin "
           f"{s['margin']:g} pp, threshold {s['threshold']:g}, target P(right) >= "
           f"{s['power']:g}):"]
    for p, rec in zip(plan.pilots, plan.recommendations):
        row = design_row(p, s, design)
        out.append(f"  {p.label}: {design.name} decides right with P = {_num(row['p_right'])} "
                   f"({_num(row['p_right_upper'])} on the sd's upper bound); "
                   + _recommended(rec["estimate"], s))
    return out


def _standing_notes() -> list[str]:
    offered = ", ".join(f"{k}x{r}" for k, r in sorted(KFOLD_DESIGNS))
    return [f"k-fold designs ({offered}) use the variance factor their calibration benchmark "
            "showed to hold the test's level (benchmarks/calibrate_designs.py); a design marked "
            "'not calibrated' is listed but never recommended",
            "'x 3 seeds': 3 training seeds per split, differences averaged per split; without "
            "seed replicates in the pilot its P(right) is a range: no gain (all noise from the "
            "splits) up to the value in brackets (all training noise from seeds; Bouthillier "
            "et al. 2021)",
            "more images: the training-noise part b is assumed not to shrink with more data "
            "(cautious); an OOD set is the same in every run, so more OOD images leave the "
            "training cost unchanged"]


# ---------------------------------------------------------------------------------------------
# The report's section
# ---------------------------------------------------------------------------------------------


FAMILIES = {"random splits": [D.Design(f"J={j}", "random", j) for j in range(3, 41)],
            "5-fold x R": [D.Design(f"5x{r}", "kfold", 5 * r, 5, r, calibrated=False,
                                    factor=D.bouckaert_frank_factor) for r in range(1, 9)],
            "10-fold x R": [D.Design(f"10x{r}", "kfold", 10 * r, 10, r, calibrated=False,
                                     factor=D.bouckaert_frank_factor) for r in range(1, 5)]}


def power_curves(p: Pilot, settings: dict):
    """P(decided right) against runs per model for each design family, on the sd estimate
    (solid) and its upper bound (dashed); a matplotlib Figure."""
    from medattn.report.figures import subplots  # start-up time: see the top of the module

    fig, ax = subplots(1, 1, figsize=(6.0, 3.6))
    for i, (name, designs) in enumerate(FAMILIES.items()):
        t = design_table(p, settings, designs, grid=np.array([1.0]))
        color = f"C{i}"
        ax.plot(t["runs_per_model"], t["p_right"], "-o", ms=3, color=color, label=name)
        ax.plot(t["runs_per_model"], t["p_right_upper"], "--", color=color, lw=1)
    ax.axhline(settings["power"], color="0.4", lw=0.8, ls=":")
    ax.set_xlabel("runs per model")
    ax.set_ylabel("P(decided right)")
    ax.set_ylim(0, 1)
    ax.set_title(p.label, fontsize=9)
    ax.legend(fontsize=8, title="solid: sd estimate; dashed: bound", title_fontsize=7)
    return fig


def design_section(runs_dir):
    """The report's "Design" section from the plan saved in ``runs_dir`` (a hint if none)."""
    from medattn.report.figures import to_png  # start-up time: see the top of the module
    plan = load_plan(runs_dir)
    if plan is None:
        return Section("design", "Design", [Text(f"Design: {PLAN_HINT}.")])
    s = plan.settings
    blocks = [Text(f"From `{PLAN_FILE}`: planned for a true difference of {s['delta']:g} pp, "
                   f"margin {s['margin']:g} pp, threshold {s['threshold']:g}, target "
                   f"P(right) >= {s['power']:g} (docs/statistics.md, \"Planning a study that "
                   "can decide\").")]
    for i, (p, t, rec) in enumerate(zip(plan.pilots, plan.tables, plan.recommendations)):
        cap = (f"{p.label}. {_pilot_line(p)}. {_recommendation(rec['estimate'], s, 'estimate')}"
               f"; {_recommendation(rec['upper'], s, 'upper bound')}.")
        blocks.append(Table(display_table(t, s), cap))
        if i < MAX_FIGURES:
            blocks.append(Figure(to_png(power_curves(p, s)), f"design-{i}",
                                 f"{p.label}: P(decided right) against runs per model."))
    return Section("design", "Design", blocks)
