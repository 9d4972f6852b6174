"""ImageCache (decoded, resized once, keyed by source content and size, atomic, shared), the
transforms and ImageDataset."""

from __future__ import annotations

import os
import time

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import medattn.data.cache as cache_mod
import torchvision.transforms.v2.functional as TF

from medattn.data import ImageCache, ImageDataset, build_transform, read_image
from medattn.data.transforms import RandomColorJitter
from medattn.errors import DataError


def _jpeg(path, w=200, h=150, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)
    Image.fromarray(base).resize((w, h), Image.Resampling.BICUBIC).save(path, quality=95)
    return str(path)


def test_cache_resizes_once_and_is_shared(tmp_path, monkeypatch):
    src = _jpeg(tmp_path / "a.jpg")
    c = ImageCache(tmp_path / "cache", short_side=48)
    im = c.get(src)
    assert im.size == (64, 48) and im.mode == "RGB"
    calls = []
    monkeypatch.setattr(cache_mod, "_decode_small", lambda *a: calls.append(a) or Image.new("RGB", (1, 1)))
    again = ImageCache(tmp_path / "cache", short_side=48).get(src)   # another run, same cache dir
    assert calls == [] and np.array_equal(np.asarray(again), np.asarray(im))
    ImageCache(tmp_path / "cache", short_side=32).get(src)          # other size: a new entry
    assert len(calls) == 1
    assert not list((tmp_path / "cache").rglob(".tmp-*"))            # no temporary files left


def test_cache_entry_close_to_direct_resize(tmp_path):
    src = _jpeg(tmp_path / "a.jpg", 400, 300)
    cached = np.asarray(ImageCache(tmp_path / "c", 60).get(src), float)
    direct = np.asarray(read_image(src).resize((80, 60), Image.Resampling.BILINEAR, reducing_gap=3.0), float)
    assert cached.shape == direct.shape == (60, 80, 3)
    assert np.abs(cached - direct).mean() < 4                        # JPEG draft decoding is close


def test_cache_rebuilt_when_source_changes(tmp_path):
    src = tmp_path / "a.jpg"
    _jpeg(src, seed=0)
    c = ImageCache(tmp_path / "c", 32)
    first = np.asarray(c.get(str(src)))
    time.sleep(0.01)
    _jpeg(src, seed=1)
    os.utime(src, ns=(time.time_ns(), time.time_ns() + 10**9))
    second = np.asarray(c.get(str(src)))
    assert not np.array_equal(first, second)
    assert np.array_equal(second, np.asarray(ImageCache(tmp_path / "fresh", 32).get(str(src))))


def test_damaged_entry_is_rebuilt_and_prepare_resumes(tmp_path):
    srcs = [_jpeg(tmp_path / f"{i}.jpg", seed=i) for i in range(5)]
    c = ImageCache(tmp_path / "c", 24)
    assert c.prepare(srcs[:2], progress=False) == 2
    assert c.prepare(srcs, progress=False) == 3                      # resumes: only the missing ones
    assert c.prepare(srcs, progress=False) == 0
    entry = c.entry(srcs[0])
    entry.write_bytes(entry.read_bytes()[:20])                       # a torn write from elsewhere
    assert c.get(srcs[0]).size == (32, 24)


def test_cache_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"garbage")
    with pytest.raises(DataError, match="bad.jpg: corrupt"):
        ImageCache(tmp_path / "c", 24).get(str(bad))
    with pytest.raises(DataError, match="gone.jpg: image file not found"):
        ImageCache(tmp_path / "c", 24).get(str(tmp_path / "gone.jpg"))


def test_transforms_shapes_randomness_and_normalisation():
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (90, 120, 3), dtype=np.uint8))
    train, ev = build_transform(True, 40), build_transform(False, 40)
    a, b = train(img), train(img)
    assert a.shape == (3, 40, 40) and a.dtype == torch.float32 and not torch.equal(a, b)
    assert torch.equal(ev(img), ev(img)) and ev(img).shape == (3, 40, 40)
    grey = Image.new("RGB", (50, 60), (128, 128, 128))
    out = build_transform(False, 32, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))(grey)
    assert torch.allclose(out, torch.full_like(out, (128 / 255 - 0.5) / 0.25), atol=1e-5)


