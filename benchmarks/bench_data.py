"""Training-loader throughput: full-size JPEGs decoded every epoch vs the ImageCache.

    python benchmarks/bench_data.py [--n 96] [--width 1024] [--height 768] [--size 224]
                                    [--short-side 256] [--workers 0] [--rounds 3]

Writes ``n`` realistic JPEGs (synthetic dermoscopy upscaled to width x height with skin-like
texture, quality 90, ~ the size of ISIC archive JPEGs), then measures images/s through
``DataLoader(ImageDataset(table, transform))`` for:

1. the training loader (``build_transform(train=True, size)``, the paper's augmentation):
   raw (every item decodes the full-size JPEG) vs cached (``ImageCache``: the decoded,
   short-side-resized array is loaded);
2. the loading stage alone (decode + resize to the short side, no augmentation): raw vs cached;
3. our colour jitter vs torchvision's ``ColorJitter`` (same strengths, hue included) inside the
   cached training loader, the reason ``RandomColorJitter`` exists;
4. our one-warp geometric step (``RandomResizedAffine``) vs torchvision's chain
   ``RandomResizedCrop`` + ``RandomAffine`` + two flips on the PIL image (+ ``ToImage``; same
   parameters, our colour jitter after both) inside the cached training loader, the reason
   ``RandomResizedAffine`` exists.

All loaders run round-robin (``--rounds`` epochs each, alternating) so load from other jobs hits
them alike. Two rates per epoch: images per wall-clock second, and images per CPU second of this
process (with 0 loader workers and 1 thread all work is in this process, so the CPU-time rate is
what the loader costs, undisturbed by other jobs competing for the cores). Ratios use the best
epoch of each. The one-off cost of building the cache is reported separately. Threads pinned to 1
(torch and BLAS).
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from torchvision.transforms import v2  # noqa: E402

from medattn.data import ImageCache, ImageDataset, build_transform, synthetic  # noqa: E402
from medattn.data.cache import resize_short_side  # noqa: E402
from medattn.data.transforms import IMAGENET_MEAN, IMAGENET_STD, RandomColorJitter  # noqa: E402


def write_jpegs(folder: Path, n: int, width: int, height: int) -> list[str]:
    """Full-size JPEGs: synthetic lesions (256 px) upscaled, plus fine skin texture (so that the
    files are as hard to decode and as large as real photos, not flat colour)."""
    spec, _ = synthetic.write_derm(folder / "src", n=n, n_ood=0, image_size=256, workers=1)
    table = pd.read_csv(folder / "src" / "isic" / "metadata.csv")
    rng = np.random.default_rng(0)
    paths = []
    for i, iid in enumerate(table["isic_id"]):
        src = next((folder / "src" / "isic").glob(f"{iid}.*"))
        big = np.asarray(Image.open(src).convert("RGB").resize((width, height), Image.Resampling.BICUBIC),
                         dtype=np.int16)
        big = big + rng.integers(-10, 11, big.shape[:2], dtype=np.int16)[..., None]
        out = folder / f"full_{i:05d}.jpg"
        Image.fromarray(np.clip(big, 0, 255).astype(np.uint8)).save(out, quality=90)
        paths.append(str(out))
    return paths


def epoch(loader) -> tuple[float, float]:
    """(images per wall-clock second, images per CPU second of this process)."""
    t, c = time.perf_counter(), time.process_time()
    n = 0
    for x, _, _ in loader:
        n += len(x)
    return n / (time.perf_counter() - t), n / (time.process_time() - c)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=96)
    ap.add_argument("--width", type=int, default=1024)
    ap.add_argument("--height", type=int, default=768)
    ap.add_argument("--size", type=int, default=224, help="training crop size")
    ap.add_argument("--short-side", type=int, default=256, help="cache short side")
    ap.add_argument("--workers", type=int, default=0, help="DataLoader workers")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch", type=int, default=32)
    args = ap.parse_args()
    torch.set_num_threads(1)
    with threadpool_limits(1), tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        paths = write_jpegs(tmp, args.n, args.width, args.height)
        mb = sum(Path(p).stat().st_size for p in paths) / len(paths) / 1e6
        table = pd.DataFrame({"image_id": [f"i{k}" for k in range(len(paths))], "path": paths,
                              "label": 0, "group": "g", "subset": pd.NA})
        tf = build_transform(True, args.size)
        tv = v2.Compose([t for t in tf.transforms if not isinstance(t, RandomColorJitter)] + [
            v2.ColorJitter(0.3, 0.3, 0.3, 0.1), v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD))])
        tv.accepts_arrays = True  # its first step is ours, as in tf
        chain = v2.Compose([  # torchvision's geometric steps on PIL (what tf replaces), our jitter
            v2.RandomResizedCrop(args.size, scale=(0.4, 1.0), ratio=(3 / 4, 4 / 3)),
            v2.RandomAffine(degrees=90.0, shear=20.0), v2.RandomHorizontalFlip(),
            v2.RandomVerticalFlip(), v2.ToImage(), tf.transforms[-1]])
        short = lambda im: v2.functional.pil_to_tensor(resize_short_side(im, args.short_side))  # noqa: E731
        as_tensor = v2.Compose([v2.PILToTensor(), v2.CenterCrop(args.short_side)])
        cache = ImageCache(tmp / "cache", args.short_side)
        t = time.perf_counter()
        cache.prepare(paths, workers=1, progress=False)
        build = len(paths) / (time.perf_counter() - t)

        def loader(transform, cached):
            return torch.utils.data.DataLoader(
                ImageDataset(table, transform, cache=cache if cached else None),
                batch_size=args.batch, shuffle=True, num_workers=args.workers)

        loaders = {
            "train, raw": loader(tf, False),
            "train, cached": loader(tf, True),
            "load only, raw": loader(v2.Compose([short, v2.CenterCrop(args.short_side)]), False),
            "load only, cached": loader(as_tensor, True),
            "train, cached, torchvision ColorJitter": loader(tv, True),
            "train, cached, torchvision crop+affine+flips": loader(chain, True),
        }
        rates = {k: [] for k in loaders}
        for _ in range(args.rounds):
            for k, ld in loaders.items():
                rates[k].append(epoch(ld))
    wall = {k: max(r[0] for r in v) for k, v in rates.items()}
    cpu = {k: max(r[1] for r in v) for k, v in rates.items()}
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, 1 thread, "
          f"{args.workers} loader workers")
    print(f"{args.n} JPEGs {args.width}x{args.height} (mean {mb:.2f} MB), crop {args.size}, "
          f"cache short side {args.short_side}, {args.rounds} rounds\n")
    print("| loader | images/s wall (best) | images per CPU-s (best) | wall, all rounds |")
    print("|---|---|---|---|")
    for k in loaders:
        print(f"| {k} | {wall[k]:.1f} | {cpu[k]:.1f} | {', '.join(f'{r[0]:.1f}' for r in rates[k])} |")
    for label, a, b in (("training loader, cached / raw", "train, cached", "train, raw"),
                        ("loading stage,   cached / raw", "load only, cached", "load only, raw"),
                        ("colour jitter, ours / torchvision (cached training loader)", "train, cached",
                         "train, cached, torchvision ColorJitter"),
                        ("geometric steps, one warp / torchvision chain (cached training loader)",
                         "train, cached", "train, cached, torchvision crop+affine+flips")):
        print(f"{label}: {wall[a] / wall[b]:.1f}x wall, {cpu[a] / cpu[b]:.1f}x CPU time")
    print(f"building the cache once: {build:.1f} images/s")


if __name__ == "__main__":
    main()
