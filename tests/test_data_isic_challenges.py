"""The ISIC 2019 and 2020 challenge downloads, read as released: fixtures in the real layouts
(column order, CRLF where the publisher uses it, ``_downsampled`` ids, one-hot ``1.0``/``0.0``
cells, ``IP_``/``IL_`` ids, the duplicates list), class counts equal to the metadata's, and no
group on two sides of a split."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from medattn.cli import main
from medattn.data import load_dataset
from medattn.errors import DataError

from tests.test_data_readers import _csv, _img, assert_grouped_splits

GT2019 = ["image", "MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK"]
META2019 = ["image", "age_approx", "anatom_site_general", "lesion_id", "sex"]
GT2020_V2 = ["image_name", "patient_id", "lesion_id", "sex", "age_approx",
             "anatom_site_general_challenge", "diagnosis", "benign_malignant", "target"]
GT2020_V1 = [c for c in GT2020_V2 if c != "lesion_id"]
CLASS_2019 = {"MEL": 0, "NV": 1, "BCC": 2, "AK": 2, "BKL": 2, "DF": 2, "VASC": 2, "SCC": 2}
DX_2020 = [("nevus", 1), ("melanoma", 0), ("unknown", None), ("seborrheic keratosis", 2),
           ("nevus", 1), ("unknown", None), ("lentigo NOS", 2), ("lichenoid keratosis", 2),
           ("solar lentigo", 2), ("atypical melanocytic proliferation", 2), ("cafe-au-lait macule", 2)]


def write_isic2019(root: Path, n: int = 48) -> tuple[Path, dict]:
    """Ids as in the release: the older archive part (some ``_downsampled``, no lesion id), HAM10000
    (``HAM_`` lesions, several images each), BCN20000 (``BCN_``) and MSK (``MSK4_``)."""
    gt, meta, expected = [], [], {}
    codes = list(CLASS_2019)
    for i in range(n):
        part = i % 4
        if part == 0:
            iid, lesion = f"ISIC_{i:07d}" + ("_downsampled" if i % 8 == 0 else ""), ""
        elif part == 1:
            iid, lesion = f"ISIC_{24306 + i:07d}", f"HAM_{i // 8:07d}"
        elif part == 2:
            iid, lesion = f"ISIC_{53000 + i:07d}", f"BCN_{i // 6:07d}"
        else:
            iid, lesion = f"ISIC_{12000 + i:07d}", f"MSK4_{i // 12:07d}"
        code = codes[i % len(codes)]
        hot = ["1.0" if c == code else "0.0" for c in GT2019[1:]]
        if i == 5:
            hot = ["0.0"] * 8 + ["1.0"]                      # UNK: no diagnosis
        if i == 6:
            hot[0] = hot[1] = "1.0"                          # several classes: skipped
        gt.append([iid, *hot])
        meta.append([iid, f"{30 + 5 * (i % 10)}.0", "anterior torso" if i % 3 else "", lesion,
                     ("male", "female", "")[i % 3]])
        if i != 7:                                           # one image missing
            _img(root / "ISIC_2019_Training_Input" / f"{iid}.jpg", seed=i)
        if i not in (5, 6, 7):
            expected[iid.removesuffix("_downsampled")] = CLASS_2019[code]
    _csv(root / "ISIC_2019_Training_GroundTruth.csv", GT2019, gt, crlf=True)
    _csv(root / "ISIC_2019_Training_Metadata.csv", META2019, meta, crlf=True)
    for name in ("ATTRIBUTION.txt", "LICENSE.txt"):
        (root / "ISIC_2019_Training_Input" / name).write_text("x\n")
    return root, expected


def write_isic2020(root: Path, version: str = "v2", n: int = 44) -> tuple[Path, dict]:
    """``v2``: ISIC_2020_Training_GroundTruth_v2.csv (CRLF) + train/; ``v1``: the first release (LF,
    no lesion_id); ``kaggle``: the competition's train.csv + jpeg/train/. Patients have several
    lesions, lesions several images; one duplicate pair spans two patients."""
    header = GT2020_V1 if version in ("v1", "kaggle") else GT2020_V2
    rows, expected, ids = [], {}, []
    for i in range(n):
        iid = f"ISIC_{(i * 7919) % 9_999_999:07d}"
        ids.append(iid)
        dx, label = DX_2020[i % len(DX_2020)]
        row = {"image_name": iid, "patient_id": f"IP_{1000000 + i // 4:07d}",
               "lesion_id": f"IL_{2000000 + i // 2:07d}", "sex": ("male", "female")[i % 2],
               "age_approx": str(25 + 5 * (i % 11)) if version != "v1" else f"{25 + 5 * (i % 11)}.0",
               "anatom_site_general_challenge": ("torso", "head/neck", "")[i % 3], "diagnosis": dx,
               "benign_malignant": "malignant" if label == 0 else "benign",
               "target": int(label == 0)}
        rows.append([row[h] for h in header])
        folder = root / ("jpeg/train" if version == "kaggle" else "train")
        if i != 9:
            _img(folder / f"{iid}.jpg", seed=i)
        if label is not None and i != 9:
            expected[iid] = label
    name = {"v2": "ISIC_2020_Training_GroundTruth_v2.csv", "v1": "ISIC_2020_Training_GroundTruth.csv",
            "kaggle": "train.csv"}[version]
    _csv(root / name, header, rows, crlf=version == "v2")
    if version == "v2":  # images 0 and 20 are the same picture filed under two patients
        _csv(root / "ISIC_2020_Training_Duplicates.csv", ["image_name_1", "image_name_2"],
             [[ids[0], ids[20]]], crlf=True)
    return root, expected


@pytest.fixture(scope="module")
def layouts(tmp_path_factory):
    t = tmp_path_factory.mktemp("challenges")
    return {"isic2019": write_isic2019(t / "isic2019"),
            "isic2020": write_isic2020(t / "isic2020"),
            "isic2020-v1": write_isic2020(t / "isic2020_v1", "v1"),
            "isic2020-kaggle": write_isic2020(t / "isic2020_kaggle", "kaggle")}


def spec(name: str, path: Path) -> str:
    return f"{name.split('-')[0]}:{path}"


@pytest.mark.parametrize("name", ["isic2019", "isic2020", "isic2020-v1", "isic2020-kaggle"])
def test_reads_labels_as_the_metadata_gives_them(layouts, name):
    path, expected = layouts[name]
    t = load_dataset(spec(name, path))
    assert dict(zip(t["image_id"], t["label"])) == expected
    assert t.attrs["classes"] == ["melanoma", "nevus", "other"]
    assert t["image_id"].is_unique and t["group"].notna().all()
    assert t.attrs["skipped"]["missing image"] == 1
    assert t.attrs["missing"]["count"] == 1


@pytest.mark.parametrize("name", ["isic2019", "isic2020", "isic2020-v1", "isic2020-kaggle"])
def test_no_group_on_two_sides_of_a_split(layouts, name):
    path, _ = layouts[name]
    assert_grouped_splits(load_dataset(spec(name, path)), seeds=25)


def test_isic2019_details(layouts):
    path, _ = layouts["isic2019"]
    assert b"\r\n" in (path / "ISIC_2019_Training_GroundTruth.csv").read_bytes()
    t = load_dataset(f"isic2019:{path}").set_index("image_id")
    assert t.attrs["skipped"] == {"missing image": 1, "no diagnosis": 1,
                                  "several classes in one row (MEL+NV+VASC)": 1}
    # the id loses the suffix, the path keeps the file's name
    assert t.loc["ISIC_0000000", "downsampled"] and not t.loc["ISIC_0000004", "downsampled"]
    assert t.loc["ISIC_0000000", "path"].endswith("ISIC_2019_Training_Input/ISIC_0000000_downsampled.jpg")
    # HAM lesions group their images; images without a lesion id (and no patient) stand alone
    ham = t[t["lesion_id"].fillna("").str.startswith("HAM_")]
    assert (ham.groupby("lesion_id")["group"].nunique() == 1).all()
    assert ham.groupby("group").size().max() > 1
    assert t.loc["ISIC_0000004", "group"] == "image:ISIC_0000004"
    assert t.loc["ISIC_0024307", "group"] == "lesion:HAM_0000000"
    fine = t.set_index("lesion_id", append=True)["diagnosis"].droplevel(1)
    assert fine["ISIC_0024307"] == "nevus" and fine["ISIC_0053002"] == "basal cell carcinoma"
    assert set(t["diagnosis"]) == {"melanoma", "nevus", "basal cell carcinoma", "actinic keratosis",
                                   "benign keratosis", "dermatofibroma", "vascular lesion",
                                   "squamous cell carcinoma"}
    assert t.loc["ISIC_0024307", "age"] == 35.0 and t.loc["ISIC_0024307", "sex"] == "female"


def test_isic2019_needs_its_lesion_ids(tmp_path):
    root, _ = write_isic2019(tmp_path / "d", n=8)
    (root / "ISIC_2019_Training_Metadata.csv").unlink()
    with pytest.raises(DataError, match="ISIC_2019_Training_Metadata.csv: not found.*lesion ids"):
        load_dataset(f"isic2019:{root}")


def test_isic2019_integer_cells_read_the_same(tmp_path, layouts):
    """Copies re-saved by spreadsheet programs write 1/0 instead of 1.0/0.0."""
    path, expected = layouts["isic2019"]
    root = tmp_path / "resaved"
    shutil.copytree(path, root)
    gt = root / "ISIC_2019_Training_GroundTruth.csv"
    gt.write_bytes(gt.read_bytes().replace(b"1.0", b"1").replace(b"0.0", b"0"))
    t = load_dataset(f"isic2019:{root}")
    assert dict(zip(t["image_id"], t["label"])) == expected


def test_isic2019_bad_cell_names_row_and_column(tmp_path):
    root, _ = write_isic2019(tmp_path / "d", n=8)
    gt = root / "ISIC_2019_Training_GroundTruth.csv"
    text = gt.read_bytes().decode()
    assert "ISIC_0000004,0.0,0.0,0.0,0.0,1.0" in text
    gt.write_bytes(text.replace("ISIC_0000004,0.0,0.0,0.0,0.0,1.0", "ISIC_0000004,0.0,0.0,0.0,0.0,yes")
                   .encode())
    with pytest.raises(DataError, match=r"row 6 \(ISIC_0000004\): column 'BKL' is 'yes'"):
        load_dataset(f"isic2019:{root}")


def test_isic2020_groups_patients_lesions_and_duplicates(layouts):
    path, _ = layouts["isic2020"]
    t = load_dataset(f"isic2020:{path}").set_index("image_id")
    assert t.attrs["skipped"] == {"missing image": 1, "no diagnosis": 8}
    # a patient is the leakage unit; several lesions per patient
    per_patient = t.groupby("patient_id")["group"].nunique()
    assert (per_patient == 1).all() and t.groupby("patient_id")["lesion_id"].nunique().max() > 1
    # the duplicate pair (rows 0 and 20, patients 1000000 and 1000005) is one group
    a, b = "ISIC_0000000", f"ISIC_{20 * 7919:07d}"
    assert t.loc[a, "group"] == t.loc[b, "group"] == "patient:IP_1000000"
    assert t.loc[b, "patient_id"] == "IP_1000005"
    assert t.loc[a, "diagnosis"] == "nevus" and t.loc[a, "anatom_site_general"] == "torso"
    assert set(t["diagnosis"]) >= {"lentigo nos", "lichenoid keratosis", "cafe-au-lait macule",
                                   "atypical melanocytic proliferation", "solar lentigo"}


@pytest.mark.parametrize("name", ["isic2019", "isic2020", "isic2020-v1", "isic2020-kaggle"])
def test_inspect_prints_the_metadata_class_counts(layouts, name, capsys):
    path, expected = layouts[name]
    assert main(["data", "inspect", spec(name, path)]) == 0
    out = capsys.readouterr().out
    counts = pd.Series(list(expected.values())).value_counts().reindex(range(3), fill_value=0)
    assert f"classes    melanoma: {counts[0]}, nevus: {counts[1]}, other: {counts[2]}" in out
    assert "1 image(s) not found" in out and "folder(s) searched below" in out


def test_challenge_folder_given_to_isic_names_the_right_source(layouts, capsys):
    for name in ("isic2019", "isic2020", "isic2020-kaggle"):
        path, _ = layouts[name]
        assert main(["data", "inspect", f"isic:{path}"]) == 2
        err = capsys.readouterr().err
        source = name.split("-")[0]
        assert f"read it as {source}:{path}" in err, err
