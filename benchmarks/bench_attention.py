"""Speed and memory of the attention layers and of the model variants, measured side by side.

    python benchmarks/bench_attention.py                # all parts, 1 thread
    python benchmarks/bench_attention.py --part c --reps 3 --batch 8

(a) GA: fused SDPA path vs the explicit softmax(QK^T) matrix, ResNet18 layer1 (64 ch, 56x56) and
    layer2 (128 ch, 28x28), batch 8, forward + backward.
(b) LA: our blocked SDPA formulation vs the straightforward unfold formulation (k^2 copies), at
    7x7, 14x14 and 28x28 maps (k = 7, 8 heads, batch 8, forward + backward), plus the layer that
    LA replaces (3x3 conv; EfficientNet-B0's last MBConv block), for scale.
(c) one SGD training step (forward, loss, backward, update) of every model variant at 224 px,
    relative to its base model.

Time: CPU time of the process (``time.process_time``; with 1 thread that is the work done, while
wall time on the shared development machine mostly measures other jobs). The variants of one
comparison run round-robin (--reps rounds after a warm-up); ratios use the minimum, the medians are
shown too for (c). Peak memory: the largest amount of live tensor memory
during one run, from the PyTorch profiler's allocation records (activations kept for backward
included, parameters and inputs excluded). Prints Markdown tables with the ratios.
"""

from __future__ import annotations

import argparse
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


def interleaved_times(fns: dict, reps: int, warmup: int = 1) -> dict[str, tuple[float, float]]:
    """``name -> (min, median)`` CPU time of each ``fn()`` in seconds (process time: with one thread,
    the cost of our work; wall time on a shared, overloaded machine mostly measures the other jobs).
    The functions run round-robin so that cache and memory-bandwidth contention hit them alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            t0 = time.process_time()
            fn()
            times[name].append(time.process_time() - t0)
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
    rows = ["| map | SDPA time (ms) | explicit time (ms) | time ratio | SDPA peak (MB) | explicit peak (MB) | memory ratio |",
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

    rows = ["| map (C_in -> C_out, stride) | ours (ms) | unfold (ms) | speed-up | ours peak (MB) | unfold peak (MB) | replaced layer (ms) |",
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


def part_c(reps: int, batch: int, size: int) -> list[str]:
    rows = ["| model | step CPU time, min (s) | median (s) | vs base (min) | peak (MB) | vs base |",
            "|---|---:|---:|---:|---:|---:|"]
    for backbone in ("resnet18", "efficientnet_b0"):
        names = [n for n in list_models() if n.split("+")[0] == backbone]
        x, y = torch.randn(batch, 3, size, size), torch.randint(0, 3, (batch,))
        steps = {}
        for name in names:
            torch.manual_seed(0)
            model = create_model(name, 3).train()
            opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

            def step(model=model, opt=opt):
                opt.zero_grad(set_to_none=True)
                F.cross_entropy(model(x), y).backward()
                opt.step()

            steps[name] = step
        t = interleaved_times(steps, reps)
        m = {name: peak_memory(step) for name, step in steps.items()}
        for name in names:
            rows.append(f"| {name} | {t[name][0]:.2f} | {t[name][1]:.2f} | {t[name][0] / t[backbone][0]:.2f}x | "
                        f"{m[name]:.0f} | {m[name] / m[backbone]:.2f}x |")
            print(rows[-1], flush=True)
        del steps
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", default="abc", help="which parts to run: any of a, b, c (default abc)")
    ap.add_argument("--reps", type=int, default=7, help="timed repetitions of (a) and (b)")
    ap.add_argument("--reps-c", type=int, default=5, help="timed repetitions of (c)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=224, help="image size of (c)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with threadpool_limits(args.threads):
        print(f"torch {torch.__version__}, {args.threads} thread(s), {platform.processor() or platform.machine()}")
        if "a" in args.part:
            print("\n(a) GA forward+backward: SDPA vs explicit N x N matrix\n")
            print("\n".join(part_a(args.reps, args.batch)), flush=True)
        if "b" in args.part:
            print("\n(b) LA forward+backward: ours (blocked SDPA) vs unfold (k = 7, 8 heads)\n")
            print("\n".join(part_b(args.reps, args.batch)), flush=True)
        if "c" in args.part:
            print(f"\n(c) training step at {args.size} px, batch {args.batch}\n")
            print("\n".join(part_c(args.reps_c, args.batch, args.size)), flush=True)


if __name__ == "__main__":
    main()
