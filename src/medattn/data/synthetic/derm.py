"""Synthetic dermoscopy: lesions on skin with known ABCD and bias features, in real on-disk layouts.

``write_derm(out)`` writes ``out/isic/`` (an ISIC archive folder as ``isic-cli`` writes it, with
ISIC 2018 task-1/2 masks) and ``out/pad-ufes-20/`` (a PAD-UFES-20 folder: the OOD test set, rendered
with a clinical-photo look). Each patient has one fine diagnosis (:data:`DIAGNOSES`, e.g.
dermatofibroma inside "other"), which sets overlapping distributions of the four ABCD features and
the patient's age and skin colour (tied to it with configurable strength); the colourful patch is
tied to the coarse class and sex is independent of everything. Age and sex are never drawn into an
image. Every generating value is written to ``metadata.csv`` as a ``true_<feature>`` column, and the
settings to ``medattn_synthetic.json`` (see ``docs/data.md``).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from medattn.data.synthetic.diagnoses import DIAGNOSES, MALIGNANT, NOT_VISIBLE, VISIBLE, Diagnosis
from medattn.errors import ConfigError

CLASSES = ("melanoma", "nevus", "other")
STRUCTURES = ("pigment_network", "negative_network", "streaks", "milia_like_cyst", "globules")
# The six dermoscopic colours of the ABCD rule (sRGB in [0, 1]).
PALETTE = np.array([
    [0.72, 0.50, 0.33],  # light brown
    [0.40, 0.24, 0.14],  # dark brown
    [0.13, 0.10, 0.09],  # black
    [0.72, 0.27, 0.24],  # red
    [0.40, 0.47, 0.58],  # blue-grey
    [0.90, 0.88, 0.85],  # white
], dtype=np.float32)
PATCH_COLOURS = np.array([[0.15, 0.45, 0.95], [0.10, 0.80, 0.30], [0.98, 0.85, 0.10],
                          [0.95, 0.30, 0.70], [1.00, 0.50, 0.05]], dtype=np.float32)





@dataclasses.dataclass
class DermConfig:
    """Knobs of the synthetic dermoscopy generator (see ``write_derm``)."""

    image_size: int = 128
    class_probs: tuple[float, float, float] = (0.3, 0.4, 0.3)
    patch_bias: float = 0.6
    patch_rate: float = 0.25
    age_bias: float = 0.8
    skin_bias: float = 0.8
    images_per_lesion: float = 1.3
    lesions_per_patient: float = 1.4


# --------------------------------------------------------------------------------------------
# Sampling the features of a lesion / patient
# --------------------------------------------------------------------------------------------

def diagnoses_of(label: int, pad: bool = False) -> tuple[list[Diagnosis], np.ndarray]:
    """The fine diagnoses of a class in the ISIC (or PAD-UFES-20) folder and their probabilities."""
    dxs = [d for d in DIAGNOSES if d.label == label and (d.pad_share if pad else d.share) > 0]
    p = np.array([d.pad_share if pad else d.share for d in dxs])
    return dxs, p / p.sum()


def sample_patient(rng: np.random.Generator, dx: Diagnosis, cfg: DermConfig,
                   ita_shift: float = 0.0) -> dict:
    """Patient-level features: age (years), sex, skin colour (ITA, degrees), from the diagnosis."""
    age = rng.normal(50 + cfg.age_bias * (dx.age - 50), 13)
    ita = rng.normal(38 + cfg.skin_bias * (dx.ita - 38) + ita_shift, 12)
    return {"age": float(np.clip(age, 5, 90)), "sex": "male" if rng.random() < 0.5 else "female",
            "ita": float(np.clip(ita, -30, 75))}


def sample_lesion(rng: np.random.Generator, dx: Diagnosis) -> dict:
    """Lesion-level ABCD features drawn from the diagnosis' distributions."""
    structures = {s: bool(rng.random() < p) for s, p in zip(STRUCTURES, dx.structures)}
    return {
        "asymmetry": float(rng.beta(*dx.asymmetry)),
        "border": float(rng.beta(*dx.border)),
        "n_colors": int(rng.choice(6, p=np.asarray(dx.colours) / sum(dx.colours)) + 1),
        "structures": structures,
        "shape_seed": int(rng.integers(2**31)),
    }


