"""Coverage and type-I error of Table 2's marking test when every run shares its test images.

Known truth: two learners A and B whose difference in balanced accuracy on the *population* of
test images is known exactly (0 under the null, ``--delta`` pp under the alternative). A study
trains both on J = ``--splits`` splits and tests them

- in-distribution (ID): each split tests its own random 20% of a pool of ``n / 0.2`` images
  (different, overlapping test sets; the corrected t-test's home ground), or
- out-of-distribution (OOD): every split tests the *same* n images, drawn once per study from
  the OOD population (as every medattn run is tested on the whole OOD set).

Per-image correctness (probit model, 2 classes with prevalence 0.5):
``correct_M(i, j) = [z_i + w_Mi + e_Mij < theta_M,y_i + u_Mj]`` with image difficulty
``z_i ~ N(0, 1)``, a per-image affinity of each model ``w_Mi ~ N(0, sw^2)`` (the images on
which A and B differ), split-by-image noise ``e_Mij ~ N(0, se^2)`` and a per-split learner
effect ``u_Mj = sl (sqrt(rho) c_M + sqrt(1 - rho) f_Mj)``: ``c_M`` is shared by the J splits of a
study (overlapping training sets; rho = 0.2 = n_test / n, the correlation the Nadeau-Bengio
correction assumes), ``f_Mj`` is new per split. A model's population recall of class y is then
exactly ``Phi(theta_M,y / sqrt(1 + sw^2 + se^2 + sl^2))``, so the true difference in balanced
accuracy (pp) is known in closed form; the script checks it on 2 000 000 simulated images.

Per study the J differences d_j go through the marking test as ``medattn compare`` runs it: ID
sets (each split its own test images): the corrected t-test, se^2 = s_d^2 (1/J + r); OOD sets
(shared images): the corrected variance plus the test-image sampling variance of the mean
difference from the per-image predictions (``bootstrap.image_sampling_variance``), with
Welch-Satterthwaite df (``stats.corrected_ttest(..., image_var=, n_images=)``). r = n_test /
n_train = 0.2 / 0.7 of the ID splits, as the pipeline uses for OOD sets too. For contrast, the
old OOD mark (corrected variance only) and the naive paired t-test. Prints, per cell, the 95%
CI's coverage of the true difference, the rejection rate (type-I error under the null) and the
power (a difference found, in the right direction, under the alternative), with 95%
Clopper-Pearson intervals.

    nice -n 10 python benchmarks/calibrate_shared_test.py --replicates 1000
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
from scipy import stats as ss

from rates import rate

from medattn.analysis import stats
from medattn.analysis.bootstrap import SplitPredictions, image_sampling_variance

R = 0.2 / 0.7  # n_test / n_train of 70/10/20 splits
RHO = 0.2  # correlation of a learner's effect between splits of one study (training overlap)
THETA_A = np.array([0.95, 0.75])  # per class: recall about 0.74 and 0.66 at the default sds


def scale(args) -> float:
    return float(np.sqrt(1 + args.sw**2 + args.se**2 + args.sl**2))


def truth(theta_a, theta_b, args) -> float:
    """The population difference of balanced accuracy A - B (pp), exact."""
    s = scale(args)
    return float(100 * np.mean(ss.norm.cdf(theta_a / s) - ss.norm.cdf(theta_b / s)))


def shift_for(delta: float, args) -> float:
    """The probit shift of B's thresholds that makes the population difference ``delta`` pp."""
    from scipy.optimize import brentq

    return brentq(lambda s: truth(THETA_A, THETA_A - s, args) - delta, 0.0, 2.0, xtol=1e-12)


def bacc(y: np.ndarray, correct: np.ndarray) -> np.ndarray:
    """Balanced accuracy (pp) per row of ``correct`` (J, n) for labels ``y`` (J, n) or (n,)."""
    y = np.broadcast_to(y, correct.shape)
    r = [(correct & (y == k)).sum(1) / np.maximum((y == k).sum(1), 1) for k in (0, 1)]
    return 50.0 * (r[0] + r[1])


def study(rng, n: int, shared: bool, shift: float, args):
    """One study: per split, image ids, labels and the correctness of A, B (null) and B (alt)."""
    j = args.splits
    n_pool = n if shared else int(round(n / 0.2))
    y = (rng.random(n_pool) < 0.5).astype(np.intp)
    z = rng.standard_normal(n_pool, dtype=np.float32)
    w = args.sw * rng.standard_normal((3, n_pool), dtype=np.float32)  # A, B null, B alt
    w[2] = w[1]  # common random numbers: the alternative's B differs only by its thresholds
    # ID: each split's test set is a random n of the pool (a shuffle per split, O(pool)).
    ids = (np.tile(np.arange(n), (j, 1)) if shared else
           rng.permuted(np.tile(np.arange(n_pool), (j, 1)), axis=1)[:, :n])
    c = rng.standard_normal(3)
    f = rng.standard_normal((3, j))
    c[2], f[2] = c[1], f[1]
    u = args.sl * (np.sqrt(RHO) * c[:, None] + np.sqrt(1 - RHO) * f)  # (3, J)
    e = args.se * rng.standard_normal((2, j, n), dtype=np.float32)
    yy = y[ids]
    base = z[ids]
    theta = np.stack([THETA_A, THETA_A, THETA_A - shift])  # (3, 2 classes)
    correct = []
    for m, noise in ((0, e[0]), (1, e[1]), (2, e[1])):
        correct.append(base + w[m][ids] + noise < theta[m][yy] + u[m][:, None].astype(np.float32))
    return ids, yy, correct


