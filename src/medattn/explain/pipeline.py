"""``medattn explain RUNS_DIR``: Table 4 for a study's best runs, plus where the maps put their mass.

Per data set: one example image per class (chosen reproducibly, or given by id) and the mean map
over N images (500 by default, as in the paper), for the best final run of each selected model.
Everything lands under ``RUNS_DIR/analysis/explain/``:

- ``table4.png`` / ``table4.pdf``: the grid (rows = method x model, columns = classes + mean);
- ``<dataset>/<method>__<model>[__block<k>]/``: ``examples.npy`` (n_classes, H, W), ``mean.npy``
  (H, W), ``per_image.csv`` (mass shares per image), ``meta.json``, one PNG per example and
  ``mean.png``;
- ``explain_summary.csv``: share of map mass inside the lesion mask, the patch region, the image
  border and the corners, per data set / method / model / class, with the area shares (chance level).

Each (data set, model) unit is written atomically and skipped when it is already there for the same
run and images, so an interrupted call resumes where it stopped.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from medattn.errors import ConfigError, DataError
from medattn.explain.quantify import border_mask, corner_mask, mass_share

# The paper's Table 4 rows, in its order (absent models are skipped).
DEFAULT_MODELS = (
    "resnet18", "resnet18+ga", "resnet18+ela", "resnet18+ga+ela",
    "efficientnet_b0", "efficientnet_b0+ga", "efficientnet_b0+ela", "efficientnet_b0+ga+ela",
    "vit_tiny_in1k", "vit_tiny_in21k",
)
METHODS = {"gradcam": "Grad-CAM", "ga": "GA map", "rollout": "ViT rollout"}
REGIONS = ("lesion", "patch", "border", "corners")


@dataclass
class Unit:
    """One row of the grid: a method applied to one model's best run on one data set."""

    dataset: str
    method: str  # gradcam | ga | rollout
    model: str
    run_id: str
    block: int | None  # GA block index (1-based), else None
    classes: list[str]
    example_ids: list[str]
    examples: np.ndarray  # (n_examples, H, W) float32 in [0, 1]
    mean: np.ndarray  # (H, W)
    per_image: pd.DataFrame = field(repr=False)  # image_id, label, pred, mass_<region>
    selected_by: str = ""  # "split <seed>" or "best run"
    pool_source: str = ""  # "common test set" or "whole table"

    @property
    def key(self) -> str:
        slug = f"{self.method}__{self.model.replace('+', '-')}"
        return slug if self.block is None else f"{slug}__block{self.block}"


# --------------------------------------------------------------------------------- run selection

def _restrict(done: pd.DataFrame, column: str, wanted, runs_dir) -> pd.DataFrame:
    """Rows of ``done`` whose ``column`` is in ``wanted``; ConfigError naming ``--<column>s`` if a
    wanted value has no finished run."""
    unknown = sorted(set(wanted) - set(done[column]))
    if unknown:
        raise ConfigError(f"--{column}s: no finished runs for {', '.join(unknown)} in {runs_dir}; "
                          f"available: {', '.join(sorted(set(done[column])))}.")
    return done[done[column].isin(wanted)]


