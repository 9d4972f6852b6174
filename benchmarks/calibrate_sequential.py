"""False-decision rates and runs used of the stop-when-decided rule, with known truth.

Each replicate is one comparison of a sequential study: paired differences under the corrected
test's data model, ``d_j = delta + c + e_j`` with a pool effect ``c ~ N(0, rho sd^2)`` shared by
all splits, ``e_j ~ N(0, (1 - rho) sd^2)``, ``rho = r / (1 + r)`` and ``r = n_test / n_train``
(0.2 / 0.7 for 70/10/20 splits); ``sd`` is the sd of a single difference (pp). Per design
(batches of B splits, at most N) the rule of :mod:`medattn.analysis.sequential` looks after each
batch and stops at the first decision. Simulated with another seed than the threshold's.

Per cell (design, sd, true delta with the ROPE +-1 pp) it prints, with 95% Clopper-Pearson
intervals: the false-decision rates

- ``false dir @0``: "better" or "worse" at delta = 0;
- ``false better @m``: "better" or "worse" at delta = m (on the ROPE's edge: inside);
- ``false equiv @2m``: "equivalent" at delta = 2m;
- the same with the naive rule (the fixed 0.95 threshold at every look), to show the inflation;

then the power (P(correct decision): "better" at 2m, "equivalent" at 0), the mean number of splits
used, and the fixed design at equal power: the fewest splits J a single look (threshold
1 - alpha/2 = 0.975, the fixed design with the same error guarantee) needs to reach the
sequential rule's power ("> 3N" when none up to 3N does: the corrected se has the floor sd sqrt(r)).

    nice -n 10 python benchmarks/calibrate_sequential.py --replicates 4000

``--learner lda`` instead replays the sequential rule on the per-split accuracies of cheap
learners (``benchmarks/calibrate_compare.py``'s setting: fresh pools of 2 000 samples, random
70/10/20 splits, LDA on noisy views; null: equal population balanced accuracy; alternative:
``--delta`` pp apart, default 2), batches of 2 splits up to 10, against the fixed designs at 10
splits:

    nice -n 10 python benchmarks/calibrate_sequential.py --learner lda --replicates 1000
"""

from __future__ import annotations

import argparse
import math
import platform
import time

import numpy as np

from rates import rate

from medattn.analysis import sequential as seq

DESIGNS = [(2, 10), (3, 30), (5, 30)]  # (batch B, max splits N)
SDS = [0.5, 1.0, 2.0, 4.0, 8.0]  # sd of one paired difference, pp
MARGIN = 1.0


def simulate(delta: float, sd: float, r: float, n_rep: int, n_max: int, rng) -> np.ndarray:
    """``(n_rep, n_max)`` paired differences (pp) under the equicorrelated model."""
    rho = r / (1 + r)
    c = rng.standard_normal((n_rep, 1)) * sd * math.sqrt(rho)
    return delta + c + rng.standard_normal((n_rep, n_max)) * sd * math.sqrt(1 - rho)


def fixed_equal_power(d: np.ndarray, r: float, target: float, want: int, n_max: int,
                      alpha: float) -> str:
    """Fewest splits a single look needs for P(code == want) >= target (simulated on ``d``)."""
    for j in range(seq.MIN_PAIRS, n_max + 1):
        code, _ = seq.first_decisions(d[:, :j], r, MARGIN, (j,), 1 - alpha / 2)
        if (code == want).mean() >= target:
            return str(j)
    return f"> {n_max}"


def cell(b: int, n: int, sd: float, r: float, n_rep: int, alpha: float, rng) -> dict:
    looks = seq.planned_looks(b, n)
    thr = seq.calibrate_threshold(looks, r, alpha)
    out = {"design": f"B={b}, N={n}", "threshold": f"{thr:.4f}", "sd": sd}
    used = {}
    for delta in (0.0, MARGIN, 2 * MARGIN):
        d = simulate(delta, sd, r, n_rep, 3 * n, rng)
        code, n_used = seq.first_decisions(d[:, :n], r, MARGIN, looks, thr)
        naive, _ = seq.first_decisions(d[:, :n], r, MARGIN, looks, 0.95)
        used[delta] = n_used.mean()
        if delta == 0:
            out["false dir @0"] = rate((code == 1) | (code == -1))
            out["naive 0.95 @0"] = rate((naive == 1) | (naive == -1))
            p_eq = (code == 0).mean()
            out["P(equiv) @0"] = f"{p_eq:.3f}"
            out["fixed J, equiv @0"] = fixed_equal_power(d, r, p_eq, 0, 3 * n, alpha) \
                if p_eq > 0.01 else "-"
        elif delta == MARGIN:
            out["false better @m"] = rate((code == 1) | (code == -1))
            out["naive 0.95 @m"] = rate((naive == 1) | (naive == -1))
        else:
            out["false equiv @2m"] = rate(code == 0)
            out["naive 0.95 equiv @2m"] = rate(naive == 0)
            p_b = (code == 1).mean()
            out["P(better) @2m"] = f"{p_b:.3f}"
            out["fixed J, better @2m"] = fixed_equal_power(d, r, p_b, 1, 3 * n, alpha) \
                if p_b > 0.01 else "-"
    out["mean splits @0 / @m / @2m"] = " / ".join(f"{used[k]:.1f}" for k in sorted(used))
    return out


