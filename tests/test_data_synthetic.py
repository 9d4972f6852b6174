"""The synthetic data sets: deterministic, written in the real layouts (read back by the real readers),
with ground truth that matches the pixels and masks, bias strengths that do what they say, and a task
that a small CNN learns quickly while the OOD set is measurably harder."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image
from sklearn.metrics import balanced_accuracy_score

from medattn.cli import main
from medattn.data import ImageDataset, build_transform, load_dataset, load_task, make_split, synthetic
from medattn.data.synthetic.derm import DermConfig, patch_probability, read_truth, sample_metadata
from medattn.errors import ConfigError


def _digest(folder) -> str:
    h = hashlib.sha1()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def derm(tmp_path_factory):
    out = tmp_path_factory.mktemp("derm")
    specs = synthetic.write_derm(out, n=120, n_ood=40, image_size=48, seed=3, workers=1)
    return out, specs


@pytest.mark.slow
def test_derm_is_deterministic_and_independent_of_workers(derm, tmp_path):
    out, _ = derm
    synthetic.write_derm(tmp_path, n=120, n_ood=40, image_size=48, seed=3, workers=2)
    assert _digest(out / "isic") == _digest(tmp_path / "isic")
    assert _digest(out / "pad-ufes-20") == _digest(tmp_path / "pad-ufes-20")
    other = tmp_path / "other"
    synthetic.write_derm(other, n=120, n_ood=40, image_size=48, seed=4, workers=1)
    assert _digest(out / "isic") != _digest(other / "isic")


def test_derm_layout_goes_through_the_real_readers(derm):
    out, (isic, pad) = derm
    raw = (out / "isic" / "metadata.csv").read_bytes()
    assert raw.count(b"\r\n") == 121 and raw.startswith(b"isic_id,attribution,copyright_license,")
    header = raw.split(b"\r\n")[0].decode().split(",")
    assert header[3:] == sorted(header[3:])                     # isic-cli: sorted union of keys
    assert any(p.suffix == ".png" for p in (out / "isic").glob("ISIC_???????.*"))
    assert (out / "isic" / "attribution.txt").is_file() and (out / "isic" / "licenses").is_dir()
    task = load_task(isic, ood=[pad])
    t = task.table
    assert len(t) == 120 and len(task.ood["pad-ufes-20"]) == 40 and t.attrs["skipped"] == {}
    assert t["mask_path"].notna().all() and t["patch_mask_path"].notna().all()
    for col in ("true_asymmetry", "true_border", "true_n_colors", "true_structures", "true_patch",
                "true_skin_ita", "true_age", "true_sex"):
        assert col in t.columns and col in task.ood["pad-ufes-20"].columns
    assert set(t["label"]) == {0, 1, 2}
    split = make_split(t, 0)
    assert sum(len(v) for v in split.values()) == 120


def test_ground_truth_matches_masks_and_pixels(derm):
    _, (isic, _) = derm
    t = load_dataset(isic)
    for _, row in t.head(40).iterrows():
        patch = np.asarray(Image.open(row["patch_mask_path"])) > 0
        assert patch.any() == bool(row["true_patch"])
        seg = np.asarray(Image.open(row["mask_path"]))
        assert seg.shape == (48, 48) and set(np.unique(seg)) <= {0, 255} and (seg > 0).mean() > 0.05
        n_struct = 0
        for s in ("pigment_network", "negative_network", "streaks", "milia_like_cyst", "globules"):
            present = (np.asarray(Image.open(row[f"attr_{s}_path"])) > 0).any()
            assert present <= bool(row[f"true_{s}"])            # no mask for an absent structure
            n_struct += int(row[f"true_{s}"])
        assert n_struct == row["true_structures"]
        if row["true_patch"]:                                     # a patch is vivid, skin is not
            img = np.asarray(Image.open(row["path"]).convert("HSV"))
            assert img[patch][:, 1].mean() > img[seg == 0][:, 1].mean() + 40
    # age_approx is the true age rounded to 5 years; skin_type follows the true ITA
    assert (abs(t["age"] - t["true_age"]) <= 2.5 + 1e-9).all()
    assert t.groupby("skin_type")["true_skin_ita"].mean().sort_values().index[0] in ("IV", "V", "VI")


def test_bias_strengths():
    cfg0, cfg1 = DermConfig(patch_bias=0.0), DermConfig(patch_bias=1.0)
    assert patch_probability(0, cfg0) == patch_probability(1, cfg0) == patch_probability(2, cfg0)
    assert patch_probability(1, cfg1) >= 0.8 and patch_probability(0, cfg1) == patch_probability(2, cfg1) == 0


@pytest.mark.slow
def test_bias_features_in_metadata(tmp_path):
    # metadata only is needed: large n, tiny images
    isic, _ = synthetic.write_derm(tmp_path, n=800, n_ood=1, image_size=16, seed=0, patch_bias=0.8,
                                   workers=2)
    t = load_dataset(isic)
    by = t.groupby("label")
    patch = by["true_patch"].mean()
    assert patch[1] > 0.5 and patch[0] < 0.15 and patch[2] < 0.15     # patches mostly on nevi
    assert by["true_age"].mean()[1] < by["true_age"].mean()[0] - 10    # nevi younger
    assert by["true_skin_ita"].mean()[0] > by["true_skin_ita"].mean()[2] + 8
    sex = by["true_sex"].mean()
    assert sex.max() - sex.min() < 0.12                                # sex independent of class
    # ABCD features overlap between classes but differ on average
    asym = by["true_asymmetry"].mean()
    assert asym[0] > asym[2] > asym[1]
    assert by["true_asymmetry"].quantile(0.9)[1] > by["true_asymmetry"].quantile(0.1)[0]
    assert by["true_n_colors"].mean()[0] > by["true_n_colors"].mean()[1]


@pytest.mark.slow
def test_fine_diagnoses_differ_in_age_and_skin_colour_within_their_class(tmp_path):
    # metadata only is needed: large n, tiny images
    isic, pad = synthetic.write_derm(tmp_path, n=1500, n_ood=300, image_size=16, seed=2, workers=2)
    t = load_dataset(isic)
    # the reader's fine diagnosis is the generator's true one (newer ISIC taxonomy)
    assert (t["diagnosis"] == t["true_diagnosis"]).all()
    assert t.groupby("label")["true_diagnosis"].nunique().to_dict() == {0: 2, 1: 1, 2: 4}
    by = t.groupby("true_diagnosis")
    age, ita = by["true_age"].mean(), by["true_skin_ita"].mean()
    # inside "other": keratoses and carcinomas of the old, dermatofibromas and hemangiomas of the
    # young; basal cell carcinomas on light skin, dermatofibromas on darker skin
    assert min(age["seborrheic keratosis"], age["basal cell carcinoma"]) > max(
        age["dermatofibroma"], age["hemangioma"]) + 15
    assert ita["basal cell carcinoma"] > ita["dermatofibroma"] + 15
    assert age["melanoma invasive"] > age["melanoma in situ"] + 4
    # and they look different: a dermatofibroma is as regular as a nevus, a keratosis is not
    asym = by["true_asymmetry"].mean()
    assert asym["dermatofibroma"] < asym["seborrheic keratosis"] - 0.2
    # a patient's lesions share one diagnosis (so age reaches an image only through it)
    assert (t.groupby("patient_id")["true_diagnosis"].nunique() == 1).all()
    o = load_dataset(pad)  # PAD-UFES-20 codes: MEL, NEV, ACK, BCC, SCC, SEK
    assert set(zip(o["diagnosis"], o["true_diagnosis"])) == {
        ("melanoma", "melanoma invasive"), ("nevus", "nevus"),
        ("actinic keratosis", "actinic keratosis"), ("basal cell carcinoma", "basal cell carcinoma"),
        ("seborrheic keratosis", "seborrheic keratosis"),
        ("squamous cell carcinoma", "squamous cell carcinoma")}
    # sample_metadata draws exactly what write_isic wrote, without rendering
    meta = sample_metadata(1500, seed=2).set_index("image_id")
    written = t.set_index("image_id")
    for col in ("true_age", "true_diagnosis", "true_patch", "true_skin_ita", "true_asymmetry"):
        assert (meta.loc[written.index, col] == written[col]).all(), col
    truth = read_truth(tmp_path / "isic")
    assert truth["patch_bias"] == 0.6 and truth["patch_planted"] is True
    assert set(truth["not_visible"]) == {"Age", "Sex"} and "Skin color" in truth["visible"]


def test_age_and_sex_are_never_drawn_into_an_image_but_skin_colour_is(tmp_path):
    # The same seed with another dependence of age on the diagnosis (or none): the draws stay
    # aligned, every pixel is the same, only the ages differ. Skin colour changes pixels.
    kw = dict(n=12, n_ood=4, image_size=24, seed=3, workers=1)
    synthetic.write_derm(tmp_path / "a", age_bias=0.8, **kw)
    synthetic.write_derm(tmp_path / "b", age_bias=0.0, **kw)
    synthetic.write_derm(tmp_path / "c", skin_bias=0.0, **kw)
    images = sorted(p.name for p in (tmp_path / "a" / "isic").glob("ISIC_???????.*"))
    for name in images:
        assert (tmp_path / "a" / "isic" / name).read_bytes() == (tmp_path / "b" / "isic" /
                                                               name).read_bytes()
    ta, tb = (load_dataset(f"isic:{tmp_path / d / 'isic'}") for d in "ab")
    assert (ta["true_age"] != tb["true_age"]).any()
    assert (ta["true_sex"] == tb["true_sex"]).all()
    assert any((tmp_path / "a" / "isic" / n).read_bytes() != (tmp_path / "c" / "isic" /
                                                              n).read_bytes() for n in images)


def test_bad_options_and_existing_output(tmp_path):
    with pytest.raises(ConfigError, match="patch_bias"):
        synthetic.write_derm(tmp_path, n=5, patch_bias=1.5)
    synthetic.write_derm(tmp_path, n=3, n_ood=2, image_size=16, workers=1)
    with pytest.raises(ConfigError, match="exists"):
        synthetic.write_derm(tmp_path, n=3, n_ood=2, image_size=16, workers=1)
    assert len(load_dataset(f"isic:{tmp_path / 'isic'}")) == 3    # nothing already written is lost


def test_camelyon_synthetic_layout_split_and_stain_shift(tmp_path):
    spec = synthetic.write_path(tmp_path, n=300, seed=1, image_size=32, workers=1)
    t = load_dataset(spec)
    assert len(t) == 300 and spec == f"camelyon17:{tmp_path / 'camelyon17_v1.0'}"
    assert (tmp_path / "camelyon17_v1.0" / "RELEASE_v1.0.txt").is_file()
    assert set(t["center"]) == {0, 1, 2, 3, 4}
    assert t.groupby("center")["subset"].agg(set).to_dict()[1] == {"val"}
    assert Image.open(t["path"].iloc[1]).mode in ("RGB", "RGBA")
    task = load_task(spec)
    assert set(task.ood) == {"center1", "center2"} and set(task.table["center"]) == {0, 3, 4}
    # hospitals differ in stain colour: mean colour of center 2 vs center 1 clearly apart
    def mean_rgb(c):
        paths = t.loc[t["center"] == c, "path"].head(30)
        return np.mean([np.asarray(Image.open(p).convert("RGB"), float).mean((0, 1)) for p in paths], 0)
    assert np.abs(mean_rgb(1) - mean_rgb(2)).max() > 10
    assert t.groupby("label")["true_tumour_ness"].mean().diff().iloc[-1] > 0.3


def test_synth_cli_writes_and_prints_specs(tmp_path, capsys):
    assert main(["synth", "derm", "--out", str(tmp_path / "d"), "--n", "6", "--n-ood", "3",
                 "--size", "24", "--workers", "1"]) == 0
    out = capsys.readouterr().out.split()
    assert out == [f"isic:{tmp_path / 'd' / 'isic'}", f"pad-ufes-20:{tmp_path / 'd' / 'pad-ufes-20'}"]
    assert main(["synth", "path", "--out", str(tmp_path / "p"), "--n", "20", "--size", "24",
                 "--workers", "1"]) == 0
    assert capsys.readouterr().out.strip() == f"camelyon17:{tmp_path / 'p' / 'camelyon17_v1.0'}"
    assert main(["synth", "derm", "--out", str(tmp_path / "d"), "--n", "6"]) == 2
    assert "exists" in capsys.readouterr().err


def _tensors(table, tf):
    ds = ImageDataset(table, tf)
    return torch.stack([ds[i][0] for i in range(len(ds))]), torch.tensor(table["label"].to_numpy())


@pytest.mark.slow
def test_synthetic_derm_is_learnable_and_ood_is_harder(tmp_path):
    torch.manual_seed(0)
    torch.set_num_threads(1)
    isic, pad = synthetic.write_derm(tmp_path, n=600, n_ood=200, image_size=32, seed=1, workers=2)
    task = load_task(isic, ood=[pad])
    split = make_split(task.table, 0, (0.75, 0.0, 0.25))
    tf = build_transform(False, 32)
    xtr, ytr = _tensors(task.table.iloc[split["train"]], tf)
    xte, yte = _tensors(task.table.iloc[split["test"]], tf)
    xood, yood = _tensors(task.ood["pad-ufes-20"], tf)
    net = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 3))
    epochs = 8
    opt = torch.optim.Adam(net.parameters(), 3e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 3e-3, total_steps=epochs * ((len(xtr) + 31) // 32))
    for _ in range(epochs):
        net.train()
        perm = torch.randperm(len(xtr))
        for b in range(0, len(perm), 32):
            i = perm[b:b + 32]
            x = xtr[i].flip(3) if torch.rand(1) < 0.5 else xtr[i]
            loss = nn.functional.cross_entropy(net(x), ytr[i])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    net.eval()
    with torch.no_grad():
        bacc = balanced_accuracy_score(yte, net(xte).argmax(1))
        bacc_ood = balanced_accuracy_score(yood, net(xood).argmax(1))
    assert bacc > 0.5, f"in-distribution balanced accuracy {bacc:.3f} (chance 0.333)"
    assert bacc_ood < bacc - 0.08, f"OOD {bacc_ood:.3f} not harder than test {bacc:.3f}"
