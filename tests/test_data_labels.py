"""The diagnosis maps against the values ISIC publishes (tests/data/isic_diagnoses.txt, from the
isic-metadata project): every published value is mapped, each node of the taxonomy gets the class
all its descendants share, and the two metadata generations agree on the same lesion."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from medattn.data import labels as L

DATA = Path(__file__).parent / "data" / "isic_diagnoses.txt"
DOCS = Path(__file__).parents[1] / "docs" / "data.md"


def published() -> dict[str, list[str]]:
    sections: dict[str, list[str]] = {}
    current = None
    for line in DATA.read_text(encoding="utf-8").splitlines():
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
        else:
            current.append(line)
    return sections


LEGACY = published()["legacy"]
HIERARCHY = published()["hierarchy"]
# The skips a published hierarchy value may get (anything else must be a class); "Indeterminate"
# alone is the one value that carries no diagnosis.
COARSE = re.compile(r"^(diagnosis too coarse .*|collision of several lesions .*)$")


def test_published_lists_are_complete_enough_to_mean_something():
    assert len(LEGACY) >= 36 and len(HIERARCHY) >= 400
    for value in ("nevus spilus", "ephelis", "adnexal tumor", "sebaceous adenoma", "epidermal nevus"):
        assert value in LEGACY


@pytest.mark.parametrize("value", LEGACY)
def test_every_published_legacy_value_is_mapped(value):
    label, diagnosis = L.isic_legacy(value)
    assert label in (L.MELANOMA, L.NEVUS, L.OTHER), (value, label)
    assert diagnosis and diagnosis == diagnosis.lower()


def test_legacy_values_the_issue_names():
    assert L.isic_legacy("nevus spilus") == (L.NEVUS, "nevus spilus")
    for value in ("ephelis", "adnexal tumor", "sebaceous adenoma", "epidermal nevus"):
        assert L.isic_legacy(value) == (L.OTHER, value)
    assert L.isic_legacy("Melanoma") == (L.MELANOMA, "melanoma")
    assert L.isic_legacy("unknown") == ("no diagnosis", "")
    assert L.isic_legacy("banana") == ("unknown diagnosis 'banana'", "")


def test_every_published_hierarchy_value_is_mapped_or_documented_as_too_coarse():
    unmapped = []
    for value in HIERARCHY:
        label, diagnosis = L.isic_hierarchy(*value.split(":"))
        if isinstance(label, str):
            if not COARSE.match(label) and (value, label) != ("Indeterminate", "no diagnosis"):
                unmapped.append((value, label))
        else:
            assert diagnosis == diagnosis.lower() and diagnosis, value
    assert not unmapped, unmapped[:5]


def _expected_leaf(path: tuple[str, ...]) -> int | None:
    if path[1:2] == (L.ISIC_MELANOMA_D2,):
        return L.MELANOMA
    if path[2:3] == (L.ISIC_NEVUS_D3,):
        return L.NEVUS
    if path[1] in L.ISIC_COLLISION_D2:
        return None
    return L.OTHER


def test_each_node_gets_the_class_all_its_descendants_share():
    """The rule in labels.isic_hierarchy, checked against the published tree itself: a node is
    labelled iff all its deepest descendants have one class, and then with that class."""
    paths = [tuple(v.split(":")) for v in HIERARCHY]
    leaves = [p for p in paths if not any(q[:len(p)] == p and len(q) > len(p) for q in paths)]
    for node in paths:
        if len(node) == 1:
            continue  # level 1 alone is a malignancy status, never a diagnosis
        below = {_expected_leaf(leaf) for leaf in leaves if leaf[:len(node)] == node}
        label, _ = L.isic_hierarchy(*node)
        if len(below) == 1 and None not in below:
            assert label == below.pop(), node
        else:
            assert isinstance(label, str), (node, label)
    assert isinstance(L.isic_hierarchy("Benign")[0], str)
    assert isinstance(L.isic_hierarchy("Malignant")[0], str)
    assert L.isic_hierarchy("Indeterminate") == ("no diagnosis", "")


def test_the_two_generations_agree_on_the_same_lesion():
    pairs = [  # (older value, newer diagnosis_1..n)
        ("atypical melanocytic proliferation",
         ("Indeterminate", "Indeterminate melanocytic proliferations", "Atypical melanocytic neoplasm")),
        ("AIMP", ("Indeterminate", "Indeterminate melanocytic proliferations",
                  "Atypical intraepithelial melanocytic proliferation")),
        ("actinic keratosis", ("Indeterminate", "Indeterminate epidermal proliferations",
                               "Solar or actinic keratosis")),
        ("nevus spilus", ("Benign", "Benign melanocytic proliferations", "Nevus", "Nevus, Spilus")),
        ("lichenoid keratosis", ("Benign", "Benign epidermal proliferations",
                                 "Lichen planus like keratosis")),
        ("cafe-au-lait macule", ("Benign", "Flat melanotic pigmentations - not melanocytic nevus",
                                 "Cafe au lait macule or patch")),
        ("melanoma", ("Malignant", L.ISIC_MELANOMA_D2, "Melanoma, NOS")),
        ("melanoma metastasis", ("Malignant", L.ISIC_MELANOMA_D2, "Melanoma metastasis")),
        ("seborrheic keratosis", ("Benign", "Benign epidermal proliferations", "Seborrheic keratosis")),
        ("acrochordon", ("Benign", "Benign soft tissue proliferations - Fibro-histiocytic",
                         "Fibroepithelial polyp")),
    ]
    for old, new in pairs:
        assert L.isic_legacy(old) == L.isic_hierarchy(*new), (old, new)


def test_hierarchy_details():
    mel = ("Malignant", L.ISIC_MELANOMA_D2, "Melanoma Invasive", "Melanoma Invasive, Nodular")
    assert L.isic_hierarchy(*mel) == (L.MELANOMA, "melanoma invasive, nodular")
    # the deepest level present, with empty cells (missing levels) ignored
    assert L.isic_hierarchy("Benign", "Benign melanocytic proliferations", "Nevus", None, "") == \
        (L.NEVUS, "nevus")
    assert L.isic_hierarchy("benign", "benign melanocytic proliferations", "nevus")[0] == L.NEVUS
    coarse = L.isic_hierarchy("Benign", "Benign melanocytic proliferations")[0]
    assert coarse.startswith("diagnosis too coarse")
    assert L.isic_hierarchy("Benign", "Benign melanocytic proliferations", "Lentigo simplex") == \
        (L.OTHER, "lentigo simplex")
    assert L.isic_hierarchy("", None) == ("no diagnosis", "")
    assert L.isic_hierarchy("Weird") == ("unknown diagnosis 'Weird'", "")
    # a term added to the taxonomy later is classed by its parents where they are unambiguous
    new_subtype = ("Malignant", L.ISIC_MELANOMA_D2, "Melanoma, brand-new subtype")
    assert L.isic_hierarchy(*new_subtype)[0] == L.MELANOMA
    assert L.isic_hierarchy("Benign", "Cysts", "Brand-new cyst")[0] == L.OTHER


def test_code_maps_give_names_of_the_documented_vocabulary():
    """Every fine diagnosis the code maps produce is in the vocabulary table of docs/data.md."""
    docs = DOCS.read_text(encoding="utf-8")
    names = {d for d, _ in L.HAM10000_DX.values()} | {d for d, _ in L.ISIC2019_DX.values()}
    names |= {d for d, _ in L.PAD_UFES_DIAGNOSTIC.values()} | {d for d, _ in L.DERMAMNIST}
    names |= {d for d, _ in L.ISIC_LEGACY.values()} | set(L.ISIC_SYNONYMS.values())
    missing = sorted(n for n in names if f"`{n}`" not in docs)
    assert not missing, missing
    for term in L.ISIC_SYNONYMS:
        assert f"`{term}`" in docs, term


def test_codes_map_and_unknown_codes_are_never_guessed():
    assert L.map_code(" mel ", L.HAM10000_DX, str.lower) == (L.MELANOMA, "melanoma")
    assert L.map_code("NEV", L.PAD_UFES_DIAGNOSTIC) == (L.NEVUS, "nevus")
    assert L.map_code("ZZZ", L.PAD_UFES_DIAGNOSTIC) == ("unknown diagnosis 'ZZZ'", "")
    assert L.map_code(None, L.PAD_UFES_DIAGNOSTIC) == ("no diagnosis", "")
    assert [label for _, label in L.DERMAMNIST] == [2, 2, 2, 2, 0, 1, 2]
