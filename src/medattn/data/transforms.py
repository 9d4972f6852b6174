"""Training augmentation (Perez et al. 2018's best scheme) and the evaluation transform.

Perez et al., "Data augmentation for skin lesion analysis" (2018), found the combination of random
resized crops, affine transforms (rotation, shear), flips and colour jitter (hue, brightness,
contrast, saturation) best; the paper we reproduce uses it. Built from torchvision transforms v2 and
applied to uint8 tensors (faster than PIL for the affine and jitter steps).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision.transforms import v2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def build_transform(train: bool, image_size: int, mean: Sequence[float] = IMAGENET_MEAN,
                    std: Sequence[float] = IMAGENET_STD, scale: tuple[float, float] = (0.4, 1.0),
                    degrees: float = 90.0, shear: float = 20.0, jitter: float = 0.3,
                    hue: float = 0.1) -> v2.Compose:
    """A transform from an RGB PIL image (or uint8 tensor) to a normalised float tensor 3 x S x S.

    Args:
        train: random augmentation if True, else resize (short side) + centre crop.
        image_size: output side S in pixels.
        mean, std: per-channel normalisation (use the model's ``pretrained_cfg``).
        scale: area fraction range of the random resized crop.
        degrees, shear: maximum rotation and shear of the random affine (degrees).
        jitter: brightness/contrast/saturation jitter strength; ``hue``: hue jitter (0..0.5).
    """
    head = [v2.ToImage()]
    tail = [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean=list(mean), std=list(std))]
    if not train:
        return v2.Compose(head + [v2.Resize(image_size, antialias=True), v2.CenterCrop(image_size)] + tail)
    return v2.Compose(head + [
        v2.RandomResizedCrop(image_size, scale=scale, ratio=(3 / 4, 4 / 3), antialias=True),
        v2.RandomAffine(degrees=degrees, shear=shear),
        v2.RandomHorizontalFlip(),
        v2.RandomVerticalFlip(),
        v2.ColorJitter(brightness=jitter, contrast=jitter, saturation=jitter, hue=hue),
    ] + tail)