def patch_probability(label: int, cfg: DermConfig) -> float:
    """P(colourful patch | class): ``patch_rate`` for all when bias 0; nevus-only-ish at bias 1."""
    p0, s = cfg.patch_rate, float(np.clip(cfg.patch_bias, 0, 1))
    return p0 + s * (0.85 - p0) if label == 1 else p0 * (1 - s)


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------

def ita_to_rgb(ita: float, b_star: float = 17.0, a_star: float = 12.0) -> np.ndarray:
    """sRGB (0..1) of a skin colour with individual typology angle ``ita`` (degrees)."""
    L = 50 + b_star * math.tan(math.radians(ita))
    L = min(max(L, 20.0), 92.0)
    fy = (L + 16) / 116
    fx, fz = fy + a_star / 500, fy - b_star / 200

    def finv(t: float) -> float:
        return t ** 3 if t ** 3 > 0.008856 else (t - 16 / 116) / 7.787

    xyz = np.array([0.95047 * finv(fx), finv(fy), 1.08883 * finv(fz)])
    m = np.array([[3.2406, -1.5372, -0.4986], [-0.9689, 1.8758, 0.0415], [0.0557, -0.2040, 1.0570]])
    rgb = np.clip(m @ xyz, 0, 1)
    rgb = np.where(rgb > 0.0031308, 1.055 * rgb ** (1 / 2.4) - 0.055, 12.92 * rgb)
    return np.clip(rgb, 0, 1).astype(np.float32)


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Low-frequency noise in about [-1, 1], size x size (bicubic upsampling of a coarse grid)."""
    coarse = rng.uniform(-1, 1, (cells, cells)).astype(np.float32)
    img = Image.fromarray(coarse, mode="F").resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(img, dtype=np.float32)


def render(rng: np.random.Generator, lesion: dict, skin_rgb: np.ndarray, patch: bool,
           size: int, clinical: bool = False) -> tuple[np.ndarray, np.ndarray, dict, np.ndarray]:
    """Render one image.

    Returns ``(image uint8 S x S x 3, segmentation bool S x S, {structure: bool S x S},
    patch bool S x S)``. ``clinical`` renders the OOD look: no dermoscope vignette, directional
    light, a colour cast, lower contrast and a slight blur, the lesion smaller in the frame.
    """
    S = size
    ax = (np.arange(S, dtype=np.float32) + 0.5) / S * 2 - 1
    xx, yy = np.meshgrid(ax, ax)
    shape_rng = np.random.default_rng(lesion["shape_seed"])
    a, b = lesion["asymmetry"], lesion["border"]

    # Lesion outline r(theta): low harmonics (asymmetry) + high harmonics (border irregularity).
    R = shape_rng.uniform(0.42, 0.55) * (0.85 if clinical else 1.0)
    cx, cy = (float(v) for v in rng.uniform(-0.08, 0.08, 2))
    rot = float(rng.uniform(0, 2 * np.pi))
    th = np.arctan2(yy - cy, xx - cx) + np.float32(rot)
    d = np.hypot(xx - cx, yy - cy)
    # r is evaluated on a 1-D table of angles and looked up: far cheaper than trig per pixel.
    t = np.linspace(0, 2 * np.pi, 1025, dtype=np.float64)
    rt = np.ones_like(t)
    for k, amp in ((1, 0.22), (2, 0.28), (3, 0.12)):
        rt += a * amp * shape_rng.uniform(0.6, 1.0) * np.cos(k * t + shape_rng.uniform(0, 2 * np.pi))
    ks = shape_rng.choice(np.arange(7, 22), size=5, replace=False)
    for k in ks:
        amp = (0.006 + 0.085 * b ** 1.5) * shape_rng.uniform(0.5, 1.0)
        rt += amp * np.cos(k * t + shape_rng.uniform(0, 2 * np.pi))
    th_idx = ((th % (2 * np.pi)) * (1024 / (2 * np.pi))).astype(np.int32)
    r = (rt[th_idx] * R).astype(np.float32)
    edge = 0.02 + 0.02 * (1 - b)
    alpha = np.clip((r - d) / edge + 0.5, 0, 1).astype(np.float32)
    seg = alpha >= 0.5

    # Colours: soft Voronoi over n seeds inside the lesion, each seed one palette colour.
    n = lesion["n_colors"]
    cols = [int(shape_rng.integers(0, 2))]  # a brown is always present
    others = [c for c in range(6) if c != cols[0]]
    cols += list(shape_rng.choice(others, size=n - 1, replace=False))
    ang = shape_rng.uniform(0, 2 * np.pi, n) - rot
    rad = shape_rng.uniform(0.0, 0.6, n) * R
    sx = (cx + rad * np.cos(ang)).astype(np.float32)
    sy = (cy + rad * np.sin(ang)).astype(np.float32)
    d2 = (xx[None] - sx[:, None, None]) ** 2 + (yy[None] - sy[:, None, None]) ** 2
    w = np.exp(-(d2 - d2.min(0, keepdims=True)) / np.float32(0.12 * R * R + 1e-6))
    w /= w.sum(0, keepdims=True)
    lesion_rgb = np.tensordot(w.transpose(1, 2, 0), PALETTE[cols], axes=1)
    lesion_rgb *= (1 + 0.08 * _smooth_noise(rng, S, 6))[..., None]

    # Dermoscopic structures, each in its own region; the region is the task-2 mask.
    masks = {}
    for name in STRUCTURES:
        if not lesion["structures"][name]:
            masks[name] = np.zeros((S, S), bool)
            continue
        if name == "streaks":
            region = (d > 0.7 * r) & (d < 1.2 * r)
            sector = (np.cos(t - shape_rng.uniform(0, 2 * np.pi)) > shape_rng.uniform(-0.6, 0.2))[th_idx]
            lines = (np.cos(shape_rng.integers(18, 30) * t) > 0.55)[th_idx]
            m = region & sector & lines
            lesion_rgb[m] = lesion_rgb[m] * 0.3 + PALETTE[1] * 0.7 * 0.6
            alpha = np.maximum(alpha, m.astype(np.float32))
            masks[name] = m
            continue
        rc = shape_rng.uniform(0, 0.4) * R
        ra = shape_rng.uniform(0, 2 * np.pi)
        region = seg & (np.hypot(xx - cx - rc * np.cos(ra), yy - cy - rc * np.sin(ra))
                        < shape_rng.uniform(0.45, 0.75) * R)
        if name in ("pigment_network", "negative_network"):
            f = shape_rng.uniform(30, 42)
            u = xx * np.cos(ra) - yy * np.sin(ra) + 0.02 * _smooth_noise(rng, S, 5)
            v = xx * np.sin(ra) + yy * np.cos(ra)
            net = (np.abs(np.sin(f * u)) < 0.35) | (np.abs(np.sin(f * v)) < 0.35)
            m = region & net
            if name == "pigment_network":
                lesion_rgb[m] *= 0.55
            else:
                lesion_rgb[m] = lesion_rgb[m] * 0.45 + 0.55 * np.float32(0.86)
            masks[name] = region
        else:
            k = int(shape_rng.integers(6, 16))
            pr = (0.035 if name == "globules" else 0.028) * max(S, 64) / S * 1.4
            pts = np.argwhere(region)
            if len(pts) == 0:
                masks[name] = region
                continue
            pick = pts[shape_rng.integers(0, len(pts), k)]
            canvas = Image.new("L", (S, S))
            draw = ImageDraw.Draw(canvas)
            rp = pr * S / 2
            for yx in pick:
                draw.ellipse((yx[1] - rp, yx[0] - rp, yx[1] + rp, yx[0] + rp), fill=255)
            dots = np.asarray(canvas) > 0
            colour = PALETTE[2] * 0.6 + PALETTE[1] * 0.4 if name == "globules" else np.array(
                [0.95, 0.93, 0.80], np.float32)
            lesion_rgb[dots] = colour
            masks[name] = region

    # Skin with mottled texture, then the lesion on top.
    skin = skin_rgb[None, None, :] * (1 + 0.05 * _smooth_noise(rng, S, 8))[..., None]
    img = skin * (1 - alpha[..., None]) + lesion_rgb * alpha[..., None]

    # Colourful patch (a round coloured sticker) away from the lesion.
    patch_mask = np.zeros((S, S), bool)
    if patch:
        pr = rng.uniform(0.14, 0.22)
        for _ in range(20):
            ang = rng.uniform(0, 2 * np.pi)
            dist = rng.uniform(0.62, 0.9)
            px, py = cx + dist * np.cos(ang), cy + dist * np.sin(ang)
            if abs(px) < 0.85 and abs(py) < 0.85:
                break
        pd_ = np.hypot(xx - px, yy - py)
        patch_mask = pd_ < pr
        shade = 1 - 0.25 * (pd_ / pr) ** 2
        img[patch_mask] = PATCH_COLOURS[rng.integers(len(PATCH_COLOURS))] * shade[patch_mask, None]

    if clinical:
        # Flash / room light from one side, a colour cast, lower contrast.
        g = rng.uniform(0, 2 * np.pi)
        light = 1 + 0.15 * (xx * np.cos(g) + yy * np.sin(g))
        cast = np.array([1.0 + rng.uniform(0.0, 0.08), 1.0, 1.0 - rng.uniform(0.03, 0.12)], np.float32)
        img = img * light[..., None] * cast
        img = 0.88 * img + 0.12 * img.mean((0, 1), keepdims=True) + 0.03
    else:
        # Dermoscope: circular field of view with dark surround, slight bluish cold light.
        fov = rng.uniform(1.15, 1.45)
        rr = np.hypot(xx, yy)
        vign = np.clip((fov - rr) / 0.08, 0, 1) * (1 - 0.18 * (rr / fov) ** 2)
        img = img * vign[..., None] * np.array([0.97, 0.98, 1.03], np.float32)
    img = img + (rng.random(img.shape, dtype=np.float32) - np.float32(0.5)) * np.float32(0.04)
    out = Image.fromarray((np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8))
    if clinical:
        out = out.filter(ImageFilter.GaussianBlur(radius=0.7 * S / 128))
    return np.asarray(out), seg, masks, patch_mask


# --------------------------------------------------------------------------------------------
# Writing the two layouts
# --------------------------------------------------------------------------------------------

def _draw_cohort(rng: np.random.Generator, n: int, cfg: DermConfig, ita_shift: float = 0.0,
                 pad: bool = False):
    """Yield (patient_index, patient, lesion_index, diagnosis, lesion, k_image) until n images.

    A patient's lesions share one fine diagnosis (several nevi, several keratoses): age and skin
    colour are patient-level, so this keeps them independent of every image given its diagnosis
    (with lesions of other diagnoses, the patient's age would reach an image through the skin
    colour it shares with them)."""
    count, p, les = 0, 0, 0
    probs = np.asarray(cfg.class_probs) / sum(cfg.class_probs)
    while count < n:
        n_les = 1 + rng.poisson(cfg.lesions_per_patient - 1)
        dxs, dx_p = diagnoses_of(int(rng.choice(3, p=probs)), pad)
        dx = dxs[int(rng.choice(len(dxs), p=dx_p))]
        patient = sample_patient(rng, dx, cfg, ita_shift)
        for _ in range(n_les):
            lesion = sample_lesion(rng, dx)
            for k in range(1 + rng.poisson(cfg.images_per_lesion - 1)):
                if count >= n:
                    return
                yield p, patient, les, dx, lesion, k
                count += 1
            les += 1
        p += 1


def _true_columns(patient: dict, dx: Diagnosis, lesion: dict, patch: bool) -> dict:
    row = {
        "true_age": round(patient["age"], 2),
        "true_diagnosis": dx.name,
        "true_asymmetry": round(lesion["asymmetry"], 4),
        "true_border": round(lesion["border"], 4),
        "true_n_colors": lesion["n_colors"],
        "true_patch": int(patch),
        "true_sex": int(patient["sex"] == "male"),
        "true_skin_ita": round(patient["ita"], 2),
        "true_structures": int(sum(lesion["structures"].values())),
    }
    row.update({f"true_{s}": int(v) for s, v in lesion["structures"].items()})
    return row


TRUTH_FILE = "medattn_synthetic.json"


def _write_truth(out: Path, cfg: DermConfig, seed: int) -> None:
    """The generator's settings and what its images show, beside the data (read by the feature
    analysis to print the planted truth next to Table 3)."""
    truth = {"generator": "medattn synth derm", "seed": seed, **dataclasses.asdict(cfg),
             "patch_planted": cfg.patch_bias > 0, "visible": list(VISIBLE),
             "not_visible": list(NOT_VISIBLE)}
    tmp = out / (TRUTH_FILE + ".tmp")
    tmp.write_text(json.dumps(truth, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, out / TRUTH_FILE)


def read_truth(folder: str | Path) -> dict | None:
    """The planted truth written beside a synthetic data set, or None for other data."""
    path = Path(folder) / TRUTH_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def fitzpatrick(ita: float) -> str:
    """Fitzpatrick type (I..VI) from ITA with the usual thresholds (Chardon et al. 1991)."""
    for thr, t in ((55, "I"), (41, "II"), (28, "III"), (10, "IV"), (-30, "V")):
        if ita > thr:
            return t
    return "VI"


def _save_mask(mask: np.ndarray, path: Path) -> None:
    Image.fromarray(mask.astype(np.uint8) * 255).save(path, compress_level=1)


def _write_csv(path: Path, header: list[str], rows: list[dict]) -> None:
    tmp = path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=header, lineterminator="\r\n", extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, path)


def _save_isic_item(job: tuple) -> None:
    out, name, lesion, ita, patch, size, seed = job
    rng = np.random.default_rng(seed)
    img, seg, masks, pmask = render(rng, lesion, ita_to_rgb(ita), patch, size)
    stem, ext = name.rsplit(".", 1)
    options = {"quality": 92} if ext == "jpg" else {"compress_level": 1}
    Image.fromarray(img).save(Path(out) / name, **options)
    _save_mask(seg, Path(out) / f"{stem}_segmentation.png")
    for s in STRUCTURES:
        _save_mask(masks[s], Path(out) / f"{stem}_attribute_{s}.png")
    _save_mask(pmask, Path(out) / f"{stem}_patch.png")


def _save_pad_item(job: tuple) -> None:
    path, lesion, ita, patch, size, seed = job
    rng = np.random.default_rng(seed)
    img, _, _, _ = render(rng, lesion, ita_to_rgb(ita), patch, size, clinical=True)
    Image.fromarray(img).save(path, compress_level=1)


def available_cpus() -> int:
    """CPUs this process may use (the affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _run_jobs(fn, jobs: list, workers: int, progress: bool, desc: str) -> None:
    """Render and save; images are independent (own seeds), so the result does not depend on workers."""
    from medattn.progress import progress_bar

    bar = progress_bar(total=len(jobs), desc=desc, disable=not progress)
    if workers <= 1 or len(jobs) < 64:
        for job in jobs:
            fn(job)
            bar.update()
    else:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(workers) as pool:
            for _ in pool.map(fn, jobs, chunksize=32):
                bar.update()
    bar.close()


def _isic_cohort(n: int, seed: int, cfg: DermConfig):
    """The ISIC folder's images, in order: (index, patient index, patient, lesion index,
    diagnosis, lesion, patch)."""
    rng = np.random.default_rng([seed, 1])
    for i, (p, patient, les, dx, lesion, _) in enumerate(_draw_cohort(rng, n, cfg)):
        yield i, p, patient, les, dx, lesion, bool(rng.random() < patch_probability(dx.label, cfg))


def sample_metadata(n: int, seed: int = 0, cfg: DermConfig | None = None) -> "pd.DataFrame":
    """The ground truth of the ISIC folder ``write_isic(out, n, seed, cfg)`` writes, without
    rendering a pixel: one row per image with ``image_id``, ``patient_id``, ``lesion_id``,
    ``label``, ``age_approx`` and the ``true_*`` columns (for quick simulations; the same values
    as the written ``metadata.csv``)."""
    import pandas as pd

    cfg = cfg or DermConfig()
    return pd.DataFrame([{"image_id": f"ISIC_{i:07d}", "patient_id": f"IP_{p:07d}",
                          "lesion_id": f"IL_{les:07d}", "label": dx.label,
                          "age_approx": int(5 * round(patient["age"] / 5)),
                          **_true_columns(patient, dx, lesion, patch)}
                         for i, p, patient, les, dx, lesion, patch in _isic_cohort(n, seed, cfg)])


def write_isic(out: str | Path, n: int, seed: int = 0, cfg: DermConfig | None = None,
               metadata: str = "new", progress: bool = False, workers: int = 1) -> str:
    """Write ``n`` dermoscopy-look images as an ISIC archive folder; returns ``"isic:<out>"``."""
    cfg = cfg or DermConfig()
    if metadata not in ("new", "old"):
        raise ConfigError(f"metadata={metadata!r}: use 'new' (diagnosis_1..5) or 'old' (diagnosis)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "licenses").mkdir(exist_ok=True)
    (out / "licenses" / "CC-0.txt").write_text("Creative Commons Zero v1.0 Universal (synthetic data)\n")
    rows, jobs = [], []
    for i, p, patient, les, dx, lesion, patch in _isic_cohort(n, seed, cfg):
        isic_id = f"ISIC_{i:07d}"
        ext = "png" if i % 37 == 5 else "jpg"  # archive downloads mix in some PNGs
        jobs.append((str(out), f"{isic_id}.{ext}", lesion, patient["ita"], patch, cfg.image_size,
                     [seed, 1, i]))
        row = {
            "isic_id": isic_id, "attribution": "medattn synthetic", "copyright_license": "CC-0",
            "age_approx": int(5 * round(patient["age"] / 5)), "anatom_site_general":
                ("posterior torso", "anterior torso", "lower extremity", "upper extremity",
                 "head/neck")[lesion["shape_seed"] % 5],
            "fitzpatrick_skin_type": fitzpatrick(patient["ita"]), "image_type": "dermoscopic",
            "lesion_id": f"IL_{les:07d}", "patient_id": f"IP_{p:07d}", "sex": patient["sex"],
            **_true_columns(patient, dx, lesion, patch),
        }
        if metadata == "new":
            d1, d2, d3 = dx.isic
            row.update(diagnosis_1=d1, diagnosis_2=d2, diagnosis_3=d3, diagnosis_4="",
                       diagnosis_5="", diagnosis_confirm_type="histopathology")
        else:
            row.update(diagnosis=dx.isic_old, benign_malignant="malignant" if dx.isic[0] == MALIGNANT
                       else "benign", diagnosis_confirm_type="histopathology")
        rows.append(row)
    _run_jobs(_save_isic_item, jobs, workers, progress, "synth isic")
    head = ["isic_id", "attribution", "copyright_license"]
    keys = sorted({k for r in rows for k in r} - set(head))
    _write_csv(out / "metadata.csv", head + keys, rows)
    with open(out / "attribution.txt", "w", encoding="utf-8") as f:
        f.write("Synthetic images generated by medattn (CC-0).\n")
    _write_truth(out, cfg, seed)
    return f"isic:{out}"


def write_pad_ufes(out: str | Path, n: int, seed: int = 0, cfg: DermConfig | None = None,
                   progress: bool = False, workers: int = 1) -> str:
    """Write ``n`` clinical-look images as a PAD-UFES-20 folder; returns ``"pad-ufes-20:<out>"``.

    The domain differs from the ISIC folder in look (no dermoscope, directional light, colour cast,
    blur, smaller lesions), in population (darker skin on average) and in the patch bias (patches
    occur independently of the class here), as a real external test set would.
    """
    cfg = dataclasses.replace(cfg or DermConfig(), patch_bias=0.0, patch_rate=0.15,
                              images_per_lesion=1.1)
    out = Path(out)
    for k in (1, 2, 3):
        (out / f"imgs_part_{k}").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, 2])
    rows, jobs = [], []
    for i, (p, patient, les, dx, lesion, _) in enumerate(_draw_cohort(rng, n, cfg, ita_shift=-8.0,
                                                                     pad=True)):
        patch = bool(rng.random() < patch_probability(dx.label, cfg))
        pid, lid = 1000 + p, 100 + les
        img_id = f"PAT_{pid}_{lid}_{i + 1}.png"
        jobs.append((str(out / f"imgs_part_{1 + i * 3 // max(n, 1)}" / img_id), lesion,
                     patient["ita"], patch, cfg.image_size, [seed, 2, i]))
        rows.append({
            "patient_id": f"PAT_{pid}", "lesion_id": lid, "smoke": "False", "drink": "False",
            "background_father": "BRAZIL", "background_mother": "BRAZIL",
            "age": int(round(patient["age"])), "pesticide": "False",
            "gender": patient["sex"].upper(), "skin_cancer_history": "False",
            "cancer_history": "False", "has_piped_water": "True", "has_sewage_system": "True",
            "fitspatrick": float(("I", "II", "III", "IV", "V", "VI").index(fitzpatrick(patient["ita"])) + 1),
            "region": "FACE", "diameter_1": 6.0, "diameter_2": 5.0, "diagnostic": dx.pad,
            "itch": "False", "grew": "UNK", "hurt": "False", "changed": "UNK", "bleed": "False",
            "elevation": "False", "img_id": img_id, "biopsed": "True",
            **_true_columns(patient, dx, lesion, patch),
        })
    _run_jobs(_save_pad_item, jobs, workers, progress, "synth pad-ufes-20")
    header = ["patient_id", "lesion_id", "smoke", "drink", "background_father", "background_mother",
              "age", "pesticide", "gender", "skin_cancer_history", "cancer_history",
              "has_piped_water", "has_sewage_system", "fitspatrick", "region", "diameter_1",
              "diameter_2", "diagnostic", "itch", "grew", "hurt", "changed", "bleed", "elevation",
              "img_id", "biopsed"]
    header += sorted(k for k in rows[0] if k.startswith("true_")) if rows else []
    _write_csv(out / "metadata.csv", header, rows)
    _write_truth(out, cfg, seed)
    return f"pad-ufes-20:{out}"


