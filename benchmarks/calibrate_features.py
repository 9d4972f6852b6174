"""Calibration of Table 3's decisions where the truth is known (issue 24, items 2-4).

Three parts (``--part``), each on simulated test sets with fine diagnoses inside the 3 classes:

``trap``: the merging trap. Class "other" holds a common diagnosis (basal cell carcinoma, ~70 y,
  30 images), a frequent one (benign keratosis, ~65 y, 40) and three rare ones of different ages
  (actinic keratosis ~75 y, dermatofibroma ~35 y, vascular lesion ~45 y; 9, 9, 8 images), beside
  melanoma (~60 y, 45) and nevus (~40 y, 250): a test set of about 380 images. The "model" sees
  only the image: its logits depend on the diagnosis (each diagnosis looks different, a new look
  per study) and noise, never on age. Age is "used" when the majority of cHSIC, RCoT and CMIknn
  reject at ``--alpha`` (raw p-values: Holm over the 8 features only lowers the rate, so this is
  an upper bound for the default). Rows: the default (every diagnosis its own stratum, RCoT's
  permutation null for small strata), the old default (rare diagnoses merged into a rest stratum
  below 10 images, RCoT's LPB4 null throughout) and the 3-class label.

``effect``: one fixed dependence (calibrate_citests.draw: 3 classes, continuous x, beta) at
  200, 400 and 800 test images: the CMI effect (nats) stays put, cHSIC's and RCoT's z grow like
  n. Compared with the half-width of Table 3's CI over 10 runs (corrected, r = 0.2/0.7).

``null``: the global null of the "uses more" rule. A pool of 1000 images with fine diagnoses
  (two per class, 6 strata) and 8 features that depend on the diagnosis only; per study, J split
  seeds each draw a test set of 200 images (overlapping across splits, as random splits of one
  pool do); a base and a variant
  model, neither using any feature (their outputs depend on the diagnosis and noise only), are
  tested on each: CMIknn's CMI for each feature, then model_differences (corrected paired t-test
  over the J splits, Holm over the 8 features). Counted: studies with at least one "uses more"
  or "uses less" verdict, Holm-adjusted (the rule) and unadjusted (the old rule).

    PYTHONPATH=src python benchmarks/calibrate_features.py --part trap --reps 200
    PYTHONPATH=src python benchmarks/calibrate_features.py --part effect --reps 100
    PYTHONPATH=src python benchmarks/calibrate_features.py --part null --reps 300

Rates come with Clopper-Pearson 95% intervals; the trap's bound is the binomial 99% quantile at
alpha for the number of studies.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats
from threadpoolctl import threadpool_limits

from medattn.analysis.citests import chsic, cmiknn, rcot
from medattn.analysis.features.conditioning import diagnosis_strata, label_strata
from medattn.analysis.features.summary import model_differences
from medattn.analysis.stats import clopper_pearson
from medattn.render import markdown_table

# (label, diagnosis, test images, mean age)
TRAP_DX = [(0, "melanoma", 45, 60), (1, "nevus", 250, 40),
           (2, "basal cell carcinoma", 30, 70), (2, "benign keratosis", 40, 65),
           (2, "actinic keratosis", 9, 75), (2, "dermatofibroma", 9, 35),
           (2, "vascular lesion", 8, 45)]


def _softmax(logits: np.ndarray) -> np.ndarray:
    p = np.exp(logits - logits.max(1, keepdims=True))
    return p / p.sum(1, keepdims=True)


def trap_draw(seed: int, look_sd: float):
    """(age (n,), prediction (n, 2), label (n,), diagnosis (n,)) of one simulated study."""
    rng = np.random.default_rng(seed)
    label = np.concatenate([[lab] * c for lab, _, c, _ in TRAP_DX])
    dx = np.concatenate([[d] * c for _, d, c, _ in TRAP_DX]).astype(object)
    age = np.concatenate([a + 8 * rng.standard_normal(c) for _, _, c, a in TRAP_DX])
    look = {d: rng.normal(0, look_sd, 3) for _, d, _, _ in TRAP_DX}  # how each diagnosis looks
    logits = 2 * np.eye(3)[label] + np.array([look[d] for d in dx])
    logits += 0.7 * rng.standard_normal(logits.shape)
    return age, _softmax(logits)[:, :2], label, dx


def part_trap(args) -> pd.DataFrame:
    settings = {  # name -> (strata, rcot options)
        "default (no merging)": (lambda lab, dx: diagnosis_strata(lab, dx), {}),
        "old default (merge < 10, LPB4)": (lambda lab, dx: diagnosis_strata(lab, dx, 10),
                                           {"asymptotic_min": 1}),
        "3-class label": (lambda lab, dx: label_strata(lab), {}),
    }
    used = {name: 0 for name in settings}
    for r in range(args.reps):
        age, y, label, dx = trap_draw(r, args.look)
        for name, (strata, rcot_opts) in settings.items():
            z = strata(label, dx).z.astype(str)
            p = [chsic(age, y, z, seed=r, permutations=args.permutations),
                 rcot(age, y, z, seed=r, permutations=args.permutations, **rcot_opts),
                 cmiknn(age, y, z, seed=r, permutations=args.permutations, full=True).p_value]
            used[name] += sum(np.nan_to_num(p, nan=1.0) < args.alpha) >= 2
    bound = stats.binom.ppf(0.99, args.reps, args.alpha)
    rows = []
    for name, k in used.items():
        rate, lo, hi = clopper_pearson(k, args.reps)
        rows.append({"conditioning": name, "studies": args.reps, "age used": k,
                     "rate": round(rate, 3), "95% CI": f"[{lo:.3f}, {hi:.3f}]",
                     f"<= 99% bound ({int(bound)})": k <= bound})
    return pd.DataFrame(rows)


def part_effect(args) -> pd.DataFrame:
    sys.path.insert(0, str(Path(__file__).parent))
    from calibrate_citests import draw

    rows, cmi = [], {}
    for n in (200, 400, 800):
        eff = {"cmi": [], "chsic": [], "rcot": []}
        for r in range(args.reps):
            x, y, z = draw(n, 3, "continuous", args.beta, np.random.default_rng(10_000 + r))
            eff["cmi"].append(cmiknn(x, y, z, seed=r, permutations=args.permutations,
                                     full=True).effect)
            eff["chsic"].append(chsic(x, y, z, seed=r, permutations=args.permutations,
                                      full=True).effect)
            eff["rcot"].append(rcot(x, y, z, seed=r, full=True).effect)
        cmi[n] = np.array(eff["cmi"])
        # Table 3's CI over 10 runs: t(0.975, 9) sd sqrt(1/10 + 0.2/0.7)
        half = stats.t.ppf(0.975, 9) * cmi[n].std(ddof=1) * np.sqrt(0.1 + 0.2 / 0.7)
        rows.append({"n": n, "CMI mean (nats)": round(cmi[n].mean(), 4),
                     "CMI sd": round(cmi[n].std(ddof=1), 4),
                     "Table 3 CI half-width (10 runs)": round(half, 4),
                     "cHSIC z mean": round(np.mean(eff["chsic"]), 2),
                     "RCoT z mean": round(np.mean(eff["rcot"]), 2)})
    out = pd.DataFrame(rows)
    change = cmi[800].mean() - cmi[200].mean()
    se = np.sqrt(cmi[800].var(ddof=1) / args.reps + cmi[200].var(ddof=1) / args.reps)
    print(f"CMI change 200 -> 800: {change:+.4f} nats (95% MC interval "
          f"[{change - 1.96 * se:+.4f}, {change + 1.96 * se:+.4f}]); smallest CI half-width "
          f"{out['Table 3 CI half-width (10 runs)'].min():.4f}")
    return out


def null_study(seed: int, splits: int, pool: int, n_test: int, permutations: int):
    """decisions rows (model, split_seed, condition, feature, effect_cmiknn) of one study."""
    rng = np.random.default_rng(seed)
    label = rng.choice(3, pool, p=[0.15, 0.6, 0.25])
    sub = rng.choice(2, pool, p=[0.7, 0.3])  # two diagnoses within each class
    dx = np.array([f"{lab}:{s}" for lab, s in zip(label, sub)], dtype=object)
    codes = np.unique(dx, return_inverse=True)[1]
    centre = rng.standard_normal((codes.max() + 1, 9))
    feats = centre[codes] + rng.standard_normal((pool, 9))  # 8 features, D has 2 columns
    looks = {m: rng.normal(0, 1.0, (codes.max() + 1, 3)) for m in ("base", "variant")}
    rows = []
    for s in range(splits):
        test = rng.choice(pool, n_test, replace=False)
        z = dx[test].astype(str)
        for m in ("base", "variant"):
            logits = 2 * np.eye(3)[label[test]] + looks[m][codes[test]]
            logits += 0.7 * rng.standard_normal(logits.shape)
            y = _softmax(logits)[:, :2]
            for f in range(8):
                x = feats[test][:, [f, 8]] if f == 3 else feats[test][:, f]
                res = cmiknn(x, y, z, seed=int(rng.integers(2**31)), permutations=permutations,
                             full=True)
                rows.append({"model": m, "split_seed": s, "condition": "diagnosis",
                             "feature": f"F{f}", "effect_cmiknn": res.effect})
    return pd.DataFrame(rows)


def part_null(args) -> pd.DataFrame:
    models = pd.DataFrame({"model": ["base", "variant"], "backbone": "r",
                           "variant": ["base", "ga"]})
    ratio = args.n_test / (args.pool - args.n_test)
    any_holm = any_raw = 0
    for r in range(args.reps):
        dec = null_study(r, args.splits, args.pool, args.n_test, args.permutations)
        diff = model_differences(dec, models, ("cmiknn",), ratio=ratio)
        any_holm += bool((diff["p_holm"] < 0.05).any())
        any_raw += bool((diff["p"] < 0.05).any())
        if (r + 1) % 25 == 0:
            print(f"  {r + 1} studies: Holm {any_holm}, unadjusted {any_raw}", flush=True)
    rows = []
    for name, k in (("Holm over 8 features (the rule)", any_holm),
                    ("unadjusted (the old rule)", any_raw)):
        rate, lo, hi = clopper_pearson(k, args.reps)
        rows.append({"rule": name, "studies": args.reps, "pairs with >= 1 verdict": k,
                     "rate": round(rate, 3), "95% CI": f"[{lo:.3f}, {hi:.3f}]"})
    return pd.DataFrame(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=["trap", "effect", "null"], required=True)
    ap.add_argument("--reps", type=int, default=200)
    ap.add_argument("--alpha", type=float, default=0.01)
    ap.add_argument("--permutations", type=int, default=None,
                    help="shuffles per test (default 199; null: 19, only the CMI's shuffle "
                    "mean is used there)")
    ap.add_argument("--look", type=float, default=1.5, help="trap: sd of each diagnosis's look")
    ap.add_argument("--beta", type=float, default=1.0, help="effect: strength of the dependence")
    ap.add_argument("--splits", type=int, default=5, help="null: split seeds per study")
    ap.add_argument("--pool", type=int, default=1000, help="null: images in the pool")
    ap.add_argument("--n-test", type=int, default=200, help="null: test images per split")
    args = ap.parse_args()
    if args.permutations is None:
        args.permutations = 19 if args.part == "null" else 199
    t0 = time.perf_counter()
    with threadpool_limits(1):
        table = {"trap": part_trap, "effect": part_effect, "null": part_null}[args.part](args)
    print(markdown_table(table))
    print(f"\n{args.part}: {args.reps} replicates, {time.perf_counter() - t0:.0f} s "
          f"(one thread; {' '.join(sys.argv[1:])})")


if __name__ == "__main__":
    main()
