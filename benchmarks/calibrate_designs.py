"""Type-I error and power of the corrected t-test for random splits and repeated grouped k-fold.

Known truth, cheap learners, the study's designs. Each replicate draws a fresh *grouped* pool
(``--groups`` lesions of 1 + Poisson(0.8) images, about 2 000 images; a lesion's images share its
class and a lesion-level feature offset, so leakage across parts would matter) from a fixed
population (3 classes, priors 0.5/0.3/0.2, 6 Gaussian features). Every design of the replicate
splits that pool:

- random grouped, class-stratified 70/10/20 splits, J = 10, 20, 30 (a vectorised stand-in for
  ``medattn.data.make_split``: same fractions, groups and strata, not its exact greedy order);
- repeated grouped k-fold, 5x1, 5x2, 5x4, 10x1, with the library's own splitter
  (``medattn.data.kfold.kfold_assign``; validation 10 % of the pool, left out of training as
  model selection would use it).

Two learners, each trained once per split for model A and once for model B (the same splits):
``centroid`` (nearest class centroid: no seed noise) and ``rf`` (nearest centroid on 8 random
tanh features whose weights are drawn from the run's training seed and the model: seed noise,
like a randomly initialised network). A and B see *views* of the features with independent
per-image noise (sd 0.8), so under the null their population balanced accuracies are equal by
symmetry. The alternative B' errs on a fixed random share q of the images (its prediction
replaced by a random class): its population balanced accuracy is (1 - q) p + q / 3 with p that
of B, so q = 2 pp / (p - 100/3) makes A exactly 2 pp better; p (per design, per learner) is the
mean accuracy of A over the calibration stage's replicates.

Two stages with independent replicates:

1. *calibration* (``--calibrate`` replicates, null only): per design the smallest multiplier
   c >= 1 of Bouckaert & Frank's term, variance factor 1/J + c * n_test / n_train, whose
   rejection rate at alpha is <= ``--target`` for every learner (c = 1 is their correction);
2. *validation* (``--replicates``, fresh draws): the type-I error of the test with B&F's factor
   and with the calibrated one, the Bayesian correlated t-test's false decisions, and the power
   at a true 2 pp, with 95 % Clopper-Pearson intervals.

    nice -n 10 python benchmarks/calibrate_designs.py --calibrate 1500 --replicates 1000
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
from scipy import stats as ss

from rates import rate

from medattn.analysis import stats
from medattn.data.kfold import kfold_assign

PRIORS = np.array([0.5, 0.3, 0.2])
MEANS = 1.6 * np.array([[0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
                        [1.1, 0.6, -0.4, 0.0, 0.3, 0.0],
                        [0.2, 1.2, 0.5, -0.6, 0.0, 0.3]])
K = len(PRIORS)
TAU = 0.8          # noise sd of each model's view
N_RF = 8           # random features of the `rf` learner
LEARNERS = ("centroid", "rf")
DESIGNS = {"random J=10": ("random", 10, 0), "random J=20": ("random", 20, 0),
           "random J=30": ("random", 30, 0), "k-fold 5x1": ("kfold", 5, 1),
           "k-fold 5x2": ("kfold", 5, 2), "k-fold 5x4": ("kfold", 5, 4),
           "k-fold 10x1": ("kfold", 10, 1)}
C_GRID = np.round(np.arange(1.0, 6.001, 0.05), 2)


def draw_pool(rng: np.random.Generator, n_groups: int):
    """Images (n, 6), labels (n,), group codes (n,), group classes (G,) of one pool."""
    gy = rng.choice(K, size=n_groups, p=PRIORS)
    sizes = 1 + rng.poisson(0.8, n_groups)
    codes = np.repeat(np.arange(n_groups), sizes)
    y = gy[codes]
    offset = rng.standard_normal((n_groups, MEANS.shape[1]))
    x = MEANS[y] + np.sqrt(0.5) * offset[codes] + np.sqrt(0.5) * rng.standard_normal(
        (len(y), MEANS.shape[1]))
    return x, y, codes, gy


def random_parts(rng, codes, gy, n_splits: int, fr=(0.7, 0.1, 0.2)) -> np.ndarray:
    """(n_splits, n) parts (0 train, 1 val, 2 test) of grouped, stratified random splits."""
    sizes = np.bincount(codes)
    out = np.empty((n_splits, len(codes)), np.int8)
    edges = np.cumsum(fr)[:2]
    for j in range(n_splits):
        order = np.lexsort((rng.random(len(gy)), gy))
        s = gy[order]
        cum = np.cumsum(sizes[order])
        start = np.r_[0, np.flatnonzero(np.diff(s)) + 1]
        base = np.repeat(np.r_[0, cum[start[1:] - 1]], np.diff(np.r_[start, len(s)]))
        tot = np.bincount(s, weights=sizes[order])[s]
        mid = (cum - base - sizes[order] / 2) / tot  # share of the class before the group's middle
        part = np.empty(len(gy), np.int8)
        part[order] = np.searchsorted(edges, mid, side="right")
        out[j] = part[codes]
    return out


def kfold_parts(seed: int, codes, y, folds: int, repeats: int) -> np.ndarray:
    out = []
    for rep in range(repeats):
        test_fold, val = kfold_assign(codes, y, seed + rep, folds, 0.1)
        for i in range(folds):
            out.append(np.where(test_fold == i, 2, np.where(val[i], 1, 0))[codes])
    return np.array(out, np.int8)


def predict(view: np.ndarray, y: np.ndarray, parts: np.ndarray, learner: str,
            seeds: np.ndarray, model: int) -> np.ndarray:
    """(S, n) predicted classes of the learner trained on each split's train part."""
    if learner == "rf":  # per run: random weights from (training seed, model)
        w = np.stack([np.random.default_rng([int(s), model, 7]).standard_normal(
            (view.shape[1] + 1, N_RF)) for s in seeds])
        feats = np.tanh(view @ w[:, :-1] + w[:, None, -1] * 0.5)         # (S, n, h)
    else:
        feats = view                                                     # (n, h), shared
    train = (parts == 0).astype(float)
    wts = train[:, None, :] * (y[None, :] == np.arange(K)[:, None])[None]  # (S, K, n)
    cent = (wts @ feats) / wts.sum(2)[:, :, None]                       # (S, K, h)
    d2 = (cent * cent).sum(2)[:, None, :] - 2 * feats @ cent.transpose(0, 2, 1)
    return d2.argmin(2)


