"""Calibration and power of the three conditional-independence tests and of their majority vote.

Draws where the truth is known: a label Z with 2 or 3 classes, a feature X (continuous, binary, or
``d``: 2 columns like Table 3's D, a count of 0-5 structures and their area share, 0 without
structures) whose law depends on Z, and a "prediction" Y = softmax(logits) whose logits depend on Z
and, under the alternative, on X; Y enters the tests as its first C - 1 columns, as in Table 3.
Under H0 (beta = 0) X and Y are independent given Z.

CMIknn runs at each ``--cmiknn-k`` (a count, or a fraction of each class), and the majority vote
(used = 2 of cHSIC, RCoT, CMIknn reject) is computed for each. Prints one row per (test, n, classes,
X type, hypothesis): the rejection rate (p <= alpha) at alpha = 0.05 and 0.01 over ``--reps``
draws, for H0 whether the 0.05 rate lies in the binomial 99% band (for the majority vote, which is
conservative by design, below its upper edge), and seconds per call. The
permutation tests use ``--permutations`` (default 99) shuffles: a permutation test is exact at any
B, so the level is unaffected; B >= 1000 matters only for resolving p < 0.01 in real use.

    python benchmarks/calibrate_citests.py --n 500 --reps 200 --power-reps 30 --out rows.csv
"""

from __future__ import annotations

import argparse
import csv
import os
import time

import numpy as np
from scipy import stats
from threadpoolctl import threadpool_limits

from medattn.analysis.citests import TESTS

PRIORS = {2: [0.6, 0.4], 3: [0.5, 0.3, 0.2]}


def draw(n: int, classes: int, x_kind: str, beta: float, rng: np.random.Generator):
    """(x, y (n, classes - 1) softmax columns, z (n,) int) with X independent of Y given Z iff
    beta == 0."""
    z = rng.choice(classes, size=n, p=PRIORS[classes])
    share = z / (classes - 1)
    if x_kind == "continuous":
        x = np.sin(1.5 * z) + 0.5 * z + rng.standard_normal(n)
        signal = np.tanh(x - x.mean())
    elif x_kind == "binary":
        x = (rng.random(n) < 0.25 + 0.25 * share).astype(float)
        signal = x - x.mean()
    else:  # d: structure count and area share (exactly 0 without structures)
        count = rng.binomial(5, 0.2 + 0.2 * share).astype(float)
        area = np.where(count > 0, np.clip(count * rng.uniform(0.03, 0.12, n), 0, 1), 0.0)
        x = np.column_stack([count, area])
        signal = (count - count.mean()) / max(count.std(), 1e-9)
    logits = 1.5 * np.eye(classes)[z] + 0.8 * rng.standard_normal((n, classes))
    logits[:, 0] += beta * signal
    y = np.exp(logits - logits.max(1, keepdims=True))
    return x, (y / y.sum(1, keepdims=True))[:, :classes - 1], z


def binomial_band(reps: int, alpha: float = 0.05, level: float = 0.99) -> tuple[float, float]:
    lo, hi = stats.binom.ppf([(1 - level) / 2, (1 + level) / 2], reps, alpha)
    return lo / reps, hi / reps


def _k(text: str) -> float:
    value = float(text)
    return int(value) if value >= 1 else value


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tests", nargs="+", default=list(TESTS))
    ap.add_argument("--cmiknn-k", nargs="+", type=_k, default=[10, 0.1],
                    help="CMIknn neighbours: counts and/or fractions of each class")
    ap.add_argument("--n", nargs="+", type=int, default=[500, 2000])
    ap.add_argument("--classes", nargs="+", type=int, default=[2, 3])
    ap.add_argument("--x", nargs="+", default=["continuous", "binary", "d"])
    ap.add_argument("--reps", type=int, default=200)
    ap.add_argument("--power-reps", type=int, default=50)
    ap.add_argument("--beta", type=float, nargs="+", default=None,
                    help="alternative strength(s) (default 0.4 and 1.0 at n < 2000, 0.3 and 0.5 "
                    "at n >= 2000)")
    ap.add_argument("--permutations", type=int, default=99)
    ap.add_argument("--power-only", action="store_true", help="skip the H0 draws")
    ap.add_argument("--out", default=None, help="append rows to this CSV")
    args = ap.parse_args()
    band = binomial_band(args.reps)
    print(f"99% binomial band for the H0 rejection rate at alpha=0.05 with {args.reps} reps: "
          f"[{band[0]:.3f}, {band[1]:.3f}]")
    header = ["test", "n", "classes", "x", "hypothesis", "beta", "reps", "reject_0.05",
              "reject_0.01", "in_band", "seconds_per_call"]
    print(" ".join(f"{h:>12}" for h in header))
    runs = [(name, {}) for name in args.tests if name != "cmiknn"]
    if "cmiknn" in args.tests:
        runs += [("cmiknn", {"k": k}) for k in args.cmiknn_k]
    for n in args.n:
        betas = args.beta or ([0.4, 1.0] if n < 2000 else [0.3, 0.5])
        for classes in args.classes:
            for x_kind in args.x:
                plan = [("H0", 0.0, args.reps)] + [("H1", b, args.power_reps) for b in betas]
                for hyp, beta, reps in plan[1:] if args.power_only else plan:
                    draws = [draw(n, classes, x_kind, beta, np.random.default_rng(1000 * r + n))
                             for r in range(reps)]
                    pvals = {}
                    for name, extra in runs:
                        opts = {"permutations": args.permutations, **extra}
                        if name == "rcot":
                            opts = {}
                        label = name + (f" k={extra['k']:g}" if extra else "")
                        t0 = time.process_time()
                        with threadpool_limits(1):
                            pvals[label] = np.array([TESTS[name](x, y, z, seed=r, **opts)
                                                     for r, (x, y, z) in enumerate(draws)])
                        _emit(args, label, n, classes, x_kind, hyp, beta, reps, pvals[label],
                              band, (time.process_time() - t0) / reps, header)
                    if {"chsic", "rcot"} <= set(pvals):
                        for label in [lb for lb in pvals if lb.startswith("cmiknn")]:
                            trio = np.stack([pvals["chsic"], pvals["rcot"], pvals[label]])
                            # used = 2 of 3 reject at alpha: the vote's p-value is the 2nd smallest
                            vote = np.sort(trio, axis=0)[1]
                            _emit(args, f"majority {label[7:]}", n, classes, x_kind, hyp, beta,
                                  reps, vote, band, float("nan"), header)


def _emit(args, label, n, classes, x_kind, hyp, beta, reps, p, band, sec, header) -> None:
    # p <= alpha: a valid p-value has P(p <= alpha) <= alpha, and with B = 99 the smallest
    # permutation p-value is exactly 0.01
    r05, r01 = np.mean(p <= 0.05), np.mean(p <= 0.01)
    # The majority vote needs two rejections, so it is conservative by design: for it only the
    # upper edge of the band matters.
    low = 0.0 if label.startswith("majority") else band[0]
    in_band = "" if hyp == "H1" else str(low <= r05 <= band[1])
    row = [label, n, classes, x_kind, hyp, beta, reps, f"{r05:.3f}", f"{r01:.3f}", in_band,
           f"{sec:.3f}"]
    print(" ".join(f"{str(v):>12}" for v in row), flush=True)
    if args.out:
        new = not os.path.exists(args.out)
        with open(args.out, "a", newline="") as fh:
            w = csv.writer(fh)
            if new:
                w.writerow(header)
            w.writerow(row)


if __name__ == "__main__":
    main()
