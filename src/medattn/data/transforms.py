"""Training augmentation (Perez et al. 2018's best scheme) and the evaluation transform.

Perez et al., "Data augmentation for skin lesion analysis" (2018), found the combination of random
resized crops, affine transforms (rotation, shear), flips and colour jitter (hue, brightness,
contrast, saturation) best; the paper we reproduce uses it.

The geometric steps are torchvision transforms v2 on the PIL image (C code; on CPU faster than
their tensor versions). The colour jitter, :class:`RandomColorJitter`, is written here: brightness,
contrast, saturation and hue are all linear colour maps, so they compose into one 3 x 3 matrix and
an offset (one small matmul), instead of torchvision's HSV round trip for hue, which costs more
than every other step together on CPU (docs/data.md, benchmarks/bench_data.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torchvision.transforms import v2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_LUMA_NP = np.array([0.299, 0.587, 0.114])
_RGB2YIQ_NP = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_YIQ2RGB_NP = np.linalg.inv(_RGB2YIQ_NP)


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
        # clamping to [0, 1] before normalising = clamping to these bounds after it
        self._lo = torch.tensor(-mean / std, dtype=torch.float32).view(3, 1)
        self._hi = torch.tensor((1 - mean) / std, dtype=torch.float32).view(3, 1)

    def matrix(self, u: np.ndarray, grey_mean: float) -> tuple[np.ndarray, np.ndarray]:
        """The colour map ``x -> m @ x + offset`` (x in [0, 1]) for random draws ``u`` in [-1, 1]^4."""
        b = 1 + u[0] * self.brightness
        c = 1 + u[1] * self.contrast
        s = 1 + u[2] * self.saturation
        a = -u[3] * self.hue * 2 * np.pi  # negative: HSV hue order (red -> yellow) in YIQ
        rot = np.array([[1.0, 0.0, 0.0], [0.0, np.cos(a), -np.sin(a)], [0.0, np.sin(a), np.cos(a)]])
        sat = s * np.eye(3) + (1 - s) * np.outer(np.ones(3), _LUMA_NP)
        m = _YIQ2RGB_NP @ rot @ _RGB2YIQ_NP @ sat * (c * b)
        offset = np.full(3, (1 - c) * b * grey_mean)  # grey stays grey under saturation and hue
        return m, offset

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = 1 / 255 if x.dtype == torch.uint8 else 1.0
        shape = x.shape
        x = x.float().reshape(3, -1)
        u = torch.rand(4, dtype=torch.float64).numpy() * 2 - 1
        grey_mean = float(_LUMA_NP @ x.mean(dim=1).double().numpy()) * scale  # luma is linear
        m, offset = self.matrix(u, grey_mean)
        m = (self._inv_std[:, None] * m) * scale
        offset = self._inv_std * (offset - self._mean)
        out = torch.addmm(torch.from_numpy(offset.astype(np.float32)).view(3, 1),
                          torch.from_numpy(m.astype(np.float32)), x)
        return torch.clamp_(out, self._lo, self._hi).reshape(shape)


def build_transform(train: bool, image_size: int, mean: Sequence[float] = IMAGENET_MEAN,
                    std: Sequence[float] = IMAGENET_STD, scale: tuple[float, float] = (0.4, 1.0),
                    degrees: float = 90.0, shear: float = 20.0, jitter: float = 0.3,
                    hue: float = 0.1) -> v2.Compose:
    """A transform from an RGB PIL image to a normalised float tensor 3 x S x S.

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
    return v2.Compose([
        v2.RandomResizedCrop(image_size, scale=scale, ratio=(3 / 4, 4 / 3), antialias=True),
        v2.RandomAffine(degrees=degrees, shear=shear),
        v2.RandomHorizontalFlip(),
        v2.RandomVerticalFlip(),
        v2.ToImage(),
        RandomColorJitter(jitter, jitter, jitter, hue, mean=mean, std=std),  # + scaling, normalising
    ])