def select_runs(runs_dir: str | os.PathLike, models: list[str] | None = None,
                datasets: list[str] | None = None, select: str = "split") -> pd.DataFrame:
    """The run explained per (data set, model), chosen on validation balanced accuracy.

    ``select="best"``: each model's best finished run (final runs preferred over search runs).
    ``select="split"`` (default): the final runs of one split per data set, the split that holds
    runs of the most selected models, ties broken by their mean validation score; a model without a
    run on that split falls back to its best run. With 10 random splits the test sets of each
    model's *best* run barely overlap, so only runs of one split can show every model on the same
    images without showing any model an image it trained on.
    Validation (not test) accuracy keeps the test set out of the choice.

    Returns:
        one row per (dataset, model) with the ``load_records`` columns, in ``DEFAULT_MODELS`` order
        (then the zoo's). Without ``models``: the Table 4 models, or every model of a study
        that has none of them (``resnet50+cbam``, registered models).
    """
    from medattn.training.store import load_records

    if select not in ("split", "best"):
        raise ConfigError(f"--select must be 'split' or 'best', got {select!r}.")
    records = load_records(runs_dir)
    if records.empty:
        raise DataError(f"{Path(runs_dir) / 'runs'}: no run records; train a study first "
                        "(medattn study CONFIG.yaml) or point RUNS_DIR at one.")
    done = records[records["status"] == "done"].copy()
    if models:
        done = _restrict(done, "model", models, runs_dir)
    else:
        # the Table 4 models; a study without them (resnet50+cbam, registered models): all its models
        table4 = done[done["model"].isin(DEFAULT_MODELS)]
        done = table4 if not table4.empty else done
    if datasets:
        done = _restrict(done, "dataset", datasets, runs_dir)
    if done.empty:
        raise DataError(f"{runs_dir}: no run with status 'done' to explain.")
    done["_final"] = done["phase"] == "final"
    score = done["bacc_val"] if "bacc_val" in done else pd.Series(np.nan, index=done.index)
    if "bacc_test" in done:
        score = score.fillna(done["bacc_test"])
    done["_score"] = score.fillna(-1.0)
    from medattn.models import list_models

    order = {m: i for i, m in enumerate(dict.fromkeys([*(models or DEFAULT_MODELS), *list_models()]))}
    done["_order"] = done["model"].map(lambda m: order.get(m, len(order)))
    ranked = done.sort_values(["_final", "_score", "run_id"], ascending=[False, False, True])
    best = ranked.groupby(["dataset", "model"], sort=False).head(1).copy()
    best["selected_by"] = "best run"
    if select == "split":
        chosen = []
        for dataset, rows in best.groupby("dataset", sort=False):
            finals = ranked[(ranked["dataset"] == dataset) & ranked["_final"]]
            if finals.empty:
                chosen.append(rows)
                continue
            per_seed = (finals.groupby(["split_seed", "model"])["_score"].max()
                        .groupby(level=0).agg(["size", "mean"]))
            seed = sorted(per_seed.itertuples(), key=lambda r: (-r.size, -r.mean, r.Index))[0].Index
            on_seed = finals[finals["split_seed"] == seed].groupby("model", sort=False).head(1)
            on_seed = on_seed.assign(selected_by=f"split {seed}")
            chosen += [on_seed, rows[~rows["model"].isin(on_seed["model"])]]
        best = pd.concat(chosen)
    return best.sort_values(["dataset", "_order", "model"]).reset_index(drop=True)


def choose_images(table: pd.DataFrame, candidates: list[str], n_mean: int, seed: int = 0,
                  image_ids: list[str] | None = None) -> tuple[list[str], list[str]]:
    """Example ids (one per class, in class order) and the ids averaged for the mean map.

    Candidates are shuffled with ``seed`` after sorting, so the choice depends only on the data and
    the seed; the first candidate of each class becomes its example unless ``image_ids`` names
    one. A class without candidates gets an empty example id.
    """
    classes = list(table.attrs.get("classes", []))
    labels = table.set_index("image_id")["label"]
    rng = np.random.default_rng(seed)
    pool = list(rng.permutation(sorted(candidates)))
    given = {int(labels[i]): i for i in (image_ids or []) if i in labels.index}
    examples = []
    for c in range(len(classes)):
        if c in given:
            examples.append(given[c])
        else:
            examples.append(next((i for i in pool if int(labels[i]) == c), ""))
    return examples, pool[:n_mean]


# --------------------------------------------------------------------------------- images

class _Images:
    """Decoded images of one data set at one size, kept as uint8 (exact: the eval transform's
    output before normalisation is k / 255), plus their region masks at the same geometry."""

    def __init__(self, table: pd.DataFrame, image_size: int, border: float):
        from medattn.data import build_transform

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
            from medattn.data import read_image

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
                    from medattn.data import read_image

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


def _shares(maps: torch.Tensor, regions: dict[str, list[torch.Tensor | None]]) -> dict[str, np.ndarray]:
    out = {}
    for name, masks in regions.items():
        vals = np.full(len(maps), np.nan)
        for k, m in enumerate(masks):
            if m is not None:
                vals[k] = float(mass_share(maps[k:k + 1], m)[0])
        out[f"mass_{name}"] = vals
    return out


# --------------------------------------------------------------------------------- maps

def _load_model(runs_dir: Path, rec: pd.Series, classes: list[str]) -> torch.nn.Module:
    from medattn.models import create_model

    path = runs_dir / "runs" / rec["run_id"] / "model.safetensors"
    if not path.exists():
        raise DataError(f"{path}: the selected model of run {rec['run_id']} is missing; "
                        "re-run the study to finish it or pass --models without it.")
    from medattn.models import load_checkpoint

    _, meta = load_checkpoint(str(path))
    options = meta.get("options") or {}  # e.g. kernel_size: the model must be rebuilt as trained
    model = create_model(rec["model"], num_classes=len(classes), weights=str(path), **options)
    return model.eval()