def write_derm(out: str | Path, n: int = 2000, n_ood: int = 500, seed: int = 0,
               image_size: int = 128, patch_bias: float = 0.6, age_bias: float = 0.8,
               skin_bias: float = 0.8, metadata: str = "new", overwrite: bool = False,
               progress: bool = False, workers: int | None = None) -> tuple[str, str]:
    """Write the synthetic skin-lesion data: ``out/isic/`` and ``out/pad-ufes-20/``.

    Args:
        out: output folder (created).
        n, n_ood: number of ISIC-layout and PAD-UFES-20-layout images.
        seed: everything is a deterministic function of the arguments.
        image_size: side of the square images in pixels.
        patch_bias: 0 = colourful patches independent of the class, 1 = (almost) only on nevi.
        age_bias, skin_bias: 0 = age / skin colour independent of class, 1 = full class shift.
        metadata: ``"new"`` (``diagnosis_1..5``) or ``"old"`` (``diagnosis``) ISIC generation.
        overwrite: replace existing ``isic/`` and ``pad-ufes-20/`` folders instead of refusing.
        workers: processes rendering images (default: the CPUs available); does not change output.

    Returns:
        ``(isic_spec, pad_spec)``, e.g. ``("isic:OUT/isic", "pad-ufes-20:OUT/pad-ufes-20")``.
    """
    if n < 1 or n_ood < 0 or image_size < 16:
        raise ConfigError(f"synth derm: need n >= 1, n_ood >= 0, image_size >= 16 "
                          f"(got {n}, {n_ood}, {image_size})")
    for name, v in (("patch_bias", patch_bias), ("age_bias", age_bias), ("skin_bias", skin_bias)):
        if not 0 <= v <= 1:
            raise ConfigError(f"synth derm: {name}={v} must be within [0, 1]")
    out = Path(out).expanduser()
    cfg = DermConfig(image_size=image_size, patch_bias=patch_bias, age_bias=age_bias,
                     skin_bias=skin_bias)
    workers = workers if workers is not None else available_cpus()
    specs = []
    for sub, fn in (("isic", lambda d: write_isic(d, n, seed, cfg, metadata, progress, workers)),
                    ("pad-ufes-20", lambda d: write_pad_ufes(d, n_ood, seed, cfg, progress, workers))):
        final = out / sub
        if final.exists():
            if not overwrite:
                raise ConfigError(f"{final} exists; choose another --out or pass overwrite "
                                  "(--overwrite) to replace it")
            shutil.rmtree(final)
        tmp = out / f".{sub}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        fn(tmp)
        os.replace(tmp, final)
        specs.append(f"{sub}:{final}")
    return specs[0], specs[1]