def test_image_dataset_items_with_and_without_cache(tmp_path):
    paths = [_jpeg(tmp_path / f"{i}.jpg", 160, 120, seed=i) for i in range(4)]
    t = pd.DataFrame({"image_id": list("abcd"), "path": paths, "label": [2, 0, 1, 0],
                      "group": list("abcd"), "subset": pd.NA})
    tf = build_transform(False, 32)
    plain = ImageDataset(t.iloc[[3, 1]], tf)
    cached = ImageDataset(t.iloc[[3, 1]], tf, cache=ImageCache(tmp_path / "c", 32))
    assert len(plain) == 2
    x, y, row = plain[1]
    xc, yc, rowc = cached[1]
    assert (y, row) == (yc, rowc) == (0, 1) and x.shape == xc.shape == (3, 32, 32)
    assert (x - xc).abs().mean() < 0.2                               # ~10 grey levels: resize paths differ
    loader = torch.utils.data.DataLoader(cached, batch_size=2)
    xb, yb, rb = next(iter(loader))
    assert xb.shape == (2, 3, 32, 32) and yb.tolist() == [0, 0] and rb.tolist() == [0, 1]


def _draws(seed):
    torch.manual_seed(seed)
    return torch.rand(4, dtype=torch.float64) * 2 - 1     # the draws RandomColorJitter makes


def test_color_jitter_matches_torchvision_and_keeps_grey():
    x = 0.35 + 0.3 * torch.rand(3, 20, 30)   # mid-range: no step clips, so clamping order is moot
    for seed in range(3):
        u = _draws(seed)
        torch.manual_seed(seed)
        ours = RandomColorJitter(0.3, 0.3, 0.3, 0.0)(x)
        ref = TF.adjust_saturation(TF.adjust_contrast(TF.adjust_brightness(
            x, float(1 + 0.3 * u[0])).clamp(0, 1), float(1 + 0.3 * u[1])), float(1 + 0.3 * u[2]))
        assert (ours - ref).abs().max() < 1e-4
    grey = torch.full((3, 8, 8), 0.4)
    for seed in range(5):
        torch.manual_seed(seed)
        out = RandomColorJitter(0.0, 0.0, 0.0, 0.5)(grey)
        assert torch.allclose(out, grey, atol=1e-5)                    # hue keeps greys grey
    colour = torch.tensor([0.8, 0.2, 0.1]).view(3, 1, 1).expand(3, 4, 4).clone()
    torch.manual_seed(0)
    shifted = RandomColorJitter(0.0, 0.0, 0.0, 0.5)(colour)
    luma = torch.tensor([0.299, 0.587, 0.114])
    assert abs(float(luma @ shifted[:, 0, 0]) - float(luma @ colour[:, 0, 0])) < 0.05
    assert not torch.allclose(shifted, colour, atol=0.05)                # but colours move


def test_color_jitter_fused_scaling_and_normalisation_equal_separate_steps():
    x8 = torch.randint(0, 256, (3, 12, 17), dtype=torch.uint8)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    torch.manual_seed(3)
    fused = RandomColorJitter(0.3, 0.3, 0.3, 0.1, mean=mean, std=std)(x8)
    torch.manual_seed(3)
    plain = RandomColorJitter(0.3, 0.3, 0.3, 0.1)(x8.float() / 255)
    assert torch.allclose(fused, TF.normalize(plain, list(mean), list(std)), atol=1e-5)


def test_entry_reader_fast_path_equals_np_load(tmp_path):
    """Entries are read by a fixed-header fast path; any other or damaged .npy goes to np.load."""
    for shape in [(37, 50, 3), (1, 1000, 3)]:
        arr = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
        np.save(tmp_path / "a.npy", arr)
        assert cache_mod._NPY_HEADER.match((tmp_path / "a.npy").read_bytes()) is not None
        got = cache_mod._load_entry(tmp_path / "a.npy")
        assert np.array_equal(got, arr) and got.flags.writeable
    for other in (np.zeros((4, 4, 3), np.float32), np.zeros((4, 4), np.uint8)):
        np.save(tmp_path / "b.npy", other)
        got = cache_mod._load_entry(tmp_path / "b.npy")
        assert got.dtype == other.dtype and got.shape == other.shape
    (tmp_path / "c.npy").write_bytes((tmp_path / "a.npy").read_bytes()[:-5])
    with pytest.raises(ValueError):
        cache_mod._load_entry(tmp_path / "c.npy")