def bacc(pred: np.ndarray, y: np.ndarray, parts: np.ndarray) -> np.ndarray:
    """(S,) balanced accuracy (%) on each split's test part."""
    test = parts == 2
    rec = [((pred == k) & test & (y == k)).sum(1) / (test & (y == k)).sum(1) for k in range(K)]
    return 100 * np.mean(rec, axis=0)


def replicate(rep: int, stage: int, args, q: dict | None) -> dict:
    """Per design and learner: accuracies of A, B (null) and, with ``q``, B' (alternative)."""
    rng = np.random.default_rng([args.seed, stage, rep])
    x, y, codes, gy = draw_pool(rng, args.groups)
    views = x[None] + TAU * rng.standard_normal((2, *x.shape))
    swap = rng.random(len(y))
    wrong = rng.integers(K, size=len(y))
    out = {}
    for name, (scheme, a, b) in DESIGNS.items():
        if scheme == "random":
            parts = random_parts(rng, codes, gy, a)
        else:
            parts = kfold_parts(int(rng.integers(2**31)), codes, y, a, b)
        seeds = rng.integers(2**31, size=len(parts))
        for learner in LEARNERS:
            pa = predict(views[0], y, parts, learner, seeds, 0)
            pb = predict(views[1], y, parts, learner, seeds, 1)
            res = {"A": bacc(pa, y, parts), "B": bacc(pb, y, parts)}
            if q is not None:
                alt = np.where(swap < q[name, learner], wrong, pb)
                res["B'"] = bacc(alt, y, parts)
            out[name, learner] = res
    return out


def ratio(name: str) -> float:
    scheme, k, _ = DESIGNS[name]
    return 0.2 / 0.7 if scheme == "random" or k == 5 else (1 / k) / (1 - 1 / k - 0.1)


def reject(mean, sd, n, factor, alpha):
    t = np.abs(mean) / (sd * np.sqrt(factor))
    return t > ss.t.ppf(1 - alpha / 2, n - 1)


