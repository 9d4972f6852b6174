"""Explanation speed on CPU: maps per second per method, and the cost of a Table 4 mean over N images.

Side by side in one run, per method:
- Grad-CAM (ours: the ``grad-cam`` package with the backward pass stopped at the target activation)
  vs the package used plainly (full backward), vs a minimal hand-written Grad-CAM (one forward hook
  + torch.autograd.grad), and vs a plain forward;
- GA maps from the blocks' chunked query averaging (ours) vs the explicit N x N softmax matrix;
- ViT attention rollout (ours: unfused attention for one pass, batched rollout) vs a plain fused
  forward pass.
Then the wall time of the mean map over ``--n-mean`` images (default 500) per method.

    python benchmarks/bench_explain.py [--size 64] [--batch 32] [--n-mean 500] [--threads 1]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from threadpoolctl import threadpool_limits

from medattn.explain import ga_blocks, ga_maps, gradcam, vit_rollout
from medattn.models import create_model, gradcam_target_layers


def bench(fns: dict, rounds: int = 3) -> dict:
    """Best-of-``rounds`` CPU seconds of one call of each function, measured interleaved.

    CPU time of this process (threads pinned) rather than wall time: the machine is shared, and
    other jobs stretch wall time but not the work done here. One warm-up call each first.
    """
    for fn in fns.values():
        fn()
    best = {k: float("inf") for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            t = time.process_time()
            fn()
            best[k] = min(best[k], time.process_time() - t)
    return best


def package_gradcam(model, x, layers):
    """The grad-cam package used plainly (full backward through the network)."""
    from pytorch_grad_cam import GradCAM

    with torch.enable_grad(), GradCAM(model=model, target_layers=layers) as cam:
        return cam(input_tensor=x, targets=None)


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
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = torch.randn(args.batch, 3, args.size, args.size)
    B = len(x)
    print(f"# CPU, {args.threads} thread(s), batch {B} of {args.size}x{args.size} images, "
          f"best of {args.rounds} interleaved rounds, CPU seconds of this process")

    with threadpool_limits(args.threads):
        cnn = create_model("resnet18", num_classes=3, zero_init_last=False).eval()
        eff = create_model("efficientnet_b0", num_classes=3).eval()
        ga = create_model("resnet18+ga", num_classes=3).eval()
        vit = create_model("vit_tiny_in1k", num_classes=3).eval()

        def forward(m):
            with torch.no_grad():
                m(x)

        groups = []
        for name, m in (("resnet18", cnn), ("efficientnet_b0", eff)):
            layers = gradcam_target_layers(m)
            groups.append((f"Grad-CAM {name}", {
                "ours (written out, short backward)": lambda m=m: gradcam(m, x),
                "grad-cam package, plain": lambda m=m, ls=layers: package_gradcam(m, x, ls),
                "hand-written Grad-CAM": lambda m=m, ls=layers: manual_gradcam(m, x, ls[0]),
                "plain forward": lambda m=m: forward(m)}))
        groups.append(("GA maps resnet18+ga (2 blocks)", {
            "ours (chunked, record_map)": lambda: ga_maps(ga, x),
            "explicit N x N matrix": lambda: explicit_ga_maps(ga, x),
            "plain forward": lambda: forward(ga)}))
        groups.append(("rollout vit_tiny", {
            "ours (unfused for one pass)": lambda: vit_rollout(vit, x),
            "plain forward (fused)": lambda: forward(vit)}))

        print("\n| method | variant | maps/CPU-s | time / ours |")
        print("|---|---|---:|---:|")
        for title, fns in groups:
            t = bench(fns, args.rounds)
            ours = next(iter(t.values()))
            for k, v in t.items():
                print(f"| {title} | {k} | {B / v:.1f} | {v / ours:.2f} |")

        # the mean over N images as the pipeline computes it (batches, running sum)
        print(f"\n| mean map over {args.n_mean} images of {args.size} px | CPU seconds | wall seconds |")
        print("|---|---:|---:|")
        gen = torch.Generator().manual_seed(1)
        for name, fn in (("Grad-CAM resnet18", lambda b: gradcam(cnn, b)),
                         ("Grad-CAM efficientnet_b0", lambda b: gradcam(eff, b)),
                         ("GA maps resnet18+ga", lambda b: ga_maps(ga, b)[0]),
                         ("rollout vit_tiny", lambda b: vit_rollout(vit, b))):
            c, w = time.process_time(), time.perf_counter()
            total, done = None, 0
            while done < args.n_mean:
                n = min(args.batch, args.n_mean - done)
                maps = fn(torch.randn(n, 3, args.size, args.size, generator=gen))
                total = maps.sum(0) if total is None else total + maps.sum(0)
                done += n
            print(f"| {name} | {time.process_time() - c:.1f} | {time.perf_counter() - w:.1f} |")


if __name__ == "__main__":
    main()
