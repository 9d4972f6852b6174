"""Drawing: the Table 4 grid (rows = method x model, columns = classes + mean) and single overlays.

Maps are min-max scaled to 0..255 per cell for display, as the paper does, and drawn with the jet
colour map over the image the model saw (the mean column: over the mean image). Figures are built
with matplotlib's object API (no pyplot state), so drawing is safe inside other programs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from PIL import Image

from medattn.errors import ConfigError
from medattn.explain._maps import to_uint8
from medattn.models import registry as R
from medattn.runs.atomic import atomic_write

CMAP = "jet"
ALPHA = 0.5
_METHOD_ORDER = {"gradcam": 0, "ga": 1, "rollout": 2}
GAP = 0.15  # spacer between data-set column groups and method row groups, in cells


def _short(image_id: str, width: int = 20) -> str:
    """Long ids (Camelyon patch names) shortened from the left so column titles do not overlap."""
    return image_id if len(image_id) <= width else "..." + image_id[-(width - 3):]


def model_label(name: str) -> str:
    """The registry's full label, as every other table shows it: ``resnet18+ga+ela`` ->
    ``ResNet18 +GA+ELA``, ``vit_tiny_in21k`` -> ``ViT-21k``; the name itself if unregistered."""
    # start-up time: the zoo imports timm, which the report's Table 4 view (report.explain_view,
    # which imports this module for its labels) does not otherwise need
    from medattn.models import parse_model_name

    try:
        spec = parse_model_name(name)
    except ConfigError:
        return name
    return R.model_label(spec.backbone, spec.variant)


# Grad-CAM weighs the last convolutional stage, 1/32 of the input side in every registered CNN
# (ResNet, EfficientNet, DenseNet, ...); below 7 x 7 cells (the paper's 224 px) a map cannot
# outline a lesion, and its region shares are those of a flat map by construction.
CNN_STRIDE = 32
MIN_CELLS = 7


def gradcam_cells(image_size: int) -> int:
    """Cells per side of a Grad-CAM map before upsampling: ceil(image_size / 32)."""
    return max(1, -(-int(image_size) // CNN_STRIDE))


def row_label(method: str, model: str, block: int | None, image_size: int | None = None) -> str:
    """A row's label; a Grad-CAM row of fewer than 7 x 7 cells says it cannot localise."""
    if method == "gradcam":
        k = gradcam_cells(image_size) if image_size else MIN_CELLS
        coarse = f"\n({k}×{k} cells: cannot localise)" if k < MIN_CELLS else ""
        return f"Grad-CAM\n{model_label(model)}{coarse}"
    if method == "ga":
        return f"GA map (block {block})\n{model_label(model)}"
    return f"Attention rollout\n{model_label(model)}"


def _hwc(image: torch.Tensor | np.ndarray) -> np.ndarray:
    arr = image.numpy() if torch.is_tensor(image) else np.asarray(image)
    return np.transpose(arr, (1, 2, 0)) if arr.ndim == 3 and arr.shape[0] in (1, 3) else arr


def _draw_cell(ax, image, map_: np.ndarray | None) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    for side in ax.spines.values():
        side.set_visible(False)
    if image is not None:
        ax.imshow(_hwc(image), extent=(0, 1, 1, 0), interpolation="bilinear")
    if map_ is not None and np.isfinite(map_).any():
        ax.imshow(to_uint8(map_), cmap=CMAP, vmin=0, vmax=255, extent=(0, 1, 1, 0),
                  alpha=ALPHA if image is not None else 1.0, interpolation="bilinear")
    ax.set_xlim(0, 1)
    ax.set_ylim(1, 0)


def _save(fig, path: Path, fmt: str, dpi: int) -> None:
    FigureCanvasAgg(fig)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format=fmt, dpi=dpi, bbox_inches="tight"))