def run_stage(stage: int, n: int, args, q=None) -> dict:
    rows: dict = {}
    t0 = time.perf_counter()
    for rep in range(n):
        for key, res in replicate(rep, stage, args, q).items():
            for comp in ("B", "B'"):
                if comp in res:
                    d = res["A"] - res[comp]
                    rows.setdefault((*key, comp), []).append((d.mean(), d.std(ddof=1)))
            rows.setdefault((*key, "accA"), []).append((res["A"].mean(), 0.0))
        if (rep + 1) % max(1, n // 5) == 0:
            print(f"  stage {stage}: {rep + 1}/{n} replicates, {time.perf_counter() - t0:.0f} s",
                  flush=True)
    return {k: np.array(v) for k, v in rows.items()}


def calibrate(cal: dict, args) -> dict[str, float]:
    """Per design the smallest c on C_GRID whose null rejection rate <= target for all learners."""
    out = {}
    for name, (scheme, a, b) in DESIGNS.items():
        j = a if scheme == "random" else a * b
        ok = np.ones(len(C_GRID), bool)
        for learner in LEARNERS:
            m = cal[name, learner, "B"]
            for i, c in enumerate(C_GRID):
                ok[i] &= reject(m[:, 0], m[:, 1], j, 1 / j + c * ratio(name),
                                args.alpha).mean() <= args.target
        out[name] = float(C_GRID[np.argmax(ok)]) if ok.any() else float("inf")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calibrate", type=int, default=1500, help="stage-1 replicates")
    ap.add_argument("--replicates", type=int, default=1000, help="stage-2 replicates")
    ap.add_argument("--groups", type=int, default=1100, help="lesions per pool (~1.8 images)")
    ap.add_argument("--alpha", type=float, default=0.05)
    ap.add_argument("--target", type=float, default=0.045,
                    help="null rejection rate the calibrated factor must not exceed in stage 1")
    ap.add_argument("--delta", type=float, default=2.0)
    ap.add_argument("--margin", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="write the results here too")
    args = ap.parse_args()
    t0 = time.perf_counter()
    cal = run_stage(1, args.calibrate, args)
    c = calibrate(cal, args)
    p = {(n, lr): cal[n, lr, "accA"][:, 0].mean() for n in DESIGNS for lr in LEARNERS}
    q = {k: args.delta / (v - 100 / K) for k, v in p.items()}
    print("calibrated c:", c, flush=True)
    val = run_stage(2, args.replicates, args, q)
    n = args.replicates
    lines = [f"| design | runs per model | learner | mean bacc A (%) | n_test/n_train | c | "
             f"type-I, B&F factor | type-I, calibrated factor | Bayes false decision | "
             f"power at {args.delta:g} pp, calibrated |", "|---" * 10 + "|"]
    result = {"c": c, "rows": []}
    for name, (scheme, a, b) in DESIGNS.items():
        j = a if scheme == "random" else a * b
        r = ratio(name)
        for learner in LEARNERS:
            m0, m1 = val[name, learner, "B"], val[name, learner, "B'"]
            bf = reject(m0[:, 0], m0[:, 1], j, 1 / j + r, args.alpha).sum()
            fac = 1 / j + c[name] * r
            cal0 = reject(m0[:, 0], m0[:, 1], j, fac, args.alpha).sum()
            pw = (reject(m1[:, 0], m1[:, 1], j, fac, args.alpha) & (m1[:, 0] > 0)).sum()
            bayes = sum(stats.bayes_decision(stats.bayes_from_t(mu, sd * np.sqrt(fac), j - 1,
                                                                args.margin)) in ("better", "worse")
                        for mu, sd in m0)
            acc = val[name, learner, "accA"][:, 0].mean()
            lines.append(f"| {name} | {j} | {learner} | {acc:.1f} | {r:.3f} | {c[name]:g} | "
                         f"{rate(bf, n)} | {rate(cal0, n)} | {rate(bayes, n)} | {rate(pw, n)} |")
            result["rows"].append(dict(design=name, runs=j, learner=learner, c=c[name],
                                       bf=int(bf), calibrated=int(cal0), bayes=int(bayes),
                                       power=int(pw), n=n))
    print("\n".join(lines))
    took = time.perf_counter() - t0
    print(f"\n{args.calibrate} calibration + {n} validation replicates per cell; pools of "
          f"{args.groups} lesions; {took:.0f} s on {platform.machine()} "
          f"({platform.processor() or platform.platform()}), {time.strftime('%Y-%m-%d %H:%M')} UTC")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
