"""RandomResizedAffine (crop + affine + flips as one warp): the same draws as torchvision's chain,
the same geometry, exact in the cases that have an exact answer, antialiased for big crops; and the
input paths (PIL, array, tensor, ImageDataset's cached arrays) agreeing."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image
from torchvision.transforms import v2

from medattn.data import ImageCache, ImageDataset, build_transform
from medattn.data.transforms import RandomColorJitter, RandomResizedAffine


def _smooth(h, w, seed=0):
    """A smooth colour image (interpolation methods agree on it up to a grey level or two)."""
    yy, xx = np.mgrid[0:h, 0:w]
    ph = np.random.default_rng(seed).uniform(0, 6, 3)
    arr = np.stack([128 + 90 * np.sin(xx / 9 + ph[0]), 128 + 90 * np.cos(yy / 7 + ph[1]),
                    128 + 60 * np.sin((xx + yy) / 11 + ph[2])], -1)
    return Image.fromarray(arr.astype(np.uint8))


def _plain(img):
    return TF.to_dtype(TF.pil_to_tensor(img), torch.float32, scale=True)


def test_draws_equal_torchvision_chain():
    """Same seed -> the same crop box, angle, shear and flips as RandomResizedCrop + RandomAffine +
    two flips, and the generator left in the same state (so later draws, e.g. the jitter, agree)."""
    for size, scale in (((48, 64), (0.4, 1.0)), ((64, 48), (0.4, 1.0)), ((40, 40), (1.0, 1.0)),
                        ((12, 90), (0.6, 1.0))):          # the last one often needs the fallback
        img = Image.new("RGB", size[::-1])
        ours = RandomResizedAffine(32, scale=scale, degrees=90, shear=20)
        rrc = v2.RandomResizedCrop(32, scale=scale, ratio=(3 / 4, 4 / 3))
        aff = v2.RandomAffine(90, shear=20)
        for seed in range(25):
            torch.manual_seed(seed)
            p = ours.make_params([img])
            after = torch.rand(1)
            torch.manual_seed(seed)
            ref = rrc.make_params([img])
            a = aff.make_params([img])
            ref.update(angle=a["angle"], shear=a["shear"][0], hflip=bool(torch.rand(1) < 0.5),
                       vflip=bool(torch.rand(1) < 0.5))
            assert p == ref and torch.equal(after, torch.rand(1))


def test_identity_and_flips_are_exact():
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    x = _plain(img)
    kw = dict(scale=(1.0, 1.0), ratio=(1.0, 1.0), degrees=0, shear=0)
    assert torch.allclose(RandomResizedAffine(32, hflip=0, vflip=0, **kw)(img), x, atol=1e-6)
    assert torch.allclose(RandomResizedAffine(32, hflip=1, vflip=0, **kw)(img), x.flip(-1), atol=1e-6)
    assert torch.allclose(RandomResizedAffine(32, hflip=0, vflip=1, **kw)(img), x.flip(-2), atol=1e-6)
    marked = np.zeros((32, 32, 3), np.uint8)
    marked[2, 3] = 255                                   # row 2, column 3
    out = RandomResizedAffine(32, hflip=1, vflip=1, **kw)(Image.fromarray(marked))
    assert out.sum(0).argmax().item() == (32 - 1 - 2) * 32 + (32 - 1 - 3)
    # a quarter turn maps pixel centres onto pixel centres: nearest and bilinear agree exactly
    rot = RandomResizedAffine(32, scale=(1.0, 1.0), ratio=(1.0, 1.0), degrees=(90, 90), shear=0,
                              hflip=0, vflip=0)(img)
    ref = _plain(TF.affine(img, angle=90.0, translate=[0, 0], scale=1.0, shear=[0.0, 0.0]))
    assert torch.allclose(rot, ref, atol=1e-5)


def test_rotation_and_shear_follow_torchvision_convention():
    img = _smooth(48, 48)
    for angle, shear in ((30.0, 0.0), (-50.0, 15.0), (0.0, -20.0)):
        ours = RandomResizedAffine(48, scale=(1.0, 1.0), ratio=(1.0, 1.0), degrees=(angle, angle),
                                   shear=(shear, shear), hflip=0, vflip=0)(img)
        ref = _plain(TF.affine(img, angle=angle, translate=[0, 0], scale=1.0, shear=[shear, 0.0],
                               interpolation=v2.InterpolationMode.BILINEAR))
        inner = (slice(None), slice(8, 40), slice(8, 40))  # away from the black corners' edges
        assert (ours - ref)[inner].abs().mean() < 1.5 / 255
        assert (ours - ref).abs().mean() < 4 / 255


@pytest.mark.parametrize("shape", [(96, 128), (200, 150)])   # the latter is box-reduced first
def test_same_augmentation_as_torchvision_chain(shape):
    """Same seed -> the same picture as torchvision's chain, up to resampling differences (the chain
    here rotates bilinearly; its default, nearest, differs from both by ~5 grey levels)."""
    img = _smooth(*shape, seed=1)
    chain = v2.Compose([v2.RandomResizedCrop(40, scale=(0.4, 1.0), ratio=(3 / 4, 4 / 3)),
                        v2.RandomAffine(90, shear=20, interpolation=v2.InterpolationMode.BILINEAR),
                        v2.RandomHorizontalFlip(), v2.RandomVerticalFlip(), v2.ToImage(),
                        v2.ToDtype(torch.float32, scale=True)])
    ours = RandomResizedAffine(40, scale=(0.4, 1.0), degrees=90, shear=20)
    for seed in range(6):
        torch.manual_seed(seed)
        ref = chain(img)
        torch.manual_seed(seed)
        out = ours(img)
        assert out.shape == ref.shape == (3, 40, 40) and out.dtype == torch.float32
        assert (out - ref).abs().mean() < 3 / 255            # one resample vs two: small differences
        torch.manual_seed(seed + 100)
        assert (ours(img) - ref).abs().mean() > 15 / 255     # another draw is far: the bound bites


def test_draw_ranges_over_many_draws():
    img = Image.new("RGB", (341, 256))
    ours = RandomResizedAffine(224, scale=(0.4, 1.0), degrees=90, shear=20)
    torch.manual_seed(0)
    ps = [ours.make_params([img]) for _ in range(400)]
    area = np.array([p["height"] * p["width"] for p in ps]) / (256 * 341)
    aspect = np.array([p["width"] / p["height"] for p in ps])
    assert area.min() > 0.4 - 0.01 and area.max() <= 1.0 and area.max() > 0.9
    assert aspect.min() > 3 / 4 - 0.01 and aspect.max() < 4 / 3 + 0.01
    assert all(0 <= p["top"] <= 256 - p["height"] and 0 <= p["left"] <= 341 - p["width"] for p in ps)
    angle, shear = np.array([p["angle"] for p in ps]), np.array([p["shear"] for p in ps])
    assert -90 <= angle.min() < -80 and 80 < angle.max() <= 90 and abs(angle.mean()) < 10
    assert -20 <= shear.min() < -18 and 18 < shear.max() <= 20
    for k in ("hflip", "vflip"):
        assert 0.4 < np.mean([p[k] for p in ps]) < 0.6            # binomial(400, 0.5): +-5 sd


def test_seed_determinism_and_input_types():
    img = _smooth(60, 80)
    ours = RandomResizedAffine(32, scale=(0.4, 1.0), degrees=90, shear=20)
    outs = []
    for inpt in (img, np.asarray(img), TF.pil_to_tensor(img), _plain(img)):
        torch.manual_seed(5)
        outs.append(ours(inpt))
    assert outs[0].shape == (3, 32, 32) and outs[0].dtype == torch.float32
    assert outs[0].is_contiguous() and 0 <= outs[0].min() and outs[0].max() <= 1
    for o in outs[1:]:
        assert torch.allclose(o, outs[0], atol=1e-6)
    torch.manual_seed(6)
    assert not torch.allclose(ours(img), outs[0], atol=0.05)
    for bad in (torch.zeros(1, 8, 8), np.zeros((8, 8, 3), np.float32)):  # grey; unscaled floats
        with pytest.raises(TypeError, match="RGB PIL image"):
            ours(bad)


def test_big_crops_are_antialiased():
    """A 1-pixel checkerboard shrunk 8x is flat grey; bilinear sampling alone would alias it."""
    board = ((np.indices((256, 256)).sum(0) % 2) * 255).astype(np.uint8)
    img = Image.fromarray(np.repeat(board[..., None], 3, -1))
    warp = RandomResizedAffine(32, scale=(1.0, 1.0), ratio=(1.0, 1.0), degrees=(20, 20), shear=0,
                               hflip=0, vflip=0)
    for inpt in (img, TF.pil_to_tensor(img)):                   # PIL reduce; tensor avg_pool2d
        out = warp(inpt)[:, 8:24, 8:24]                         # inside the rotated square
        assert abs(out.mean().item() - 0.5) < 0.02 and out.std().item() < 0.02


def test_dataset_gives_cached_arrays_to_the_training_transform(tmp_path):
    paths = []
    for i in range(3):
        paths.append(str(tmp_path / f"{i}.png"))
        _smooth(50, 70, seed=i).save(paths[-1])
    table = pd.DataFrame({"path": paths, "label": [0, 1, 2]})
    cache = ImageCache(tmp_path / "c", 40)
    tf = build_transform(True, 32)
    assert tf.accepts_arrays
    ds = ImageDataset(table, tf, cache=cache)
    for i in range(3):
        torch.manual_seed(i)
        x, y, row = ds[i]
        torch.manual_seed(i)
        assert torch.equal(x, tf(cache.get(paths[i]))) and (y, row) == (i, i)
    calls = []
    ImageDataset(table, lambda im: calls.append(type(im)), cache=cache)[0]
    assert calls == [Image.Image]                              # other transforms still get PIL


def test_color_jitter_same_for_any_memory_layout():
    hwc = torch.randint(0, 256, (12, 17, 3), dtype=torch.uint8)
    jit = RandomColorJitter(0.3, 0.3, 0.3, 0.1, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))
    torch.manual_seed(1)
    a = jit(hwc.permute(2, 0, 1))                               # what ToImage gives: H x W x 3 in memory
    torch.manual_seed(1)
    b = jit(hwc.permute(2, 0, 1).contiguous())
    assert a.is_contiguous() and torch.equal(a, b)
