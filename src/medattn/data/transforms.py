"""Training augmentation (Perez et al. 2018's best scheme) and the evaluation transform.

Perez et al., "Data augmentation for skin lesion analysis" (2018), found the combination of random
resized crops, affine transforms (rotation, shear), flips and colour jitter (hue, brightness,
contrast, saturation) best; the paper we reproduce uses it.

Both training steps are written here, because each is measurably faster than torchvision's
chain on CPU (docs/data.md, benchmarks/bench_data.py):

- :class:`RandomResizedAffine`: the random resized crop, the affine (rotation, shear) and the two
  flips as ONE bilinear warp (``grid_sample``), with the parameters drawn exactly as torchvision's
  ``RandomResizedCrop`` / ``RandomAffine`` / flips draw them (same calls to torch's generator).
  One resample instead of torchvision's two (an antialiased resize, then a nearest-neighbour
  rotation), and the uint8 -> float conversion only of the crop.
- :class:`RandomColorJitter`: brightness, contrast, saturation and hue are all linear colour maps,
  so they compose into one 3 x 3 matrix and an offset (one small matmul), instead of torchvision's
  HSV round trip for hue, which costs more than every other step together on CPU.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.transforms import v2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_LUMA = (0.299, 0.587, 0.114)
_LUMA_NP = np.array(_LUMA)
_RGB2YIQ_NP = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_YIQ2RGB_NP = np.linalg.inv(_RGB2YIQ_NP)
# The jitter's colour map is a combination of four fixed matrices (see RandomColorJitter.matrix):
# hue rotation = YIQ2RGB @ (E0 + cos a E1 + sin a E2) @ RGB2YIQ, and the grey image = L @ x.
_JITTER_BASIS = np.stack(
    [_YIQ2RGB_NP @ e @ _RGB2YIQ_NP for e in (np.diag([1.0, 0.0, 0.0]), np.diag([0.0, 1.0, 1.0]),
                                             np.array([[0.0, 0, 0], [0, 0, -1], [0, 1, 0]]))]
    + [np.outer(np.ones(3), _LUMA_NP)])


class RandomResizedAffine(v2.Transform):
    """Random resized crop, rotation + shear and flips as ONE bilinear warp, to a float tensor.

    The parameters are drawn as ``v2.Compose([RandomResizedCrop(size, scale, ratio),
    RandomAffine(degrees, shear=shear), RandomHorizontalFlip(hflip), RandomVerticalFlip(vflip)])``
    draws them: same distributions, same calls to torch's generator in the same order (tested
    equal), so seeding works as before. The image is then mapped through the composed map once:
    bilinear, black outside the crop (the affine's fill). torchvision's chain resamples twice (an
    antialiased resize, then a nearest-neighbour rotation) and costs more (docs/data.md).

    The warp itself does not antialias: a crop at least twice the output size along an axis is
    first box-reduced by the integer factor ``side // size`` (raw photos), so the bilinear step
    never shrinks by 2x or more; from a cache with short side ~size / 0.875 it shrinks <= ~1.5x.

    Input: an RGB PIL image, a uint8 array H x W x 3, or a tensor 3 x H x W (uint8, or float in
    [0, 1]). Output: float32 tensor 3 x size x size in [0, 1] (contiguous).
    """

    _transformed_types = (torch.Tensor, Image.Image, np.ndarray)

    def __init__(self, size: int, scale: tuple[float, float] = (0.08, 1.0),
                 ratio: tuple[float, float] = (3 / 4, 4 / 3),
                 degrees: float | Sequence[float] = 0.0,
                 shear: float | Sequence[float] | None = None, hflip: float = 0.5,
                 vflip: float = 0.5):
        super().__init__()
        if not (0 <= hflip <= 1 and 0 <= vflip <= 1):
            raise ValueError(f"flip probabilities must be within [0, 1], got {hflip}, {vflip}")
        # torchvision checks and normalises the arguments (e.g. degrees=90 -> [-90, 90])
        crop, affine = (v2.RandomResizedCrop(size, scale=scale, ratio=ratio),
                        v2.RandomAffine(degrees, shear=shear))
        if affine.shear is not None and len(affine.shear) != 2:
            raise ValueError("shear: give a number or a (min, max) pair (x shear only)")
        self.size = int(size)
        self.scale, self.ratio = tuple(crop.scale), tuple(crop.ratio)
        self._log_ratio = torch.log(torch.tensor(self.ratio)).tolist()  # float32, as torchvision
        self.degrees = tuple(float(d) for d in affine.degrees)
        self.shear = None if affine.shear is None else tuple(float(s) for s in affine.shear)
        self.hflip, self.vflip = hflip, vflip
        c = torch.arange(self.size, dtype=torch.float32) + 0.5  # output pixel centres
        ys, xs = torch.meshgrid(c, c, indexing="ij")
        self._centres = torch.stack([xs, ys, torch.ones_like(xs)], -1).reshape(-1, 3)

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        """The crop box (top, left, height, width), angle and shear (degrees) and the flips."""
        x = next(i for i in flat_inputs if isinstance(i, self._transformed_types))
        height, width = (x.size[::-1] if isinstance(x, Image.Image)
                         else x.shape[:2] if isinstance(x, np.ndarray) else x.shape[-2:])
        area = height * width
        for _ in range(10):  # RandomResizedCrop's draws
            target = area * torch.empty(1).uniform_(*self.scale).item()
            aspect = torch.exp(torch.empty(1).uniform_(*self._log_ratio)).item()
            w, h = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
            if 0 < w <= width and 0 < h <= height:
                top = int(torch.randint(0, height - h + 1, size=(1,)).item())
                left = int(torch.randint(0, width - w + 1, size=(1,)).item())
                break
        else:  # its fallback: the central crop with the aspect ratio clipped to the range
            w, h = width, height
            if width / height < min(self.ratio):
                h = int(round(w / min(self.ratio)))
            elif width / height > max(self.ratio):
                w = int(round(h * max(self.ratio)))
            top, left = (height - h) // 2, (width - w) // 2
        angle = torch.empty(1).uniform_(*self.degrees).item()  # RandomAffine's draws
        shear = 0.0 if self.shear is None else float(torch.empty(1).uniform_(*self.shear).item())
        return dict(top=top, left=left, height=h, width=w, angle=angle, shear=shear,
                    hflip=bool(torch.rand(1) < self.hflip), vflip=bool(torch.rand(1) < self.vflip))

    def matrix(self, params: dict[str, Any]) -> tuple[float, float, float, float, float, float]:
        """``(a, b, c, d, e, f)``: output pixel (x, y) samples the crop at ``(a x + b y + c,
        d x + e y + f)``, both in coordinates of the output size (the crop scaled to size x size).

        Continuous coordinates: pixel (x, y) covers [x, x + 1) x [y, y + 1). The map is: flips,
        then the inverse of torchvision's affine (rotation after x shear, about the centre).
        """
        mid = self.size / 2
        t, k = math.radians(params["angle"]), math.tan(math.radians(params["shear"]))
        fx, fy = -1.0 if params["hflip"] else 1.0, -1.0 if params["vflip"] else 1.0
        # forward: centred q -> R(t) @ [[1, -k], [0, 1]] @ q; inverse: [[1, k], [0, 1]] @ R(-t)
        cos, sin = math.cos(t), math.sin(t)
        a, b, d, e = (cos - k * sin) * fx, (sin + k * cos) * fy, -sin * fx, cos * fy
        return a, b, mid * (1 - a - b), d, e, mid * (1 - d - e)  # a flip is x -> size - x

    def transform(self, inpt: Any, params: dict[str, Any]) -> torch.Tensor:
        i, j, h, w = params["top"], params["left"], params["height"], params["width"]
        kx, ky = max(1, w // self.size), max(1, h // self.size)  # antialiasing pre-reduction
        crop = self._crop_float(inpt, i, j, h, w, kx, ky)
        # output-size coordinates -> crop pixels (x w / size) -> reduced pixels (/ k) -> [-1, 1]
        # over the reduced crop (its last pixel may average fewer than k: off by < 1 pixel there)
        nx = 2 * w / (self.size * kx * crop.shape[2])
        ny = 2 * h / (self.size * ky * crop.shape[1])
        a, b, c, d, e, f = self.matrix(params)
        theta = torch.tensor([[a * nx, d * ny], [b * nx, e * ny], [c * nx - 1, f * ny - 1]])
        grid = (self._centres @ theta).view(1, self.size, self.size, 2)
        return F.grid_sample(crop[None], grid, mode="bilinear", padding_mode="zeros",
                             align_corners=False)[0]

    @staticmethod
    def _crop_float(inpt: Any, i: int, j: int, h: int, w: int, kx: int, ky: int) -> torch.Tensor:
        """The crop box as float 3 x ceil(h / ky) x ceil(w / kx) in [0, 1] (box-reduced)."""
        reduce = kx > 1 or ky > 1
        if isinstance(inpt, Image.Image):
            inpt = inpt if inpt.mode == "RGB" else inpt.convert("RGB")
            if reduce:  # PIL's box reduction reads the crop from the full image in one pass
                inpt, reduce = np.asarray(inpt.reduce((kx, ky), box=(j, i, j + w, i + h))), False
                i, j, h, w = 0, 0, *inpt.shape[:2]
            else:
                inpt = np.asarray(inpt)
        if isinstance(inpt, np.ndarray) and inpt.shape[2:] == (3,) and inpt.dtype == np.uint8:
            # H x W x 3 in memory, seen as 3 x H x W (grid_sample takes channels-last input)
            crop = np.multiply(inpt[i:i + h, j:j + w], 1 / 255, dtype=np.float32)
            crop = torch.from_numpy(crop).permute(2, 0, 1)
        elif isinstance(inpt, torch.Tensor) and inpt.ndim == 3 and inpt.shape[0] == 3:
            crop = inpt.as_subclass(torch.Tensor)[:, i:i + h, j:j + w]
            crop = crop * (1 / 255) if crop.dtype == torch.uint8 else crop.float()
        else:
            raise TypeError("RandomResizedAffine takes an RGB PIL image, a uint8 H x W x 3 array "
                            f"or a 3 x H x W tensor, got {type(inpt).__name__} "
                            f"{getattr(inpt, 'shape', '')}")
        return F.avg_pool2d(crop[None], (ky, kx), ceil_mode=True)[0] if reduce else crop


class RandomColorJitter(torch.nn.Module):
    """Random brightness, contrast, saturation and hue on an image 3 x H x W.

    Factors as torchvision's ``ColorJitter``: brightness, contrast and saturation factors are drawn
    uniformly from [1 - j, 1 + j]; the hue shift from [-hue, hue] of a full turn. Brightness scales;
    contrast blends with the mean grey level; saturation blends with the grey image; hue rotates
    the chroma plane of YIQ (keeps luma, rotates colours around the grey axis, as an HSV hue shift
    does). Applied in that fixed order and clamped to [0, 1] once at the end.

    Input: float in [0, 1] or uint8 (scaled by 1/255). With ``mean``/``std`` the output is also
    normalised, ``(x - mean) / std``: scaling, jitter and normalisation are then one 3 x 3 matrix,
    one offset and one clamp, so the image is read and written once.
    """

    def __init__(self, brightness: float = 0.3, contrast: float = 0.3, saturation: float = 0.3,
                 hue: float = 0.1, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None):
        super().__init__()
        if not 0 <= hue <= 0.5 or min(brightness, contrast, saturation) < 0:
            raise ValueError("jitter strengths must be >= 0 and hue within [0, 0.5]")
        self.brightness, self.contrast, self.saturation, self.hue = brightness, contrast, saturation, hue
        mean = np.zeros(3) if mean is None else np.asarray(mean, dtype=np.float64)
        std = np.ones(3) if std is None else np.asarray(std, dtype=np.float64)
        self._mean, self._inv_std = mean, 1 / std
        self._basis = _JITTER_BASIS * self._inv_std[None, :, None]
        # clamping to [0, 1] before normalising = clamping to these bounds after it
        self._lo, self._hi = (-mean / std).tolist(), ((1 - mean) / std).tolist()

    def matrix(self, u: np.ndarray, grey_mean: float) -> tuple[np.ndarray, np.ndarray]:
        """The colour map ``x -> m @ x + offset`` (x in [0, 1]) for random draws ``u`` in [-1, 1]^4."""
        coef, shift = self._coefficients(u, grey_mean)
        return np.tensordot(coef, _JITTER_BASIS, 1), np.full(3, shift)

    def _coefficients(self, u: Sequence[float], grey_mean: float) -> tuple[list[float], float]:
        b = 1 + u[0] * self.brightness
        c = 1 + u[1] * self.contrast
        s = 1 + u[2] * self.saturation
        a = -u[3] * self.hue * 2 * math.pi  # negative: HSV hue order (red -> yellow) in YIQ
        # hue(a) @ saturation(s) * c * b, saturation = s I + (1 - s) L, and hue(a) @ L = L (grey
        # stays grey), so the map is a combination of the four basis matrices
        k = c * b
        coef = [k * s, k * s * math.cos(a), k * s * math.sin(a), k * (1 - s)]
        return coef, (1 - c) * b * grey_mean  # offset: contrast pulls towards the mean grey

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = 1 / 255 if x.dtype == torch.uint8 else 1.0
        shape = x.shape
        # one copy at most, into contiguous 3 x N float (a permuted uint8 image is H x W x 3 in memory)
        x = x.as_subclass(torch.Tensor).to(torch.float32, memory_format=torch.contiguous_format)
        x = x.view(3, -1)
        u = (torch.rand(4, dtype=torch.float64) * 2 - 1).tolist()
        grey_mean = sum(w * v for w, v in zip(_LUMA, x.mean(dim=1).tolist())) * scale  # luma: linear
        coef, shift = self._coefficients(u, grey_mean)
        m = np.tensordot(coef, self._basis, 1) * scale  # normalisation folded into the basis
        offset = self._inv_std * (shift - self._mean)
        out = torch.addmm(torch.from_numpy(offset.astype(np.float32)).view(3, 1),
                          torch.from_numpy(m.astype(np.float32)), x)
        for channel, lo, hi in zip(out, self._lo, self._hi):  # scalar bounds: faster than broadcast
            channel.clamp_(lo, hi)
        return out.view(shape)


def build_transform(train: bool, image_size: int, mean: Sequence[float] = IMAGENET_MEAN,
                    std: Sequence[float] = IMAGENET_STD, scale: tuple[float, float] = (0.4, 1.0),
                    degrees: float = 90.0, shear: float = 20.0, jitter: float = 0.3,
                    hue: float = 0.1) -> v2.Compose:
    """A transform from an RGB PIL image to a normalised float tensor 3 x S x S.

    The training transform is :class:`RandomResizedAffine` (crop, affine, flips: one warp) then
    :class:`RandomColorJitter` (jitter + normalisation); it also takes uint8 arrays H x W x 3
    (``accepts_arrays``), which :class:`~medattn.data.ImageDataset` passes from the cache.

    Args:
        train: random augmentation if True, else resize (short side) + centre crop.
        image_size: output side S in pixels.
        mean, std: per-channel normalisation (use the model's ``pretrained_cfg``).
        scale: area fraction range of the random resized crop (aspect ratio 3/4..4/3).
        degrees, shear: maximum rotation and shear of the random affine (degrees).
        jitter: brightness/contrast/saturation jitter strength; ``hue``: hue jitter (0..0.5).
    """
    if not train:
        return v2.Compose([v2.Resize(image_size, antialias=True), v2.CenterCrop(image_size),
                           v2.ToImage(), v2.ToDtype(torch.float32, scale=True),
                           v2.Normalize(mean=list(mean), std=list(std))])
    tf = v2.Compose([
        # crop, affine and both flips in one warp; output float in [0, 1]
        RandomResizedAffine(image_size, scale=scale, ratio=(3 / 4, 4 / 3), degrees=degrees,
                            shear=shear, hflip=0.5, vflip=0.5),
        RandomColorJitter(jitter, jitter, jitter, hue, mean=mean, std=std),  # + normalising
    ])
    tf.accepts_arrays = True  # ImageDataset may pass cached uint8 arrays H x W x 3 (no PIL trip)
    return tf
