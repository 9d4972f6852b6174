"""Can the demo decide within its 10 minutes? Pilots of the demo's settings, then `medattn plan`.

For each setting (image size, synthetic images, epochs) this runs the demo study exactly as
``configs/demo.yaml`` has it (3 models, the learning-rate search, 3 random final splits: the
demo's "first 3 splits") with only those keys replaced, then ``medattn plan`` on its final runs at
the demo's statistics: margin 1 pp and threshold 0.95 (``medattn compare``'s defaults), target
P(right) >= 0.8, for a true difference ``--delta``. It prints one row per setting and comparison:
the pilot's mean difference and s_d (3 pairs), the test-sampling and training-noise parts of s_d^2
(a / n_test and b), the study's wall time, the best P(right) of a candidate design that fits the
demo's time budget, and the cheapest design (with more images where needed) that reaches 0.8.

The budget: the demo must finish within 10 minutes on 2 idle cores; the final phase gets what the
search and the other steps leave (``--minutes``, wall time with 2 runs at once).

    python benchmarks/demo_design.py --out /tmp/demo-pilots                  # the demo's setting
    python benchmarks/demo_design.py --out /tmp/demo-pilots --settings 48,700,6 40,700,6 32,700,6

Each pilot takes 3 to 5 minutes on 2 cores; finished runs are reused (the study resumes). The
table is in docs/statistics.md ("The demo's design").
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import pandas as pd

from medattn import demo
from medattn.analysis.compare import compare_runs
from medattn.analysis.plan import plan_runs, recommend
from medattn.analysis.settings import CompareSettings, PlanSettings
from medattn.render import markdown_table


def pilot(out: Path, size: int, images: int, epochs: int) -> Path:
    """Run (or resume) the pilot of one setting; its runs folder."""
    overrides = {"final": {"splits": 3}, "train": {"epochs": epochs, "image_size": size}}
    ctx = demo.DemoContext(out=out / f"s{size}-n{images}-e{epochs}", progress=False, jobs=2,
                           n_images=images, overrides=overrides)
    demo.make_data(ctx)
    demo.run_demo_study(ctx)
    return ctx.runs_dir


def rows(runs_dir: Path, setting: str, delta: float, minutes: float) -> list[dict]:
    """One row per comparison of the pilot: its numbers and what the plan says."""
    plan = plan_runs(runs_dir, settings=PlanSettings(delta=delta, margin=1.0, threshold=0.95))
    s = plan.settings
    per_run = f"{s['seconds_per_run']:.0f}"  # one process, mean of the final runs
    table2 = compare_runs(runs_dir, settings=CompareSettings(bootstrap=0)).comparisons()
    out = []
    for p, table in zip(plan.pilots, plan.tables):
        # the pilot's mean difference, for the reader only: the plan never uses it
        row = table2[(table2["set"] == p.set)
                     & table2["model"].map(lambda m: f"+{m.upper()} vs" in p.label)]
        a, b = p.ab(p.sd_diff)
        # hours are one process's; the demo trains 2 runs at once
        fits = table[table["calibrated"] & (table["hours"] * 30 <= minutes)]
        best = fits.loc[fits["p_right"].idxmax()] if len(fits) else None
        rec = recommend(table, s, "")
        needed = ("none (training-noise floor)" if rec["design"] is None else
                  f"{rec['design']}, {rec['hours'] * 30:.0f} min"
                  + (f" at {rec['images']:,.0f} images" if rec["more_data"] else ""))
        out.append({"setting": setting, "s/run": per_run,
                    "difference": f"{row['diff'].item():+.1f}",
                    "comparison": p.label.split(": ", 1)[1] + f" ({p.set})",
                    "s_d": f"{p.sd_diff:.1f}", "a/n_test": f"{a / p.n_test:.1f}",
                    "b": f"{b:.1f}",
                    "P(right) in budget": "-" if best is None else
                    f"{best['p_right']:.2f} ({best['design']})",
                    "reaches 0.8": needed})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="demo-pilots", help="folder for the pilots' data and runs")
    ap.add_argument("--settings", nargs="+", default=["48,700,6"],
                    help="image size, synthetic images, epochs (the demo: 48,700,6)")
    ap.add_argument("--delta", type=float, default=demo.PLAN_SETTINGS.delta,
                    help="true difference to plan for, pp (default: the demo's)")
    ap.add_argument("--minutes", type=float, default=7.0,
                    help="wall minutes the final phase may take (2 runs at once)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    table = []
    for text in args.settings:
        size, images, epochs = (int(v) for v in text.split(","))
        runs_dir = pilot(Path(args.out).resolve(), size, images, epochs)
        name = f"{size} px, {images} images, {epochs} epochs"
        table += rows(runs_dir, name, args.delta, args.minutes)
        print(f"{name}: pilot in {runs_dir}", flush=True)
    print(f"\nPlanned at a true difference of {args.delta:g} pp, margin 1 pp, threshold 0.95; "
          f"budget for the final phase: {args.minutes:g} min on 2 processes.\n")
    print(markdown_table(pd.DataFrame(table)))


if __name__ == "__main__":
    main()
