"""The report's figures; each function returns a matplotlib Figure or None.

Balanced accuracies are plotted in percent. Every axis has a label with its unit and every figure
with several series a legend, so a figure can be read on its own. Figures are
:class:`matplotlib.figure.Figure` objects, not pyplot's, and the report's style is applied with
:func:`matplotlib.rc_context` while one is drawn: importing or using this module changes neither
the backend nor ``rcParams`` of the program that calls it (a notebook keeps its own).
"""

from __future__ import annotations

import functools
import io
import textwrap

import matplotlib
import matplotlib.ticker
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from medattn.models import registry as R

__all__ = ["bacc_dots", "confusion_grid", "hp_heatmaps", "model_label", "styled", "subplots",
           "to_png", "training_curves"]

# one colour (dots) and line style (curves) per backbone present, in table order
_COLORS = ("#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf", "#7f7f7f")
_STYLES = ("-", "--", ":", "-.")
_STYLE = {"font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10, "figure.dpi": 100}
_DPI = 110  # of the PNGs


def styled(draw):
    """Decorator: draw a figure under the report's style, leaving the caller's rcParams as they
    were (every figure function of the report uses it)."""
    @functools.wraps(draw)
    def wrapper(*args, **kwargs):
        with matplotlib.rc_context(_STYLE):
            return draw(*args, **kwargs)
    return wrapper


def subplots(*grid: int, figsize: tuple[float, float], layout: str = "constrained", **kw):
    """``(Figure, axes)`` without pyplot: nothing registered globally, nothing to close."""
    fig = Figure(figsize=figsize, layout=layout)
    return fig, fig.subplots(*grid, **kw)


def model_label(backbone: str, variant: str) -> str:
    """Short display name: ``ResNet18 +GA``, ``EffNet-B0 base``, ``ViT-21k``."""
    return R.model_label(backbone, variant, short=True)


def _model_key(backbone: str, variant: str) -> tuple:
    return (R.backbone_rank(backbone), backbone, R.variant_rank(variant), variant)


def to_png(fig) -> bytes:
    """Render a figure to PNG bytes."""
    buf = io.BytesIO()
    with matplotlib.rc_context(_STYLE):  # constrained layout already fits the labels
        fig.savefig(buf, format="png", dpi=_DPI)
    return buf.getvalue()


@styled
def bacc_dots(runs: pd.DataFrame, set_name: str, title: str):
    """Box plot plus one dot per run of balanced accuracy (%) per model.

    ``runs``: long form of one data set and set (``backbone, model, bacc_pct, included, status``).
    Excluded (diverged) runs are drawn as red crosses and are not part of the boxes.
    """
    if runs.empty:
        return None
    models = sorted({(b, m) for b, m in zip(runs.backbone, runs.model)}, key=lambda k: _model_key(*k))
    fig, ax = subplots(figsize=(max(6.0, 0.75 * len(models) + 2), 4.2),
                           layout="constrained")
    rng = np.random.default_rng(0)
    inc_any = exc_any = False
    excluded = []
    for i, (bb, var) in enumerate(models):
        sel = runs[(runs.backbone == bb) & (runs.model == var)]
        inc = sel[sel.included.astype(bool)].bacc_pct.to_numpy(float)
        exc = sel[~sel.included.astype(bool)].bacc_pct.to_numpy(float)
        color = _COLORS[list(dict.fromkeys(b for b, _ in models)).index(bb) % len(_COLORS)]
        if inc.size:
            ax.boxplot([inc], positions=[i], widths=0.55, showfliers=False,
                       medianprops={"color": "black"}, boxprops={"color": color},
                       whiskerprops={"color": color}, capprops={"color": color})
            ax.scatter(i + rng.uniform(-0.15, 0.15, inc.size), inc, s=18, color=color, alpha=0.8,
                       zorder=3, label="run (included)" if not inc_any else None)
            inc_any = True
        if exc.size:
            excluded.append((i, exc))
    # Scale the axis to the included runs; excluded runs far outside (a diverged run at chance)
    # sit on the axis edge with their value written beside them, so the boxes stay readable.
    inc_all = runs[runs.included.astype(bool)].bacc_pct.to_numpy(float)
    if inc_all.size:
        lo, hi = float(inc_all.min()), float(inc_all.max())
        pad = max(1.0, 0.12 * (hi - lo))
        ax.set_ylim(lo - pad, hi + pad)
    y0, y1 = ax.get_ylim()
    for i, exc in excluded:
        for v in exc:
            y = min(max(v, y0), y1)
            off = v < y0 or v > y1
            ax.scatter([i], [y], marker=("v" if v < y0 else "^") if off else "x", s=45,
                       color="#d62728", zorder=4, clip_on=False,
                       label="excluded run (diverged)" if not exc_any else None)
            if off:
                ax.annotate(f"{v:.1f}", (i, y), xytext=(7, 4 if v > y1 else 2),
                            textcoords="offset points", color="#d62728", fontsize=9,
                            bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.5})
            exc_any = True
    ax.set_xticks(range(len(models)), [model_label(*k) for k in models], rotation=35, ha="right")
    ax.set_ylabel("balanced accuracy (%)")
    ax.set_xlabel("model")
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    return fig


