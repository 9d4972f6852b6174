"""Training where users train: the GPU path measured in one command, and what the paper's grid costs.

    python benchmarks/bench_gpu.py --out bench-gpu                     # a CUDA machine (sized for ~8 min on an H200)
    python benchmarks/bench_gpu.py --out /tmp/b --device cpu --quick   # the same code on CPU, tiny sizes
    python benchmarks/bench_gpu.py --out /tmp/e --parts grid --cpu-json c.json   # the estimate, no GPU

Parts (``--parts``, default all but ``grid``'s estimate mode). Each writes its files into ``--out``
as soon as it is done, so an interrupted run keeps what it measured; ``summary.md`` collects the tables.

  env       device, driver and library versions                                      env.json
  sdpa      which SDPA kernel (flash, memory-efficient, cuDNN, math) GA and LA run at 224 px,
            fp32 and AMP, contiguous and channels-last; a fused-only run must not raise   sdpa.csv
  speed     training and evaluation images/s and peak memory of every model at 224 px, batch 32,
            AMP and channels-last as the engine sets them (cuDNN deterministic), and with
            cudnn.benchmark; relative to the base, beside timm's published throughput  speed.csv
  loader    the cached training loader's images/s with 0..N workers beside the GPU's appetite,
            and the data-wait share of real runs through medattn.training            loader.csv
  ray       runs per hour and aggregate images/s with 1, 4 and 8 runs sharing the GPU through
            the Ray backend (1, 0.25, 0.125 GPU per run)                                ray.csv
  accuracy  the same seeds trained on the GPU (AMP) and on the CPU (float32): balanced accuracy
                                                                                    accuracy.csv
  grid      GPU hours of paper_isic and paper_camelyon17 from the measured throughputs   grid.md

timm's published figures (RTX 3090, AMP, NHWC, PyTorch 1.12, CUDA 11.3; training batch 512,
inference batch 1024, 224 px) are from huggingface/pytorch-image-models, files
results/benchmark-train-amp-nhwc-pt112-cu113-rtx3090.csv and
results/benchmark-infer-amp-nhwc-pt112-cu113-rtx3090.csv.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from medattn.models import create_model, list_models  # noqa: E402
from medattn.training.precision import Precision  # noqa: E402

# timm's published throughput (images/s) of the backbones, see the module docstring
TIMM_TRAIN = {"resnet18": 3481.78, "efficientnet_b0": 1751.72,
              "vit_tiny_in1k": 2290.33, "vit_tiny_in21k": 2299.56}  # deit_tiny / vit_tiny_patch16_224
TIMM_INFER = {"resnet18": 11023.6, "efficientnet_b0": 8015.36,
              "vit_tiny_in1k": 6855.38, "vit_tiny_in21k": 6844.8}
# The in-distribution pools and OOD sets of the shipped paper configs. Camelyon17: WILDS v1.0
# counts (pool = centers 0, 3, 4 = train + id_val; OOD = centers 1 and 2). ISIC: the archive
# download's count varies with the date and the diagnosis filter; 25,331 is ISIC 2019's training
# set, a stand-in (`medattn data inspect` prints yours; pass --isic-images). PAD-UFES-20: 2,298.
GRID = {"paper_isic": dict(pool=25331, ood=2298, epochs=30),
        "paper_camelyon17": dict(pool=302436 + 33560, ood=34904 + 85054, epochs=10)}
RUNS_PER_MODEL = 3 * 4 * 2 + 10  # lr x weight decay x search splits + final splits
BACKENDS = ("FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION")
SUB = " (sub-sampled GA)"  # bench_attention.py's label of the ga_subsample variants
# seconds each part needs at most on one H200 (for --budget); sdpa, speed and ray dominate
NEEDS = {"env": 1, "sdpa": 60, "speed": 180, "loader": 60, "ray": 200, "accuracy": 90}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def write_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def md_table(rows: list[dict]) -> str:
    cols = list(rows[0])
    def fmt(v) -> str:
        if not isinstance(v, float):
            return str(v)
        return f"{v:.0f}" if abs(v) >= 100 else f"{v:.3g}"

    return "\n".join(["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
                     + ["| " + " | ".join(fmt(r[c]) for c in cols) + " |" for r in rows])


# -- env -----------------------------------------------------------------------------------------

def part_env(args, device) -> dict:
    import timm
    env = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "host": platform.node(),
           "python": platform.python_version(), "torch": torch.__version__, "timm": timm.__version__,
           "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
           "cpus": os.cpu_count(), "device": str(device)}
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        env.update(gpu=p.name, gpu_memory_gib=round(p.total_memory / 2**30, 1),
                   capability=f"{p.major}.{p.minor}", bf16=torch.cuda.is_bf16_supported())
    (args.out / "env.json").write_text(json.dumps(env, indent=2))
    return env


# -- sdpa ----------------------------------------------------------------------------------------

def _sdpa_layers(quick: bool):
    from medattn.models import GlobalAttention2d, LocalAttention2d
    s = 4 if quick else 1  # map sides of 224 px inputs (quick: 56 px)
    return [("GA resnet18 layer1 (64 ch)", lambda: GlobalAttention2d(64), 64, 56 // s),
            ("GA resnet18 layer2 (128 ch)", lambda: GlobalAttention2d(128), 128, 28 // s),
            ("GA efficientnet_b0 blocks[1] (24 ch)", lambda: GlobalAttention2d(24), 24, 56 // s),
            ("GA efficientnet_b0 blocks[2] (40 ch)", lambda: GlobalAttention2d(40), 40, 28 // s),
            ("GA sub-sampled, resnet18 layer1", lambda: GlobalAttention2d(64, subsample=True), 64, 56 // s),
            ("LA resnet18 layer4[0].conv1 (stride 2)", lambda: LocalAttention2d(256, 512, stride=2), 256, 14 // s),
            ("LA resnet18 layer4 (512 ch)", lambda: LocalAttention2d(512, 512), 512, 7),
            ("LA efficientnet_b0 blocks[6]", lambda: LocalAttention2d(192, 320), 192, 7)]


def part_sdpa(args, device) -> list[dict]:
    """The aten SDPA ops each layer's forward + backward runs; then the same with the math kernel
    disabled (torch.nn.attention.sdpa_kernel), which raises if no fused kernel fits."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.profiler import profile

    rows = []
    fused = [getattr(SDPBackend, b) for b in BACKENDS]
    for name, make, c, side in _sdpa_layers(args.quick):
        layer = make().to(device)
        for amp in ("off", "auto"):
            for cl in ("off", "on"):
                prec = Precision.resolve(amp, cl, device)
                x = prec.batch(torch.randn(args.batch, c, side, side)).requires_grad_(True)

                def step():
                    with prec.autocast():
                        y = layer(x)
                    y.float().square().mean().backward()
                    sync(device)

                step()
                with profile() as prof:
                    step()
                ops = sorted({e.name.replace("aten::_scaled_dot_product_", "") for e in prof.events()
                              if e.name.startswith("aten::_scaled_dot_product_")})
                try:
                    with sdpa_kernel(fused):
                        step()
                    strict = "ok"
                except RuntimeError as err:
                    strict = f"RAISES: {str(err).splitlines()[0][:120]}"
                t0 = time.perf_counter()
                for _ in range(5):
                    step()
                rows.append({"layer": name, "map": f"{side}x{side}", "precision": prec.name,
                             "sdpa ops (fwd + bwd)": " ".join(ops),
                             "math kernel": "YES" if any("math" in o for o in ops) else "no",
                             "fused-only run": strict,
                             "ms fwd+bwd": (time.perf_counter() - t0) / 5 * 1e3})
                print(rows[-1], flush=True)
    write_csv(args.out / "sdpa.csv", rows)
    return rows


