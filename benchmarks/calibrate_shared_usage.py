"""Coverage of Table 3's CI of a CMI difference between two models on a shared test set.

Two simulated "models" are trained on J splits and tested on the same n images (an OOD set).
Given a binary label Z, a feature X ~ N(0, 1) and, per image, each model's own affinity
u ~ N(0, tau^2) (the same in every split: the image-specific part of its output), model m's output
on split j is ``Y = a_mj X + u_m + e`` with split-by-image noise e ~ N(0, s^2). Its conditional
mutual information is known in closed form, ``I = 0.5 log(1 + a^2 / (tau^2 + s^2))`` nats, and
the per-split coefficient ``a_mj = a_m + sigma (sqrt(rho) c_m + sqrt(1 - rho) e_mj)`` has a
learner effect correlated between splits by rho = 0.2 (the overlap r = rho / (1 - rho) = 0.25 of
the corrected test). The truth is the population mean over learners of I_A - I_B, by
Gauss-Hermite quadrature. Each study draws new images, learners and noise, runs CMIknn on each
run (its effect: the estimate minus its shuffle mean, as Table 3) and the image jackknife
(:mod:`medattn.analysis.features.shared_test_usage`), then the corrected paired t-test of the
differences with and without the image term. Rates with 95% Clopper-Pearson intervals.

    PYTHONPATH=src python benchmarks/calibrate_shared_usage.py --replicates 500 --case null &
    PYTHONPATH=src python benchmarks/calibrate_shared_usage.py --replicates 500 --case alternative
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from medattn.analysis.citests.cmiknn import cmiknn
from medattn.analysis.features.shared_test_usage import BLOCKS, cmi_jackknife, jackknife_variance
from medattn.analysis.features.summary import corrected_t
from medattn.analysis.stats import clopper_pearson

TAU2, S2, SIGMA, RHO = 1.5, 0.1, 0.05, 0.2
RATIO = RHO / (1 - RHO)


def true_cmi(a: float) -> float:
    """Population mean over learners of the CMI of a model with mean coefficient ``a``."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(60)
    coef = a + SIGMA * nodes  # the coefficient's marginal: N(a, sigma^2)
    return float(np.sum(weights * 0.5 * np.log1p(coef**2 / (TAU2 + S2))) / weights.sum())


def study(rng: np.random.Generator, n: int, splits: int, a: float, b: float,
          permutations: int) -> tuple[float, np.ndarray, float]:
    """One study: ``(mean difference, differences, image variance of the mean difference)``."""
    z = rng.integers(0, 2, n)
    x = rng.standard_normal(n)
    ids = np.array([f"img{i:05d}-{rng.integers(1 << 30)}" for i in range(n)])
    u = rng.standard_normal((2, n)) * np.sqrt(TAU2)
    learner = rng.standard_normal(2)
    diffs, full, without, n_out = [], 0.0, np.zeros(BLOCKS), None
    for _ in range(splits):
        effects = []
        for m, mean in enumerate((a, b)):
            coef = mean + SIGMA * (np.sqrt(RHO) * learner[m]
                                   + np.sqrt(1 - RHO) * rng.standard_normal())
            y = coef * x + u[m] + rng.standard_normal(n) * np.sqrt(S2)
            res = cmiknn(x, y, z, seed=int(rng.integers(1 << 31)), permutations=permutations,
                         full=True)
            jk = cmi_jackknife(x, y, z, ids, seed=int(rng.integers(1 << 31)))
            sign = 1.0 if m == 0 else -1.0
            full += sign * jk["full"] / splits
            without += sign * jk["without"] / splits
            n_out = jk["n_out"]
            effects.append(res.effect)
        diffs.append(effects[0] - effects[1])
    image_var = jackknife_variance(full, without, n, n_out)
    return float(np.mean(diffs)), np.array(diffs), image_var


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--replicates", type=int, default=500, help="studies per case")
    p.add_argument("--images", type=int, default=300, help="shared test images")
    p.add_argument("--splits", type=int, default=8, help="J splits (runs per model)")
    p.add_argument("--permutations", type=int, default=20, help="CMIknn shuffles per run")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--case", choices=["null", "alternative", "both"], default="both",
                   help="which case to run (two processes can share the work)")
    p.add_argument("--every", type=int, default=0,
                   help="also print the rates so far every this many studies (0: at the end)")
    args = p.parse_args()
    cases = {"null (same model)": (0.8, 0.8), "alternative": (0.8, 0.5)}
    if args.case != "both":
        cases = {k: v for k, v in cases.items() if k.startswith(args.case)}
    print(f"n = {args.images} shared images, J = {args.splits}, r = {RATIO:.3g}, "
          f"{BLOCKS} jackknife blocks, {args.replicates} studies per case")
    print("| case | true difference (nats) | mean estimate | variance | coverage [95% CP] "
          "| mean CI width | studies |")
    print("|---|---|---|---|---|---|---|")
    for name, (a, b) in cases.items():
        truth = true_cmi(a) - true_cmi(b)
        rng = np.random.default_rng([args.seed, 0 if name.startswith("null") else 1])
        hits = {"splits + test images": [], "splits only": []}
        widths = {k: [] for k in hits}
        means, t0 = [], time.time()
        for rep in range(args.replicates):
            mean, diffs, image_var = study(rng, args.images, args.splits, a, b,
                                           args.permutations)
            means.append(mean)
            for label, v in (("splits + test images", image_var), ("splits only", 0.0)):
                ci = corrected_t(diffs, RATIO, image_var=v, n_images=BLOCKS)
                hits[label].append(ci["low"] <= truth <= ci["high"])
                widths[label].append(ci["high"] - ci["low"])
            if args.every and (rep + 1) % args.every == 0 and rep + 1 < args.replicates:
                _rows(name, truth, means, hits, widths, "so far: ")
        _rows(name, truth, means, hits, widths)
        print(f"  ({time.time() - t0:.0f} s)", flush=True)


def _rows(name, truth, means, hits, widths, prefix: str = "") -> None:
    est = f"{np.mean(means):+.4f} (se {np.std(means, ddof=1) / np.sqrt(len(means)):.4f})"
    for label in hits:
        k, m = int(np.sum(hits[label])), len(hits[label])
        rate, lo, hi = clopper_pearson(k, m)
        print(f"{prefix}| {name} | {truth:+.4f} | {est} | {label} | {rate:.3f} [{lo:.3f}, "
              f"{hi:.3f}] | {np.mean(widths[label]):.4f} | {m} |", flush=True)


if __name__ == "__main__":
    main()
