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
"""

from __future__ import annotations

import argparse
import math
import platform
import time

import numpy as np

from medattn.analysis import sequential as seq
from medattn.analysis import stats

DESIGNS = [(2, 10), (3, 30), (5, 30)]  # (batch B, max splits N)
SDS = [0.5, 1.0, 2.0, 4.0]  # sd of one paired difference, pp
MARGIN = 1.0


def simulate(delta: float, sd: float, r: float, n_rep: int, n_max: int, rng) -> np.ndarray:
    """``(n_rep, n_max)`` paired differences (pp) under the equicorrelated model."""
    rho = r / (1 + r)
    c = rng.standard_normal((n_rep, 1)) * sd * math.sqrt(rho)
    return delta + c + rng.standard_normal((n_rep, n_max)) * sd * math.sqrt(1 - rho)


def rate(hits: np.ndarray) -> str:
    k, n = int(hits.sum()), hits.size
    p, lo, hi = stats.clopper_pearson(k, n)
    return f"{p:.3f} [{lo:.3f}, {hi:.3f}]"


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--replicates", type=int, default=4000)
    ap.add_argument("--ratio", type=float, default=0.2 / 0.7, help="r = n_test / n_train")
    ap.add_argument("--alpha", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=7)
    a = ap.parse_args()
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
