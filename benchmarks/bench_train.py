"""Training throughput of each model variant relative to its base, and the data-wait share.

1. Images per CPU second of a training step (forward, backward, SGD step; batch 32, random
   input, CPU, 1 thread) for every CNN variant, measured round-robin so that machine noise hits
   all models alike, and in process CPU time (with one thread, robust to other jobs on shared
   cores); reported relative to the variant's base model.
2. The share of a training step spent waiting for data: one epoch of a real run (synthetic ISIC
   data, PNG decoding, the resize cache, the paper's augmentation) through medattn.training,
   with 0 and 2 loader workers.

    python benchmarks/bench_train.py [--size 64] [--rounds 3] [--steps 4]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from medattn.models import create_model  # noqa: E402

VARIANTS = ["", "+ga", "+la", "+ga+la", "+ela", "+ga+ela"]


def step_seconds(models: dict, size: int, batch: int, rounds: int, steps: int) -> dict[str, float]:
    """Median CPU seconds per training step of each model, timed round-robin."""
    torch.manual_seed(0)
    x, y = torch.randn(batch, 3, size, size), torch.randint(0, 3, (batch,))
    opts = {n: torch.optim.SGD(m.parameters(), lr=1e-3, momentum=0.9) for n, m in models.items()}
    times: dict[str, list[float]] = {n: [] for n in models}

    def step(name):
        loss = torch.nn.functional.cross_entropy(models[name](x), y)
        opts[name].zero_grad()
        loss.backward()
        opts[name].step()

    for name in models:  # warm-up
        step(name)
    for _ in range(rounds):
        for name in models:
            t0 = time.process_time()
            for _ in range(steps):
                step(name)
            times[name].append((time.process_time() - t0) / steps)
    return {n: statistics.median(v) for n, v in times.items()}


def data_wait(size: int, workers: int, root: Path, spec: str, seed: int) -> dict:
    """Timings of a 1-epoch run; runs of one ``workers`` value share the image cache."""
    from medattn.training import train

    rec = train("resnet18", spec, runs_dir=root / f"runs{workers}", epochs=1, image_size=size,
                pretrained=False, num_workers=workers, threads=1, progress=False,
                split_seed=seed)
    return rec["timings"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--skip-data", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        print(f"# training step throughput, CPU, 1 thread, batch {args.batch}, {args.size} px")
        print("| model | images per CPU second | relative to base |")
        print("|---|---|---|")
        for backbone in ("resnet18", "efficientnet_b0"):
            models = {f"{backbone}{v}": create_model(f"{backbone}{v}", 3).train() for v in VARIANTS}
            sec = step_seconds(models, args.size, args.batch, args.rounds, args.steps)
            for name, s in sec.items():
                print(f"| {name} | {args.batch / s:.1f} | {sec[backbone] / s:.2f} |", flush=True)

        if args.skip_data:
            return
        from medattn.data.synthetic import write_derm
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            specs = write_derm(root / "data", n=300, n_ood=0, image_size=128, workers=1)
            print(f"\n# data wait: resnet18, 1 epoch of 210 synthetic ISIC images (128 px PNG), "
                  f"{args.size} px, paper augmentation")
            print("| loader workers | image cache | data wait share of step time | "
                  "train images/s |")
            print("|---|---|---|---|")
            for workers in (0, 2):
                for seed, cache in ((0, "cold (first epoch)"), (1, "warm (later epochs)")):
                    tm = data_wait(args.size, workers, root, specs[0], seed)
                    print(f"| {workers} | {cache} | {100 * tm['data_wait_share']:.1f}% | "
                          f"{tm['images_per_second']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
