"""Colour features: C (number of dermoscopic colours), skin colour (ITA) and colourful patches.

All work in CIELAB (D65 white, sRGB input), where Euclidean distance (Delta E 1976) is roughly
perceptual.

- ``colour_count``: every pixel of the (slightly eroded) lesion is given the nearest of the six
  dermoscopic colour centres ``DERMOSCOPIC_COLOURS`` if it lies within ``max_delta_e`` of it; a
  colour counts as present when it covers at least ``min_share`` of the lesion. Result 0..6.
- ``skin_ita``: the individual typology angle ``ITA = atan((L* - 50) / b*)`` in degrees (Chardon et
  al. 1991; > 55 very light ... < -30 dark), median over skin pixels: outside the lesion dilated by
  3% of the image side, outside any colourful patch, and not darker than 60% of the 90th percentile
  of L* there (drops the dark dermoscope surround, hair and shadows).
- ``colourful_patch``: pixels outside the dilated lesion with chroma ``C* = hypot(a*, b*)`` above
  ``min_chroma`` (skin has about 15-35, the stickers of Scope et al. 2016 60-100); present when the
  largest connected group of such pixels covers at least ``min_area`` of the image.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

# Centres of the six colours of the ABCD rule, sRGB 0..255 (chosen as the medattn synthetic
# generator's palette, which follows the usual descriptions: light brown, dark brown, black, red,
# blue-grey, white).
DERMOSCOPIC_COLOURS = {
    "light_brown": (184, 128, 84),
    "dark_brown": (102, 61, 36),
    "black": (33, 26, 23),
    "red": (184, 69, 61),
    "blue_grey": (102, 120, 148),
    "white": (230, 224, 217),
}


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB (..., 3) uint8 or float in [0, 1] -> CIELAB (..., 3) (L* 0..100, D65 white)."""
    a = np.asarray(rgb)
    a = a.astype(np.float64) / 255.0 if a.dtype == np.uint8 else a.astype(np.float64)
    lin = np.where(a > 0.04045, ((a + 0.055) / 1.055) ** 2.4, a / 12.92)
    m = np.array([[0.4124564, 0.3575761, 0.1804375],
                  [0.2126729, 0.7151522, 0.0721750],
                  [0.0193339, 0.1191920, 0.9503041]])
    xyz = lin @ m.T / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]),
                     200 * (f[..., 1] - f[..., 2])], axis=-1)


_CENTRES_LAB = rgb_to_lab(np.array(list(DERMOSCOPIC_COLOURS.values()), dtype=np.uint8))


def colour_shares(rgb: np.ndarray, mask: np.ndarray, max_delta_e: float = 30.0,
                  erode: int = 1) -> np.ndarray:
    """Share of lesion pixels nearest to each dermoscopic colour (within ``max_delta_e``), (6,)."""
    inner = ndimage.binary_erosion(mask, iterations=erode) if erode else mask
    if not inner.any():
        inner = mask
    lab = rgb_to_lab(rgb[inner])
    dist = np.linalg.norm(lab[:, None, :] - _CENTRES_LAB[None], axis=-1)
    nearest = dist.argmin(1)
    ok = dist[np.arange(len(lab)), nearest] <= max_delta_e
    return np.bincount(nearest[ok], minlength=len(_CENTRES_LAB)) / max(len(lab), 1)


def colour_count(rgb: np.ndarray, mask: np.ndarray, min_share: float = 0.05,
                 max_delta_e: float = 30.0) -> int:
    """Number (0..6) of dermoscopic colours covering at least ``min_share`` of the lesion.

    Args:
        rgb: (H, W, 3) uint8 image. mask: (H, W) boolean lesion mask.
    """
    return int(np.count_nonzero(colour_shares(rgb, mask, max_delta_e) >= min_share))


def _outside(mask: np.ndarray, margin: float = 0.03) -> np.ndarray:
    grow = max(1, int(round(margin * max(mask.shape))))
    return ~ndimage.binary_dilation(mask, iterations=grow)


def colourful_patch(rgb: np.ndarray, mask: np.ndarray, min_chroma: float = 45.0,
                    min_area: float = 0.005) -> tuple[bool, float]:
    """Detect a colourful patch outside the lesion.

    Args:
        rgb: (H, W, 3) uint8 image. mask: (H, W) boolean lesion mask.
        min_chroma: C* above which a pixel is "colourful".
        min_area: share of the image the largest colourful blob must cover.
    Returns:
        (present, share of the image covered by colourful pixels outside the lesion).
    """
    lab = rgb_to_lab(rgb)
    colourful = (np.hypot(lab[..., 1], lab[..., 2]) > min_chroma) & (lab[..., 0] > 15) & _outside(mask)
    colourful = ndimage.binary_opening(colourful)  # isolated noisy pixels are not a patch
    labels, count = ndimage.label(colourful)
    largest = ndimage.sum_labels(colourful, labels, np.arange(1, count + 1)).max() if count else 0
    return bool(largest >= min_area * colourful.size), float(colourful.mean())


def skin_ita(rgb: np.ndarray, mask: np.ndarray, exclude: np.ndarray | None = None) -> float:
    """Median individual typology angle (degrees) of the skin around the lesion (NaN if none).

    Args:
        rgb: (H, W, 3) uint8 image. mask: (H, W) boolean lesion mask.
        exclude: optional (H, W) boolean mask of further non-skin pixels (e.g. a patch).
    """
    lab = rgb_to_lab(rgb)
    skin = _outside(mask)
    if exclude is not None:
        skin &= ~exclude
    skin &= np.hypot(lab[..., 1], lab[..., 2]) <= 45.0  # no patch or marker colours
    if not skin.any():
        return float("nan")
    light = lab[..., 0][skin]
    skin &= lab[..., 0] >= 0.6 * np.percentile(light, 90)
    ita = np.degrees(np.arctan((lab[..., 0][skin] - 50.0) / np.maximum(lab[..., 2][skin], 1e-6)))
    return float(np.median(ita)) if ita.size else float("nan")
