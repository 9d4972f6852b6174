"""Drawing one synthetic dermoscopy image: a lesion with its ABCD features, dermoscopic structures
and optionally a colourful patch, on skin of a given colour, with its masks.

:mod:`medattn.data.synthetic.derm` samples what to draw and writes the data sets.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

__all__ = ["PALETTE", "PATCH_COLOURS", "STRUCTURES", "ita_to_rgb", "render"]

STRUCTURES = ("pigment_network", "negative_network", "streaks", "milia_like_cyst", "globules")
# The six dermoscopic colours of the ABCD rule (sRGB in [0, 1]).
PALETTE = np.array([
    [0.72, 0.50, 0.33],  # light brown
    [0.40, 0.24, 0.14],  # dark brown
    [0.13, 0.10, 0.09],  # black
    [0.72, 0.27, 0.24],  # red
    [0.40, 0.47, 0.58],  # blue-grey
    [0.90, 0.88, 0.85],  # white
], dtype=np.float32)
PATCH_COLOURS = np.array([[0.15, 0.45, 0.95], [0.10, 0.80, 0.30], [0.98, 0.85, 0.10],
                          [0.95, 0.30, 0.70], [1.00, 0.50, 0.05]], dtype=np.float32)


def ita_to_rgb(ita: float, b_star: float = 17.0, a_star: float = 12.0) -> np.ndarray:
    """sRGB (0..1) of a skin colour with individual typology angle ``ita`` (degrees)."""
    L = 50 + b_star * math.tan(math.radians(ita))
    L = min(max(L, 20.0), 92.0)
    fy = (L + 16) / 116
    fx, fz = fy + a_star / 500, fy - b_star / 200

    def finv(t: float) -> float:
        return t ** 3 if t ** 3 > 0.008856 else (t - 16 / 116) / 7.787

    xyz = np.array([0.95047 * finv(fx), finv(fy), 1.08883 * finv(fz)])
    m = np.array([[3.2406, -1.5372, -0.4986], [-0.9689, 1.8758, 0.0415], [0.0557, -0.2040, 1.0570]])
    rgb = np.clip(m @ xyz, 0, 1)
    rgb = np.where(rgb > 0.0031308, 1.055 * rgb ** (1 / 2.4) - 0.055, 12.92 * rgb)
    return np.clip(rgb, 0, 1).astype(np.float32)


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Low-frequency noise in about [-1, 1], size x size (bicubic upsampling of a coarse grid)."""
    coarse = rng.uniform(-1, 1, (cells, cells)).astype(np.float32)
    img = Image.fromarray(coarse, mode="F").resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(img, dtype=np.float32)