@styled
def training_curves(records: list[dict], title: str):
    """Validation balanced accuracy (%) and training loss per epoch, mean over final runs per model."""
    per_model: dict[tuple, list[pd.DataFrame]] = {}
    for rec in records:
        hist = pd.DataFrame(rec.get("history") or [])
        if hist.empty or "epoch" not in hist:
            continue
        per_model.setdefault((rec.get("backbone"), rec.get("variant")), []).append(hist)
    if not per_model:
        return None
    fig, (a1, a2) = subplots(1, 2, figsize=(12, 4.2), layout="constrained")
    # Colour = attention variant, line style = backbone, so 14 models stay distinguishable.
    cmap = matplotlib.colormaps["tab10"]
    keys = sorted(per_model, key=lambda k: _model_key(*k))
    backbones = list(dict.fromkeys(k[0] for k in keys))
    variants = sorted({k[1] for k in keys}, key=lambda v: (R.variant_rank(v), v))
    for key in keys:
        h = pd.concat(per_model[key]).groupby("epoch").mean(numeric_only=True)
        v = variants.index(key[1])
        style = {"color": cmap(v % 10), "linestyle": _STYLES[backbones.index(key[0]) % len(_STYLES)],
                 "label": f"{model_label(*key)} (n={len(per_model[key])})",
                 "marker": "o", "markersize": 3}
        if "val_balanced_accuracy" in h:
            a1.plot(h.index, 100 * h["val_balanced_accuracy"], **style)
        if "train_loss" in h:
            a2.plot(h.index, h["train_loss"], **style)
    a1.set(xlabel="epoch", ylabel="validation balanced accuracy (%)",
           title=f"{title}: validation balanced accuracy")
    a2.set(xlabel="epoch", ylabel="training loss (cross-entropy)", title=f"{title}: training loss")
    for a in (a1, a2):
        a.grid(alpha=0.3)
        a.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    a2.legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=8, title="model (runs)")
    return fig


@styled
def confusion_grid(records: list[dict], set_name: str, classes: list[str], title: str):
    """Row-normalised confusion matrices (% of true class), summed over final runs, one per model."""
    mats: dict[tuple, np.ndarray] = {}
    for rec in records:
        cm = ((rec.get("metrics") or {}).get(set_name) or {}).get("confusion_matrix")
        if cm is None:
            continue
        key = (rec.get("backbone"), rec.get("variant"))
        mats[key] = mats.get(key, 0) + np.asarray(cm, dtype=float)
    if not mats:
        return None
    keys = sorted(mats, key=lambda k: _model_key(*k))
    k = len(classes)
    ncol = min(4, len(keys))
    nrow = -(-len(keys) // ncol)
    size = 1.0 + 0.55 * k
    fig, axes = subplots(nrow, ncol, figsize=(size * ncol + 1.2, size * nrow + 0.6),
                             squeeze=False, layout="constrained")
    im = None
    for ax, key in zip(axes.flat, keys):
        m = mats[key]
        pct = 100 * m / np.maximum(m.sum(axis=1, keepdims=True), 1)
        im = ax.imshow(pct, vmin=0, vmax=100, cmap="Blues")
        for (r, c), v in np.ndenumerate(pct):
            ax.text(c, r, f"{v:.0f}", ha="center", va="center", fontsize=8,
                    color="white" if v > 60 else "black")
        ax.set_xticks(range(k), classes, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(k), classes, fontsize=8)
        ax.set_title(model_label(*key), fontsize=9)
        ax.set_xlabel("predicted", fontsize=8)
        ax.set_ylabel("true", fontsize=8)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    # wrapped to the figure's width: one model's grid is narrow and clipped a one-line title
    fig.suptitle(textwrap.fill(f"{title} (% of each true class, summed over final runs)",
                               max(24, int(fig.get_figwidth() * 9))))
    if im is not None:
        fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.8, label="% of true class")
    return fig