# -- speed ---------------------------------------------------------------------------------------

def measure_model(name: str, prec: Precision, batch: int, size: int, steps: int, windows: int) -> dict:
    """Training step as the engine runs it (autocast, scaler, loss read back every step), then
    evaluation; images/s are medians over ``windows`` timed windows of ``steps`` steps."""
    device = prec.device
    torch.manual_seed(0)
    model = prec.prepare(create_model(name, 3)).train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    scaler = prec.grad_scaler()
    x = prec.batch(torch.randn(batch, 3, size, size))
    y = torch.randint(0, 3, (batch,), device=device)

    def train_step():
        with prec.autocast():
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        return float(loss.detach())  # the engine reads the loss every step (a sync)

    @torch.no_grad()
    def eval_step():
        with prec.autocast():
            return model(x).float().cpu()

    def rate(fn) -> float:
        for _ in range(max(2, steps // 2)):
            fn()
        sync(device)
        times = []
        for _ in range(windows):
            t0 = time.perf_counter()
            for _ in range(steps):
                fn()
            sync(device)
            times.append((time.perf_counter() - t0) / steps)
        return batch / statistics.median(times)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    train = rate(train_step)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else float("nan")
    model.eval()
    return {"train_ips": train, "eval_ips": rate(eval_step), "peak_mib": peak}


def part_speed(args, device) -> list[dict]:
    names = args.models or list_models(paper_only=True)  # the paper's 14 unless --models names others
    prec = Precision.resolve("auto", "auto", device)
    results: dict[str, dict] = {}
    for mode in ("engine", "benchmark"):
        # the engine runs cuDNN deterministic without autotuning (reproducible runs); the second
        # pass shows what that costs
        torch.backends.cudnn.deterministic = mode == "engine"
        torch.backends.cudnn.benchmark = mode == "benchmark"
        for name in names:
            r = measure_model(name, prec, args.batch, args.size, args.steps, args.windows)
            results.setdefault(name, {})[mode] = r
            print(name, mode, {k: round(v, 1) for k, v in r.items()}, flush=True)
            if device.type == "cuda":
                torch.cuda.empty_cache()
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    rows = []
    for name in names:
        base = name.split("+")[0]
        e, b = results[name]["engine"], results[name]["benchmark"]
        be = results.get(base, results[name])["engine"]
        rows.append({"model": name, "precision": prec.name, "batch": args.batch,
                     "train img/s": e["train_ips"], "vs base": e["train_ips"] / be["train_ips"],
                     "eval img/s": e["eval_ips"], "peak MiB": e["peak_mib"],
                     "peak vs base": e["peak_mib"] / be["peak_mib"],
                     "train img/s, cudnn.benchmark": b["train_ips"],
                     "timm train img/s (RTX 3090, batch 512)": TIMM_TRAIN.get(name, ""),
                     "timm eval img/s (batch 1024)": TIMM_INFER.get(name, "")})
    write_csv(args.out / "speed.csv", rows)
    return rows


# -- loader --------------------------------------------------------------------------------------

def _synthetic(args, root: Path) -> str:
    from medattn.data.synthetic import write_derm
    n = 64 if args.quick else 4096
    isic, _ = write_derm(root / "data", n=n, n_ood=0, image_size=288, workers=os.cpu_count(),
                         patch_bias=0.9)
    return isic


def part_loader(args, device, data: str, speed_rows: list[dict] | None) -> list[dict]:
    from torch.utils.data import DataLoader, Subset

    from medattn.data import ImageCache, ImageDataset, build_transform, load_task
    from medattn.training import train
    from medattn.training.engine import _cache_side, _worker_init

    size = args.size
    runs = args.work / "runs-loader"
    cache = ImageCache(runs / "cache", short_side=_cache_side(size))
    table = load_task(data).table
    cache.prepare(table["path"].tolist(), workers=os.cpu_count(), progress=False)
    ds = ImageDataset(table, build_transform(True, size), cache=cache)
    ds = Subset(ds, range(min(len(ds), 64 if args.quick else 2048)))
    appetite = {r["model"]: r["train img/s"] for r in speed_rows or []}
    fastest = max(appetite.values()) if appetite else float("nan")
    rows = []
    for workers in sorted({0, 2, 4, 8, min(12, os.cpu_count() - 1)}):
        loader = DataLoader(ds, batch_size=args.batch, shuffle=True, num_workers=workers,
                            worker_init_fn=_worker_init, pin_memory=device.type == "cuda",
                            drop_last=True, persistent_workers=False)
        t0, n = time.perf_counter(), 0
        for x, _, _ in loader:  # a whole epoch, worker start-up included (as in the engine)
            n += len(x)
        ips = n / (time.perf_counter() - t0)
        rows.append({"what": f"cached training loader, {workers} workers", "images/s": ips,
                     "fastest model's train img/s": fastest,
                     "GPU idle share if that model trained (no overlap credit)":
                         max(0.0, 1 - ips / fastest) if appetite else ""})
        print(rows[-1], flush=True)
    for workers in (4, 8) if not args.quick else (2,):  # real runs through the engine
        rec = train("resnet18", data, runs_dir=runs, epochs=2, image_size=size, batch_size=args.batch,
                    pretrained=False, num_workers=workers, device=str(device), progress=False,
                    split_seed=workers)
        tm = rec["timings"]
        rows.append({"what": f"medattn train resnet18, 2 epochs, {workers} workers, warm cache",
                     "images/s": tm["images_per_second"], "fastest model's train img/s": fastest,
                     "GPU idle share if that model trained (no overlap credit)":
                         f"measured data-wait share {tm['data_wait_share']:.3f}"})
        print(rows[-1], flush=True)
    write_csv(args.out / "loader.csv", rows)
    return rows


# -- ray -----------------------------------------------------------------------------------------

def part_ray(args, device, data: str) -> list[dict]:
    import ray

    from medattn.training.backends import RayBackend
    from medattn.training.config import RunSpec, TrainSettings

    runs = args.work / "runs-ray"
    from medattn.data import ImageCache, load_task
    from medattn.training.engine import _cache_side
    table = load_task(data).table
    ImageCache(runs / "cache", _cache_side(args.size)).prepare(table["path"].tolist(),
                                                                workers=os.cpu_count(), progress=False)
    cpus = os.cpu_count()
    gpu = device.type == "cuda"
    shares = (1.0, 0.25, 0.125) if gpu else (1.0, 0.5)
    n_runs = 1 if args.quick else 8
    # start the worker processes (imports, CUDA context) before timing, as a long study has them
    RayBackend()._init()  # a local instance whose workers import this medattn
    most = int(round(1 / min(shares)))
    warm = ray.remote(num_cpus=max(1, cpus // most), num_gpus=min(shares) if gpu else 0)(_warm_worker)
    ray.get([warm.remote() for _ in range(most)])
    rows, seed = [], 0
    for share in shares:
        per_run_cpus = max(1, int(cpus * share))
        specs = []
        for _ in range(n_runs):
            specs.append(RunSpec(phase="final", dataset="bench", data=data, model="resnet18", lr=0.01,
                                 weight_decay=0.0, split_seed=seed,
                                 train=TrainSettings(epochs=1, batch_size=args.batch, image_size=args.size,
                                                     pretrained=False, num_workers=max(1, per_run_cpus - 1),
                                                     threads=1)))  # loader workers do the CPU work
            seed += 1
        backend = RayBackend(num_cpus=per_run_cpus, num_gpus=share if gpu else 0.0)
        t0 = time.perf_counter()
        recs = backend.run(specs, runs)
        wall = time.perf_counter() - t0
        done = [r for r in recs if r.get("status") in ("done", "diverged")]
        images = sum(r["timings"]["train_images"] for r in done)
        rows.append({"GPU per run" if gpu else "CPU share per run": share,
                     "concurrent runs": int(round(1 / share)), "CPUs per run": per_run_cpus,
                     "runs": len(specs), "finished": len(done), "wall s": wall,
                     "runs per hour (these 1-epoch runs)": 3600 * len(done) / wall,
                     "aggregate train img/s (incl. start-up, eval)": images / wall,
                     "steady train img/s (concurrent runs x per-run img/s)":
                         min(int(round(1 / share)), len(done)) * statistics.mean(
                             r["timings"]["images_per_second"] for r in done) if done else "",
                     "mean run s": statistics.mean(r["timings"]["total_seconds"] for r in done) if done else ""})
        print(rows[-1], flush=True)
    ray.shutdown()
    write_csv(args.out / "ray.csv", rows)
    return rows


def _warm_worker() -> None:
    import medattn.training.engine  # noqa: F401
    if torch.cuda.is_available():
        torch.zeros(1, device="cuda")
    time.sleep(2)  # hold the worker so that every warm-up task gets its own


# -- accuracy ------------------------------------------------------------------------------------

def part_accuracy(args, device) -> list[dict]:
    """Same seeds, same data, GPU (AMP, channels-last: the defaults) against CPU (float32)."""
    from medattn.data.synthetic import write_derm
    from medattn.training.config import RunSpec, TrainSettings
    from medattn.training.engine import train_run

    root = args.work / "accuracy"
    isic, _ = write_derm(root / "data", n=160 if args.quick else 800, n_ood=0, image_size=64,
                         patch_bias=0.9, workers=os.cpu_count(), overwrite=True)
    rows = []
    devices = ["cpu", str(device)] if device.type == "cuda" else ["cpu", "cpu"]
    for seed in range(1 if args.quick else 3):
        row = {"seed": seed}
        for i, dev in enumerate(devices):
            spec = RunSpec(phase="final", dataset="acc", data=isic, model="resnet18", lr=0.01,
                           weight_decay=1e-4, split_seed=seed,
                           train=TrainSettings(epochs=2 if args.quick else 8, batch_size=32,
                                               image_size=64, pretrained=False, augment="light"))
            rec = train_run(spec, root / f"runs-{dev.replace(':', '')}-{i}", device=dev, progress=False)
            tag = "gpu" if i else "cpu"
            row[f"{tag} precision"] = rec["config"].get("precision")
            row[f"{tag} status"] = rec["status"]
            for part in ("val", "test"):
                row[f"{tag} {part} bacc"] = (rec["metrics"].get(part) or {}).get("balanced_accuracy", float("nan"))
        row["gpu - cpu, test bacc"] = row["gpu test bacc"] - row["cpu test bacc"]
        rows.append(row)
        print(row, flush=True)
    diffs = [r["gpu - cpu, test bacc"] for r in rows]
    sd = f" +- {statistics.stdev(diffs):.3f} (sd)" if len(diffs) > 1 else ""
    rows.append({k: "" for k in rows[0]} | {"seed": "mean", "gpu - cpu, test bacc":
                                             f"{statistics.mean(diffs):.3f}{sd}"})
    write_csv(args.out / "accuracy.csv", rows)
    return rows


# -- grid ----------------------------------------------------------------------------------------

def run_hours(train_ips: float, eval_ips: float, config: str, isic_images: int) -> float:
    """Hours of one run of ``config``: epochs x (0.7 pool / train + 0.1 pool / eval) for training
    and validation, then one evaluation of val, test and the OOD sets (start-up and checkpoints
    left out)."""
    g = GRID[config]
    pool = isic_images if config == "paper_isic" else g["pool"]
    return (g["epochs"] * (0.7 * pool / train_ips + 0.1 * pool / eval_ips)
            + (0.3 * pool + g["ood"]) / eval_ips) / 3600


def grid_hours(train_ips: dict[str, float], eval_ips: dict[str, float], isic_images: int,
               per_model: list[dict] | None = None) -> list[dict]:
    """Hours of one device for every run of the two paper configs, from images/s per model
    (``RUNS_PER_MODEL`` runs each); ``per_model`` gets one row per model if given."""
    rows = []
    for config, g in GRID.items():
        hours = {m: run_hours(train_ips[m], eval_ips[m], config, isic_images) for m in train_ips}
        rows.append({"config": config, "pool images": isic_images if config == "paper_isic" else g["pool"],
                     "epochs": g["epochs"], "runs": RUNS_PER_MODEL * len(hours),
                     "hours, 1 device": RUNS_PER_MODEL * sum(hours.values())})
        if per_model is not None:
            for m, h in hours.items():
                if config == "paper_isic":
                    per_model.append({"model": m, "train img/s": train_ips[m], "eval img/s": eval_ips[m]})
                next(r for r in per_model if r["model"] == m)[f"hours per {config} run"] = h
    return rows


def part_grid(args, speed_rows: list[dict] | None, ray_rows: list[dict] | None) -> str:
    lines = []
    if speed_rows:  # measured on this GPU
        train = {r["model"]: r["train img/s"] for r in speed_rows}
        evals = {r["model"]: r["eval img/s"] for r in speed_rows}
        per_model: list[dict] = []
        rows = grid_hours(train, evals, args.isic_images, per_model)
        key = "steady train img/s (concurrent runs x per-run img/s)"
        best = max((r[key] for r in ray_rows or [] if r[key] != ""), default=None)
        single = (ray_rows or [{}])[0].get(key)
        for r in rows:
            if best and single:
                r["hours, sharing the GPU as ray.csv's best"] = r["hours, 1 device"] * single / best
        lines += ["GPU hours from the measured images/s (speed.csv), one run at a time:", "", md_table(rows),
                  "", md_table(per_model)]
    if args.cpu_json:  # the estimate from CPU ratios and timm's published throughput
        cpu = json.loads(Path(args.cpu_json).read_text())["32"]  # bench_attention (c), batch 32
        ratio = {m: v["median"] / cpu[m.split("+")[0]]["median"] for m, v in cpu.items() if SUB not in m}
        models = [m for m in ratio] + ["vit_tiny_in1k", "vit_tiny_in21k"]
        train = {m: TIMM_TRAIN[m.split("+")[0]] / ratio.get(m, 1.0) for m in models}
        evals = {m: TIMM_INFER[m.split("+")[0]] / ratio.get(m, 1.0) for m in models}
        per_model = []
        est = grid_hours(train, evals, args.isic_images, per_model)
        cpu_ips = {m: 32 / v["median"] for m, v in cpu.items() if SUB not in m}
        cpu_rows = grid_hours(cpu_ips, {m: 3 * v for m, v in cpu_ips.items()}, args.isic_images)
        for r, c in zip(est, cpu_rows):
            r["CPU core-hours (CNNs only, measured steps)"] = c["hours, 1 device"]
        lines += ["", "ESTIMATE (not a measurement): timm's RTX 3090 throughput of each backbone "
                  "divided by the variant's CPU step-time ratio to its base (bench_attention.py (c), "
                  "batch 32); ViTs at timm's figure. CPU: measured training steps, evaluation taken "
                  "as 3x the training rate.", "", md_table(est), "", md_table(per_model)]
    text = "\n".join(lines)
    (args.out / "grid.md").write_text(text + "\n")
    print(text, flush=True)
    return text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="folder for the result files (created)")
    ap.add_argument("--parts", default="env,sdpa,speed,loader,ray,accuracy,grid",
                    help="comma-separated parts (default: all)")
    ap.add_argument("--device", default="cuda", help="cuda (default), cuda:1, or cpu for a dry run")
    ap.add_argument("--quick", action="store_true", help="tiny sizes: checks the script, measures nothing")
    ap.add_argument("--models", nargs="+", help="models of `speed` (default: all 14)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--steps", type=int, default=10, help="steps per timed window (speed)")
    ap.add_argument("--windows", type=int, default=3, help="timed windows per model (speed)")
    ap.add_argument("--isic-images", type=int, default=GRID["paper_isic"]["pool"],
                    help="ISIC pool size for the grid (default 25331)")
    ap.add_argument("--cpu-json", help="grid: also the estimate from bench_attention.py --json FILE")
    ap.add_argument("--budget", type=int, default=540,
                    help="seconds: parts that would not finish in time are skipped (default 540)")
    args = ap.parse_args()
    if args.quick:
        args.size, args.batch, args.steps, args.windows = 64, 8, 2, 2
        args.models = args.models or ["resnet18", "resnet18+ga", "resnet18+la"]
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("no CUDA device: run with --device cpu (--quick) to check the script")
    args.out.mkdir(parents=True, exist_ok=True)
    parts = args.parts.split(",")
    t_start = time.perf_counter()
    sections, speed_rows, ray_rows = [], None, None

    def section(title: str, body: str) -> None:
        sections.append(f"## {title}\n\n{body}\n")
        (args.out / "summary.md").write_text("# bench_gpu.py\n\n" + "\n".join(sections))

    def want(part: str) -> bool:  # skip a part that would not finish within --budget
        if part not in parts:
            return False
        left = args.budget - (time.perf_counter() - t_start)
        if left < NEEDS[part]:
            section(f"{part}: skipped", f"{left:.0f} s of the {args.budget} s budget left, "
                    f"the part needs about {NEEDS[part]} s; run it alone with --parts {part}")
            return False
        return True

    if want("env"):
        section("Machine", "```\n" + json.dumps(part_env(args, device), indent=2) + "\n```")
    if (device.type == "cuda" or args.quick) and want("sdpa"):
        section("SDPA kernels", md_table(part_sdpa(args, device)))
    if want("speed"):
        speed_rows = part_speed(args, device)
        section("Training speed", md_table(speed_rows))
    with tempfile.TemporaryDirectory() as tmp:  # data and run stores stay out of --out
        args.work = Path(tmp)
        if "loader" in parts or "ray" in parts:
            data = _synthetic(args, args.work)
        if want("loader"):
            section("Loader", md_table(part_loader(args, device, data, speed_rows)))
        if want("ray"):
            ray_rows = part_ray(args, device, data)
            section("Runs sharing one device (Ray)", md_table(ray_rows))
        if want("accuracy"):
            section("GPU vs CPU, same seeds", md_table(part_accuracy(args, device)))
    if "grid" in parts and (speed_rows or args.cpu_json):
        section("The paper's grid", part_grid(args, speed_rows, ray_rows))
    section("Time", f"{time.perf_counter() - t_start:.0f} s for parts {args.parts}")
    print(f"results in {args.out}")


if __name__ == "__main__":
    main()