def _methods(model: torch.nn.Module) -> list[tuple[str, int | None]]:
    from medattn.explain.attention_maps import ga_blocks

    if model.medattn_spec.kind == "vit":  # the backbone registry says so
        return [("rollout", None)]
    out: list[tuple[str, int | None]] = [("gradcam", None)]
    out += [("ga", k + 1) for k in range(len(ga_blocks(model)))]
    return out


def _explain_batch(model, method: str, x: torch.Tensor) -> list[torch.Tensor]:
    """Maps for one batch: one (B, H, W) per row this method contributes (GA: one per block)."""
    from medattn.explain import ga_maps, gradcam, vit_rollout

    if method == "gradcam":
        return [gradcam(model, x)]
    if method == "ga":
        return ga_maps(model, x)
    return [vit_rollout(model, x)]


def _compute(model, images: _Images, mean, std, examples: list[str], pool: list[str],
             batch_size: int, progress) -> dict[tuple[str, int | None], dict]:
    """Run every method the model supports over examples + pool, accumulating the mean map."""
    rows = _methods(model)
    labels = images.table["label"]
    ex_ids = [i for i in examples if i]
    acc = {r: {"examples": [], "sum": None, "n": 0, "per_image": []} for r in rows}
    ids_all = ex_ids + pool
    n_ex = len(ex_ids)
    for start in range(0, len(ids_all), batch_size):
        ids = ids_all[start:start + batch_size]
        x = images.batch(ids, mean, std)
        with torch.no_grad():
            pred = model(x).argmax(1).tolist()
        regions = images.regions(ids)
        for method in dict.fromkeys(m for m, _ in rows):
            maps = _explain_batch(model, method, x)
            keys = [r for r in rows if r[0] == method]
            for key, m in zip(keys, maps):
                a = acc[key]
                k_ex = max(0, min(len(ids), n_ex - start))
                a["examples"] += list(m[:k_ex])
                in_pool = m[k_ex:]
                if len(in_pool):
                    s = in_pool.sum(0)
                    a["sum"] = s if a["sum"] is None else a["sum"] + s
                    a["n"] += len(in_pool)
                    shares = _shares(in_pool, {k: v[k_ex:] for k, v in regions.items()})
                    frame = pd.DataFrame({"image_id": ids[k_ex:],
                                          "label": [int(labels[i]) for i in ids[k_ex:]],
                                          "pred": pred[k_ex:], **shares})
                    a["per_image"].append(frame)
        progress(len(ids))
    return acc


def _area_shares(images: _Images, ids: list[str]) -> dict[str, float]:
    """Mean area share of each region over the images: what a flat map would score."""
    out = {}
    for name, masks in images.regions(ids).items():
        vals = [float(m.float().mean()) for m in masks if m is not None]
        out[f"area_{name}"] = float(np.mean(vals)) if vals else float("nan")
    return out


def _save_unit(unit: Unit, folder: Path, images: _Images, meta: dict) -> None:
    from medattn.explain.grid import save_overlay
    from medattn.training.store import atomic_write, write_json

    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / "examples.npy", lambda t: _save_npy(t, unit.examples))
    atomic_write(folder / "mean.npy", lambda t: _save_npy(t, unit.mean))
    atomic_write(folder / "per_image.csv", lambda t: unit.per_image.to_csv(t, index=False,
                                                                         float_format="%.6g"))
    for c, (name, iid) in enumerate(zip(unit.classes, unit.example_ids)):
        if iid:
            save_overlay(folder / f"{_slug(name)}_{_slug(iid)}.png", images.image(iid),
                         unit.examples[c])
    save_overlay(folder / "mean.png", None, unit.mean)
    write_json(folder / "meta.json", meta)  # last: its presence marks the unit complete


def _save_npy(tmp: str, arr: np.ndarray) -> None:
    with open(tmp, "wb") as fh:
        np.save(fh, arr, allow_pickle=False)


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in str(text))


def _load_unit(folder: Path, meta: dict, dataset: str, method: str, model: str,
               block: int | None) -> Unit:
    return Unit(dataset=dataset, method=method, model=model, run_id=meta["run_id"], block=block,
                classes=meta["classes"], example_ids=meta["example_ids"],
                examples=np.load(folder / "examples.npy", allow_pickle=False),
                mean=np.load(folder / "mean.npy", allow_pickle=False),
                per_image=pd.read_csv(folder / "per_image.csv", dtype={"image_id": str}),
                selected_by=meta.get("selected_by", ""), pool_source=meta.get("pool_source", ""))


# --------------------------------------------------------------------------------- summary

