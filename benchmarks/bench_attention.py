"""Speed and memory of the attention layers and of the model variants, measured side by side.

    python benchmarks/bench_attention.py --part c         # the model table: batch 8 and 32, 1 thread
    python benchmarks/bench_attention.py --part abd       # the layers, and why GA costs what it does

(a) GA: fused SDPA path vs the explicit softmax(QK^T) matrix, ResNet18 layer1 (64 ch, 56x56) and
    layer2 (128 ch, 28x28), batch 8, forward + backward.
(b) LA: our blocked SDPA formulation vs the straightforward unfold formulation (k^2 copies), at
    7x7, 14x14 and 28x28 maps (k = 7, 8 heads, batch 8, forward + backward), plus the layer that
    LA replaces (3x3 conv; EfficientNet-B0's last MBConv block), for scale.
(c) one SGD training step (forward, loss, backward, update) of every model variant at 224 px,
    relative to its base model, at batch 8 and 32; the GA variants also with the ``ga_subsample``
    model option (Wang et al.'s 2x2 max-pooled phi and g; not the paper's block, not the default).
(d) the exact GA blocks' attention alone (fused SDPA, forward + backward) against a lower bound
    from this core's GEMM and exp rates: how much of GA's cost no implementation can remove.

Time: CPU time of the process (``time.process_time``; with 1 thread that is the work done, while
wall time on the shared development machine mostly measures other jobs). The variants of one
comparison run round-robin (a warm-up, then --reps / --reps-c rounds), so drifts of the machine
hit them alike; (c) reports medians and minima and the ratios of both to the base model's.
Peak memory: the largest amount of live tensor memory during one step, from the PyTorch
profiler's allocation records (activations kept for backward included, parameters and inputs
excluded). Prints Markdown tables with the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from threadpoolctl import threadpool_limits
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from medattn.models import create_model, list_models  # noqa: E402
from medattn.models.attention import GlobalAttention2d, LocalAttention2d  # noqa: E402


def interleaved_times(fns: dict, reps: int, warmup: int = 1, raw: dict | None = None) -> dict[str, tuple[float, float]]:
    """``name -> (min, median)`` CPU time of each ``fn()`` in seconds (process time: with one thread,
    the cost of our work; wall time on a shared, overloaded machine mostly measures the other jobs).
    The functions run round-robin so that cache and memory-bandwidth contention hit them alike;
    ``raw`` gets every round's times."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            t0 = time.process_time()
            fn()
            times[name].append(time.process_time() - t0)
    if raw is not None:
        raw.update(times)
    return {k: (min(v), statistics.median(v)) for k, v in times.items()}


