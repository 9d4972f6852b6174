"""Readers on small fixtures written in each real on-disk layout, with the usual problems planted:
CRLF line ends, a .png among .jpgs, a missing image, a corrupt image, an unknown diagnosis, a
missing required column. Splits drawn from every reader never share a group between sides."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medattn.cli import main
from medattn.data import load_dataset, load_task, make_split, read_image
from medattn.data.splits import split_groups_disjoint
from medattn.errors import DataError

MEL = "Malignant melanocytic proliferations (Melanoma)"
NEW_DX = [  # (diagnosis_1, diagnosis_2, diagnosis_3) -> expected label
    (("Malignant", MEL, "Melanoma Invasive"), 0),
    (("Benign", "Benign melanocytic proliferations", "Nevus"), 1),
    (("Benign", "Benign epidermal proliferations", "Seborrheic keratosis"), 2),
    (("Malignant", "Malignant adnexal epithelial proliferations - Follicular", "Basal cell carcinoma"), 2),
]


def _img(path: Path, size=(24, 18), mode="RGB", seed=0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 255, (size[1], size[0], len(mode)), dtype=np.uint8)
    Image.fromarray(arr.squeeze(), mode).save(path)


def _corrupt(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG")


def _csv(path: Path, header: list[str], rows: list[list], crlf: bool = True) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\r\n" if crlf else "\n")
        w.writerow(header)
        w.writerows(rows)


# ---------------------------------------------------------------------------------------------
# Fixture writers, one per layout. Each returns (folder, expected {image_id: label}).
# ---------------------------------------------------------------------------------------------

def write_isic_new(root: Path, n: int = 30) -> tuple[Path, dict]:
    header = ["isic_id", "attribution", "copyright_license", "age_approx", "anatom_site_general",
              "diagnosis_1", "diagnosis_2", "diagnosis_3", "diagnosis_4", "diagnosis_5",
              "diagnosis_confirm_type", "fitzpatrick_skin_type", "image_type", "lesion_id",
              "patient_id", "sex"]
    rows, expected = [], {}
    for i in range(n):
        iid = f"ISIC_{i:07d}"
        (d1, d2, d3), label = NEW_DX[i % 4]
        patient = f"IP_{i // 4:07d}" if i < 24 else ""  # the last ones fall back to lesion_id
        lesion = f"IL_{i // 2:07d}"
        if i == 4:
            d1, d2, d3 = "Indeterminate", "", ""          # no usable diagnosis
        if i == 5:
            d1, d2, d3 = "Weird", "", ""                  # unknown diagnosis
        rows.append([iid, "Someone", "CC-BY", 40 + i % 5 * 5, "head/neck", d1, d2, d3, "", "",
                     "histopathology", "II", "dermoscopic", lesion, patient,
                     "male" if i % 2 else "female"])
        if i == 1:
            _img(root / f"{iid}.png", seed=i)
        elif i == 2:
            _corrupt(root / f"{iid}.jpg")
        elif i == 3:
            pass                                           # missing image
        else:
            _img(root / f"{iid}.jpg", seed=i)
        if i not in (3, 4, 5):
            expected[iid] = label
    _csv(root / "metadata.csv", header, rows)
    (root / "attribution.txt").write_text("x\n")
    (root / "licenses").mkdir(exist_ok=True)
    gt = root / "ISIC2018_Task1-2_GroundTruth"
    gt.mkdir(exist_ok=True)
    for i in (0, 1):
        Image.fromarray(np.full((18, 24), 255, np.uint8)).save(gt / f"ISIC_{i:07d}_segmentation.png")
        Image.fromarray(np.zeros((18, 24), np.uint8)).save(gt / f"ISIC_{i:07d}_attribute_globules.png")
    return root, expected


def write_isic_old(root: Path) -> tuple[Path, dict]:
    values = [("melanoma", 0), ("nevus", 1), ("seborrheic keratosis", 2), ("basal cell carcinoma", 2),
              ("unknown", None), ("banana", None), ("", None), ("dermatofibroma", 2)]
    header = ["isic_id", "attribution", "copyright_license", "age_approx", "benign_malignant",
              "diagnosis", "diagnosis_confirm_type", "lesion_id", "sex"]
    rows, expected = [], {}
    for i in range(24):
        dx, label = values[i % len(values)]
        iid = f"ISIC_{1000 + i:07d}"
        rows.append([iid, "A", "CC-0", "", "benign", dx, "", f"IL_{i // 2}" if i % 5 else "", ""])
        _img(root / f"{iid}.jpg", seed=i)
        if label is not None:
            expected[iid] = label
    _csv(root / "metadata.csv", header, rows)
    return root, expected


def write_ham(root: Path) -> tuple[Path, dict]:
    dxs = [("mel", 0), ("nv", 1), ("bkl", 2), ("bcc", 2), ("akiec", 2), ("df", 2), ("vasc", 2), ("xyz", None)]
    rows, expected = [], {}
    for i in range(32):
        dx, label = dxs[i % len(dxs)]
        iid = f"ISIC_{2000 + i:07d}"
        rows.append([f"HAM_{i // 2:07d}", iid, dx, "histo", 30 + i, "male" if i % 3 else "unknown", "back"])
        part = root / f"HAM10000_images_part_{1 + i % 2}"
        if i == 9:
            continue                                       # missing image
        if i == 10:
            _corrupt(part / f"{iid}.jpg")
        else:
            _img(part / f"{iid}.jpg", seed=i)
        if label is not None:
            expected[iid] = label
    _csv(root / "HAM10000_metadata.csv",
         ["lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization"], rows, crlf=False)
    return root, expected


PAD_HEADER = ["patient_id", "lesion_id", "smoke", "drink", "background_father", "background_mother",
              "age", "pesticide", "gender", "skin_cancer_history", "cancer_history",
              "has_piped_water", "has_sewage_system", "fitspatrick", "region", "diameter_1",
              "diameter_2", "diagnostic", "itch", "grew", "hurt", "changed", "bleed", "elevation",
              "img_id", "biopsed"]


PAD_FOLDERS = {  # where each release puts image part k
    "paper": "imgs_part_{k}",                     # the layout the paper's code expects
    "kaggle": "imgs_part_{k}/imgs_part_{k}",      # the Kaggle mirror
    "publisher": "images/imgs_part_{k}",          # images/imgs_part_k.zip unpacked in place
    "flat": "images",
}


def write_pad(root: Path, layout: str = "paper") -> tuple[Path, dict]:
    """Lesion numbers repeat across patients, as in the real file (PAT_100 and PAT_101 both have a
    lesion 500)."""
    dxs = [("MEL", 0), ("NEV", 1), ("ACK", 2), ("BCC", 2), ("SCC", 2), ("SEK", 2), ("ZZZ", None)]
    rows, expected = [], {}
    for i in range(28):
        dx, label = dxs[i % len(dxs)]
        pid, lid = 100 + i // 3, 500 + i % 3
        img = f"PAT_{pid}_{lid}_{i}.png"
        row = dict.fromkeys(PAD_HEADER, "")
        row.update(patient_id=f"PAT_{pid}", lesion_id=lid, age=50, gender="FEMALE",
                   fitspatrick="2.0" if i % 4 else "", diagnostic=dx, img_id=img, biopsed="True")
        rows.append([row[h] for h in PAD_HEADER])
        folder = root / PAD_FOLDERS[layout].format(k=1 + i % 3)
        if i == 8:
            continue
        if i == 11:
            _corrupt(folder / img)
        else:
            _img(folder / img, seed=i)
        if label is not None:
            expected[img[:-4]] = label
    _csv(root / "metadata.csv", PAD_HEADER, rows, crlf=False)
    return root, expected


def write_camelyon(root: Path) -> tuple[Path, dict]:
    base = root / "camelyon17_v1.0"
    (base / "RELEASE_v1.0.txt").parent.mkdir(parents=True, exist_ok=True)
    (base / "RELEASE_v1.0.txt").write_text("v1.0\n")
    rows, expected, k = [], {}, 0
    for center in range(5):
        for s in range(2):
            patient, node, slide = center * 10 + s, s, center * 2 + s
            folder = f"patient_{patient:03d}_node_{node}"
            for j in range(4):
                x, y = 96 * j, 96 * (j + s)
                tumor = (j + s) % 2
                name = f"patch_{folder}_x_{x}_y_{y}"
                rows.append([k, f"{patient:03d}", node, x, y, tumor, slide, center, int(j == 3)])
                k += 1
                path = base / "patches" / folder / f"{name}.png"
                if (center, s, j) == (3, 1, 2):
                    continue
                if (center, s, j) == (4, 0, 1):
                    _corrupt(path)
                else:
                    _img(path, size=(96, 96), mode="RGBA", seed=k)
                expected[name] = tumor
    _csv(base / "metadata.csv", ["", "patient", "node", "x_coord", "y_coord", "tumor", "slide",
                                 "center", "split"], rows, crlf=False)
    return root, expected


def write_medmnist(root: Path) -> tuple[Path, dict]:
    rng = np.random.default_rng(0)
    arrays, expected = {}, {}
    mapping = [2, 2, 2, 2, 0, 1, 2]
    for split, n in (("train", 21), ("val", 7), ("test", 7)):
        arrays[f"{split}_images"] = rng.integers(0, 255, (n, 28, 28, 3), dtype=np.uint8)
        labels = (np.arange(n) % 7).reshape(-1, 1).astype(np.uint8)
        arrays[f"{split}_labels"] = labels
        for i in range(n):
            expected[f"dermamnist_{split}_{i}"] = mapping[int(labels[i, 0])]
    path = root / "dermamnist_28.npz"
    root.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)
    return path, expected


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    t = tmp_path_factory.mktemp("layouts")
    return {
        "isic": write_isic_new(t / "isic"),
        "isic-old": write_isic_old(t / "isic_old"),
        "ham10000": write_ham(t / "ham"),
        "pad-ufes-20": write_pad(t / "pad"),
        "camelyon17": write_camelyon(t / "wilds"),
        "medmnist": write_medmnist(t / "mnist"),
    }


def spec_of(name: str, path: Path) -> str:
    return f"{'isic' if name == 'isic-old' else name}:{path}"


# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["isic", "isic-old", "ham10000", "pad-ufes-20", "camelyon17", "medmnist"])
def test_reader_yields_right_samples_and_labels(fixtures, name):
    path, expected = fixtures[name]
    table = load_dataset(spec_of(name, path))
    assert dict(zip(table["image_id"], table["label"])) == expected
    for col in ("image_id", "path", "label", "group", "subset"):
        assert col in table.columns
    assert table["image_id"].is_unique and table["group"].notna().all()
    assert table.attrs["source"] == name.replace("isic-old", "isic")
    # every reader gives the fine diagnosis, lower case, for every image
    assert table["diagnosis"].map(lambda d: isinstance(d, str) and d and d == d.lower()).all()
    assert table.attrs["classes"] == (["normal", "tumor"] if name == "camelyon17"
                                      else ["melanoma", "nevus", "other"])


def test_isic_new_generation_details(fixtures):
    path, _ = fixtures["isic"]
    assert b"\r\n" in (path / "metadata.csv").read_bytes()
    t = load_dataset(f"isic:{path}").set_index("image_id")
    assert t.attrs["skipped"] == {"missing image": 1, "no diagnosis": 1, "unknown diagnosis 'Weird'": 1}
    assert t.loc["ISIC_0000001", "path"].endswith(".png")
    # CRLF must not leak into the last column's values
    assert set(t["sex"].dropna()) == {"male", "female"}
    # group: patient where known, else lesion
    assert t.loc["ISIC_0000000", "group"] == "patient:IP_0000000"
    assert t.loc["ISIC_0000026", "group"] == "lesion:IL_0000013"
    assert t.loc["ISIC_0000000", "mask_path"].endswith("ISIC_0000000_segmentation.png")
    assert t.loc["ISIC_0000001", "attr_globules_path"].endswith("ISIC_0000001_attribute_globules.png")
    assert pd.isna(t.loc["ISIC_0000006", "mask_path"])
    assert t.loc["ISIC_0000000", "age"] == 40.0 and t.loc["ISIC_0000000", "skin_type"] == "II"
    assert t.loc["ISIC_0000000", "diagnosis"] == "melanoma invasive"
    assert t.loc["ISIC_0000006", "diagnosis"] == "seborrheic keratosis"


def test_isic_groups_link_images_sharing_a_patient_or_a_lesion(tmp_path):
    """A lesion whose patient id is given in only some rows must not be split (the old reader
    grouped such rows by patient and by lesion separately, so one lesion landed in two groups)."""
    header = ["isic_id", "attribution", "copyright_license", "diagnosis", "lesion_id", "patient_id"]
    rows = [["ISIC_0000001", "A", "CC-0", "nevus", "IL_1", "IP_1"],
            ["ISIC_0000002", "A", "CC-0", "nevus", "IL_1", ""],      # same lesion, patient unknown
            ["ISIC_0000003", "A", "CC-0", "melanoma", "", "IP_1"],   # same patient, lesion unknown
            ["ISIC_0000004", "A", "CC-0", "melanoma", "IL_2", ""],
            ["ISIC_0000005", "A", "CC-0", "melanoma", "IL_2", ""],
            ["ISIC_0000006", "A", "CC-0", "nevus", "", ""]]
    for r in rows:
        _img(tmp_path / f"{r[0]}.jpg")
    _csv(tmp_path / "metadata.csv", header, rows)
    t = load_dataset(f"isic:{tmp_path}").set_index("image_id")
    assert t["group"].to_dict() == {
        "ISIC_0000001": "patient:IP_1", "ISIC_0000002": "patient:IP_1",
        "ISIC_0000003": "patient:IP_1", "ISIC_0000004": "lesion:IL_2",
        "ISIC_0000005": "lesion:IL_2", "ISIC_0000006": "image:ISIC_0000006"}


def test_isic_new_generation_taxonomy_cases(tmp_path):
    header = ["isic_id", "attribution", "copyright_license", "diagnosis_1", "diagnosis_2",
              "diagnosis_3", "diagnosis_4", "diagnosis_5", "lesion_id", "patient_id"]
    cases = [  # (levels, expected label or skip reason, fine diagnosis)
        (("Indeterminate", "Indeterminate epidermal proliferations", "Solar or actinic keratosis"),
         2, "actinic keratosis"),
        (("Indeterminate", "Indeterminate melanocytic proliferations", "Atypical melanocytic neoplasm"),
         2, "atypical melanocytic proliferation"),
        (("Benign", "Benign melanocytic proliferations", "Nevus", "Blue nevus", "Blue nevus, Cellular"),
         1, "blue nevus, cellular"),
        (("Benign", "Benign melanocytic proliferations"), None, None),
        (("Benign", "Collision - Only benign proliferations"), None, None),
        (("Malignant",), None, None),
    ]
    rows = []
    for i, (levels, _, _) in enumerate(cases):
        iid = f"ISIC_{i:07d}"
        _img(tmp_path / f"{iid}.jpg", seed=i)
        rows.append([iid, "A", "CC-BY", *levels, *[""] * (5 - len(levels)), f"IL_{i}", f"IP_{i}"])
    _csv(tmp_path / "metadata.csv", header, rows)
    t = load_dataset(f"isic:{tmp_path}").set_index("image_id")
    for i, (_, label, diagnosis) in enumerate(cases):
        if label is None:
            assert f"ISIC_{i:07d}" not in t.index
        else:
            assert (t.loc[f"ISIC_{i:07d}", "label"], t.loc[f"ISIC_{i:07d}", "diagnosis"]) == \
                (label, diagnosis)
    assert sum(t.attrs["skipped"].values()) == 3
    assert any(k.startswith("diagnosis too coarse ('Benign melanocytic") for k in t.attrs["skipped"])


def test_isic_old_generation_skips_never_relabels(fixtures):
    path, _ = fixtures["isic-old"]
    t = load_dataset(f"isic:{path}")
    assert t.attrs["skipped"] == {"no diagnosis": 6, "unknown diagnosis 'banana'": 3}
    assert "banana" not in set(t["diagnosis"])
    assert t["group"].str.startswith("lesion:").sum() > 0 and t["group"].str.startswith("image:").sum() > 0


@pytest.mark.parametrize("layout", ["kaggle", "publisher", "flat"])
def test_pad_ufes_images_wherever_the_release_puts_them(tmp_path, layout, capsys):
    root, expected = write_pad(tmp_path / "pad", layout)
    t = load_dataset(f"pad-ufes-20:{root}")
    assert dict(zip(t["image_id"], t["label"])) == expected
    assert t.attrs["skipped"] == {"missing image": 1, "unknown diagnosis 'ZZZ'": 4}
    assert main(["data", "inspect", f"pad-ufes-20:{root}"]) == 0
    out = capsys.readouterr().out
    # inspect decodes every image: the corrupt one (row 11) is left out of the counts
    counts = pd.Series([v for k, v in expected.items() if not k.endswith("_11")]).value_counts()
    assert f"classes    melanoma: {counts[0]}, nevus: {counts[1]}, other: {counts[2]}" in out


def test_pad_ufes_lesion_ids_are_unique_per_patient(fixtures):
    root, _ = fixtures["pad-ufes-20"]
    meta = pd.read_csv(root / "metadata.csv", dtype=str)
    shared = meta.groupby("lesion_id")["patient_id"].nunique()
    assert (shared > 1).any()  # the fixture reuses lesion numbers across patients, as PAD does
    t = load_dataset(f"pad-ufes-20:{root}")
    assert t.groupby("lesion_id")["patient_id"].nunique().max() == 1
    row = t.set_index("image_id").loc["PAT_101_500_3"]
    assert row["lesion_id"] == "PAT_101_500" and row["group"] == "patient:PAT_101"
    assert t.set_index("image_id").loc["PAT_100_500_0", "lesion_id"] == "PAT_100_500"
    assert row["diagnosis"] == "basal cell carcinoma" and row["label"] == 2


def test_image_index_is_one_walk_not_a_search_per_row(fixtures, monkeypatch):
    import os

    import medattn.data.table as table_module

    calls = []
    real = os.walk

    def counting_walk(*args, **kwargs):
        calls.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(table_module.os, "walk", counting_walk)
    root, expected = fixtures["pad-ufes-20"]
    assert len(load_dataset(f"pad-ufes-20:{root}")) == len(expected)
    assert len(calls) == 1


def test_corrupt_image_is_a_clear_error_at_read_and_a_counted_skip_when_verified(fixtures):
    path, expected = fixtures["isic"]
    t = load_dataset(f"isic:{path}")
    bad = t.loc[t["image_id"] == "ISIC_0000002", "path"].iloc[0]
    with pytest.raises(DataError, match="ISIC_0000002.jpg: corrupt"):
        read_image(bad)
    v = load_dataset(f"isic:{path}", verify=True)
    assert "ISIC_0000002" not in set(v["image_id"]) and len(v) == len(expected) - 1
    assert v.attrs["skipped"]["corrupt image"] == 1 and v.attrs["corrupt"] == [bad]


@pytest.mark.parametrize("name,nbad", [("ham10000", 1), ("pad-ufes-20", 1), ("camelyon17", 1)])
def test_verify_counts_corrupt_images_in_every_folder_reader(fixtures, name, nbad):
    path, expected = fixtures[name]
    t = load_dataset(spec_of(name, path), verify=True)
    assert t.attrs["skipped"]["corrupt image"] == nbad
    assert t.attrs["skipped"]["missing image"] == 1
    assert len(t) == len(expected) - nbad


def test_missing_required_column_names_file_and_column(tmp_path):
    root, _ = write_isic_new(tmp_path / "isic", n=8)
    df = pd.read_csv(root / "metadata.csv", dtype=str)
    df.drop(columns=["isic_id"]).to_csv(root / "metadata.csv", index=False)
    with pytest.raises(DataError, match=r"metadata\.csv: required column\(s\) 'isic_id' missing"):
        load_dataset(f"isic:{root}")
    df.drop(columns=["diagnosis_1", "diagnosis_2", "diagnosis_3"]).to_csv(root / "metadata.csv", index=False)
    with pytest.raises(DataError, match="'diagnosis'.*'diagnosis_1'"):
        load_dataset(f"isic:{root}")
    ham, _ = write_ham(tmp_path / "ham")
    meta = ham / "HAM10000_metadata.csv"
    pd.read_csv(meta).drop(columns=["dx"]).to_csv(meta, index=False)
    with pytest.raises(DataError, match=r"HAM10000_metadata\.csv: required column\(s\) 'dx'"):
        load_dataset(f"ham10000:{ham}")


def test_camelyon_official_split_rgba_and_task(fixtures):
    root, _ = fixtures["camelyon17"]
    t = load_dataset(f"camelyon17:{root}")
    by_center = t.groupby("center")["subset"].agg(set).to_dict()
    assert by_center[1] == {"val"} and by_center[2] == {"test"}
    assert by_center[0] == by_center[3] == {"train", "id_val"}
    assert t["image_id"].str.contains("patient_040_node_0").any()      # zero-padded patient
    assert read_image(t["path"].iloc[0]).mode == "RGB"                  # RGBA patch -> RGB
    task = load_task(f"camelyon17:{root}")
    assert set(task.ood) == {"center1", "center2"}
    assert set(task.table["center"]) == {0, 3, 4}
    assert set(task.ood["center1"]["center"]) == {1} and set(task.ood["center2"]["center"]) == {2}


def test_medmnist_flags_and_errors(tmp_path, fixtures):
    path, _ = fixtures["medmnist"]
    t = load_dataset(f"medmnist:{path}")
    assert t["subset"].value_counts().to_dict() == {"train": 21, "val": 7, "test": 7}
    im = read_image(t["path"].iloc[3])
    assert im.size == (28, 28) and im.mode == "RGB"
    rng = np.random.default_rng(1)
    grey = {f"{s}_{k}": v for s in ("train", "val", "test") for k, v in (
        ("images", rng.integers(0, 255, (6, 28, 28), dtype=np.uint8)),
        ("labels", (np.arange(6) % 2).reshape(-1, 1)))}
    np.savez(tmp_path / "pneumoniamnist.npz", **grey)
    g = load_dataset(f"medmnist:{tmp_path / 'pneumoniamnist.npz'}")
    assert g.attrs["classes"] == ["normal", "pneumonia"] and read_image(g["path"].iloc[0]).mode == "RGB"
    np.savez(tmp_path / "chestmnist.npz", **grey)
    with pytest.raises(DataError, match="multi-label"):
        load_dataset(f"medmnist:{tmp_path / 'chestmnist.npz'}")
    del grey["val_labels"]
    np.savez(tmp_path / "bloodmnist.npz", **grey)
    with pytest.raises(DataError, match="'val_images' or 'val_labels' missing"):
        load_dataset(f"medmnist:{tmp_path / 'bloodmnist.npz'}")


def test_task_with_ood_and_class_mismatch(fixtures):
    isic, _ = fixtures["isic"]
    pad, _ = fixtures["pad-ufes-20"]
    cam, _ = fixtures["camelyon17"]
    task = load_task(f"isic:{isic}", ood=[f"pad-ufes-20:{pad}", f"pad-ufes-20:{pad}"])
    assert task.name == "isic" and list(task.ood) == ["pad-ufes-20", "pad-ufes-20-2"]
    assert task.classes == ["melanoma", "nevus", "other"]
    with pytest.raises(DataError, match="same classes"):
        load_task(f"isic:{isic}", ood=[f"camelyon17:{cam}"])
    with pytest.raises(DataError, match="unknown source 'foo'"):
        load_dataset("foo:/x")
    with pytest.raises(DataError, match="SOURCE:PATH"):
        load_dataset("isic")


@pytest.mark.parametrize("name", ["isic", "isic-old", "ham10000", "pad-ufes-20", "camelyon17", "medmnist"])
def test_splits_of_every_reader_are_grouped_and_reproducible(fixtures, name):
    path, _ = fixtures[name]
    assert_grouped_splits(load_dataset(spec_of(name, path)))


def assert_grouped_splits(table: pd.DataFrame, seeds: int = 25) -> None:
    """Over ``seeds`` splits: no group on two sides, every row once, the same split again."""
    for seed in range(seeds):
        split = make_split(table, seed)
        assert split_groups_disjoint(table, split)
        allrows = np.sort(np.concatenate(list(split.values())))
        assert np.array_equal(allrows, np.arange(len(table)))
        again = make_split(table, seed)
        assert all(np.array_equal(split[k], again[k]) for k in split)


def test_inspect_cli_reports_counts_and_problems(fixtures, capsys):
    path, expected = fixtures["isic"]
    assert main(["data", "inspect", f"isic:{path}"]) == 0
    out = capsys.readouterr().out
    assert f"{len(expected) - 1} usable" in out
    assert "corrupt image" in out and "ISIC_0000002.jpg" in out
    assert "missing image: 1" in out and "unknown diagnosis 'Weird': 1" in out
    assert "melanoma: " in out and "groups" in out
    assert main(["data", "inspect", f"isic:{path / 'nope'}"]) == 2
    err = capsys.readouterr().err
    assert "metadata.csv: metadata file not found" in err and "Traceback" not in err


@pytest.mark.parametrize("name", ["isic", "isic-old", "ham10000", "pad-ufes-20", "camelyon17", "medmnist"])
def test_inspect_class_counts_equal_the_metadata(fixtures, name, capsys):
    path, expected = fixtures[name]
    assert main(["data", "inspect", spec_of(name, path), "--no-verify"]) == 0
    out = capsys.readouterr().out
    table = load_dataset(spec_of(name, path))
    counts = pd.Series(list(expected.values())).value_counts()
    line = ", ".join(f"{c}: {counts.get(k, 0)}" for k, c in enumerate(table.attrs["classes"]))
    assert f"classes    {line}\n" in out


def test_ham10000_kaggle_mirror_with_duplicated_folders(tmp_path):
    """The Kaggle mirror holds every image twice (HAM10000_images_part_N/ and ham10000_images_part_N/)."""
    root, expected = write_ham(tmp_path / "ham")
    for k in (1, 2):
        shutil.copytree(root / f"HAM10000_images_part_{k}", root / f"ham10000_images_part_{k}")
    t = load_dataset(f"ham10000:{root}")
    assert dict(zip(t["image_id"], t["label"])) == expected
    assert t["path"].str.contains("/HAM10000_images_part_").all()
    assert set(t["diagnosis"]) == {"melanoma", "nevus", "benign keratosis", "basal cell carcinoma",
                                   "actinic keratosis or intraepithelial carcinoma",
                                   "dermatofibroma", "vascular lesion"}


def test_synthetic_derm_sets_read_with_their_fine_diagnoses(tmp_path):
    from medattn.data.synthetic import write_derm

    isic, pad = write_derm(tmp_path, n=16, n_ood=8, image_size=24, workers=1)
    for spec in (isic, pad):
        t = load_dataset(spec)
        assert t.attrs["skipped"] == {} and len(t)
        by_class = t.groupby("label")["diagnosis"].agg(set).to_dict()
        assert by_class.get(0, set()) <= {"melanoma invasive", "melanoma in situ", "melanoma"}
        assert by_class.get(1, set()) <= {"nevus"}
        assert not by_class.get(2, set()) & {"nevus", "melanoma"}


def test_cli_bad_spec_is_a_clear_error(capsys):
    assert main(["data", "inspect", "foo:/x"]) == 2
    err = capsys.readouterr().err
    assert "unknown source 'foo'" in err and "isic, isic2019, isic2020, ham10000" in err
    assert "Traceback" not in err


def test_medmnist_images_through_the_cache(tmp_path, fixtures):
    from medattn.data import ImageCache

    path, _ = fixtures["medmnist"]
    t = load_dataset(f"medmnist:{path}")
    c = ImageCache(tmp_path / "c", 56)
    im = c.get(t["path"].iloc[5])
    assert im.size == (56, 56)
    direct = read_image(t["path"].iloc[5]).resize((56, 56), Image.Resampling.BILINEAR)
    assert np.abs(np.asarray(im, float) - np.asarray(direct, float)).mean() < 3
    assert c.entry(t["path"].iloc[5]) != c.entry(t["path"].iloc[6])
