"""What durable store writes cost: the per-epoch resume state of a ResNet-18 run written as the
engine writes it (``medattn.runs.tensorfile.write_tensors``: the tensors' memory written into
``store.atomic_write``'s temporary file, flushed to disk, renamed), against the library's
``save()`` to bytes written the same way, ``save_file`` into the atomic writer's temporary (what
the engine did before issue 21: safetensors' own ``.tmpXXXXXX`` outlived a kill), the same
without the flush, and a plain ``safetensors.save_file`` in place (neither atomic nor flushed),
timed round-robin in one process.

    python benchmarks/bench_store.py [--rounds 7] [--dir DIR]

``--dir`` is where the files go (default: a temporary folder; pass a folder on the disk your runs
use, since flushing costs what that disk costs).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save, save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from medattn.models import create_model  # noqa: E402
from medattn.runs.tensorfile import write_tensors  # noqa: E402
from medattn.runs import store  # noqa: E402


def resume_tensors() -> dict[str, torch.Tensor]:
    """Model, best model and SGD momentum of ResNet-18 (3 classes): what a resume file holds."""
    torch.set_num_threads(1)
    model = create_model("resnet18", num_classes=3)
    sd = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    out = {f"model.{k}": v for k, v in sd.items()}
    out.update({f"best.{k}": v.clone() for k, v in sd.items()})
    out.update({f"optim.{i}.momentum_buffer": p.detach().clone()
                for i, p in enumerate(model.parameters())})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--dir", default=None)
    args = ap.parse_args()
    tensors = resume_tensors()
    mb = sum(t.numel() * t.element_size() for t in tensors.values()) / 2**20
    root = Path(args.dir or tempfile.mkdtemp())
    path = root / "resume.safetensors"
    ways = {
        "write_tensors, atomic + flushed (engine)": lambda: write_tensors(path, tensors),
        "library save() to bytes, atomic + flushed": lambda: store.write_text(path, save(tensors)),
        "save_file, atomic + flushed (before)":
            lambda: store.atomic_write(path, lambda tmp: save_file(tensors, tmp)),
        "atomic, not flushed (durable=False)":
            lambda: store.atomic_write(path, lambda tmp: save_file(tensors, tmp), durable=False),
        "save_file in place (reference)": lambda: save_file(tensors, str(path)),
    }
    times: dict[str, list[float]] = {k: [] for k in ways}
    for _ in range(args.rounds):
        for name, write in ways.items():
            t0 = time.perf_counter()
            write()
            times[name].append(time.perf_counter() - t0)
    ref = statistics.median(times["save_file in place (reference)"])
    print(f"resume state: {mb:.1f} MiB, {args.rounds} rounds, folder {root}")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"  {name:42s} median {1000 * med:7.1f} ms   x{med / ref:5.2f} of the reference")


if __name__ == "__main__":
    main()