def learner_table(args) -> None:
    """The sequential rule on cheap learners' per-split accuracies (calibrate_compare's setup)."""
    import calibrate_compare as cc  # the sibling script (benchmarks/ is sys.path[0])
    from threadpoolctl import threadpool_limits

    n_train = int(round(cc.FRACTIONS[0] * args.pool))
    r = round(cc.FRACTIONS[2] * args.pool) / n_train
    looks = seq.planned_looks(args.batch, args.splits)
    thr = seq.calibrate_threshold(looks, r, args.alpha)
    t0 = time.time()
    opts = argparse.Namespace(seed=args.seed, pool=args.pool, splits=args.splits,
                              learner=args.learner)
    with threadpool_limits(1):
        tau_b = cc.calibrate(0.8, args.delta, args.learner, n_train, args.seed)
        acc = [cc.replicate(rep, opts, 0.8, tau_b) for rep in range(args.replicates)]
    rules = {f"sequential (B={args.batch}, N={args.splits}, threshold {thr:.4f})": (looks, thr),
             f"naive: 0.95 at every look (B={args.batch})": (looks, 0.95),
             f"fixed J={args.splits}, threshold 0.975 (same guarantee)": ((args.splits,), 0.975),
             f"fixed J={args.splits}, threshold 0.95 (Table 2's Bayes column)":
                 ((args.splits,), 0.95)}
    at = f"@{args.delta:g} pp"
    print(f"| rule | false better/worse @0 | P(better) {at} | false equivalent {at} | "
          f"mean splits @0 / {at} |")
    print("|---|---|---|---|---|")
    for name, (lk, th) in rules.items():
        d0 = np.array([a["A"] - a["B0"] for a in acc])
        d1 = np.array([a["A"] - a["B1"] for a in acc])
        c0, u0 = seq.first_decisions(d0[:, :lk[-1]], r, MARGIN, lk, th)
        c1, u1 = seq.first_decisions(d1[:, :lk[-1]], r, MARGIN, lk, th)
        print(f"| {name} | {rate(np.isin(c0, (-1, 1)))} | {rate(c1 == 1)} | {rate(c1 == 0)} | "
              f"{u0.mean():.1f} / {u1.mean():.1f} |")
    print(f"\n{args.replicates} replicates, learner {args.learner}, pool {args.pool}, r = "
          f"{r:.4f}, tau_B {tau_b:.3f}; {time.time() - t0:.0f} s on {platform.machine()}, "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--replicates", type=int, default=4000)
    ap.add_argument("--learner", choices=["lda", "logreg"],
                    help="replay the rule on cheap learners instead of the data model")
    ap.add_argument("--pool", type=int, default=2000, help="--learner: samples per replicate")
    ap.add_argument("--splits", type=int, default=10, help="--learner: N, the most splits")
    ap.add_argument("--batch", type=int, default=2, help="--learner: B, splits per batch")
    ap.add_argument("--delta", type=float, default=2.0,
                    help="--learner: true difference (pp) of the alternative")
    ap.add_argument("--ratio", type=float, default=0.2 / 0.7, help="r = n_test / n_train")
    ap.add_argument("--alpha", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=7)
    a = ap.parse_args()
    if a.learner:
        return learner_table(a)
    rng = np.random.default_rng(a.seed)
    t0 = time.time()
    rows = [cell(b, n, sd, a.ratio, a.replicates, a.alpha, rng) for b, n in DESIGNS for sd in SDS]
    cols = list(rows[0])
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for row in rows:
        print("| " + " | ".join(str(row[c]) for c in cols) + " |")
    print(f"\n{a.replicates} replicates per cell, r = {a.ratio:.4f}, ROPE +-{MARGIN} pp, alpha "
          f"{a.alpha}; {time.time() - t0:.0f} s on {platform.machine()} "
          f"({platform.processor() or 'cpu'}), "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")


if __name__ == "__main__":
    main()