def summarise(units: list[Unit], areas: dict[str, dict[str, float]]) -> pd.DataFrame:
    """One row per (data set, method, model, block, class): mean mass share per region.

    ``class`` is a class name (images of that true class among the mean-map images) or ``all``.
    ``mass_<region>`` averages over the images that have the region (``n_lesion`` / ``n_patch`` of
    them); ``area_<region>`` is the region's mean area share, the score of a flat map.
    """
    rows = []
    for u in units:
        groups = [("all", u.per_image)]
        groups += [(name, u.per_image[u.per_image["label"] == c]) for c, name in enumerate(u.classes)]
        for cls, frame in groups:
            row = {"dataset": u.dataset, "method": u.method, "model": u.model, "run_id": u.run_id,
                   "selected_by": u.selected_by, "images": u.pool_source,
                   "block": u.block if u.block is not None else "", "class": cls,
                   "n_images": len(frame)}
            for r in REGIONS:
                col = frame.get(f"mass_{r}")
                have = int(col.notna().sum()) if col is not None else 0
                row[f"mass_{r}"] = float(col.mean()) if have else np.nan
                row[f"area_{r}"] = areas[u.dataset].get(f"area_{r}", np.nan)
                if r in ("lesion", "patch"):
                    row[f"n_{r}"] = have  # images that have this region (a mask, a patch)
            rows.append(row)
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------- entry point

def explain_runs(
    runs_dir: str | os.PathLike,
    n_mean: int = 500,
    image_ids: list[str] | None = None,
    models: list[str] | None = None,
    datasets: list[str] | None = None,
    batch_size: int = 32,
    border: float = 0.1,
    seed: int = 0,
    select: str = "split",
    progress: bool = True,
) -> dict[str, Path]:
    """Table 4 for the best run of each model in a study, with its quantitative summary.

    Args:
        runs_dir: a study directory (``RUNS_DIR/runs/<id>/record.json`` ...).
        n_mean: images averaged for the mean map (fewer if the pool is smaller).
        image_ids: example images to use instead of the reproducible choice (one per class;
            ids may come from any of the data sets).
        models: model names to include (default: the paper's Table 4 models that were trained;
            all trained models where none of those were).
        datasets: data-set (task) names to include (default: all).
        batch_size: images per forward pass.
        border: width of the border / corner regions as a fraction of the image side.
        seed: seed of the image choice.
        select: ``split`` (runs of one common split) or ``best`` (each model's best run); see
            :func:`select_runs`.
        progress: show a progress bar.

    Returns:
        paths of the outputs: ``png``, ``pdf``, ``summary`` (CSV) and ``dir``.
    """
    from medattn.progress import progress_bar

    from medattn.data import load_dataset
    from medattn.explain.grid import draw_table4
    from medattn.training.store import atomic_write, write_json

    if n_mean < 1:
        raise ConfigError(f"--n-mean must be at least 1, got {n_mean}.")
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {batch_size}.")
    runs_dir = Path(runs_dir)
    out = runs_dir / "analysis" / "explain"
    best = select_runs(runs_dir, models, datasets, select)

    units: list[Unit] = []
    areas: dict[str, dict[str, float]] = {}
    meta_tables: dict[str, pd.DataFrame] = {}
    examples_by_ds: dict[str, tuple[list[str], list[str], list[str]]] = {}
    found_ids: set[str] = set()
    sources: dict[str, str] = {}
    plans = []
    for dataset, runs in best.groupby("dataset", sort=False):
        first = runs.iloc[0]
        table = load_dataset(str(first["data"]))
        classes = list(table.attrs.get("classes", []))
        candidates, source = _common_test_ids(runs_dir, runs, table)
        examples, pool = choose_images(table, candidates, n_mean, seed, image_ids)
        found_ids |= set(image_ids or []) & set(table["image_id"])
        meta_tables[dataset] = table
        examples_by_ds[dataset] = (classes, examples, pool)
        sources[dataset] = source
        plans += [(dataset, rec) for _, rec in runs.iterrows()]
    missing = sorted(set(image_ids or []) - found_ids)
    if missing:
        raise ConfigError(f"--image-ids: {', '.join(missing)} not found in the studied data sets.")

    total = sum(len([e for e in examples_by_ds[d][1] if e]) + len(examples_by_ds[d][2])
                for d, _ in plans)
    bar = progress_bar(total=total, desc="explain", unit="img", disable=not progress)
    image_cache: dict[tuple[str, int], _Images] = {}
    for dataset, rec in plans:
        classes, examples, pool = examples_by_ds[dataset]
        size = int(rec["image_size"])
        images = image_cache.get((dataset, size))
        if images is None:
            images = image_cache[(dataset, size)] = _Images(meta_tables[dataset], size, border)
        areas.setdefault(dataset, _area_shares(images, pool))
        meta = {"run_id": rec["run_id"], "model": rec["model"], "classes": classes,
                "example_ids": examples, "pool": pool, "image_size": size, "border": border,
                "selected_by": rec["selected_by"], "pool_source": sources[dataset]}
        model_dir = out / _slug(dataset)
        done = _resume(model_dir, meta, dataset, rec["model"])
        if done is not None:
            units += done
            bar.update(len([e for e in examples if e]) + len(pool))
            continue
        model = _load_model(runs_dir, rec, classes)
        cfg = getattr(model, "pretrained_cfg", None) or {}
        mean, std = cfg.get("mean", (0.485, 0.456, 0.406)), cfg.get("std", (0.229, 0.224, 0.225))
        acc = _compute(model, images, mean, std, examples, pool, batch_size, bar.update)
        keys = []
        for (method, block), a in acc.items():
            ex = iter(a["examples"])
            ex_maps = np.stack([next(ex).numpy() if e else np.full((size, size), np.nan, np.float32)
                                for e in examples]).astype(np.float32)
            unit = Unit(dataset, method, rec["model"], rec["run_id"], block, classes, examples,
                        ex_maps, (a["sum"] / max(a["n"], 1)).numpy().astype(np.float32),
                        pd.concat(a["per_image"], ignore_index=True), rec["selected_by"],
                        sources[dataset])
            _save_unit(unit, model_dir / unit.key, images, {**meta, "method": method, "block": block})
            units.append(unit)
            keys.append(unit.key)
        # written last: marks every unit of this model complete, for resuming
        write_json(model_dir / f"{rec['model'].replace('+', '-')}.done.json", {**meta, "units": keys})
    bar.close()

    summary = summarise(units, areas)
    atomic_write(out / "explain_summary.csv",
                 lambda t: summary.to_csv(t, index=False, float_format="%.4f"))
    mean_images = {d: _mean_image(image_cache, d, examples_by_ds[d][2]) for d in examples_by_ds}
    display = {(d, i): c.image(i) for (d, _), c in image_cache.items()
               for i in examples_by_ds[d][1] if i}
    png, pdf = out / "table4.png", out / "table4.pdf"
    draw_table4(units, display, mean_images, png, pdf)
    return {"png": png, "pdf": pdf, "summary": out / "explain_summary.csv", "dir": out}


