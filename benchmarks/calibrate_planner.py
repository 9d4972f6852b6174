"""Does `medattn plan` predict what a full study will see? Pilots of 3 pairs against the truth.

Known truth per scenario: a pool of ``pool`` images split 70/10/20 (r = 0.2857), two models whose
paired differences (pp) follow the corrected test's data model with within-study variance
``s_d^2 = b + a / n_test`` (``a`` pp^2 x images of test sampling, ``b`` pp^2 of training noise) and
a true difference ``delta``; the Bayesian test uses a ROPE of ``margin`` pp and threshold 0.95.

1. Observed: ``--replicates`` full studies of each random design (J = 10, 20, 30) on the pool;
   the rate at which the Bayesian correlated t-test decides "better" (the right answer) and the
   corrected t-test rejects, with 95 % Clopper-Pearson intervals.
2. Predicted: ``--pilots`` pilots of 3 pairs each (their sample sd is all a pilot knows; ``a`` is
   taken as known, as the per-image predictions of 3 test sets pin it down); each goes through
   the planner (:func:`medattn.analysis.plan.design_table` / ``recommend``, what ``medattn plan``
   runs). Reported: the median and 10-90 % range of the predicted P(right) on the sd estimate
   and on its 80 % upper bound, and for the design (and data size) each plan recommends,
   whether it truly reaches the 0.8 target (true P from
   :func:`medattn.analysis.design.decision_probability`, itself checked against simulation in
   tests/test_design.py). A plan's *claim holds* unless it recommends a design that truly falls
   short (false assurance); a plan that finds no design reaching the target claims nothing
   wrong, it says "not with what this pilot knows". The bound plan's claim should hold in
   >= 80 % of pilots.

    nice -n 10 python benchmarks/calibrate_planner.py --pilots 1000 --replicates 2000
"""

from __future__ import annotations

import argparse
import math
import platform
import time

import numpy as np

from rates import rate

from medattn.analysis import design as D
from medattn.analysis import plan as P
from medattn.analysis import stats

SCENARIOS = {  # name: (a, b, pool, delta)
    "A: big pool, 2 pp": (1500.0, 0.25, 20000, 2.0),
    "B: 4000 images, 3 pp": (1500.0, 1.0, 4000, 3.0),
    "C: 2000 images, 2 pp, no training noise": (1500.0, 0.0, 2000, 2.0),
}
SHARES = (0.2, 0.1)  # test, validation
RATIO = 0.2 / 0.7
MARGIN, THRESHOLD, TARGET = 1.0, 0.95, 0.8


def settings(delta: float) -> dict:
    return dict(delta=delta, margin=MARGIN, power=TARGET, threshold=THRESHOLD, alpha=0.05,
                budget=None, seconds_per_run=60.0, models=2, hours_unit="hours")


def observed(a, b, pool, delta, j, reps, rng) -> tuple[int, int]:
    """(Bayesian 'better' decisions, corrected-test rejections) over ``reps`` full studies."""
    sd = math.sqrt(b + a / (SHARES[0] * pool))
    d = delta + rng.standard_normal((reps, 1)) * sd * math.sqrt(RATIO) \
        + rng.standard_normal((reps, j)) * sd
    better = sum(stats.bayes_decision(stats.bayes_correlated(x, RATIO, MARGIN), THRESHOLD)
                 == "better" for x in d)
    rejected = sum(stats.corrected_ttest(x, RATIO).p < 0.05 and x.mean() > 0 for x in d)
    return better, rejected


def true_p(a, b, pool, delta, design_name, images) -> float:
    """True P(right) of a recommended design at the recommended pool size."""
    d = next(x for x in D.DESIGNS if x.name == design_name)
    n = images if images else pool
    test, train = d.shares(*SHARES)
    sd = math.sqrt(b / d.seeds + a / (test * n)) if d.seeds > 1 else math.sqrt(b + a / (test * n))
    f = d.factor(d.n_pairs, test / train)
    return float(D.decision_probability(sd, delta, d.n_pairs, test / train, MARGIN, THRESHOLD,
                                        variance_factor=f)[2])


def scenario(name, a, b, pool, delta, args, rng) -> list[str]:
    sd = math.sqrt(b + a / (SHARES[0] * pool))
    rows = [f"### {name}: a = {a:g}, b = {b:g}, pool {pool}, delta {delta:g} pp "
            f"(true s_d = {sd:.2f} pp)", "",
            "| design | true P(right) | observed P(right) [95% CI] | observed corrected power "
            "| predicted P(right), estimate: median [10%, 90%] | on the bound |",
            "|---|---|---|---|---|---|"]
    pilots = [P.Pilot("sim", "id", 3, float(s), SHARES[0] * pool, pool, *SHARES, a,
                      "per-image predictions")
              for s in rng.standard_normal((args.pilots, 3)).std(axis=1, ddof=1) * sd]
    # the designs a plan can recommend (uncalibrated k-fold rows would only cost time here)
    calibrated = [d for d in D.DESIGNS if d.calibrated]
    tables = [P.design_table(p, settings(delta), calibrated) for p in pilots]
    for i, j in enumerate((10, 20, 30)):
        truth = float(D.decision_probability(sd, delta, j, RATIO, MARGIN, THRESHOLD)[2])
        better, rejected = observed(a, b, pool, delta, j, args.replicates, rng)
        est = np.array([t.loc[i, "p_right"] for t in tables])
        up = np.array([t.loc[i, "p_right_upper"] for t in tables])
        q = lambda x: (f"{np.median(x):.2f} [{np.quantile(x, 0.1):.2f}, "  # noqa: E731
                       f"{np.quantile(x, 0.9):.2f}]")
        rows.append(f"| random J={j} | {truth:.3f} | {rate(better, args.replicates)} | "
                    f"{rate(rejected, args.replicates)} | {q(est)} | {q(up)} |")
    rows += ["", "| plan on | recommends a design | ... that truly reaches 0.8 | ... that "
             "truly falls short (false assurance) [95% CI] | claim holds | median images "
             "recommended |", "|---|---|---|---|---|---|"]
    for tag, what in (("", "sd estimate"), ("_upper", "80 % upper bound")):
        recs = [P.recommend(t, settings(delta), tag) for t in tables]
        made = [r for r in recs if r["design"] is not None]
        ok = sum(true_p(a, b, pool, delta, r["design"], r["images"]) >= TARGET - 1e-3
                 for r in made)
        n, short = len(recs), len(made) - ok
        imgs = [r["images"] or pool for r in made]
        rows.append(f"| {what} | {len(made)} of {n} | {ok} | {rate(short, n)} | "
                    f"{1 - short / n:.3f} | {np.median(imgs) if imgs else float('nan'):,.0f} |")
    return rows + [""]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pilots", type=int, default=1000)
    ap.add_argument("--replicates", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    t0 = time.time()
    out = []
    for name, (a, b, pool, delta) in SCENARIOS.items():
        out += scenario(name, a, b, pool, delta, args, rng)
    print("\n".join(out))
    print(f"{args.pilots} pilots, {args.replicates} replicates per design; "
          f"{time.time() - t0:.0f} s on {platform.machine()} ({platform.node()}), "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")


if __name__ == "__main__":
    main()
