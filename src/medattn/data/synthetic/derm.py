"""Synthetic dermoscopy: lesions on skin with known ABCD and bias features, in real on-disk layouts.

``write_derm(out)`` writes ``out/isic/`` (an ISIC archive folder as ``isic-cli`` writes it, with
ISIC 2018 task-1/2 masks) and ``out/pad-ufes-20/`` (a PAD-UFES-20 folder: the OOD test set, rendered
with a clinical-photo look). Each patient has one fine diagnosis (:data:`DIAGNOSES`, e.g.
dermatofibroma inside "other"), which sets overlapping distributions of the four ABCD features and
the patient's age and skin colour (tied to it with configurable strength); the colourful patch is
tied to the coarse class and sex is independent of everything. Age and sex are never drawn into an
image. Every generating value is written to ``metadata.csv`` as a ``true_<feature>`` column, and the
settings to ``medattn_synthetic.json`` (see ``docs/data.md``). Drawing one image is
:mod:`medattn.data.synthetic.derm_render`'s job.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from medattn.progress import progress_bar
from medattn.runs.atomic import atomic_write, write_text
from medattn.data.synthetic.derm_render import STRUCTURES, ita_to_rgb, render
from medattn.data.synthetic.diagnoses import DIAGNOSES, MALIGNANT, NOT_VISIBLE, VISIBLE, Diagnosis
from medattn.errors import ArgumentError, ConfigError

CLASSES = ("melanoma", "nevus", "other")


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
    write_text(out / TRUTH_FILE, json.dumps(truth, indent=2) + "\n")


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
    def write(tmp: str) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=header, lineterminator="\r\n", extrasaction="ignore")
            w.writeheader()
            w.writerows(rows)
    atomic_write(path, write)


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
    bar = progress_bar(total=len(jobs), desc=desc, disable=not progress)
    if workers <= 1 or len(jobs) < 64:
        for job in jobs:
            fn(job)
            bar.update()
    else:
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


def sample_metadata(n: int, seed: int = 0, cfg: DermConfig | None = None) -> pd.DataFrame:
    """The ground truth of the ISIC folder ``write_isic(out, n, seed, cfg)`` writes, without
    rendering a pixel: one row per image with ``image_id``, ``patient_id``, ``lesion_id``,
    ``label``, ``age_approx`` and the ``true_*`` columns (for quick simulations; the same values
    as the written ``metadata.csv``)."""
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


def write_derm(out: str | Path, *, n: int = 2000, n_ood: int = 500, seed: int = 0,
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
        raise ArgumentError(f"synth derm: need {{n}} >= 1, {{n_ood}} >= 0, {{image_size}} >= 16 "
                            f"(got {n}, {n_ood}, {image_size})", "n", "n_ood", "image_size")
    for name, v in (("patch_bias", patch_bias), ("age_bias", age_bias), ("skin_bias", skin_bias)):
        if not 0 <= v <= 1:
            raise ArgumentError(f"synth derm: {{{name}}}={v} must be within [0, 1]", name)
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
                raise ArgumentError(f"{final} exists; choose another {{out}} or pass "
                                    "{overwrite} to replace it", "out", "overwrite")
            shutil.rmtree(final)
        tmp = out / f".{sub}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        fn(tmp)
        os.replace(tmp, final)
        specs.append(f"{sub}:{final}")
    return specs[0], specs[1]