def overlay_rgb(image: torch.Tensor | None, map_: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8: the map (0..255 per map) in jet, blended over the image (or alone)."""
    heat = colormaps[CMAP](to_uint8(map_))[..., :3]  # (H, W, 3) in [0, 1]
    if image is None:
        return np.round(heat * 255).astype(np.uint8)
    img = _hwc(image).astype(np.float64) / 255.0
    if img.shape[:2] != heat.shape[:2]:
        img = np.asarray(Image.fromarray(np.round(img * 255).astype(np.uint8)).resize(
            heat.shape[1::-1], Image.BILINEAR), dtype=np.float64) / 255.0
    return np.round(((1 - ALPHA) * img + ALPHA * heat) * 255).astype(np.uint8)


def save_overlay(path: str | Path, image: torch.Tensor | None, map_: np.ndarray) -> None:
    """One map (H, W) over its image (3, S, S uint8; ``None`` = the map alone) as a PNG at the
    map's resolution (PIL, no matplotlib figure: hundreds of these stay cheap)."""
    rgb = overlay_rgb(image, map_)
    atomic_write(path, lambda tmp: Image.fromarray(rgb).save(tmp, format="PNG"))


def draw_table4(units, display: dict, mean_images: dict, png: str | Path, pdf: str | Path,
                cell: float = 1.25, dpi: int = 120) -> None:
    """The Table 4 grid.

    Args:
        units: ``pipeline.Unit`` list (any order; rows are sorted method, then model order given).
        display: ``{(dataset, image_id): (3, S, S) uint8}`` example images.
        mean_images: ``{dataset: (3, S, S) uint8}`` mean of the mean-map images.
        png, pdf: output paths.
        cell: side of one cell in inches.
    """
    datasets = list(dict.fromkeys(u.dataset for u in units))
    model_order = list(dict.fromkeys(u.model for u in units))
    rows = sorted({(u.method, u.model, u.block) for u in units},
                  key=lambda r: (_METHOD_ORDER[r[0]], model_order.index(r[1]), r[2] or 0))
    lookup = {(u.dataset, u.method, u.model, u.block): u for u in units}
    classes = {d: next(u.classes for u in units if u.dataset == d) for d in datasets}
    examples = {d: next(u.example_ids for u in units if u.dataset == d) for d in datasets}
    cols = [(d, c) for d in datasets for c in list(range(len(classes[d]))) + ["mean"]]
    if not rows or not cols:
        raise ValueError("nothing to draw")

    # thin spacer columns between data sets and spacer rows between methods keep groups apart
    col_pos, ratios_w = [], []
    for j, (d, _c) in enumerate(cols):
        if j and d != cols[j - 1][0]:
            ratios_w.append(GAP)
        col_pos.append(len(ratios_w))
        ratios_w.append(1.0)
    row_pos, ratios_h = [], []
    for i, r in enumerate(rows):
        if i and r[0] != rows[i - 1][0]:
            ratios_h.append(GAP)
        row_pos.append(len(ratios_h))
        ratios_h.append(1.0)
    label_w, bar_w, head_h = 1.9, 0.9, 0.75
    grid_w, grid_h = cell * sum(ratios_w), cell * sum(ratios_h)
    width = label_w + grid_w + bar_w
    height = head_h + grid_h + 0.1
    fig = Figure(figsize=(width, height))
    grid = fig.add_gridspec(len(ratios_h), len(ratios_w), width_ratios=ratios_w,
                            height_ratios=ratios_h, left=label_w / width,
                            right=(label_w + grid_w) / width, top=1 - head_h / height,
                            bottom=0.1 / height, wspace=0.04, hspace=0.04)
    for j, (d, c) in enumerate(cols):
        if c == "mean":
            n = next(len(u.per_image) for u in units if u.dataset == d)
            title = f"{d}\nmean (n={n})"
        else:
            title = f"{d}\n{classes[d][c]}\n{_short(examples[d][c]) or 'none'}"
        for i, (method, model, block) in enumerate(rows):
            ax = fig.add_subplot(grid[row_pos[i], col_pos[j]])
            u = lookup.get((d, method, model, block))
            if u is None:
                _draw_cell(ax, None, None)
            elif c == "mean":
                _draw_cell(ax, mean_images.get(d), u.mean)
            else:
                iid = u.example_ids[c]
                _draw_cell(ax, display.get((d, iid)) if iid else None, u.examples[c] if iid else None)
            if i == 0:
                ax.set_title(title, fontsize=7, pad=3)
            if j == 0:
                size = next((u.mean.shape[-1] for u in units if (u.method, u.model, u.block)
                             == (method, model, block)), None)
                ax.set_ylabel(row_label(method, model, block, size), fontsize=7, rotation=0,
                              ha="right", va="center", labelpad=6)
    cax = fig.add_axes(((label_w + grid_w + 0.2) / width, 0.25, 0.12 / width, 0.5))
    fig.colorbar(ScalarMappable(Normalize(0, 255), CMAP), cax=cax, ticks=[0, 64, 128, 192, 255])
    cax.tick_params(labelsize=7)
    cax.set_ylabel("map value (0..255 per cell)", fontsize=7)
    _save(fig, Path(png), "png", dpi)
    _save(fig, Path(pdf), "pdf", dpi)
