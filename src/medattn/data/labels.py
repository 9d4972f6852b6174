"""Class lists and the maps from each source's diagnosis vocabulary to them.

Skin sources all map to the paper's three classes (melanoma, nevus, other). A value that is not in a
map is never guessed: the reader leaves the image out and counts it under ``table.attrs["skipped"]``.
"""

from __future__ import annotations

import math

SKIN_CLASSES: list[str] = ["melanoma", "nevus", "other"]
CAMELYON_CLASSES: list[str] = ["normal", "tumor"]

MELANOMA, NEVUS, OTHER = 0, 1, 2

# ISIC, older metadata generation: the single ``diagnosis`` column. Values seen in archive downloads
# (2016-2023); everything diagnosed that is neither melanoma nor nevus is "other".
ISIC_OLD_DIAGNOSES: dict[str, int] = {
    "melanoma": MELANOMA,
    "melanoma metastasis": MELANOMA,
    "nevus": NEVUS,
    **{d: OTHER for d in (
        "seborrheic keratosis", "basal cell carcinoma", "actinic keratosis",
        "squamous cell carcinoma", "dermatofibroma", "vascular lesion", "lentigo nos",
        "lentigo simplex", "lichenoid keratosis", "solar lentigo", "cafe-au-lait macule",
        "atypical melanocytic proliferation", "aimp", "angioma", "angiofibroma or fibrous papule",
        "angiokeratoma", "scar", "pigmented benign keratosis", "verruca", "clear cell acanthoma",
        "neurofibroma", "mucosal melanosis", "other", "atypical spitz tumor",
        "pyogenic granuloma", "hemangioma", "dermatofibrosarcoma protuberans",
        "merkel cell carcinoma", "porokeratosis", "sebaceous hyperplasia", "acrochordon",
    )},
}
# Values that mean "no diagnosis": skipped, never relabelled.
NO_DIAGNOSIS = {"", "unknown", "nan", "none", "indeterminate"}

# ISIC, newer generation: hierarchical diagnosis_1..5 (the ISIC diagnosis taxonomy).
ISIC_MELANOMA_D2 = "Malignant melanocytic proliferations (Melanoma)"
ISIC_NEVUS_D3 = "Nevus"
ISIC_DIAGNOSED_D1 = {"benign", "malignant"}

HAM10000_DX: dict[str, int] = {
    "mel": MELANOMA, "nv": NEVUS,
    "akiec": OTHER, "bcc": OTHER, "bkl": OTHER, "df": OTHER, "vasc": OTHER,
}

PAD_UFES_DIAGNOSTIC: dict[str, int] = {
    "MEL": MELANOMA, "NEV": NEVUS,
    "ACK": OTHER, "BCC": OTHER, "SCC": OTHER, "SEK": OTHER,
}

# DermaMNIST labels 0..6: akiec, bcc, bkl, df, melanoma, nevus, vasc.
DERMAMNIST_TO_SKIN: list[int] = [OTHER, OTHER, OTHER, OTHER, MELANOMA, NEVUS, OTHER]

# Class names of MedMNIST v2 2D flags (the ``label`` field of medmnist.INFO). Flags not listed here get
# ``class_<k>`` names; multi-label flags (chestmnist) are refused by the reader.
MEDMNIST_CLASSES: dict[str, list[str]] = {
    "pathmnist": ["adipose", "background", "debris", "lymphocytes", "mucus", "smooth muscle",
                  "normal colon mucosa", "cancer-associated stroma",
                  "colorectal adenocarcinoma epithelium"],
    "octmnist": ["choroidal neovascularization", "diabetic macular edema", "drusen", "normal"],
    "pneumoniamnist": ["normal", "pneumonia"],
    "retinamnist": ["0", "1", "2", "3", "4"],
    "breastmnist": ["malignant", "normal, benign"],
    "bloodmnist": ["basophil", "eosinophil", "erythroblast", "immature granulocytes",
                   "lymphocyte", "monocyte", "neutrophil", "platelet"],
    "tissuemnist": ["Collecting Duct, Connecting Tubule", "Distal Convoluted Tubule",
                    "Glomerular endothelial cells", "Interstitial endothelial cells",
                    "Leukocytes", "Podocytes", "Proximal Tubule Segments", "Thick Ascending Limb"],
    "organamnist": ["bladder", "femur-left", "femur-right", "heart", "kidney-left",
                    "kidney-right", "liver", "lung-left", "lung-right", "pancreas", "spleen"],
}
MEDMNIST_CLASSES["organcmnist"] = MEDMNIST_CLASSES["organamnist"]
MEDMNIST_CLASSES["organsmnist"] = MEDMNIST_CLASSES["organamnist"]
MEDMNIST_MULTILABEL = {"chestmnist"}


def isic_old_label(diagnosis: object) -> int | str:
    """Label of an older-generation ISIC ``diagnosis`` value, or the skip reason (a str)."""
    value = _clean(diagnosis).lower()
    if value in NO_DIAGNOSIS:
        return "no diagnosis"
    if value in ISIC_OLD_DIAGNOSES:
        return ISIC_OLD_DIAGNOSES[value]
    return f"unknown diagnosis {value!r}"


def isic_new_label(d1: object, d2: object, d3: object) -> int | str:
    """Label from the hierarchical ``diagnosis_1..3`` columns, or the skip reason (a str).

    melanoma = ``diagnosis_2`` is the melanoma node; nevus = ``diagnosis_3 == "Nevus"``; any other
    image diagnosed benign or malignant at level 1 is "other". ``Indeterminate`` (or empty) level 1
    without a melanoma/nevus node below is not a usable diagnosis.
    """
    d1, d2, d3 = _clean(d1), _clean(d2), _clean(d3)
    if d2 == ISIC_MELANOMA_D2:
        return MELANOMA
    if d3 == ISIC_NEVUS_D3:
        return NEVUS
    if d1.lower() in ISIC_DIAGNOSED_D1:
        return OTHER
    if d1.lower() in NO_DIAGNOSIS:
        return "no diagnosis"
    return f"unknown diagnosis {d1!r}"


def _clean(value: object) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value).strip()