def render(rng: np.random.Generator, lesion: dict, skin_rgb: np.ndarray, patch: bool,
           size: int, clinical: bool = False) -> tuple[np.ndarray, np.ndarray, dict, np.ndarray]:
    """Render one image.

    Returns ``(image uint8 S x S x 3, segmentation bool S x S, {structure: bool S x S},
    patch bool S x S)``. ``clinical`` renders the OOD look: no dermoscope vignette, directional
    light, a colour cast, lower contrast and a slight blur, the lesion smaller in the frame.
    """
    S = size
    ax = (np.arange(S, dtype=np.float32) + 0.5) / S * 2 - 1
    xx, yy = np.meshgrid(ax, ax)
    shape_rng = np.random.default_rng(lesion["shape_seed"])
    a, b = lesion["asymmetry"], lesion["border"]

    # Lesion outline r(theta): low harmonics (asymmetry) + high harmonics (border irregularity).
    R = shape_rng.uniform(0.42, 0.55) * (0.85 if clinical else 1.0)
    cx, cy = (float(v) for v in rng.uniform(-0.08, 0.08, 2))
    rot = float(rng.uniform(0, 2 * np.pi))
    th = np.arctan2(yy - cy, xx - cx) + np.float32(rot)
    d = np.hypot(xx - cx, yy - cy)
    # r is evaluated on a 1-D table of angles and looked up: far cheaper than trig per pixel.
    t = np.linspace(0, 2 * np.pi, 1025, dtype=np.float64)
    rt = np.ones_like(t)
    for k, amp in ((1, 0.22), (2, 0.28), (3, 0.12)):
        rt += a * amp * shape_rng.uniform(0.6, 1.0) * np.cos(k * t + shape_rng.uniform(0, 2 * np.pi))
    ks = shape_rng.choice(np.arange(7, 22), size=5, replace=False)
    for k in ks:
        amp = (0.006 + 0.085 * b ** 1.5) * shape_rng.uniform(0.5, 1.0)
        rt += amp * np.cos(k * t + shape_rng.uniform(0, 2 * np.pi))
    th_idx = ((th % (2 * np.pi)) * (1024 / (2 * np.pi))).astype(np.int32)
    r = (rt[th_idx] * R).astype(np.float32)
    edge = 0.02 + 0.02 * (1 - b)
    alpha = np.clip((r - d) / edge + 0.5, 0, 1).astype(np.float32)
    seg = alpha >= 0.5

    # Colours: soft Voronoi over n seeds inside the lesion, each seed one palette colour.
    n = lesion["n_colors"]
    cols = [int(shape_rng.integers(0, 2))]  # a brown is always present
    others = [c for c in range(6) if c != cols[0]]
    cols += list(shape_rng.choice(others, size=n - 1, replace=False))
    ang = shape_rng.uniform(0, 2 * np.pi, n) - rot
    rad = shape_rng.uniform(0.0, 0.6, n) * R
    sx = (cx + rad * np.cos(ang)).astype(np.float32)
    sy = (cy + rad * np.sin(ang)).astype(np.float32)
    d2 = (xx[None] - sx[:, None, None]) ** 2 + (yy[None] - sy[:, None, None]) ** 2
    w = np.exp(-(d2 - d2.min(0, keepdims=True)) / np.float32(0.12 * R * R + 1e-6))
    w /= w.sum(0, keepdims=True)
    lesion_rgb = np.tensordot(w.transpose(1, 2, 0), PALETTE[cols], axes=1)
    lesion_rgb *= (1 + 0.08 * _smooth_noise(rng, S, 6))[..., None]

    # Dermoscopic structures, each in its own region; the region is the task-2 mask.
    masks = {}
    for name in STRUCTURES:
        if not lesion["structures"][name]:
            masks[name] = np.zeros((S, S), bool)
            continue
        if name == "streaks":
            region = (d > 0.7 * r) & (d < 1.2 * r)
            sector = (np.cos(t - shape_rng.uniform(0, 2 * np.pi)) > shape_rng.uniform(-0.6, 0.2))[th_idx]
            lines = (np.cos(shape_rng.integers(18, 30) * t) > 0.55)[th_idx]
            m = region & sector & lines
            lesion_rgb[m] = lesion_rgb[m] * 0.3 + PALETTE[1] * 0.7 * 0.6
            alpha = np.maximum(alpha, m.astype(np.float32))
            masks[name] = m
            continue
        rc = shape_rng.uniform(0, 0.4) * R
        ra = shape_rng.uniform(0, 2 * np.pi)
        region = seg & (np.hypot(xx - cx - rc * np.cos(ra), yy - cy - rc * np.sin(ra))
                        < shape_rng.uniform(0.45, 0.75) * R)
        if name in ("pigment_network", "negative_network"):
            f = shape_rng.uniform(30, 42)
            u = xx * np.cos(ra) - yy * np.sin(ra) + 0.02 * _smooth_noise(rng, S, 5)
            v = xx * np.sin(ra) + yy * np.cos(ra)
            net = (np.abs(np.sin(f * u)) < 0.35) | (np.abs(np.sin(f * v)) < 0.35)
            m = region & net
            if name == "pigment_network":
                lesion_rgb[m] *= 0.55
            else:
                lesion_rgb[m] = lesion_rgb[m] * 0.45 + 0.55 * np.float32(0.86)
            masks[name] = region
        else:
            k = int(shape_rng.integers(6, 16))
            pr = (0.035 if name == "globules" else 0.028) * max(S, 64) / S * 1.4
            pts = np.argwhere(region)
            if len(pts) == 0:
                masks[name] = region
                continue
            pick = pts[shape_rng.integers(0, len(pts), k)]
            canvas = Image.new("L", (S, S))
            draw = ImageDraw.Draw(canvas)
            rp = pr * S / 2
            for yx in pick:
                draw.ellipse((yx[1] - rp, yx[0] - rp, yx[1] + rp, yx[0] + rp), fill=255)
            dots = np.asarray(canvas) > 0
            colour = PALETTE[2] * 0.6 + PALETTE[1] * 0.4 if name == "globules" else np.array(
                [0.95, 0.93, 0.80], np.float32)
            lesion_rgb[dots] = colour
            masks[name] = region

    # Skin with mottled texture, then the lesion on top.
    skin = skin_rgb[None, None, :] * (1 + 0.05 * _smooth_noise(rng, S, 8))[..., None]
    img = skin * (1 - alpha[..., None]) + lesion_rgb * alpha[..., None]

    # Colourful patch (a round coloured sticker) away from the lesion.
    patch_mask = np.zeros((S, S), bool)
    if patch:
        pr = rng.uniform(0.14, 0.22)
        for _ in range(20):
            ang = rng.uniform(0, 2 * np.pi)
            dist = rng.uniform(0.62, 0.9)
            px, py = cx + dist * np.cos(ang), cy + dist * np.sin(ang)
            if abs(px) < 0.85 and abs(py) < 0.85:
                break
        pd_ = np.hypot(xx - px, yy - py)
        patch_mask = pd_ < pr
        shade = 1 - 0.25 * (pd_ / pr) ** 2
        img[patch_mask] = PATCH_COLOURS[rng.integers(len(PATCH_COLOURS))] * shade[patch_mask, None]

    if clinical:
        # Flash / room light from one side, a colour cast, lower contrast.
        g = rng.uniform(0, 2 * np.pi)
        light = 1 + 0.15 * (xx * np.cos(g) + yy * np.sin(g))
        cast = np.array([1.0 + rng.uniform(0.0, 0.08), 1.0, 1.0 - rng.uniform(0.03, 0.12)], np.float32)
        img = img * light[..., None] * cast
        img = 0.88 * img + 0.12 * img.mean((0, 1), keepdims=True) + 0.03
    else:
        # Dermoscope: circular field of view with dark surround, slight bluish cold light.
        fov = rng.uniform(1.15, 1.45)
        rr = np.hypot(xx, yy)
        vign = np.clip((fov - rr) / 0.08, 0, 1) * (1 - 0.18 * (rr / fov) ** 2)
        img = img * vign[..., None] * np.array([0.97, 0.98, 1.03], np.float32)
    img = img + (rng.random(img.shape, dtype=np.float32) - np.float32(0.5)) * np.float32(0.04)
    out = Image.fromarray((np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8))
    if clinical:
        out = out.filter(ImageFilter.GaussianBlur(radius=0.7 * S / 128))
    return np.asarray(out), seg, masks, patch_mask
