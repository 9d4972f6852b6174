"""Explanation speed on CPU: maps per second per method, and the cost of a Table 4 mean over N images.

Side by side in one run, per method:
- Grad-CAM through the ``grad-cam`` package (ours) vs a minimal hand-written Grad-CAM (one forward
  hook + torch.autograd.grad), to show whether the library costs anything, and vs a plain forward;
- GA maps from the blocks' chunked query averaging (ours) vs the explicit N x N softmax matrix;
- ViT attention rollout (ours: unfused attention for one pass, batched rollout) vs a plain fused
  forward pass.
Then the wall time of the mean map over ``--n-mean`` images (default 500) per method.

    python benchmarks/bench_explain.py [--size 64] [--batch 32] [--n-mean 500] [--threads 2]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from threadpoolctl import threadpool_limits

from medattn.explain import ga_blocks, ga_maps, gradcam, vit_rollout
from medattn.models import create_model, gradcam_target_layers


def bench(fn, repeat: int = 3) -> float:
    """Best-of-``repeat`` seconds of one call (after one warm-up call)."""
    fn()
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def manual_gradcam(model, x, layer):
    """Reference Grad-CAM: weights = spatial mean of d(score of predicted class)/d(activation)."""
    store = {}
    handle = layer.register_forward_hook(lambda m, i, o: store.__setitem__("a", o))
    try:
        with torch.enable_grad():
            logits = model(x)
            score = logits.gather(1, logits.argmax(1, keepdim=True)).sum()
            (grad,) = torch.autograd.grad(score, store["a"])
    finally:
        handle.remove()
    cam = F.relu((grad.mean((2, 3), keepdim=True) * store["a"]).sum(1, keepdim=True))
    cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    lo = cam.flatten(1).amin(1)[:, None, None]
    hi = cam.flatten(1).amax(1)[:, None, None]
    return ((cam - lo) / (hi - lo + 1e-7)).detach()


def explicit_ga_maps(model, x):
    """Reference GA maps: materialise softmax(theta^T phi) (B, N, N) per block and average its rows."""
    inputs = []
    handles = [b.register_forward_pre_hook(lambda m, a: inputs.append(a[0])) for b in ga_blocks(model)]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    out = []
    for b, inp in zip(ga_blocks(model), inputs):
        q = b.theta(inp).flatten(2).transpose(1, 2)
        k = b.phi(inp).flatten(2)
        m = torch.softmax(q @ k * b.scale, -1).mean(1).reshape(len(x), *inp.shape[-2:])
        out.append(m)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=64, help="image side in pixels (default 64)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--n-mean", type=int, default=500)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = torch.randn(args.batch, 3, args.size, args.size)
    B = len(x)
    print(f"# CPU, {args.threads} threads, batch {B} of {args.size}x{args.size} images, best of {args.repeat}")

    with threadpool_limits(args.threads):
        cnn = create_model("resnet18", num_classes=3, zero_init_last=False).eval()
        eff = create_model("efficientnet_b0", num_classes=3).eval()
        ga = create_model("resnet18+ga", num_classes=3).eval()
        vit = create_model("vit_tiny_in1k", num_classes=3).eval()
        rows = []

        def forward(m):
            with torch.no_grad():
                m(x)

        for name, m in (("resnet18", cnn), ("efficientnet_b0", eff)):
            layer = gradcam_target_layers(m)[0]
            t_ours = bench(lambda: gradcam(m, x), args.repeat)
            t_ref = bench(lambda: manual_gradcam(m, x, layer), args.repeat)
            t_fwd = bench(lambda: forward(m), args.repeat)
            rows.append((f"Grad-CAM {name}", t_ours, "hand-written Grad-CAM", t_ref, t_fwd))
        t_ours = bench(lambda: ga_maps(ga, x), args.repeat)
        t_ref = bench(lambda: explicit_ga_maps(ga, x), args.repeat)
        rows.append(("GA maps resnet18+ga (2 blocks)", t_ours, "explicit N x N matrix", t_ref,
                     bench(lambda: forward(ga), args.repeat)))
        t_ours = bench(lambda: vit_rollout(vit, x), args.repeat)
        rows.append(("rollout vit_tiny", t_ours, "-", float("nan"), bench(lambda: forward(vit), args.repeat)))

        print("\n| method | maps/s | reference | ref maps/s | ours / ref time | plain forward img/s | "
              "ours / forward time |")
        print("|---|---:|---|---:|---:|---:|---:|")
        for name, t, ref_name, t_ref, t_fwd in rows:
            ratio = f"{t / t_ref:.2f}" if t_ref == t_ref else "-"
            ref_rate = f"{B / t_ref:.1f}" if t_ref == t_ref else "-"
            print(f"| {name} | {B / t:.1f} | {ref_name} | {ref_rate} | {ratio} | {B / t_fwd:.1f} | "
                  f"{t / t_fwd:.1f} |")

        # the mean over N images as the pipeline computes it (batches, running sum)
        print(f"\n| mean map over {args.n_mean} images | seconds | images/s |")
        print("|---|---:|---:|")
        gen = torch.Generator().manual_seed(1)
        for name, fn in (("Grad-CAM resnet18", lambda b: gradcam(cnn, b)),
                         ("Grad-CAM efficientnet_b0", lambda b: gradcam(eff, b)),
                         ("GA maps resnet18+ga", lambda b: ga_maps(ga, b)[0]),
                         ("rollout vit_tiny", lambda b: vit_rollout(vit, b))):
            t = time.perf_counter()
            total, done = None, 0
            while done < args.n_mean:
                n = min(args.batch, args.n_mean - done)
                maps = fn(torch.randn(n, 3, args.size, args.size, generator=gen))
                total = maps.sum(0) if total is None else total + maps.sum(0)
                done += n
            dt = time.perf_counter() - t
            print(f"| {name} | {dt:.1f} | {args.n_mean / dt:.1f} |")


if __name__ == "__main__":
    main()
