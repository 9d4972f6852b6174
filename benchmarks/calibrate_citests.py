"""Calibration and power of the three conditional-independence tests on synthetic draws.

Draws where the truth is known: a label Z with 2 or 3 classes, a feature X (continuous or binary)
whose law depends on Z, and a "prediction" Y = softmax(logits) whose logits depend on Z and, under the
alternative, on X. Under H0 (beta = 0) X and Y are independent given Z.

Prints one row per (test, n, classes, X type, hypothesis): the rejection rate (p <= alpha) at
alpha = 0.05 and 0.01 over ``--reps`` draws, and for H0 whether the 0.05 rate lies in the binomial 99% band.
The permutation tests use ``--permutations`` (default 99) shuffles here: a permutation test is exact
at any B, so the level is unaffected; B >= 1000 matters only for resolving p < 0.01 in real use.

    python benchmarks/calibrate_citests.py --reps 200 --n 500 2000 --out docs/calibration.csv
"""

from __future__ import annotations

import argparse
import csv
import time

import numpy as np
from scipy import stats
from threadpoolctl import threadpool_limits

from medattn.analysis.citests import TESTS

PRIORS = {2: [0.6, 0.4], 3: [0.5, 0.3, 0.2]}


def draw(n: int, classes: int, x_kind: str, beta: float, rng: np.random.Generator):
    """(x (n,), y (n, classes) softmax, z (n,) int) with X independent of Y given Z iff beta == 0."""
    z = rng.choice(classes, size=n, p=PRIORS[classes])
    if x_kind == "continuous":
        x = np.sin(1.5 * z) + 0.5 * z + rng.standard_normal(n)
        signal = np.tanh(x - x.mean())
    else:
        x = (rng.random(n) < 0.25 + 0.25 * z / (classes - 1)).astype(float)
        signal = x - x.mean()
    logits = 1.5 * np.eye(classes)[z] + 0.8 * rng.standard_normal((n, classes))
    logits[:, 0] += beta * signal
    y = np.exp(logits - logits.max(1, keepdims=True))
    return x, y / y.sum(1, keepdims=True), z


def binomial_band(reps: int, alpha: float = 0.05, level: float = 0.99) -> tuple[float, float]:
    lo, hi = stats.binom.ppf([(1 - level) / 2, (1 + level) / 2], reps, alpha)
    return lo / reps, hi / reps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tests", nargs="+", default=list(TESTS))
    ap.add_argument("--n", nargs="+", type=int, default=[500, 2000])
    ap.add_argument("--classes", nargs="+", type=int, default=[2, 3])
    ap.add_argument("--x", nargs="+", default=["continuous", "binary"])
    ap.add_argument("--reps", type=int, default=200)
    ap.add_argument("--power-reps", type=int, default=50)
    ap.add_argument("--beta", type=float, default=None,
                    help="alternative strength (default 1.0 at n=500, 0.5 at n>=2000)")
    ap.add_argument("--permutations", type=int, default=99)
    ap.add_argument("--power-only", action="store_true", help="skip the H0 draws")
    ap.add_argument("--out", default=None, help="append rows to this CSV")
    args = ap.parse_args()
    band = binomial_band(args.reps)
    print(f"99% binomial band for the H0 rejection rate at alpha=0.05 with {args.reps} reps: "
          f"[{band[0]:.3f}, {band[1]:.3f}]")
    header = ["test", "n", "classes", "x", "hypothesis", "beta", "reps", "reject_0.05", "reject_0.01",
              "in_band", "seconds_per_call"]
    print(" ".join(f"{h:>12}" for h in header))
    rows = []
    for n in args.n:
        beta_alt = args.beta if args.beta is not None else (1.0 if n < 2000 else 0.5)
        for classes in args.classes:
            for x_kind in args.x:
                plan = [("H0", 0.0, args.reps), ("H1", beta_alt, args.power_reps)]
                for hyp, beta, reps in plan[1:] if args.power_only else plan:
                    draws = [draw(n, classes, x_kind, beta, np.random.default_rng(1000 * r + n))
                             for r in range(reps)]
                    for name in args.tests:
                        opts = {"permutations": args.permutations}
                        t0 = time.perf_counter()
                        with threadpool_limits(1):
                            p = np.array([TESTS[name](x, y, z, seed=r, **opts)
                                          for r, (x, y, z) in enumerate(draws)])
                        sec = (time.perf_counter() - t0) / reps
                        # p <= alpha: a valid p-value has P(p <= alpha) <= alpha, and with B = 99 the smallest
                        # permutation p-value is exactly 0.01
                        r05, r01 = np.mean(p <= 0.05), np.mean(p <= 0.01)
                        in_band = "" if hyp == "H1" else str(band[0] <= r05 <= band[1])
                        row = [name, n, classes, x_kind, hyp, beta, reps, f"{r05:.3f}", f"{r01:.3f}",
                               in_band, f"{sec:.3f}"]
                        rows.append(row)
                        print(" ".join(f"{str(v):>12}" for v in row), flush=True)
                        if args.out:
                            new = not _exists(args.out)
                            with open(args.out, "a", newline="") as fh:
                                w = csv.writer(fh)
                                if new:
                                    w.writerow(header)
                                w.writerow(row)


def _exists(path: str) -> bool:
    import os
    return os.path.exists(path)


if __name__ == "__main__":
    main()
