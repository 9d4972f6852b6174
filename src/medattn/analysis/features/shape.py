"""Shape features of a lesion segmentation mask: A (asymmetry) and B (border irregularity).

Both are dimensionless and invariant to translation, rotation and scale (up to pixelation):

- ``asymmetry(mask)``: the lesion is reflected about each of its two principal axes (through the
  centroid, from the second moments); for each axis the non-overlapping area
  ``|M xor reflect(M)| / (2 |M|)`` is a fraction in [0, 1]; the feature is the mean over the two axes.
  A disc or an ellipse gives ~0.
- ``border_irregularity(mask)``: ``P^2 / (4 pi A)`` (the inverse isoperimetric quotient), 1 for a
  disc and larger for ragged or elongated outlines. The perimeter P is the count of pixel edges
  between lesion and background times pi / 4, the Crofton correction that makes the count unbiased
  for outlines of random orientation (a digital disc of radius r has 8r such edges).

The mask is reduced to its largest connected component with holes filled (scipy.ndimage).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def clean_mask(mask: np.ndarray) -> np.ndarray:
    """Largest 8-connected component of a boolean (H, W) mask, holes filled; empty stays empty."""
    mask = np.asarray(mask, dtype=bool)
    labels, count = ndimage.label(mask, structure=np.ones((3, 3)))
    if count > 1:
        sizes = ndimage.sum_labels(mask, labels, index=np.arange(1, count + 1))
        mask = labels == (1 + int(np.argmax(sizes)))
    return ndimage.binary_fill_holes(mask)


def asymmetry(mask: np.ndarray) -> float:
    """Mean non-overlap fraction of the lesion and its reflections about its two principal axes.

    Args:
        mask: (H, W) boolean lesion mask (cleaned with ``clean_mask`` first).
    Returns:
        asymmetry in [0, 1] (NaN for an empty mask).
    """
    ys, xs = np.nonzero(mask)
    if len(xs) < 3:
        return float("nan")
    pts = np.stack([xs, ys], 1).astype(np.float64)
    centre = pts.mean(0)
    _, vecs = np.linalg.eigh(np.cov((pts - centre).T))
    h, w = mask.shape
    scores = []
    for axis in vecs.T:  # reflect about the line through the centre along `axis`
        rel = pts - centre
        refl = 2 * np.outer(rel @ axis, axis) - rel + centre
        rx, ry = np.rint(refl[:, 0]).astype(int), np.rint(refl[:, 1]).astype(int)
        inside = (rx >= 0) & (rx < w) & (ry >= 0) & (ry < h)
        reflected = np.zeros_like(mask, dtype=bool)
        reflected[ry[inside], rx[inside]] = True
        # Rounding leaves pinholes in the reflected set; a closing fills them without growing it.
        reflected = ndimage.binary_closing(reflected, iterations=1) | reflected
        scores.append(np.count_nonzero(mask ^ reflected) / (2.0 * len(xs)))
    return float(np.mean(scores))


def perimeter(mask: np.ndarray) -> float:
    """Crofton-corrected perimeter in pixels: lesion/background pixel edges times pi / 4."""
    m = np.pad(np.asarray(mask, dtype=bool), 1)
    edges = np.count_nonzero(m[1:, :] != m[:-1, :]) + np.count_nonzero(m[:, 1:] != m[:, :-1])
    return float(edges * np.pi / 4)


def border_irregularity(mask: np.ndarray) -> float:
    """Inverse isoperimetric quotient P^2 / (4 pi A) of a boolean (H, W) mask (1 for a disc)."""
    area = np.count_nonzero(mask)
    if area < 3:
        return float("nan")
    return perimeter(mask) ** 2 / (4 * np.pi * area)
