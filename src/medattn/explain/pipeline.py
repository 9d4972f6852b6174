"""``medattn explain RUNS_DIR``: Table 4 for a study's chosen runs, plus where the maps put their mass.

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
run (the same model file and record, by SHA-256) and images, so an interrupted call resumes where
it stopped (``units.py``).

Settings: :class:`~medattn.explain.settings.ExplainSettings` (recorded in
``analysis/explain/settings.json``). Steps: :func:`select_runs` (which run per data set and model)
and :func:`plan_datasets` (a :class:`DatasetPlan` per data set: its table, examples and pool;
``plan.py``); ``_explain_run`` (the maps of one run); :func:`write_outputs` (summary and grid).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from medattn.errors import ArgumentError, DataError
from medattn.explain.attention_maps import ga_blocks, ga_maps
from medattn.explain.grid import draw_table4
from medattn.explain.gradcam import gradcam
from medattn.explain.images import REGIONS, ExplainImages, region_shares
from medattn.explain.plan import DatasetPlan, choose_images, plan_datasets
from medattn.explain.rollout import vit_rollout
from medattn.explain.settings import CHOICES, ExplainSettings
from medattn.explain.units import Unit, load_units, save_units, slug, summarise
from medattn.models import create_model, list_models, load_checkpoint
from medattn.progress import progress_bar
from medattn.runs.atomic import atomic_write, write_error, write_json
from medattn.runs.hint import check_runs_dir
from medattn.runs.records import best_runs
from medattn.runs.store import final_runs

# The paper's Table 4 rows, in its order (absent models are skipped).
DEFAULT_MODELS = (
    "resnet18", "resnet18+ga", "resnet18+ela", "resnet18+ga+ela",
    "efficientnet_b0", "efficientnet_b0+ga", "efficientnet_b0+ela", "efficientnet_b0+ga+ela",
    "vit_tiny_in1k", "vit_tiny_in21k",
)
METHODS = {"gradcam": "Grad-CAM", "ga": "GA map", "rollout": "ViT rollout"}
__all__ = ["DEFAULT_MODELS", "METHODS", "REGIONS", "DatasetPlan", "ExplainResult",
           "ExplainSettings", "Unit", "choose_images", "explain_runs", "plan_datasets",
           "select_runs", "summarise"]


# --------------------------------------------------------------------------------- run selection

def _restrict(done: pd.DataFrame, column: str, wanted, runs_dir) -> pd.DataFrame:
    """Rows of ``done`` whose ``column`` is in ``wanted``; an ArgumentError naming the argument
    (``models``, ``datasets``) if a wanted value has no finished run."""
    unknown = sorted(set(wanted) - set(done[column]))
    if unknown:
        arg = f"{column}s"
        raise ArgumentError(f"{{{arg}}}: no finished runs for {', '.join(unknown)} in "
                            f"{runs_dir}; available: {', '.join(sorted(set(done[column])))}.",
                            arg)
    return done[done[column].isin(wanted)]


def select_runs(runs_dir: str | os.PathLike, *, models: list[str] | None = None,
                datasets: list[str] | None = None, choose: str = "split") -> pd.DataFrame:
    """The run explained per (data set, model), among the finished final runs of the current
    selection (:func:`medattn.runs.store.final_runs`), chosen on validation balanced accuracy.

    ``choose="best"``: each model's best run (:func:`medattn.runs.records.best_runs`).
    ``choose="split"`` (default): the runs of one split per data set, the split that holds
    runs of the most selected models, ties broken by their mean validation score; a model without a
    run on that split falls back to its best run. With 10 random splits the test sets of each
    model's *best* run barely overlap, so only runs of one split can show every model on the same
    images without showing any model an image it trained on.
    Validation (not test) accuracy keeps the test set out of the choice.

    Returns:
        one row per (dataset, model) with the ``load_records`` columns and ``selected_by``, in
        ``DEFAULT_MODELS`` order (or the order of ``models``; then the zoo's). Without ``models``:
        the Table 4 models, or every model of a study that has none of them (``resnet50+cbam``,
        registered models).
    """
    if choose not in CHOICES:
        raise ArgumentError(f"{{choose}} must be 'split' or 'best', got {choose!r}.", "choose")
    finals = final_runs(runs_dir)
    if finals.current.empty:
        raise DataError(f"{Path(runs_dir) / 'runs'}: no final runs of the current selection; "
                        "train a study first (medattn study CONFIG.yaml) or point RUNS_DIR at one.")
    done = finals.done().copy()
    if models:
        done = _restrict(done, "model", models, runs_dir)
    else:
        # the Table 4 models; a study without them (resnet50+cbam, registered models): all its models
        table4 = done[done["model"].isin(DEFAULT_MODELS)]
        done = table4 if not table4.empty else done
    if datasets:
        done = _restrict(done, "dataset", datasets, runs_dir)
    if done.empty:
        raise DataError(f"{runs_dir}: no final run with status 'done' to explain.")
    best = best_runs(done, ("dataset", "model")).assign(selected_by="best run")
    if choose == "split":
        best = pd.concat([_on_one_split(done[done["dataset"] == ds], rows)
                          for ds, rows in best.groupby("dataset", sort=False)])
    order = {m: i for i, m in enumerate(dict.fromkeys([*(models or DEFAULT_MODELS),
                                                       *list_models()]))}
    best["_order"] = best["model"].map(lambda m: order.get(m, len(order)))
    return (best.sort_values(["dataset", "_order", "model"]).drop(columns="_order")
            .reset_index(drop=True))


def _on_one_split(done: pd.DataFrame, best: pd.DataFrame) -> pd.DataFrame:
    """``best`` (one data set's best run per model) moved onto the split seed that holds runs of
    the most models (ties: the higher mean validation score, then the lower seed)."""
    seeded = done[done["split_seed"].notna()]
    if seeded.empty:
        return best
    per_seed = (best_runs(seeded, ("split_seed", "model"))
                .assign(_score=lambda f: f["bacc_val"].fillna(-1.0) if "bacc_val" in f else -1.0)
                .groupby("split_seed")["_score"].agg(["size", "mean"]))
    seed = sorted(per_seed.itertuples(), key=lambda r: (-r.size, -r.mean, r.Index))[0].Index
    on_seed = best_runs(seeded[seeded["split_seed"] == seed], ("model",))
    on_seed = on_seed.assign(selected_by=f"split {int(seed)}")
    return pd.concat([on_seed, best[~best["model"].isin(on_seed["model"])]])


# --------------------------------------------------------------------------------- maps

def _load_model(runs_dir: Path, rec: pd.Series, classes: list[str]) -> torch.nn.Module:
    path = runs_dir / "runs" / rec["run_id"] / "model.safetensors"
    if not path.exists():
        raise DataError(f"{path}: the selected model of run {rec['run_id']} is missing; "
                        "re-run the study to finish it, or explain the other models (the "
                        "models argument; `medattn explain --models`).")
    _, meta = load_checkpoint(str(path))
    options = meta.get("options") or {}  # e.g. kernel_size: the model must be rebuilt as trained
    model = create_model(rec["model"], num_classes=len(classes), weights=str(path), **options)
    return model.eval()


def _methods(model: torch.nn.Module) -> list[tuple[str, int | None]]:
    if model.medattn_spec.kind == "vit":  # the backbone registry says so
        return [("rollout", None)]
    out: list[tuple[str, int | None]] = [("gradcam", None)]
    out += [("ga", k + 1) for k in range(len(ga_blocks(model)))]
    return out


def _explain_batch(model, method: str, x: torch.Tensor) -> list[torch.Tensor]:
    """Maps for one batch: one (B, H, W) per row this method contributes (GA: one per block)."""
    if method == "gradcam":
        return [gradcam(model, x)]
    if method == "ga":
        return ga_maps(model, x)
    return [vit_rollout(model, x)]


def _compute(model, images: ExplainImages, mean, std, examples: list[str], pool: list[str],
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
                    shares = region_shares(in_pool, {k: v[k_ex:] for k, v in regions.items()})
                    frame = pd.DataFrame({"image_id": ids[k_ex:],
                                          "label": [int(labels[i]) for i in ids[k_ex:]],
                                          "pred": pred[k_ex:], **shares})
                    a["per_image"].append(frame)
        progress(len(ids))
    return acc


def _explain_run(plan: DatasetPlan, rec: pd.Series, runs_dir: Path, batch_size: int,
                 progress) -> list[Unit]:
    """The compute step for one selected run: every map its model supports on the plan's
    examples and pool (one :class:`Unit` per method and GA block)."""
    size = int(rec["image_size"])
    model = _load_model(runs_dir, rec, plan.classes)
    cfg = getattr(model, "pretrained_cfg", None) or {}
    mean, std = cfg.get("mean", (0.485, 0.456, 0.406)), cfg.get("std", (0.229, 0.224, 0.225))
    acc = _compute(model, plan.images(size), mean, std, plan.examples, plan.pool, batch_size,
                   progress)
    units = []
    for (method, block), a in acc.items():
        ex = iter(a["examples"])
        ex_maps = np.stack([next(ex).numpy() if e else np.full((size, size), np.nan, np.float32)
                            for e in plan.examples]).astype(np.float32)
        units.append(Unit(plan.dataset, method, rec["model"], rec["run_id"], block, plan.classes,
                          plan.examples, ex_maps,
                          (a["sum"] / max(a["n"], 1)).numpy().astype(np.float32),
                          pd.concat(a["per_image"], ignore_index=True), rec["selected_by"],
                          plan.pool_source))
    return units


def _inputs(runs_dir: Path, run_id: str) -> dict[str, str | None]:
    """Fingerprints (SHA-256) of the run's files the maps are computed from, None where absent:
    saved maps of a model file that was replaced or truncated since are not re-used."""
    out: dict[str, str | None] = {}
    for name in ("model.safetensors", "record.json"):
        path = runs_dir / "runs" / run_id / name
        try:
            with open(path, "rb") as fh:
                out[name] = hashlib.file_digest(fh, "sha256").hexdigest()
        except FileNotFoundError:
            out[name] = None
        except OSError as err:
            raise write_error(err, path, "read") from None
    return out


def _unit_meta(plan: DatasetPlan, rec: pd.Series, runs_dir: Path) -> dict:
    """What a run's saved units must match to be re-used (the run and its files, the images,
    the settings)."""
    return {"run_id": rec["run_id"], "model": rec["model"], "classes": plan.classes,
            "example_ids": plan.examples, "pool": plan.pool, "image_size": int(rec["image_size"]),
            "border": plan.border, "selected_by": rec["selected_by"],
            "pool_source": plan.pool_source, "inputs": _inputs(runs_dir, rec["run_id"])}


def write_outputs(out: Path, plans: list[DatasetPlan], units: list[Unit]) -> dict[str, Path]:
    """The write step: ``explain_summary.csv`` and the Table 4 grid (PNG and PDF) under ``out``."""
    summary = summarise(units, {p.dataset: p.areas() for p in plans})
    atomic_write(out / "explain_summary.csv",
                 lambda t: summary.to_csv(t, index=False, float_format="%.4f"))
    display = {k: v for p in plans for k, v in p.display().items()}
    png, pdf = out / "table4.png", out / "table4.pdf"
    draw_table4(units, display, {p.dataset: p.mean_image() for p in plans}, png, pdf)
    return {"png": png, "pdf": pdf, "summary": out / "explain_summary.csv", "dir": out}


# --------------------------------------------------------------------------------- entry point

@dataclass
class ExplainResult:
    """What :func:`explain_runs` wrote: ``paths`` (``png``, ``pdf``: the Table 4 grid;
    ``summary``: ``explain_summary.csv``; ``settings``: ``settings.json``; ``dir``: the folder),
    the runs explained (``runs``: one row per data set and model, with ``selected_by``) and the
    settings (as recorded)."""

    paths: dict[str, Path]
    runs: pd.DataFrame
    settings: dict = field(default_factory=dict)


def explain_runs(
    runs_dir: str | os.PathLike,
    *,
    settings: ExplainSettings = ExplainSettings(),
    models: list[str] | None = None,
    datasets: list[str] | None = None,
    batch_size: int = 32,
    progress: bool = True,
) -> ExplainResult:
    """Table 4 for the chosen run of each model in a study, with its quantitative summary.

    Three steps: select the runs (:func:`select_runs`) and plan each data set's images
    (:func:`plan_datasets`); compute every selected run's maps, re-using the units a previous call
    saved for the same run and images; write the summary, the grid (:func:`write_outputs`) and
    the settings.

    Args:
        runs_dir: a study directory (``RUNS_DIR/runs/<id>/record.json`` ...).
        settings: the mean map's size, how runs are chosen, the example images, the border
            width and the seed (:class:`~medattn.explain.settings.ExplainSettings`).
        models: model names to include (default: the paper's Table 4 models that were trained;
            all trained models where none of those were).
        datasets: data-set names to include (the study config's names; default: all).
        batch_size: images per forward pass.
        progress: show a progress bar.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ArgumentError(f"{{batch_size}} must be a whole number >= 1, got {batch_size!r}.",
                            "batch_size")
    runs_dir = check_runs_dir(runs_dir)
    out = runs_dir / "analysis" / "explain"
    chosen = select_runs(runs_dir, models=models, datasets=datasets, choose=settings.choose)
    ids = list(settings.image_ids) if settings.image_ids is not None else None
    plans = plan_datasets(runs_dir, chosen, settings.n_mean, settings.seed, ids, settings.border)

    bar = progress_bar(total=sum(p.n_images * len(p.runs) for p in plans), desc="explain",
                       unit="img", disable=not progress)
    units: list[Unit] = []
    for plan in plans:
        model_dir = out / slug(plan.dataset)
        for _, rec in plan.runs.iterrows():
            plan.images(int(rec["image_size"]))  # the areas and the grid's images need it
            meta = _unit_meta(plan, rec, runs_dir)
            done = load_units(model_dir, meta, plan.dataset)
            if done is None:
                done = _explain_run(plan, rec, runs_dir, batch_size, bar.update)
                save_units(model_dir, done, plan.images(int(rec["image_size"])), meta)
            else:
                bar.update(plan.n_images)
            units += done
    bar.close()
    paths = write_outputs(out, plans, units)
    recorded = settings.as_dict()
    paths["settings"] = write_json(out / "settings.json", recorded)
    return ExplainResult(paths, chosen, recorded)
