"""A suite of small synthetic data sets of graded difficulty, for the answer across data sets.

Each data set is a MedMNIST-layout ``.npz`` (``{train,val,test}_{images,labels}``, uint8 N x S x
S x 3, labels N x 1; docs/data.md) read by the real MedMNIST reader. Three classes: a bright disk,
horizontal stripes, vertical stripes, at a random position and phase on a noisy background.
Difficulty d in [0, 1] lowers the pattern's contrast, raises the pixel noise and flips a share of
labels (0.15 d), so the data sets differ in how well any model can do, as real ones do.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import yaml

from medattn.runs.atomic import write_text
from medattn.errors import ArgumentError

__all__ = ["DIFFICULTY_NAMES", "suite_images", "write_suite"]

DIFFICULTY_NAMES = ("easy", "medium", "hard", "harder", "hardest")
FRACTIONS = (0.7, 0.1, 0.2)


def suite_images(n: int, size: int, difficulty: float, rng: np.random.Generator
                 ) -> tuple[np.ndarray, np.ndarray]:
    """``(images uint8 (n, size, size, 3), labels int64 (n,))`` of one data set."""
    y = rng.integers(0, 3, n)
    yy, xx = np.mgrid[0:size, 0:size] / size
    cy, cx = rng.uniform(0.3, 0.7, (2, n, 1, 1))
    phase = rng.uniform(0, 2 * np.pi, (n, 1, 1))
    disk = ((yy - cy) ** 2 + (xx - cx) ** 2 < 0.05).astype(float)
    horiz = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * yy + phase)
    vert = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * xx + phase)
    cls = y[:, None, None]
    pattern = np.where(cls == 0, disk, np.where(cls == 1, horiz, vert))
    contrast, noise = 0.8 - 0.4 * difficulty, 0.1 + 0.15 * difficulty
    gray = 0.35 + contrast * pattern[..., None] * np.array([0.9, 0.6, 0.7])
    img = gray + noise * rng.standard_normal((n, size, size, 3))
    flip = rng.random(n) < 0.15 * difficulty
    y = np.where(flip, (y + rng.integers(1, 3, n)) % 3, y)
    return (np.clip(img, 0, 1) * 255).astype(np.uint8), y.astype(np.int64)


def write_suite(out: str | Path, *, n_datasets: int = 3, n: int = 300, image_size: int = 28,
                seed: int = 0, overwrite: bool = False) -> list[str]:
    """Write ``n_datasets`` data sets of ``n`` images (``image_size`` px) with difficulty from 0 to 1
    into ``out/suite_<name>.npz`` and a study config ``out/suite.yaml`` over all of them; returns
    the data specs (``medmnist:OUT/suite_easy.npz``, ...)."""
    if not 2 <= n_datasets <= len(DIFFICULTY_NAMES) or n < 30 or image_size < 16:
        raise ArgumentError(f"synth suite: need 2 <= {{n_datasets}} <= {len(DIFFICULTY_NAMES)}, "
                            f"{{n}} >= 30 and {{image_size}} >= 16 (got {n_datasets}, {n}, "
                            f"{image_size}).", "n_datasets", "n", "image_size")
    out = Path(out).expanduser().resolve()
    files = [out / f"suite_{DIFFICULTY_NAMES[k]}.npz" for k in range(n_datasets)]
    if not overwrite and any(f.exists() for f in files):
        raise ArgumentError(f"{out}: suite files exist; choose another {{out}} or pass "
                            "{overwrite}.", "out", "overwrite")
    specs = []
    for k, f in enumerate(files):
        rng = np.random.default_rng([seed, k])
        images, labels = suite_images(n, image_size, k / (n_datasets - 1), rng)
        cut = np.cumsum([int(round(n * p)) for p in FRACTIONS[:2]])
        parts = dict(zip(("train", "val", "test"), np.split(np.arange(n), cut)))
        arrays = {}
        for name, idx in parts.items():
            arrays[f"{name}_images"] = images[idx]
            arrays[f"{name}_labels"] = labels[idx, None]
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        write_text(f, buf.getvalue())
        specs.append(f"medmnist:{f}")
    config = {"name": "synthetic_suite", "data_root": str(out),
              "datasets": [{"name": f.stem, "data": f"medmnist:{f.name}"} for f in files],
              "models": ["resnet18", "resnet18+ga", "resnet18+ela"],
              "search": {"lr": [0.05], "weight_decay": [0.0001]},
              "final": {"splits": 3, "first_seed": 0},
              "train": {"epochs": 3, "batch_size": 32, "image_size": image_size, "pretrained": False,
                        "augment": "light", "num_workers": 0, "threads": 1}}
    head = ("# medattn synth suite: a study over the synthetic suite; run with "
            "`medattn study OUT/suite.yaml`\n")
    write_text(out / "suite.yaml", head + yaml.safe_dump(config, sort_keys=False))
    return specs
