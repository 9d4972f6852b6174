"""The images ``medattn explain`` draws maps on, and the regions the maps' mass is measured in.

Images are decoded once per data set and size and kept as uint8 (exact: the eval transform's
output before normalisation is k / 255), with their lesion / patch masks and the border and corner
regions at the same geometry.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from medattn.data import build_transform, read_image
from medattn.errors import DataError
from medattn.explain.quantify import border_mask, corner_mask, mass_share

REGIONS = ("lesion", "patch", "border", "corners")


class ExplainImages:
    """Decoded images of one data set at one size, kept as uint8 (exact: the eval transform's
    output before normalisation is k / 255), plus their region masks at the same geometry."""

    def __init__(self, table: pd.DataFrame, image_size: int, border: float):
        self.table = table.set_index("image_id", drop=False)
        self.size = image_size
        # mean 0 / std 1: the study's eval transform (resize + centre crop) without normalisation;
        # masks go through the same transform, so they line up with the pixels the model saw
        self.plain = build_transform(False, image_size, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
        self.border = border_mask(image_size, image_size, border)
        self.corners = corner_mask(image_size, image_size, border)
        self._img: dict[str, torch.Tensor] = {}
        self._mask: dict[tuple[str, str], torch.Tensor | None] = {}

    def image(self, image_id: str) -> torch.Tensor:
        """(3, S, S) uint8."""
        if image_id not in self._img:
            row = self.table.loc[image_id]
            x = self.plain(read_image(str(row["path"])))
            self._img[image_id] = (x * 255).round().clamp(0, 255).to(torch.uint8)
        return self._img[image_id]

    def mask(self, image_id: str, column: str) -> torch.Tensor | None:
        """(S, S) bool from a mask file column (``mask_path`` / ``patch_mask_path``), or None."""
        key = (image_id, column)
        if key not in self._mask:
            m = None
            if column in self.table.columns:
                path = self.table.at[image_id, column]
                if isinstance(path, str) and path:
                    try:
                        m = self.plain(read_image(path))[0] > 0.5
                    except (OSError, ValueError) as err:
                        raise DataError(f"{path}: cannot read the {column} of image {image_id} "
                                        f"({err}); fix or remove the file.") from err
                    if not m.any():  # e.g. the synthetic set's empty patch mask: no patch here
                        m = None
            self._mask[key] = m
        return self._mask[key]

    def batch(self, ids: list[str], mean, std) -> torch.Tensor:
        x = torch.stack([self.image(i) for i in ids]).float() / 255.0
        mean = torch.tensor(mean, dtype=torch.float32)[:, None, None]
        std = torch.tensor(std, dtype=torch.float32)[:, None, None]
        return (x - mean) / std

    def regions(self, ids: list[str]) -> dict[str, list[torch.Tensor | None]]:
        return {
            "lesion": [self.mask(i, "mask_path") for i in ids],
            "patch": [self.mask(i, "patch_mask_path") for i in ids],
            "border": [self.border] * len(ids),
            "corners": [self.corners] * len(ids),
        }


def region_shares(maps: torch.Tensor, regions: dict[str, list[torch.Tensor | None]]
                  ) -> dict[str, np.ndarray]:
    """Share of each map's mass in each region (NaN where an image lacks the region)."""
    out = {}
    for name, masks in regions.items():
        vals = np.full(len(maps), np.nan)
        for k, m in enumerate(masks):
            if m is not None:
                vals[k] = float(mass_share(maps[k:k + 1], m)[0])
        out[f"mass_{name}"] = vals
    return out


def area_shares(images: ExplainImages, ids: list[str]) -> dict[str, float]:
    """Mean area share of each region over the images: what a flat map would score."""
    out = {}
    for name, masks in images.regions(ids).items():
        vals = [float(m.float().mean()) for m in masks if m is not None]
        out[f"area_{name}"] = float(np.mean(vals)) if vals else float("nan")
    return out
