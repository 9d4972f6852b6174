"""Time per call of the three conditional-independence tests, CMIknn at k = 10 and at its default
(a fraction of each class), side by side; optionally tigramite's CMIknn and our scipy path.

Each call tests x _||_ y | z on the draws of ``calibrate_citests.py`` with z a 3-class label
(priors 0.5/0.3/0.2), y a softmax vector (its first 2 columns, as the pipeline passes it) and x one
of: ``continuous`` (1 column), ``binary`` (like sex or the colourful patch), ``d`` (2 columns like
Table 3's D: a count of 0-5 structures and their area share, exactly 0 when the count is 0), under
H0 and under a clear alternative (H1). Default
options otherwise (1000 permutations for cHSIC and CMIknn). BLAS is pinned to one thread; times are
CPU seconds of the process (one core), because wall time on a shared machine mostly measures the
neighbours; each call is timed ``--repeat`` times and the fastest kept.

tigramite (GPL-3.0, never a dependency of medattn) is used with ``--tigramite`` when importable,
e.g. after ``pip install --no-deps --target /tmp/tig tigramite numba llvmlite`` and
``PYTHONPATH=/tmp/tig``; it runs with its defaults (knn = 0.2 n, 1000 shuffles, rank transform,
z passed as a float column) on one worker. ``--scipy`` adds our scipy path (same p-values).

    PYTHONPATH=src python benchmarks/bench_citests.py --n 500 2000
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from threadpoolctl import threadpool_limits

from calibrate_citests import draw as calibration_draw  # benchmarks/ is the script's folder
from medattn.analysis.citests import TESTS, _cmi_kernel
from medattn.analysis.citests.cmiknn import DEFAULT_K

X_KINDS = ("continuous", "binary", "d")


def draw(n: int, beta: float, seed: int, x_kind: str = "continuous"):
    """(x, y (n, 2), z) with x independent of y given z iff beta == 0: the calibration's draws
    with 3 classes (priors 0.5/0.3/0.2)."""
    return calibration_draw(n, 3, x_kind, beta, np.random.default_rng(seed))


def tigramite_cmiknn():
    try:
        from tigramite.independence_tests.cmiknn import CMIknn
    except ImportError:
        return None
    test = CMIknn(significance="shuffle_test", sig_samples=1000, workers=1)

    def run(x, y, z, seed=0):
        test.random_state = np.random.default_rng(seed)
        x2 = x if x.ndim == 2 else x[:, None]
        _, p = test.run_test_raw(x2, y, z[:, None].astype(float))
        return float(p)

    return run


def timed(fn, *args, repeat: int = 1, **kw):
    """Fastest CPU seconds of this process over ``repeat`` calls, and the result."""
    best, out = np.inf, None
    for _ in range(repeat):
        t0 = time.process_time()
        out = fn(*args, **kw)
        best = min(best, time.process_time() - t0)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", nargs="+", type=int, default=[500, 2000])
    ap.add_argument("--x", nargs="+", default=list(X_KINDS), choices=X_KINDS)
    ap.add_argument("--beta", type=float, default=1.0, help="strength of the H1 draws")
    ap.add_argument("--repeat", type=int, default=2, help="calls per cell (the fastest is kept)")
    ap.add_argument("--scipy", action="store_true", help="also time our scipy path")
    ap.add_argument("--tigramite", action="store_true", help="also time tigramite's CMIknn")
    args = ap.parse_args()
    tig = tigramite_cmiknn() if args.tigramite else None
    tests = {"cHSIC": (TESTS["chsic"], {}), "RCoT": (TESTS["rcot"], {}),
             "CMIknn k=10": (TESTS["cmiknn"], {"k": 10}),
             f"CMIknn k={DEFAULT_K:g}n": (TESTS["cmiknn"], {"k": DEFAULT_K})}
    if args.scipy:
        tests[f"CMIknn k={DEFAULT_K:g}n scipy"] = (TESTS["cmiknn"],
                                                    {"k": DEFAULT_K, "backend": "scipy"})
    if tig is not None:
        tests["tigramite CMIknn"] = (tig, {})
    with threadpool_limits(1):
        if _cmi_kernel.available():
            sec, _ = timed(TESTS["cmiknn"], *draw(300, 0.0, 1), seed=0, permutations=10)
            print(f"first compiled CMIknn call (loads or compiles the numba functions): "
                  f"{sec:.2f} CPU s")
        else:
            print("numba not installed: no compiled CMIknn (pip install 'medattn[fast]')")
        print(f"{'test':>22} {'n':>6} {'x':>11} {'draw':>5} {'CPU s':>7} {'p':>7}")
        for n in args.n:
            for x_kind in args.x:
                for hyp, beta in (("H0", 0.0), ("H1", args.beta)):
                    x, y, z = draw(n, beta, 100 * n + X_KINDS.index(x_kind), x_kind)
                    for name, (fn, opts) in tests.items():
                        sec, p = timed(fn, x, y, z, seed=0, repeat=args.repeat, **opts)
                        print(f"{name:>22} {n:>6} {x_kind:>11} {hyp:>5} {sec:>7.2f} {p:>7.3f}",
                              flush=True)


if __name__ == "__main__":
    main()
