"""Time per call of the three conditional-independence tests, side by side with tigramite's CMIknn.

Each call tests x _||_ y | z with z a 3-class label, y a softmax vector (the pipeline passes its
first 2 columns) and x continuous, with the default options (1000 permutations for cHSIC and
CMIknn). BLAS is pinned to one thread; times are CPU seconds of the process (one core),
because wall time on the shared machine mostly measures the neighbours. tigramite (GPL-3.0, never a dependency of medattn) is used when
importable, e.g. after ``pip install --no-deps --target /tmp/tig tigramite numba llvmlite`` and
``PYTHONPATH=/tmp/tig``; it runs with its defaults (knn = 0.2 n, 1000 shuffles, rank transform,
z passed as a float column) on one worker.

Our CMIknn runs twice per size, side by side: the compiled path (numba, ``backend="numba"``) and
the scipy k-d tree path (``backend="scipy"``), with the same p-value; the ratio is printed. The
numba functions are loaded (or compiled, on a fresh machine) by a first call that is timed apart.
At n = 2000 the compiled path is also timed on a clear alternative (p = 1/(B+1)).

Also measures power at n = 500 on a clear alternative for both CMIknn implementations (rejections
at alpha = 0.01 over ``--power-reps`` draws).

    PYTHONPATH=src:/tmp/tig python benchmarks/bench_citests.py
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from threadpoolctl import threadpool_limits

from medattn.analysis.citests import TESTS, _cmi_kernel


def draw(n: int, beta: float, seed: int):
    rng = np.random.default_rng(seed)
    z = rng.choice(3, size=n, p=[0.5, 0.3, 0.2])
    x = np.sin(1.5 * z) + 0.5 * z + rng.standard_normal(n)
    logits = 1.5 * np.eye(3)[z] + 0.8 * rng.standard_normal((n, 3))
    logits[:, 0] += beta * np.tanh(x - x.mean())
    y = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return x, y[:, :2], z


def tigramite_cmiknn():
    try:
        from tigramite.independence_tests.cmiknn import CMIknn
    except ImportError:
        return None
    test = CMIknn(significance="shuffle_test", sig_samples=1000, workers=1)

    def run(x, y, z, seed=0):
        test.random_state = np.random.default_rng(seed)
        _, p = test.run_test_raw(x[:, None], y, z[:, None].astype(float))
        return float(p)

    return run


def timed(fn, *args, **kw):
    """CPU seconds of this process (the machine is shared: wall time measures the neighbours)."""
    t0 = time.process_time()
    out = fn(*args, **kw)
    return time.process_time() - t0, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", nargs="+", type=int, default=[500, 2000, 5000])
    ap.add_argument("--tig-n", nargs="+", type=int, default=[500, 1000, 2000],
                    help="sizes for tigramite (slow)")
    ap.add_argument("--power-reps", type=int, default=5)
    ap.add_argument("--scipy-max-n", type=int, default=2000,
                    help="largest n for the scipy-path CMIknn comparison (slow)")
    args = ap.parse_args()
    tig = tigramite_cmiknn()
    with threadpool_limits(1):
        if _cmi_kernel.available():
            x, y, z = draw(300, 0.0, 1)
            sec, _ = timed(TESTS["cmiknn"], x, y, z, seed=0, permutations=10, backend="numba")
            print(f"first compiled CMIknn call (loads or compiles the numba functions): {sec:.2f} CPU s")
        else:
            print("numba not installed: no compiled CMIknn (pip install 'medattn[fast]')")
        print(f"{'test':>22} {'n':>6} {'CPU s':>9} {'p (H0 draw)':>12}")
        ours = {}
        for n in args.n:
            x, y, z = draw(n, 0.0, n)
            for name, fn in TESTS.items():
                sec, p = timed(fn, x, y, z, seed=0)
                ours[(name, n)] = sec
                print(f"{name:>22} {n:>6} {sec:>9.3f} {p:>12.3f}", flush=True)
            if _cmi_kernel.available() and n <= args.scipy_max_n:
                sec, p = timed(TESTS["cmiknn"], x, y, z, seed=0, backend="scipy")
                print(f"{'cmiknn (scipy path)':>22} {n:>6} {sec:>9.3f} {p:>12.3f}   "
                      f"scipy / compiled = {sec / ours[('cmiknn', n)]:.1f}x", flush=True)
            if n == 2000:
                x1, y1, z1 = draw(n, 0.5, n)
                sec, p = timed(TESTS["cmiknn"], x1, y1, z1, seed=0)
                print(f"{'cmiknn, H1 draw':>22} {n:>6} {sec:>9.3f} {p:>12.4f}", flush=True)
        if tig is not None:
            for n in args.tig_n:
                x, y, z = draw(n, 0.0, n)
                sec, p = timed(tig, x, y, z)
                ratio = ""
                if ("cmiknn", n) in ours:
                    ratio = f"   tigramite / ours = {sec / ours[('cmiknn', n)]:.1f}x"
                else:
                    s2, _ = timed(TESTS["cmiknn"], x, y, z, seed=0)
                    ratio = f"   ours {s2:.3f} s; tigramite / ours = {sec / s2:.1f}x"
                print(f"{'tigramite CMIknn':>22} {n:>6} {sec:>9.3f} {p:>12.3f}{ratio}", flush=True)
        else:
            print("tigramite not importable: no library comparison (see the docstring)")
        print(f"\npower at n=500, beta=1.0, alpha=0.01, {args.power_reps} draws:")
        impls = {"ours cmiknn": TESTS["cmiknn"]}
        if tig is not None:
            impls["tigramite CMIknn"] = tig
        for label, fn in impls.items():
            t0 = time.process_time()
            pv = [fn(*draw(500, 1.0, 10_000 + r), seed=r) for r in range(args.power_reps)]
            sec = (time.process_time() - t0) / args.power_reps
            print(f"{label:>22}: rejected {sum(p < 0.01 for p in pv)}/{len(pv)}  "
                  f"({sec:.2f} CPU s per call)  p = {np.round(pv, 4).tolist()}", flush=True)


if __name__ == "__main__":
    main()