def _common_test_ids(runs_dir: Path, runs: pd.DataFrame, table: pd.DataFrame) -> tuple[list[str], str]:
    """Images in the test set of every selected run (so no map is drawn on a training image), and
    where they came from; the whole table (with a warning) when predictions are missing or the test
    sets do not overlap."""
    import warnings

    from medattn.training.store import read_predictions

    everything = table["image_id"].astype(str).tolist()
    common: set[str] | None = None
    for run_id in runs["run_id"]:
        try:
            ids = set(read_predictions(runs_dir, run_id, "test")["image_id"].astype(str))
        except DataError:
            warnings.warn(f"run {run_id} has no test predictions: explaining images from the whole "
                          "table, training images included", stacklevel=3)
            return everything, "whole table"
        common = ids if common is None else common & ids
    common = (common or set()) & set(everything)
    if not common:
        warnings.warn(f"the test sets of runs {', '.join(runs['run_id'])} share no image: explaining "
                      "images from the whole table, training images included (--select split avoids "
                      "this)", stacklevel=3)
        return everything, "whole table"
    return sorted(common), "common test set"


def _resume(model_dir: Path, meta: dict, dataset: str, model: str) -> list[Unit] | None:
    """The saved units of this model when its completion marker matches ``meta``."""
    marker = model_dir / f"{model.replace('+', '-')}.done.json"
    try:
        saved = json.loads(marker.read_text())
    except (OSError, ValueError):
        return None
    if any(saved.get(k) != v for k, v in meta.items()):
        return None
    units = []
    for key in saved["units"]:
        folder = model_dir / key
        try:
            unit_meta = json.loads((folder / "meta.json").read_text())
            units.append(_load_unit(folder, unit_meta, dataset, unit_meta["method"], model,
                                    unit_meta["block"]))
        except (OSError, ValueError, KeyError):
            return None
    return units


def _mean_image(cache: dict, dataset: str, pool: list[str]) -> torch.Tensor | None:
    for (d, _), images in cache.items():
        if d == dataset and pool:
            return torch.stack([images.image(i).float() for i in pool]).mean(0).round().to(torch.uint8)
    return None
