"""Grad-CAM written out (now) against the grad-cam package with the cut backward (before issue 22).

The "before" implementation is read from git (main at 76c1669, before this change),
so this needs a git checkout and the `[test]` extra (grad-cam). Prints a Markdown table: best of
``--reps`` CPU seconds per call on 8 images, one thread, and the largest difference of the maps.

    PYTHONPATH=src python benchmarks/bench_gradcam_swap.py --reps 5
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import tempfile
import time
from pathlib import Path

import timm
import torch

from medattn.explain.gradcam import gradcam as written_out

BEFORE = "76c1669"


def before_module():
    """The package-based gradcam of commit BEFORE, imported from a temporary file."""
    root = Path(__file__).resolve().parents[1]
    src = subprocess.run(["git", "show", f"{BEFORE}:src/medattn/explain/gradcam.py"], cwd=root,
                         capture_output=True, text=True, check=True).stdout
    path = Path(tempfile.mkdtemp()) / "gradcam_before.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("gradcam_before", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.gradcam


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(1)
    package = before_module()
    import pytorch_grad_cam  # noqa: F401  (import cost outside the timing)

    print("| model | px | package, cut backward (before) | written out (now) | before / now "
          "| max abs difference of the maps |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, size in (("resnet18", 64), ("efficientnet_b0", 64), ("resnet18", 224)):
        torch.manual_seed(0)
        model = timm.create_model(name, num_classes=3).eval()
        x = torch.randn(8, 3, size, size)
        best = {"before": float("inf"), "now": float("inf")}
        for _ in range(args.reps):  # alternate, so that a busy neighbour hits both alike
            for key, fn in (("before", package), ("now", written_out)):
                t = time.process_time()
                fn(model, x)
                best[key] = min(best[key], time.process_time() - t)
        diff = float((package(model, x) - written_out(model, x)).abs().max())
        print(f"| {name} | {size} | {best['before']:.3f} | {best['now']:.3f} | "
              f"{best['before'] / best['now']:.2f} | {diff:.1e} |")


if __name__ == "__main__":
    main()