def peak_memory(fn) -> float:
    """Peak live tensor memory (MB) allocated during ``fn()``: allocations (self, per op) and frees
    replayed in time order."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e.time_range.start, e.self_cpu_memory_usage) for e in prof.events()
                    if e.self_cpu_memory_usage)
    live = peak = 0
    for _, delta in events:
        live += delta
        peak = max(peak, live)
    return peak / 2**20


def fwd_bwd(module, x):
    def step():
        module.zero_grad(set_to_none=True)
        x.grad = None
        module(x).sum().backward()
    return step


def part_a(reps: int, batch: int) -> list[str]:
    rows = ["| map | SDPA time (ms) | explicit time (ms) | time ratio | SDPA peak (MB) "
            "| explicit peak (MB) | memory ratio |",
            "|---|---:|---:|---:|---:|---:|---:|"]
    for c, s in [(64, 56), (128, 28)]:
        torch.manual_seed(0)
        ga = {impl: GlobalAttention2d(c, impl=impl) for impl in ("sdpa", "explicit")}
        torch.nn.init.normal_(ga["sdpa"].bn.weight)  # a trained block, not the identity
        ga["explicit"].load_state_dict(ga["sdpa"].state_dict())
        x = torch.randn(batch, c, s, s, requires_grad=True)
        steps = {impl: fwd_bwd(m, x) for impl, m in ga.items()}
        t = interleaved_times(steps, reps)
        m = {impl: peak_memory(step) for impl, step in steps.items()}
        (ts, te), (ms, me) = (t["sdpa"][0], t["explicit"][0]), (m["sdpa"], m["explicit"])
        rows.append(f"| {c} ch, {s}x{s}, batch {batch} | {ts * 1e3:.0f} | {te * 1e3:.0f} | {ts / te:.2f} | "
                    f"{ms:.1f} | {me:.1f} | {ms / me:.3f} |")
    return rows


def part_b(reps: int, batch: int) -> list[str]:
    import timm

    rows = ["| map (C_in -> C_out, stride) | ours (ms) | unfold (ms) | speed-up | ours peak (MB) "
            "| unfold peak (MB) | replaced layer (ms) |",
            "|---|---:|---:|---:|---:|---:|---:|"]
    cases = [(512, 512, 7, 1), (256, 512, 14, 2), (256, 256, 14, 1), (128, 128, 28, 1), (192, 320, 7, 1)]
    for cin, cout, s, stride in cases:
        torch.manual_seed(0)
        la = {impl: LocalAttention2d(cin, cout, kernel_size=7, stride=stride, heads=8, impl=impl)
              for impl in ("blocked", "unfold")}
        la["unfold"].load_state_dict(la["blocked"].state_dict())
        if cout == 320:  # EfficientNet-B0's last MBConv block, which LA replaces there
            replaced, what = timm.create_model("efficientnet_b0").blocks[6][0], "MBConv"
        else:
            replaced, what = torch.nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), "3x3 conv"
        x = torch.randn(batch, cin, s, s, requires_grad=True)
        steps = {impl: fwd_bwd(m, x) for impl, m in la.items()}
        t = interleaved_times({**steps, "replaced": fwd_bwd(replaced, x)}, reps)
        m = {impl: peak_memory(step) for impl, step in steps.items()}
        to, tu, tr = t["blocked"][0], t["unfold"][0], t["replaced"][0]
        rows.append(f"| {s}x{s} ({cin} -> {cout}, {stride}) | {to * 1e3:.0f} | {tu * 1e3:.0f} | {tu / to:.2f}x | "
                    f"{m['blocked']:.1f} | {m['unfold']:.1f} | {tr * 1e3:.0f} ({what}) |")
    return rows


def _step(name: str, batch: int, size: int, **options):
    torch.manual_seed(0)
    model = create_model(name, 3, **options).train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    x, y = torch.randn(batch, 3, size, size), torch.randint(0, 3, (batch,))

    def step():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return step


SUB = " (sub-sampled GA)"  # the ga_subsample model option: not the paper's block


def part_c(reps: int, batches: list[int], size: int, memory: bool, results: dict,
           only: list[str] | None = None) -> list[str]:
    """Every variant of a backbone (or those in ``only``, with their bases), plus its GA variants
    with ``ga_subsample``, interleaved; ``results[str(batch)][model]`` gets the median and minimum
    step seconds. The paired column is the median over rounds of the step time over the base's in
    the same round, which cancels drifts of the machine slower than one round."""
    rows = []
    for batch in batches:
        rows += [f"\nbatch {batch}, {size} px, {reps} rounds\n",
                 "| model | step CPU s, median | min | vs base (medians) | vs base (mins) | vs base (paired, median) |"
                 + (" peak (MB) | vs base |" if memory else ""),
                 "|---|---:|---:|---:|---:|---:|" + ("---:|---:|" if memory else "")]
        print("\n".join(rows[-3:]), flush=True)
        for backbone in ("resnet18", "efficientnet_b0"):
            names = [n for n in list_models(paper_only=True) if n.split("+")[0] == backbone
                     and (not only or n == backbone or n in only)]
            if len(names) < 2 and only:
                continue
            steps = {n: _step(n, batch, size) for n in names}
            steps.update({n + SUB: _step(n, batch, size, ga_subsample=True) for n in names
                          if "+ga" in n and (not only or n + SUB in only)})
            raw: dict = {}
            t = interleaved_times(steps, reps, raw=raw)
            m = {n: peak_memory(step) for n, step in steps.items()} if memory else {}
            (bmin, bmed) = t[backbone]
            results.setdefault(str(batch), {}).update(
                {n: {"median": t[n][1], "min": t[n][0], "batch": batch, "size": size} for n in steps})
            for n in steps:
                paired = statistics.median(a / b for a, b in zip(raw[n], raw[backbone]))
                row = (f"| {n} | {t[n][1]:.2f} | {t[n][0]:.2f} | {t[n][1] / bmed:.2f}x | "
                       f"{t[n][0] / bmin:.2f}x | {paired:.2f}x |")
                if memory:
                    row += f" {m[n]:.0f} | {m[n] / m[backbone]:.2f}x |"
                rows.append(row)
                print(row, flush=True)
            del steps
    return rows


def part_d(reps: int, batch: int) -> list[str]:
    """Why exact GA costs what it costs: its attention alone, against a bound from this core's speed.

    Fused attention, forward + backward, needs 7 GEMMs of N x N x d multiply-adds (forward:
    QK^T, PV; backward: QK^T again, dV, dP, dQ, dK), besides 2 N x N exponentials and the
    softmax bookkeeping. The bound counts the GEMMs alone (d = C_i, the useful work) at the best
    rate this core reaches on attention-shaped blocks in cache, with d = C_i or padded (useful
    multiply-adds per second): no exact float32 implementation gets under it."""
    def best_rate(d: int) -> float:
        rates = []
        for m, n in ((64, 512), (128, 512), (256, 256)):
            a, b, out = torch.randn(m, d), torch.randn(d, n), torch.empty(m, n)
            t = interleaved_times({"f": lambda: [torch.mm(a, b, out=out) for _ in range(100)]}, reps)["f"][0]
            rates.append(100 * m * n * d / t)
        return max(rates)

    rows = ["| GA block (C_i -> padded d, map) | GEMM work (GMAC) | useful GEMM rate (GMAC/s) | bound (ms) | "
            "fused SDPA fwd+bwd, median (ms) | SDPA / bound |", "|---|---:|---:|---:|---:|---:|"]
    print("\n".join(rows), flush=True)
    bounds: dict[str, float] = {}
    for backbone, ci, side in [("resnet18", 32, 56), ("resnet18", 64, 28),
                               ("efficientnet_b0", 12, 56), ("efficientnet_b0", 20, 28)]:
        n, d = side * side, -(-ci // 8) * 8  # the block pads C_i to a multiple of 8
        macs, rate = 7 * batch * n * n * ci, max(best_rate(ci), best_rate(d) * ci / d)
        bound = macs / rate
        bounds[backbone] = bounds.get(backbone, 0.0) + bound
        q, k, v = (torch.randn(batch, 1, n, d, requires_grad=True) for _ in range(3))
        sdpa = interleaved_times({"s": lambda: F.scaled_dot_product_attention(q, k, v, scale=1.0).sum().backward()},
                                 reps)["s"][1]
        rows.append(f"| {backbone} ({ci} -> {d}, {side}x{side}) | {macs / 1e9:.2f} | {rate / 1e9:.1f} | "
                    f"{bound * 1e3:.0f} | {sdpa * 1e3:.0f} | {sdpa / bound:.2f} |")
        print(rows[-1], flush=True)
    base = interleaved_times({b: _step(b, batch, 224) for b in bounds}, reps)
    rows += ["", "| model | base step, median (s) | exact GA's attention GEMMs, bound (s) | floor of +GA / base |",
             "|---|---:|---:|---:|"]
    for b, bound in bounds.items():
        rows.append(f"| {b}+ga | {base[b][1]:.2f} | {bound:.2f} | {(base[b][1] + bound) / base[b][1]:.2f}x |")
    print("\n".join(rows[-len(bounds) - 3:]), flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", default="abc", help="which parts to run: any of a, b, c, d (default abc)")
    ap.add_argument("--reps", type=int, default=7, help="timed repetitions of (a), (b) and (d)")
    ap.add_argument("--reps-c", type=int, default=5, help="timed rounds of (c)")
    ap.add_argument("--batch", type=int, default=8, help="batch of (a), (b) and (d)")
    ap.add_argument("--batch-c", type=int, nargs="+", default=[8, 32], help="batches of (c)")
    ap.add_argument("--size", type=int, default=224, help="image size of (c)")
    ap.add_argument("--memory", action="store_true", help="(c): peak memory too (one profiled step each)")
    ap.add_argument("--only", nargs="+", help="(c): only these models (and their bases), e.g. "
                    "efficientnet_b0+la 'resnet18+ga (sub-sampled GA)'")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", help="(c): also write the step times to this JSON file (bench_gpu.py --cpu-json)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with threadpool_limits(args.threads):
        print(f"torch {torch.__version__}, {args.threads} thread(s), {platform.processor() or platform.machine()}, "
              f"{time.strftime('%Y-%m-%d %H:%M')}, load average {os.getloadavg()[0]:.1f}")
        if "a" in args.part:
            print("\n(a) GA forward+backward: SDPA vs explicit N x N matrix\n")
            print("\n".join(part_a(args.reps, args.batch)), flush=True)
        if "b" in args.part:
            print("\n(b) LA forward+backward: ours (blocked SDPA) vs unfold (k = 7, 8 heads)\n")
            print("\n".join(part_b(args.reps, args.batch)), flush=True)
        if "c" in args.part:
            print("\n(c) SGD training step of every variant, relative to its base model")
            results: dict = {}
            part_c(args.reps_c, args.batch_c, args.size, args.memory, results, args.only)
            if args.json:
                Path(args.json).write_text(json.dumps(results, indent=1))
        if "d" in args.part:
            print(f"\n(d) exact GA's attention at 224 px, batch {args.batch}: fused kernel vs this core's bound\n")
            part_d(args.reps, args.batch)
        print(f"\nload average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
