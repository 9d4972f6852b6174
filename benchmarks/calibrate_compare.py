"""Type-I error and power of Table 2's tests on J overlapping random splits, with known truth.

Each replicate draws a fresh pool of ``--pool`` samples from a fixed population (3 classes with
priors 0.5/0.3/0.2, Gaussian features whose class means differ), makes J = ``--splits`` random
70/10/20 splits of it (the study's protocol: every model trained on the same splits), trains
cheap scikit-learn learners on each training part and scores balanced accuracy on each test part.
The learners see *views* of the features: the features plus independent Gaussian noise of sd tau
(a fixed noise draw per sample, i.e. part of the data).

- Null (equal population accuracy): learner A sees a view with noise tau_A, learner B another
  view with the same tau_A. By symmetry their population balanced accuracies are equal.
- Alternative (A better by ``--delta`` pp): B sees a noisier view, tau_B > tau_A, calibrated before
  the replicates so that the population balanced accuracy of B (expected over training sets of
  the study's size) is ``--delta`` pp below A's. Both learners are linear, so the population
  balanced accuracy of a fitted model is computed exactly (a bivariate normal orthant
  probability per class); the script checks it against a held-out sample of 10^6 and prints the
  gap at tau_B on 200 training sets the calibration did not use.

Per replicate the J differences d_j = bacc_A - bacc_B (pp) go through each test at alpha = 0.05:
the corrected resampled t-test (r = n_test / n_train), the Bayesian correlated t-test's
"better"/"worse" decision (posterior probability > 0.95 outside the +-``--margin`` pp ROPE), Welch's
t-test on the two sets of J accuracies (the paper's) and the naive paired t-test. Prints the
rejection rates with 95% Clopper-Pearson intervals: the type-I error under the null, the power
(rejection in the right direction) under the alternative.

    python benchmarks/calibrate_compare.py --replicates 1000
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy import stats as ss
from threadpoolctl import threadpool_limits

from rates import rate

from medattn.analysis import stats

PRIORS = np.array([0.5, 0.3, 0.2])
# Class means of the 6 features (unit variance): population balanced accuracy about 74% for
# learner A (like ISIC in the paper).
MEANS = 1.8 * np.array([[0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
                        [1.1, 0.6, -0.4, 0.0, 0.3, 0.0],
                        [0.2, 1.2, 0.5, -0.6, 0.0, 0.3]])
FRACTIONS = (0.7, 0.1, 0.2)
TESTS = ["corrected t-test", "Bayesian decision", "Welch (paper)", "naive paired t-test"]


def learner(name: str):
    if name == "lda":
        from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
        return LinearDiscriminantAnalysis()
    from sklearn.linear_model import LogisticRegression
    return LogisticRegression(max_iter=300, class_weight="balanced")


def draw(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    y = rng.choice(len(PRIORS), size=n, p=PRIORS)
    return MEANS[y] + rng.standard_normal((n, MEANS.shape[1])), y


def bacc(y: np.ndarray, pred: np.ndarray) -> float:
    return float(np.mean([np.mean(pred[y == k] == k) for k in np.unique(y)]))


def population_bacc(model, tau: float) -> float:
    """Exact population balanced accuracy (%) of a fitted linear classifier on a view with noise
    sd ``tau``: per class k the view is N(mean_k, (1 + tau^2) I), the score differences
    s_k - s_c are jointly normal, and the recall is their positive-orthant probability."""
    w, b = np.atleast_2d(model.coef_), np.ravel(model.intercept_)
    recalls = []
    for k in range(len(PRIORS)):
        others = [c for c in range(len(PRIORS)) if c != k]
        a = w[k] - w[others]
        mean = a @ MEANS[k] + b[k] - b[others]
        cov = (1 + tau**2) * a @ a.T
        recalls.append(ss.multivariate_normal(-mean, cov).cdf(np.zeros(len(others))))
    return 100 * float(np.mean(recalls))


def population_gap(tau_a: float, tau_b: float, kind: str, n_train: int, reps: int,
                   seed: int) -> tuple[float, float, float]:
    """Population bacc of A and of B (%), averaged over ``reps`` training sets of ``n_train``,
    and the sd of the per-training-set difference. The same training sets and noise draws for
    every tau (common random numbers) make the gap a smooth function of tau_b."""
    a, b = [], []
    for r in range(reps):
        g = np.random.default_rng([seed, 2, r])
        x, y = draw(n_train, g)
        za, zb = g.standard_normal((2, *x.shape))
        a.append(population_bacc(learner(kind).fit(x + tau_a * za, y), tau_a))
        b.append(population_bacc(learner(kind).fit(x + tau_b * zb, y), tau_b))
    a, b = np.array(a), np.array(b)
    return float(a.mean()), float(b.mean()), float(np.std(a - b, ddof=1))


def held_out_check(tau: float, kind: str, n_train: int, n_eval: int, seed: int) -> tuple:
    """The exact population bacc of one fitted model and its bacc on a large held-out sample."""
    rng = np.random.default_rng([seed, 4])
    x, y = draw(n_train, rng)
    model = learner(kind).fit(x + tau * rng.standard_normal(x.shape), y)
    xe, ye = draw(n_eval, rng)
    pred = model.predict(xe + tau * rng.standard_normal(xe.shape))
    recall = np.array([np.mean(pred[ye == k] == k) for k in range(len(PRIORS))])
    se = np.sqrt(np.sum(recall * (1 - recall) / np.bincount(ye))) / len(PRIORS)
    return population_bacc(model, tau), 100 * recall.mean(), 100 * se


def calibrate(tau_a: float, delta: float, kind: str, n_train: int, seed: int) -> float:
    """tau_b with population bacc(A) - bacc(B) = delta pp (bisection on common random numbers)."""
    lo, hi = tau_a, tau_a + 4.0
    for _ in range(16):
        mid = (lo + hi) / 2
        a, b, _ = population_gap(tau_a, mid, kind, n_train, 40, seed)
        lo, hi = (mid, hi) if a - b < delta else (lo, mid)
    return (lo + hi) / 2


def replicate(rep: int, args, tau_a: float, tau_b: float) -> dict[str, np.ndarray]:
    """Accuracies (%) of A, B under the null (B0) and B under the alternative (B1) per split."""
    rng = np.random.default_rng([args.seed, 3, rep])
    x, y = draw(args.pool, rng)
    za, z0, z1 = rng.standard_normal((3, *x.shape))
    views = {"A": x + tau_a * za, "B0": x + tau_a * z0, "B1": x + tau_b * z1}
    n_train = int(round(FRACTIONS[0] * args.pool))
    n_test = int(round(FRACTIONS[2] * args.pool))
    out = {k: np.empty(args.splits) for k in views}
    for j in range(args.splits):
        perm = rng.permutation(args.pool)
        train, test = perm[:n_train], perm[-n_test:]
        for k, v in views.items():
            model = learner(args.learner).fit(v[train], y[train])
            out[k][j] = 100 * bacc(y[test], model.predict(v[test]))
    return out


def decisions(a: np.ndarray, b: np.ndarray, r: float, margin: float, alpha: float) -> dict:
    """Per test: -1 (A worse), +1 (A better) or 0 (no decision)."""
    d = a - b
    sign = int(np.sign(d.mean()))
    corrected = stats.corrected_ttest(d, r, alpha)
    welch = ss.ttest_ind(a, b, equal_var=False)
    naive = stats.paired_ttest(d, alpha)
    dec = stats.bayes_decision(stats.bayes_correlated(d, r, margin))
    return {"corrected t-test": sign * (corrected.p < alpha),
            "Bayesian decision": {"better": 1, "worse": -1}.get(dec, 0),
            "Welch (paper)": sign * (welch.pvalue < alpha),
            "naive paired t-test": sign * (naive.p < alpha),
            "equivalent": dec == "equivalent"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--replicates", type=int, default=1000)
    ap.add_argument("--splits", type=int, default=10, help="J, splits per replicate (default 10)")
    ap.add_argument("--pool", type=int, default=2000, help="samples per replicate (default 2000)")
    ap.add_argument("--learner", choices=["lda", "logreg"], default="lda")
    ap.add_argument("--tau", type=float, default=0.8, help="noise sd of learner A's view")
    ap.add_argument("--delta", type=float, default=2.0, help="true difference (pp) for the power")
    ap.add_argument("--margin", type=float, default=1.0, help="ROPE of the Bayesian test (pp)")
    ap.add_argument("--alpha", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    t0 = time.perf_counter()
    n_train = int(round(FRACTIONS[0] * args.pool))
    r = round(FRACTIONS[2] * args.pool) / n_train
    with threadpool_limits(1):
        tau_b = calibrate(args.tau, args.delta, args.learner, n_train, args.seed)
        # Checked on training sets the calibration did not use.
        a, b, sd = population_gap(args.tau, args.tau, args.learner, n_train, 200, args.seed + 1)
        print(f"null: population bacc A {a:.2f}%, B {b:.2f}% (equal by symmetry; over 200 "
              f"training sets the difference is {a - b:+.2f} pp, se {sd / 200**0.5:.2f})")
        a, b, sd = population_gap(args.tau, tau_b, args.learner, n_train, 200, args.seed + 1)
        print(f"alternative: tau_A {args.tau}, tau_B {tau_b:.3f}: population bacc A {a:.2f}%, "
              f"B {b:.2f}%, difference {a - b:+.2f} pp (se {sd / 200**0.5:.2f}; target "
              f"{args.delta:+.2f})")
        exact, sample, se = held_out_check(tau_b, args.learner, n_train, 1_000_000, args.seed)
        print(f"population bacc of one fitted model of B computed exactly {exact:.2f}%, on "
              f"1 000 000 held-out samples {sample:.2f}% (se {se:.2f})")
        print(f"calibration took {time.perf_counter() - t0:.0f} s; {args.replicates} replicates "
              f"of J = {args.splits} splits of {args.pool} samples, n_test / n_train = {r:.4f}, "
              f"learner {args.learner}", flush=True)
        counts = {"null": {t: 0 for t in TESTS + ["equivalent"]},
                  "alt": {t: 0 for t in TESTS + ["equivalent"]}}
        t1 = time.perf_counter()
        for rep in range(args.replicates):
            acc = replicate(rep, args, args.tau, tau_b)
            for case, other, want in (("null", "B0", None), ("alt", "B1", 1)):
                dec = decisions(acc["A"], acc[other], r, args.margin, args.alpha)
                for t in TESTS:
                    counts[case][t] += (dec[t] != 0) if want is None else (dec[t] == want)
                counts[case]["equivalent"] += dec["equivalent"]
            if (rep + 1) % max(1, args.replicates // 10) == 0:
                print(f"  {rep + 1}/{args.replicates} replicates, "
                      f"{time.perf_counter() - t1:.0f} s", flush=True)
    n = args.replicates
    print(f"\n| test (alpha {args.alpha}) | type-I error, true difference 0 [95% CI] | "
          f"power at a true difference of {args.delta:g} pp [95% CI] |")
    print("|---|---|---|")
    for t in TESTS:
        label = t if t != "Bayesian decision" else f"Bayesian decision (ROPE ±{args.margin:g} pp)"
        print(f"| {label} | {rate(counts['null'][t], n)} | {rate(counts['alt'][t], n)} |")
    print(f"\nBayesian decision 'equivalent' (within ±{args.margin:g} pp): "
          f"{rate(counts['null']['equivalent'], n)} under the null, "
          f"{rate(counts['alt']['equivalent'], n)} at {args.delta:g} pp.")
    print(f"Total {time.perf_counter() - t0:.0f} s.")


if __name__ == "__main__":
    main()
