"""Calibration of the answer across data sets (medattn.analysis.across) with planted truth.

Part 1, verdicts. Each replicate is a study of D data sets with J = 10 per-split differences each
(pp), r = n_test / n_train = 0.2857 (70/10/20 splits), within-data-set sd s_i ~ U(0.5, 2) pp:

- ``model``: the hierarchical model's own form: delta_i ~ N(mu, tau^2); x_ij = delta_i +
  s_i (sqrt(r) z_0 + z_j), z standard normal (equicorrelated with rho = r / (1 + r)).
- ``heavy``: data-set effects from a Student-t with 3 df scaled to sd tau, split noise Student-t
  with 5 df scaled to unit variance (the model is wrong about both tails).

Cells: D = 4, 8, 12; between-data-set sd tau = 0, m/2, m, 2m for the margin (ROPE) m = 1 pp.
Null (mu = 0): the rate of a "better" or "worse" verdict (posterior probability > 0.95) for a new
data set and for the common effect. Gain (mu = 2 pp): the rate of "better". All inside the ROPE
(delta_i ~ U(-m/2, m/2)): the rate of "equivalent". Rates with 95% Clopper-Pearson intervals.

Part 2, the sampler is right: simulation-based calibration (Talts et al. 2018). Parameters drawn
from the priors, data from the model, the rank of the true delta_0 and sigma_0 among 99 thinned
posterior draws; ranks must be uniform on 0..99: chi-square test on 10 bins. Plus the posterior
of delta_0 against its closed form where sigma_0, the s_i and nu are held fixed (normal-normal).

    nice -n 10 python benchmarks/calibrate_across.py --iters 600 --warmup 200 --power 100  # docs
    nice -n 10 python benchmarks/calibrate_across.py --null 100 --power 50 --sbc 100   # quick
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
from scipy import stats as ss
from threadpoolctl import threadpool_limits

from rates import rate

from medattn.analysis.across import _region_probs, new_dataset_probs
from medattn.analysis.across_sampler import Priors, gibbs, nu_grid

R = 0.2 / 0.7
J = 10
MARGIN = 1.0


def simulate(rng, reps: int, d: int, mu: float, tau: float, form: str, inside: bool = False):
    """(m, W): per replicate and data set the mean and within sum of squares of J differences."""
    if inside:
        delta = rng.uniform(-MARGIN / 2, MARGIN / 2, (reps, d))
    elif form == "model":
        delta = mu + tau * rng.standard_normal((reps, d))
    else:
        delta = mu + tau * rng.standard_t(3, (reps, d)) / np.sqrt(3.0)
    s = rng.uniform(0.5, 2.0, (reps, d))
    if form == "model":
        z0, z = rng.standard_normal((reps, d, 1)), rng.standard_normal((reps, d, J))
    else:
        z0, z = (rng.standard_t(5, sh) / np.sqrt(5 / 3) for sh in ((reps, d, 1), (reps, d, J)))
    x = delta[..., None] + s[..., None] * (np.sqrt(R) * z0 + z)
    m = x.mean(axis=2)
    return m, ((x - m[..., None]) ** 2).sum(axis=2)


def verdicts(m, W, rng, n_iter: int, n_warmup: int):
    """Verdicts ('worse', 'equivalent', 'better' or '') for a new data set and the mean effect."""
    d = m.shape[1]
    draws = gibbs(m, W, np.full(d, J), np.full(d, 1 / J + R), n_iter=n_iter, n_warmup=n_warmup,
                  rng=rng)
    out = []
    for p in (new_dataset_probs(draws.delta0, draws.sigma0, draws.nu, MARGIN),
              _region_probs(draws.delta0, MARGIN)):
        names = np.array(["worse", "equivalent", "better", ""])
        idx = np.where((p > 0.95).any(axis=1), p.argmax(axis=1), 3)
        out.append(names[idx])
    return out


def part_verdicts(args, rng) -> None:
    print("\n| form | D | tau (pp) | null: new 'better'/'worse' | null: mean 'better'/'worse' "
          "| mu = 2 pp: new 'better' | mu = 2 pp: mean 'better' |")
    print("|---|---|---|---|---|---|---|")
    for form in ("model", "heavy"):
        for d in (4, 8, 12):
            for tau in (0.0, MARGIN / 2, MARGIN, 2 * MARGIN):
                t0 = time.time()
                new, mean = verdicts(*simulate(rng, args.null, d, 0.0, tau, form), rng,
                                     args.iters, args.warmup)
                gnew, gmean = verdicts(*simulate(rng, args.power, d, 2.0, tau, form), rng,
                                       args.iters, args.warmup)
                print(f"| {form} | {d} | {tau:g} | {rate(np.isin(new, ['better', 'worse']))} | "
                      f"{rate(np.isin(mean, ['better', 'worse']))} | {rate(gnew == 'better')} | "
                      f"{rate(gmean == 'better')} |  <!-- {time.time() - t0:.0f} s -->",
                      flush=True)
    print("\n| form | D | all inside the ROPE: new 'equivalent' | mean 'equivalent' |")
    print("|---|---|---|---|")
    for form in ("model", "heavy"):
        for d in (4, 8, 12):
            new, mean = verdicts(*simulate(rng, args.power, d, 0.0, 0.0, form, inside=True),
                                 rng, args.iters, args.warmup)
            print(f"| {form} | {d} | {rate(new == 'equivalent')} | {rate(mean == 'equivalent')} |",
                  flush=True)


def part_sbc(args, rng) -> None:
    p, d = Priors(), 5
    n = args.sbc
    nus, logw = nu_grid(p)
    delta0 = rng.normal(0, p.delta0_sd, n)
    sigma0 = rng.uniform(0, p.sigma0_max, n)
    nu = rng.choice(nus, n, p=np.exp(logw))
    delta = delta0[:, None] + sigma0[:, None] * rng.standard_t(nu[:, None], (n, d))
    s = rng.uniform(0, p.within_max, (n, d))
    x = delta[..., None] + s[..., None] * (np.sqrt(R) * rng.standard_normal((n, d, 1))
                                           + rng.standard_normal((n, d, J)))
    m = x.mean(axis=2)
    W = ((x - m[..., None]) ** 2).sum(axis=2)
    draws = gibbs(m, W, np.full(d, J), np.full(d, 1 / J + R), n_iter=99 * args.thin,
                  n_warmup=args.warmup, thin=args.thin, rng=rng)
    print(f"\nSimulation-based calibration: {n} simulated studies of D = {d} data sets, J = {J}; "
          f"99 posterior draws each (every {args.thin}th of {99 * args.thin}); rank counts in 10 "
          f"bins (uniform = {n / 10:g} each):")
    for name, true, post in (("delta_0", delta0, draws.delta0), ("sigma_0", sigma0, draws.sigma0)):
        ranks = (post < true[:, None]).sum(axis=1)  # 0..99
        counts = np.bincount(ranks * 10 // 100, minlength=10)
        p_chi = ss.chisquare(counts).pvalue
        print(f"- {name}: {counts.tolist()}; chi-square uniformity p = {p_chi:.3f}")


def part_closed_form(rng) -> None:
    m = np.array([1.0, -0.5, 2.0, 0.3, 1.5])
    s = np.array([1.0, 2.0, 1.5, 0.8, 1.2])
    c = 1 / J + R
    sig0, p = 1.3, Priors()
    d = gibbs(np.repeat(m[None], 16, 0), np.zeros((16, 5)), np.full(5, J), np.full(5, c),
              sigma0_fixed=sig0, within_sd_fixed=s, nu_fixed=1e7, n_iter=5000, n_warmup=200,
              rng=rng)
    w = 1 / (sig0**2 + c * s**2)
    A = 1 / p.delta0_sd**2 + w.sum()
    print(f"\nClosed form (sigma_0 = {sig0}, s_i and nu fixed, normal-normal): posterior of "
          f"delta_0 mean {((w * m).sum() / A):.4f}, sd {1 / np.sqrt(A):.4f}; sampler "
          f"{d.delta0.mean():.4f}, {d.delta0.std():.4f} ({d.delta0.size} draws)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--null", type=int, default=500, help="replicates per null cell")
    ap.add_argument("--power", type=int, default=200, help="replicates per gain / ROPE cell")
    ap.add_argument("--sbc", type=int, default=400, help="simulated studies for the SBC")
    ap.add_argument("--iters", type=int, default=1000, help="kept sweeps per fit")
    ap.add_argument("--warmup", type=int, default=300, help="warm-up sweeps per fit")
    ap.add_argument("--thin", type=int, default=10, help="thinning for the SBC ranks")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--parts", default="verdicts,sbc,closed")
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    print(f"# calibrate_across: {platform.processor() or platform.machine()}, "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {args}")
    with threadpool_limits(1):
        for part, fn in (("closed", lambda: part_closed_form(rng)),
                         ("sbc", lambda: part_sbc(args, rng)),
                         ("verdicts", lambda: part_verdicts(args, rng))):
            if part in args.parts:
                t0 = time.time()
                fn()
                print(f"({part}: {time.time() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
