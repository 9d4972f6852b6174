"""Synthetic histopathology: H&E-like 96 x 96 lymph-node patches as a Camelyon17-WILDS folder.

Tumour and normal patches differ in their nuclei (tumour: larger, denser, more irregular and paler
in the centre), drawn from overlapping distributions of a latent "tumour-ness" so the task is
learnable but not trivial. Five hospitals stain differently (their own haematoxylin and eosin colour
vectors and intensities, after Beer-Lambert), so the official WILDS split (train on centers 0, 3, 4;
OOD val = center 1; OOD test = center 2) is a real domain shift.
"""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from medattn.data.synthetic.derm import _run_jobs, available_cpus
from medattn.errors import ArgumentError

# Optical-density stain vectors (H, E) and a stain strength per hospital: the domain shift.
STAINS = {
    0: ((0.65, 0.70, 0.29), (0.07, 0.99, 0.11), 1.00),
    1: ((0.50, 0.80, 0.33), (0.10, 0.90, 0.25), 1.25),
    2: ((0.75, 0.60, 0.28), (0.02, 0.85, 0.35), 0.75),
    3: ((0.62, 0.72, 0.31), (0.09, 0.95, 0.15), 1.10),
    4: ((0.68, 0.66, 0.30), (0.05, 1.00, 0.08), 0.90),
}


def _norm(v) -> np.ndarray:
    v = np.asarray(v, np.float32)
    return v / np.linalg.norm(v)


def render_patch(rng: np.random.Generator, tumour_ness: float, center: int, size: int = 96,
                 stain_jitter: float = 0.03) -> np.ndarray:
    """One H&E-like patch (uint8 size x size x 3) for latent tumour-ness in [0, 1]."""
    S = size
    t = float(tumour_ness)
    # eosin: stroma with fibres and some empty (white) spaces
    coarse = rng.uniform(0, 1, (6, 6)).astype(np.float32)
    field = np.asarray(Image.fromarray(coarse, "F").resize((S, S), Image.Resampling.BICUBIC))
    yy, xx = np.mgrid[0:S, 0:S].astype(np.float32)
    ang = rng.uniform(0, np.pi)
    fib = 0.5 + 0.5 * np.sin((xx * np.cos(ang) + yy * np.sin(ang)) * rng.uniform(0.3, 0.6)
                             + 3 * field)
    eosin = np.clip(0.35 + 0.35 * field + 0.2 * fib, 0, None) * (field > rng.uniform(0.0, 0.25))
    # haematoxylin: nuclei; tumour-ness sets count, size, irregularity and pale centres
    canvas = Image.new("L", (S, S), 0)  # haematoxylin density x 150
    draw = ImageDraw.Draw(canvas)
    n = int(rng.poisson(10 + 40 * t) * (S / 96) ** 2)
    for _ in range(n):
        cx, cy = rng.uniform(-4, S + 4, 2)
        r = rng.uniform(1.8, 3.2) + t * rng.uniform(1.0, 3.5)
        ecc = 1 + t * rng.uniform(0, 0.9) + rng.uniform(0, 0.2)
        rx, ry = r * ecc, r / ecc
        dark = rng.uniform(0.9, 1.3) * (1 - 0.2 * t)
        draw.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=int(min(255, dark * 150)))
        if t > 0.5 and r > 3.5:  # vesicular chromatin: a paler centre with a nucleolus
            draw.ellipse((cx - rx / 2, cy - ry / 2, cx + rx / 2, cy + ry / 2), fill=int(min(255, dark * 75)))
            draw.ellipse((cx - 1, cy - 1, cx + 1, cy + 1), fill=int(min(255, dark * 195)))
    haem = np.asarray(canvas.filter(ImageFilter.GaussianBlur(0.7)), dtype=np.float32) / 150
    h_vec, e_vec, strength = STAINS[center]
    h = _norm(np.asarray(h_vec) + rng.normal(0, stain_jitter, 3))
    e = _norm(np.asarray(e_vec) + rng.normal(0, stain_jitter, 3))
    strength = strength * rng.uniform(0.9, 1.1)
    od = strength * (haem[..., None] * h * 1.2 + eosin[..., None] * e * 0.55)
    rgb = 255 * np.exp(-od) * rng.uniform(0.93, 1.0)
    rgb += rng.normal(0, 3, rgb.shape)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def _save(job: tuple) -> None:
    path, t, center, size, rgba, seed = job
    img = render_patch(np.random.default_rng(seed), t, center, size)
    im = Image.fromarray(img)
    if rgba:  # WILDS patches can come as RGBA with an opaque alpha channel
        im = im.convert("RGBA")
    im.save(path, compress_level=1)