def marks(ids, yy, ca, cb, shared: bool, n: int, alpha: float) -> dict[str, tuple]:
    """Per test: (ci_low, ci_high, p) of the mean difference A - B (pp)."""
    d = bacc(yy, ca) - bacc(yy, cb)
    out = {"corrected": stats.corrected_ttest(d, R, alpha),
           "naive paired": stats.paired_ttest(d, alpha)}
    if shared:
        splits = [SplitPredictions(ids[k], yy[k], ca[k], cb[k]) for k in range(len(d))]
        v, n_img = image_sampling_variance(splits, 2)
        out["marking"] = stats.corrected_ttest(d, R, alpha, image_var=v, n_images=n_img)
    else:
        out["marking"] = out["corrected"]
    return {k: (t.ci_low, t.ci_high, t.p) for k, t in out.items()}


def check_truth(shift: float, args) -> tuple[float, float]:
    """The closed-form difference against 2 000 000 simulated images and learners (pp, se)."""
    rng = np.random.default_rng([args.seed, 99])
    n = 2_000_000
    y = (rng.random(n) < 0.5).astype(np.intp)
    zz = rng.standard_normal(n)
    da = zz + args.sw * rng.standard_normal(n) + args.se * rng.standard_normal(n)
    db = zz + args.sw * rng.standard_normal(n) + args.se * rng.standard_normal(n)
    ua, ub = args.sl * rng.standard_normal((2, n))  # a learner per image: marginal over learners
    ca = da < THETA_A[y] + ua
    cb = db < (THETA_A - shift)[y] + ub
    d = bacc(y, ca[None])[0] - bacc(y, cb[None])[0]
    se = 100 * np.sqrt(np.var(ca.astype(float) - cb) / n)  # two classes of n/2: var v / n
    return float(d), float(se)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--replicates", type=int, default=1000)
    ap.add_argument("--splits", type=int, default=10, help="J (default 10)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[300, 20_000],
                    help="test images per split (default 300 20000)")
    ap.add_argument("--delta", type=float, default=3.0, help="true difference (pp), alternative")
    ap.add_argument("--sw", type=float, default=0.8, help="sd of a model's per-image affinity")
    ap.add_argument("--se", type=float, default=0.5, help="sd of the split-by-image noise")
    ap.add_argument("--sl", type=float, default=0.06, help="sd of the per-split learner effect")
    ap.add_argument("--alpha", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    t0 = time.perf_counter()
    shift = shift_for(args.delta, args)
    mc, mc_se = check_truth(shift, args)
    print(f"true population difference under the alternative {truth(THETA_A, THETA_A - shift, args):.3f}"
          f" pp (closed form); on 2 000 000 simulated images {mc:.3f} pp (se {mc_se:.3f}); "
          f"null: 0 exactly")
    tests = ["marking", "corrected", "naive paired"]
    print(f"{args.replicates} studies per cell, J = {args.splits}, r = {R:.4f}, alpha = "
          f"{args.alpha}; machine {platform.machine()} {platform.python_version()}")
    print("| set | images | test | coverage, null | coverage, alternative | type-I error | "
          f"power at {args.delta:g} pp |")
    print("|---|---|---|---|---|---|---|")
    for shared in (False, True):
        for n in args.sizes:
            cover = {t: [0, 0] for t in tests}
            reject = {t: 0 for t in tests}
            power = {t: 0 for t in tests}
            for rep in range(args.replicates):
                rng = np.random.default_rng([args.seed, int(shared), n, rep])
                ids, yy, (ca, cb0, cb1) = study(rng, n, shared, shift, args)
                for h, (cb, true) in enumerate(((cb0, 0.0), (cb1, args.delta))):
                    for t, (lo, hi, p) in marks(ids, yy, ca, cb, shared, n, args.alpha).items():
                        cover[t][h] += lo <= true <= hi
                        if h == 0:
                            reject[t] += p < args.alpha
                        else:  # found, in the right direction
                            power[t] += p < args.alpha and lo > 0
            for t in tests:
                if not shared and t == "corrected":
                    continue  # the marking test in-distribution
                name = {"marking": "marking test (" + ("corrected + test images" if shared
                                                       else "corrected") + ")",
                        "corrected": "old OOD mark (corrected only)"}.get(t, t)
                print(f"| {'OOD' if shared else 'ID'} | {n} | {name} | "
                      f"{rate(cover[t][0], args.replicates)} | "
                      f"{rate(cover[t][1], args.replicates)} | "
                      f"{rate(reject[t], args.replicates)} | "
                      f"{rate(power[t], args.replicates)} |", flush=True)
    print(f"took {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
