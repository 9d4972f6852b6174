"""The fine diagnoses of the synthetic skin-lesion generator (docs/data.md): inside each coarse
class, diagnoses that differ in their patients' age and skin colour and in appearance, as real
ones do, so that conditioning the feature analysis on the coarse label falls into the trap the
fine diagnosis avoids (docs/features.md)."""

from __future__ import annotations

import dataclasses

@dataclasses.dataclass(frozen=True)
class Diagnosis:
    """A fine diagnosis inside a coarse class: its share of the class, its patients' age and skin
    colour (means at full ``age_bias`` / ``skin_bias``) and the distributions of its ABCD features.

    The diagnoses of one class differ in age and skin colour and overlap in appearance, as real ones
    do (a dermatofibroma looks like a nevus and occurs in younger, darker-skinned patients than a
    seborrheic keratosis): a model that tells them apart from the image alone has predictions that
    vary with age *within the coarse class*, although it never sees age (docs/data.md). Each
    class's mixture keeps the class-level means of age (60 / 35 / 58) and skin ITA (48 / 38 / 28)
    of the generator before it had diagnoses, so the coarse task is as easy as it was.
    """

    name: str  # the ``true_diagnosis`` value
    label: int  # coarse class: 0 melanoma, 1 nevus, 2 other
    share: float  # probability within its class in the ISIC folder
    pad_share: float  # ... in the PAD-UFES-20 folder (which has only MEL, NEV, ACK, BCC, SCC, SEK)
    age: float  # mean age, years (sd 13)
    ita: float  # mean skin ITA, degrees (sd 12)
    asymmetry: tuple[float, float]  # Beta parameters
    border: tuple[float, float]  # Beta parameters
    colours: tuple[float, ...]  # P(1..6 colours)
    structures: tuple[float, ...]  # P(present) of each of STRUCTURES
    isic: tuple[str, str, str] | None  # diagnosis_1..3 of the newer ISIC metadata
    isic_old: str | None  # ``diagnosis`` of the older ISIC metadata
    pad: str | None  # PAD-UFES-20 ``diagnostic`` code


_MEL, _BEN = "Malignant melanocytic proliferations (Melanoma)", "Benign"
MALIGNANT = "Malignant"
DIAGNOSES: tuple[Diagnosis, ...] = (
    Diagnosis("melanoma invasive", 0, 0.60, 1.00, 64, 45, (4.5, 2.2), (4.5, 2.2),
              (0.01, 0.07, 0.22, 0.32, 0.23, 0.15), (0.55, 0.50, 0.55, 0.10, 0.45),
              (MALIGNANT, _MEL, "Melanoma Invasive"), "melanoma", "MEL"),
    Diagnosis("melanoma in situ", 0, 0.40, 0.00, 54, 52.5, (3.5, 3.0), (3.5, 3.0),
              (0.03, 0.15, 0.30, 0.28, 0.15, 0.09), (0.45, 0.40, 0.42, 0.10, 0.33),
              (MALIGNANT, _MEL, "Melanoma in situ"), "melanoma", None),
    Diagnosis("nevus", 1, 1.00, 1.00, 35, 38, (2.0, 4.0), (2.0, 4.5),
              (0.30, 0.40, 0.20, 0.07, 0.03, 0.00), (0.70, 0.05, 0.10, 0.15, 0.45),
              (_BEN, "Benign melanocytic proliferations", "Nevus"), "nevus", "NEV"),
    Diagnosis("seborrheic keratosis", 2, 0.35, 0.35, 70, 30, (4.5, 2.0), (4.5, 2.0),
              (0.05, 0.20, 0.35, 0.25, 0.15, 0.00), (0.05, 0.05, 0.05, 0.85, 0.10),
              (_BEN, "Benign epidermal proliferations", "Seborrheic keratosis"),
              "seborrheic keratosis", "SEK"),
    Diagnosis("basal cell carcinoma", 2, 0.30, 0.30, 68, 40, (4.0, 2.5), (3.5, 2.5),
              (0.10, 0.30, 0.35, 0.15, 0.10, 0.00), (0.05, 0.15, 0.10, 0.40, 0.10),
              (MALIGNANT, "Malignant adnexal epithelial proliferations - Follicular",
               "Basal cell carcinoma"), "basal cell carcinoma", "BCC"),
    Diagnosis("dermatofibroma", 2, 0.20, 0.00, 40, 12, (1.5, 5.0), (1.5, 5.0),
              (0.45, 0.45, 0.10, 0.00, 0.00, 0.00), (0.60, 0.10, 0.02, 0.10, 0.30),
              (_BEN, "Benign soft tissue proliferations - Fibro-histiocytic", "Dermatofibroma"),
              "dermatofibroma", None),
    Diagnosis("hemangioma", 2, 0.15, 0.00, 34, 20, (2.0, 4.5), (1.5, 5.0),
              (0.50, 0.40, 0.10, 0.00, 0.00, 0.00), (0.02, 0.05, 0.02, 0.05, 0.05),
              (_BEN, "Benign soft tissue proliferations - Vascular", "Hemangioma"),
              "hemangioma", None),
    Diagnosis("actinic keratosis", 2, 0.00, 0.20, 66, 30, (3.0, 3.0), (3.0, 3.0),
              (0.15, 0.35, 0.30, 0.15, 0.05, 0.00), (0.10, 0.10, 0.05, 0.30, 0.10),
              None, "actinic keratosis", "ACK"),
    Diagnosis("squamous cell carcinoma", 2, 0.00, 0.15, 72, 30, (3.5, 2.5), (3.5, 2.5),
              (0.05, 0.25, 0.35, 0.25, 0.10, 0.00), (0.05, 0.10, 0.10, 0.35, 0.10),
              None, "squamous cell carcinoma", "SCC"),
)
# What the rendered image shows (Table 3 names). Age and sex are never drawn into an image; skin
# colour is the background (a real, visible cue); the colourful patch is drawn when present.
VISIBLE = ("A", "B", "C", "D", "Skin color", "Colorful patches")
NOT_VISIBLE = ("Age", "Sex")