@styled
def hp_heatmaps(records: list[dict], title: str, selected: pd.DataFrame | None = None):
    """Mean validation balanced accuracy (%) over the lr x weight-decay grid, one panel per model.

    ``records``: search-phase records of one data set. ``selected``: optional rows
    ``model, lr, weight_decay`` whose cell is outlined (the chosen setting).
    """
    rows = []
    for rec in records:
        v = ((rec.get("metrics") or {}).get("val") or {}).get("balanced_accuracy")
        rows.append({"backbone": rec.get("backbone"), "variant": rec.get("variant"),
                     "model": rec.get("model"), "lr": rec.get("lr"),
                     "wd": rec.get("weight_decay"),
                     "bacc_pct": np.nan if v is None else 100 * v})
    df = pd.DataFrame(rows)
    if df.empty or df[["lr", "wd"]].isna().all().any():
        return None
    keys = sorted({(b, v) for b, v in zip(df.backbone, df.variant)}, key=lambda k: _model_key(*k))
    lrs, wds = sorted(df.lr.dropna().unique()), sorted(df.wd.dropna().unique())
    ncol = min(4, len(keys))
    nrow = -(-len(keys) // ncol)
    fig, axes = subplots(nrow, ncol, figsize=(max(7.0, 0.9 * len(wds) * ncol + 2.5),
                                                 0.65 * len(lrs) * nrow + 1.5 * nrow + 0.5),
                             squeeze=False, layout="constrained")
    vmin, vmax = np.nanmin(df.bacc_pct), np.nanmax(df.bacc_pct)
    im = None
    for ax, key in zip(axes.flat, keys):
        sub = df[(df.backbone == key[0]) & (df.variant == key[1])]
        grid = (sub.groupby(["lr", "wd"]).bacc_pct.mean().unstack("wd")
                .reindex(index=lrs, columns=wds))
        im = ax.imshow(grid.to_numpy(float), vmin=vmin, vmax=vmax, cmap="viridis", aspect="auto")
        for (r, c), v in np.ndenumerate(grid.to_numpy(float)):
            if np.isfinite(v):
                ax.text(c, r, f"{v:.1f}", ha="center", va="center", fontsize=8,
                        color="black" if v > vmin + 0.6 * (vmax - vmin) else "white")
        if selected is not None and len(sub):
            pick = selected[selected.model == sub.model.iloc[0]]
            for _, s in pick.iterrows():
                if s.lr in lrs and s.weight_decay in wds:
                    ax.add_patch(Rectangle((wds.index(s.weight_decay) - 0.5, lrs.index(s.lr) - 0.5),
                                           1, 1, fill=False, edgecolor="red", linewidth=3))
        ax.set_xticks(range(len(wds)), [f"{w:g}" for w in wds], fontsize=8)
        ax.set_yticks(range(len(lrs)), [f"{x:g}" for x in lrs], fontsize=8)
        ax.set_xlabel("weight decay", fontsize=9)
        ax.set_ylabel("learning rate", fontsize=9)
        ax.set_title(model_label(*key), fontsize=9)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    sel_note = " (red box: selected)" if selected is not None and len(selected) else ""
    fig.suptitle(f"{title}: mean validation balanced accuracy\nover the search splits{sel_note}")
    if im is not None:
        fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.8,
                     label="validation balanced accuracy (%)")
    return fig
