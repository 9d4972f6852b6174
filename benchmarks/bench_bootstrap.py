"""Speed of the paired bootstrap over splits and test images (medattn.analysis.bootstrap).

Ours (merged indicator rows, one matrix product per block of resamples) against the same
resampling scheme written one resample at a time (draw the image ids and the splits, then per
drawn split ``np.bincount`` the per-class hits of both models), which is how one would write it
without the vectorisation; the reference runs ``--ref-resamples`` resamples and its time is
scaled to ``--resamples``. Tables: J = 10 splits x 2 000 test images, 3 classes,
correctness of the two models correlated through a per-image difficulty,

- ``ood``: the same 2 000 images in every split (an OOD test set),
- ``id``: 10 overlapping test sets of 2 000 drawn from a pool of 10 000 (random 70/10/20 splits),
- ``large``: 10 overlapping test sets of 60 000 from 300 000 (Camelyon17-sized), ours with the
  normal approximation of the counts (``method="auto"`` picks it there).

Times are CPU seconds of this single-threaded process (BLAS pinned to one thread), which the other
jobs on a shared machine disturb much less than wall time.

    python benchmarks/bench_bootstrap.py --resamples 10000 --ref-resamples 500
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from threadpoolctl import threadpool_limits

from medattn.analysis.bootstrap import SplitPredictions, paired_bootstrap


def table(kind: str, seed: int = 0, k: int = 3) -> list[SplitPredictions]:
    rng = np.random.default_rng(seed)
    n_pool, n_test = {"ood": (2000, 2000), "id": (10_000, 2000), "large": (300_000, 60_000)}[kind]
    labels = rng.choice(k, n_pool, p=[0.5, 0.3, 0.2])
    hard = rng.normal(0, 1, n_pool)
    out = []
    for _ in range(10):
        idx = np.arange(n_pool) if kind == "ood" else rng.choice(n_pool, n_test, replace=False)
        noise = rng.normal(0, 0.8, (2, len(idx)))
        out.append(SplitPredictions(idx, labels[idx], hard[idx] + noise[0] > -0.7,
                                    hard[idx] + noise[1] > -0.65))
    return out


def reference(splits: list[SplitPredictions], k: int, n_resamples: int, seed: int) -> np.ndarray:
    """The scheme of medattn.analysis.bootstrap, one resample at a time."""
    rng = np.random.default_rng(seed)
    ids = np.unique(np.concatenate([s.images for s in splits]))
    stat = np.empty(n_resamples)
    for b in range(n_resamples):
        count = np.bincount(rng.choice(ids, len(ids)), minlength=ids.max() + 1)
        diffs = []
        for j in rng.integers(0, len(splits), len(splits)):
            s = splits[j]
            w = count[s.images]
            total = np.bincount(s.labels, w, k)
            ok = total > 0
            a = np.bincount(s.labels, w * s.correct_a, k)[ok] / total[ok]
            c = np.bincount(s.labels, w * s.correct_b, k)[ok] / total[ok]
            diffs.append(100 * (a.mean() - c.mean()))
        stat[b] = np.mean(diffs)
    return stat


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--resamples", type=int, default=10_000)
    ap.add_argument("--ref-resamples", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=3, help="timed repeats of ours (best is kept)")
    args = ap.parse_args()
    print(f"| table | ours, {args.resamples} resamples (CPU s, best of {args.rounds}) | method | "
          f"one resample at a time, scaled to {args.resamples} (CPU s) | speed-up |")
    print("|---|---:|---|---:|---:|")
    with threadpool_limits(1):
        for kind in ("ood", "id", "large"):
            splits = table(kind)
            best = np.inf
            for _ in range(args.rounds):
                t = time.process_time()
                res = paired_bootstrap(splits, 3, n_resamples=args.resamples, seed=1)
                best = min(best, time.process_time() - t)
            n_ref = max(1, args.ref_resamples // (30 if kind == "large" else 1))
            t = time.process_time()
            reference(splits, 3, n_ref, seed=2)
            ref = (time.process_time() - t) * args.resamples / n_ref
            print(f"| {kind}: 10 splits x {len(splits[0].images)} images "
                  f"({res.n_images} distinct) | {best:.2f} | {res.method} | {ref:.1f} | "
                  f"{ref / best:.0f}x |", flush=True)


if __name__ == "__main__":
    main()