def write_path(out: str | Path, *, n: int = 3000, seed: int = 0, image_size: int = 96,
               patients_per_center: int = 3, nodes_per_patient: int = 2, tumour_rate: float = 0.5,
               id_val_fraction: float = 0.1, overwrite: bool = False, progress: bool = False,
               workers: int | None = None) -> str:
    """Write ``out/camelyon17_v1.0/`` (metadata.csv, RELEASE_v1.0.txt, patches/); returns the spec.

    Args:
        n: number of patches, spread evenly over 5 centers x ``patients_per_center`` x
            ``nodes_per_patient`` slides.
        image_size: patch side in pixels (96 as in WILDS).
        tumour_rate: share of tumour patches.
        id_val_fraction: share of patches of centers 0, 3, 4 marked ``split = 1`` (WILDS id_val).
        workers: processes rendering patches (default: CPUs available); does not change output.

    Returns:
        ``"camelyon17:<out>/camelyon17_v1.0"``.
    """
    if n < 10 or image_size < 16 or patients_per_center < 1 or nodes_per_patient < 1:
        raise ArgumentError(f"synth path: need {{n}} >= 10, {{image_size}} >= 16 and at least one "
                            f"patient and node per center (got n={n}, image_size={image_size}, "
                            f"patients_per_center={patients_per_center}, "
                            f"nodes_per_patient={nodes_per_patient})", "n", "image_size")
    out = Path(out).expanduser()
    final = out / "camelyon17_v1.0"
    if final.exists():
        if not overwrite:
            raise ArgumentError(f"{final} exists; choose another {{out}} or pass {{overwrite}} to "
                                "replace it", "out", "overwrite")
        shutil.rmtree(final)
    root = out / ".camelyon17_v1.0.tmp"
    shutil.rmtree(root, ignore_errors=True)
    (root / "patches").mkdir(parents=True)
    rng = np.random.default_rng([seed, 3])
    slides = [(c, c * 10 + p, node) for c in range(5) for p in range(patients_per_center)
              for node in range(nodes_per_patient)]
    rows, jobs = [], []
    for i in range(n):
        center, patient, node = slides[i % len(slides)]
        slide = slides.index((center, patient, node))
        label = int(rng.random() < tumour_rate)
        t = float(rng.beta(5, 2) if label else rng.beta(2, 5))
        # patch coordinates on a 96-px grid of a (virtual) slide, as in WILDS
        x = int(rng.integers(0, 400)) * 96 * 4 + 96 * (i % 4)
        y = int(rng.integers(0, 400)) * 96 * 4 + 96 * ((i // 4) % 4)
        folder = f"patient_{patient:03d}_node_{node}"
        (root / "patches" / folder).mkdir(exist_ok=True)
        name = f"patch_{folder}_x_{x}_y_{y}.png"
        split = int(center in (0, 3, 4) and rng.random() < id_val_fraction)
        jobs.append((str(root / "patches" / folder / name), t, center, image_size, slide % 2 == 1,
                     [seed, 3, i]))
        rows.append(["", f"{patient:03d}", node, x, y, label, slide, center, split, round(t, 4)])
    # duplicates of (slide, x, y) are possible in principle: keep the first of each
    seen, uniq = set(), []
    for row, job in zip(rows, jobs):
        key = job[0]
        if key not in seen:
            seen.add(key)
            uniq.append((row, job))
    workers = workers if workers is not None else available_cpus()
    _run_jobs(_save, [j for _, j in uniq], workers, progress, "synth camelyon17")
    with open(root / "metadata.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["", "patient", "node", "x_coord", "y_coord", "tumor", "slide", "center", "split",
                    "true_tumour_ness"])
        for k, (row, _) in enumerate(uniq):
            w.writerow([k] + row[1:])
    (root / "RELEASE_v1.0.txt").write_text("Camelyon17-WILDS v1.0 layout; synthetic patches by medattn.\n")
    os.replace(root, final)
    return f"camelyon17:{final}"
