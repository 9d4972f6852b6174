"""Class lists, and the maps from each source's diagnosis values to a class and a fine diagnosis.

Skin sources map to the paper's three classes (melanoma, nevus, other) and keep the **fine
diagnosis**: the most specific level the metadata gives, as one lower-case name from the vocabulary
documented in ``docs/data.md`` (the feature analysis conditions on it). Every mapping is decided
here once, so the two ISIC metadata generations, the ISIC challenges, HAM10000 and PAD-UFES-20 give
the same class and the same name for the same lesion. A value that is not in a map is never
guessed: the reader leaves the image out and counts the reason under ``table.attrs["skipped"]``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Hashable, Iterable

import pandas as pd

SKIN_CLASSES: list[str] = ["melanoma", "nevus", "other"]
CAMELYON_CLASSES: list[str] = ["normal", "tumor"]

MELANOMA, NEVUS, OTHER = 0, 1, 2

# Short diagnosis codes of the files that use them -> (fine diagnosis, class).
_MEL, _NEV = ("melanoma", MELANOMA), ("nevus", NEVUS)
_BCC, _SCC = ("basal cell carcinoma", OTHER), ("squamous cell carcinoma", OTHER)
_AK, _DF = ("actinic keratosis", OTHER), ("dermatofibroma", OTHER)
_BKL, _VASC = ("benign keratosis", OTHER), ("vascular lesion", OTHER)
_AKIEC = ("actinic keratosis or intraepithelial carcinoma", OTHER)

# HAM10000 ``dx`` (lower case). bkl = seborrheic keratosis, solar lentigo and lichenoid keratosis;
# akiec = actinic keratosis and Bowen's disease (squamous cell carcinoma in situ).
HAM10000_DX: dict[str, tuple[str, int]] = {
    "mel": _MEL, "nv": _NEV, "bcc": _BCC, "akiec": _AKIEC, "bkl": _BKL, "df": _DF, "vasc": _VASC}

# ISIC 2019 GroundTruth one-hot columns, in file order. UNK (test set only) has no diagnosis.
ISIC2019_COLUMNS = ("MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK")
ISIC2019_DX: dict[str, tuple[str, int]] = {
    "MEL": _MEL, "NV": _NEV, "BCC": _BCC, "AK": _AK, "BKL": _BKL, "DF": _DF, "VASC": _VASC,
    "SCC": _SCC}

# PAD-UFES-20 ``diagnostic`` (upper case). The release folds Bowen's disease (BOD) into SCC; BOD is
# mapped too in case a copy keeps it apart.
PAD_UFES_DIAGNOSTIC: dict[str, tuple[str, int]] = {
    "MEL": _MEL, "NEV": _NEV, "ACK": _AK, "BCC": _BCC, "SCC": _SCC,
    "SEK": ("seborrheic keratosis", OTHER), "BOD": ("squamous cell carcinoma in situ", OTHER)}

# DermaMNIST labels 0..6 (HAM10000 images): akiec, bcc, bkl, df, melanoma, nevus, vasc.
DERMAMNIST: list[tuple[str, int]] = [_AKIEC, _BCC, _BKL, _DF, _MEL, _NEV, _VASC]
DERMAMNIST_TO_SKIN: list[int] = [label for _, label in DERMAMNIST]

# ISIC, older metadata generation: the single ``diagnosis`` column (isic-metadata's legacy
# enumeration, plus values of older archive downloads; also the ``diagnosis`` of ISIC 2020).
# Fine diagnosis = the value in lower case, except "AIMP", spelled out as in the newer taxonomy.
_LEGACY_OTHER = (
    "actinic keratosis", "adnexal tumor", "angiokeratoma", "angioma", "basal cell carcinoma",
    "cafe-au-lait macule", "dermatofibroma", "ephelis", "lentigo nos", "lentigo simplex",
    "lichenoid keratosis", "merkel cell carcinoma", "mucosal melanosis", "seborrheic keratosis",
    "solar lentigo", "squamous cell carcinoma", "clear cell acanthoma", "atypical spitz tumor",
    "acrochordon", "angiofibroma or fibrous papule", "neurofibroma", "pyogenic granuloma", "scar",
    "sebaceous adenoma", "sebaceous hyperplasia", "verruca", "atypical melanocytic proliferation",
    "epidermal nevus", "pigmented benign keratosis", "vascular lesion", "other",
    # seen in archive downloads outside the enumeration
    "hemangioma", "dermatofibrosarcoma protuberans", "porokeratosis",
)
ISIC_LEGACY: dict[str, tuple[str, int]] = {
    "melanoma": _MEL, "melanoma metastasis": ("melanoma metastasis", MELANOMA),
    "nevus": _NEV, "nevus spilus": ("nevus spilus", NEVUS),
    "aimp": ("atypical intraepithelial melanocytic proliferation", OTHER),
    **{d: (d, OTHER) for d in _LEGACY_OTHER},
}
# Values that mean "no diagnosis": skipped, never relabelled.
NO_DIAGNOSIS = {"", "unknown", "nan", "none", "indeterminate"}

# ISIC, newer generation: the hierarchical taxonomy in diagnosis_1..5 (isic-metadata). A node's class
# is the class all its descendants share: melanoma below the melanoma node, nevus below "Nevus",
# other for everything else; where descendants differ the node is too coarse to label.
ISIC_MELANOMA_D2 = "Malignant melanocytic proliferations (Melanoma)"
ISIC_NEVUS_D3 = "Nevus"
ISIC_LEVEL1 = ("Benign", "Malignant", "Indeterminate")
ISIC_MELANOCYTIC_D2 = "Benign melanocytic proliferations"   # holds nevi and other lesions
ISIC_COLLISION_D2 = ("Collision - Only benign proliferations",
                     "Collision - At least one malignant proliferation")
# Taxonomy terms naming the same entity as an older-generation value: both give the older name, so
# the two generations agree on the fine diagnosis of the same lesion.
ISIC_SYNONYMS: dict[str, str] = {
    "solar or actinic keratosis": "actinic keratosis",
    "lichen planus like keratosis": "lichenoid keratosis",
    "cafe au lait macule or patch": "cafe-au-lait macule",
    "atypical melanocytic neoplasm": "atypical melanocytic proliferation",
    "fibroepithelial polyp": "acrochordon",
    "mucosal melanotic macule": "mucosal melanosis",
    "nevus, spilus": "nevus spilus",
    "melanoma, nos": "melanoma",
    "squamous cell carcinoma, nos": "squamous cell carcinoma",
    "muluscum": "molluscum",  # a typo of earlier taxonomy versions
}

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

Mapped = tuple[int | str, str]  # (class, or the skip reason as a str; fine diagnosis)


def map_each(values: Iterable[Hashable], fn: Callable[..., Mapped]) -> list[Mapped]:
    """``fn`` of every value (a tuple is passed as arguments), computed once per distinct value:
    metadata repeats a few diagnoses over tens of thousands of rows."""
    done: dict[Hashable, Mapped] = {}
    out = []
    for v in values:
        if v not in done:
            done[v] = fn(*v) if isinstance(v, tuple) else fn(v)
        out.append(done[v])
    return out


def fine_name(term: object) -> str:
    """A diagnosis term as a name of the vocabulary: lower case, single spaces, synonyms folded."""
    name = re.sub(r"\s+", " ", clean(term)).lower()
    return ISIC_SYNONYMS.get(name, name)


def map_code(code: object, codes: dict[str, tuple[str, int]], normalise=str.strip) -> Mapped:
    """(class, fine diagnosis) of a short code in ``codes``, or (skip reason, "")."""
    value = normalise(clean(code))
    if value.lower() in NO_DIAGNOSIS:
        return "no diagnosis", ""
    if value not in codes:
        return f"unknown diagnosis {value!r}", ""
    diagnosis, label = codes[value]
    return label, diagnosis


def isic_legacy(diagnosis: object) -> Mapped:
    """(class, fine diagnosis) of an older-generation ISIC ``diagnosis`` value, or (reason, "")."""
    return map_code(diagnosis, ISIC_LEGACY, lambda v: v.strip().lower())


def isic_hierarchy(*levels: object) -> Mapped:
    """(class, fine diagnosis) from the ``diagnosis_1..5`` values of one image, or (reason, "").

    melanoma = ``diagnosis_2`` is the melanoma node; nevus = ``diagnosis_3 == "Nevus"``; other =
    any other diagnosis below level 1. Skipped: no level 1 or ``Indeterminate`` alone (no diagnosis),
    ``Benign``/``Malignant`` alone and ``Benign melanocytic proliferations`` without a third level
    (too coarse: nevus or not), and collisions of several lesions (no single class). The fine
    diagnosis is the deepest level present.
    """
    terms = [clean(v) for v in levels]
    terms = [t for t in terms if t]
    if not terms or terms[0].lower() in NO_DIAGNOSIS - {"indeterminate"}:
        return "no diagnosis", ""
    low = [t.lower() for t in terms] + ["", "", ""]
    if low[0] not in {v.lower() for v in ISIC_LEVEL1}:
        return f"unknown diagnosis {terms[0]!r}", ""
    diagnosis = fine_name(terms[-1])
    if low[1] == ISIC_MELANOMA_D2.lower():
        return MELANOMA, diagnosis
    if low[2] == ISIC_NEVUS_D3.lower():
        return NEVUS, diagnosis
    if len(terms) == 1:
        return ("no diagnosis", "") if low[0] == "indeterminate" else \
            (f"diagnosis too coarse ({terms[0]!r} only)", "")
    if low[1] in {c.lower() for c in ISIC_COLLISION_D2}:
        return "collision of several lesions (no single class)", ""
    if len(terms) == 2 and low[1] == ISIC_MELANOCYTIC_D2.lower():
        return f"diagnosis too coarse ({ISIC_MELANOCYTIC_D2!r} without a third level)", ""
    return OTHER, diagnosis


def clean(value: object) -> str:
    """A metadata cell as a stripped str ('' for missing values)."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return ""
    return str(value).strip()
