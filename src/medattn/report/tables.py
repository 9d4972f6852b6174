"""The report's tables: Table 1 (parameters), run status (diverged / failed / missing), versions,
hyper-parameter selection; plus writers for CSV and LaTeX copies."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pandas as pd

from medattn.errors import ConfigError
from medattn.models import registry as R
from medattn.render import latex_table
from medattn.runs.atomic import write_text

# The model zoo (torch, timm) and the study (torch) are imported inside the functions that need
# them: the report's other tables and `medattn compare` read only the torch-free registry.

__all__ = ["expected_runs", "model_name_label", "run_problems", "selection_table", "table1",
           "trained_rows",
           "versions_table", "write_table"]


def model_name_label(name: str) -> str:
    """The registry's label of a model name (``resnet18+ga`` -> ``ResNet18 +GA``); the name
    itself where no registered model has it (a plugin's this process does not load)."""
    from medattn.models import parse_model_name  # start-up time: see the top of the module

    try:
        spec = parse_model_name(str(name))
    except ConfigError:
        return str(name)
    return R.model_label(spec.backbone, spec.variant)


def table1(num_classes: int = 3, models: list[str] | None = None) -> pd.DataFrame:
    """Table 1 for display: parameters (millions, the paper's counting) and change vs the base.
    Rows: the paper's 14 models and ``models`` (a study's), in the zoo's order; names no
    registered model builds are left out."""
    from medattn.models import list_models, parameter_table, parse_model_name  # (start-up time)

    wanted = set(list_models(paper_only=True))
    for name in models or ():
        try:
            wanted.add(parse_model_name(name).name)
        except ConfigError:  # a model registered by a plugin this process does not load
            pass
    t = parameter_table(num_classes=num_classes, models=[m for m in list_models() if m in wanted])
    return pd.DataFrame({
        "model": [R.model_label(b, v) for b, v in zip(t.backbone, t.variant)],
        "parameters (M), paper's counting": [f"{x:.2f}" for x in t.params_paper_m],
        "change vs base (%)": ["" if pd.isna(x) else f"{x:+.2f}" for x in t.rel_change_pct],
        "parameters (M), all tensors": [f"{x:.2f}" for x in t.params_full_m],
    })


def trained_rows(t1: pd.DataFrame, model_names: list[str]) -> pd.DataFrame:
    """The rows of :func:`table1` (``model``: the registry's label) of the models named."""
    from medattn.models import parse_model_name  # start-up time: see the top of the module

    labels = set()
    for name in model_names:
        try:
            spec = parse_model_name(str(name))
        except ConfigError:
            continue
        labels.add(R.model_label(spec.backbone, spec.variant))
    return t1[t1["model"].isin(labels)].reset_index(drop=True)


def selection_table(selection: pd.DataFrame) -> pd.DataFrame:
    """``selection.csv`` for display: models by label, how each setting was chosen in words
    (``no search: one setting`` for a one-point grid) instead of a NaN score over 0 runs."""
    from medattn.training.study import selection_note  # start-up time: it imports torch

    sel = selection.copy()
    if {"source", "mean_val_bacc", "n_runs"} <= set(sel.columns):
        sel["chosen by"] = [selection_note(*r) for r in zip(sel["source"], sel["mean_val_bacc"],
                                                             sel["n_runs"])]
        sel = sel.drop(columns=["mean_val_bacc", "n_runs", "source"])
    if "model" in sel:
        sel["model"] = [model_name_label(m) for m in sel["model"]]
    return sel


def expected_runs(config: dict) -> pd.DataFrame:
    """Runs a study config asks for: ``dataset, model, phase, expected`` (from study.yaml)."""
    rows = []
    search = config.get("search") or {}
    grid = len(search.get("lr") or []) * len(search.get("weight_decay") or [])
    # As training.study.search_specs: a one-point grid and models with fixed hparams skip search.
    n_search = grid * int(search.get("splits") or 0) if grid > 1 else 0
    fixed = set((config.get("hparams") or {}).keys())
    final = config.get("final") or {}
    n_final = (int(final.get("folds") or 0) * int(final.get("repeats") or 0)
               if final.get("scheme") == "kfold" else int(final.get("splits") or 0))
    for ds in config.get("datasets") or []:
        name = ds.get("name") if isinstance(ds, dict) else str(ds)
        for model in config.get("models") or []:
            model = str(model)
            if n_search and model not in fixed:
                rows.append({"dataset": name, "model": model, "phase": "search",
                             "expected": n_search})
            rows.append({"dataset": name, "model": model, "phase": "final", "expected": n_final})
    return pd.DataFrame(rows, columns=["dataset", "model", "phase", "expected"])


def run_problems(records: list[dict], config: dict | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Runs that did not finish cleanly, and runs a study asked for but that are absent.

    Returns ``(problems, missing)``: ``problems`` has ``run_id, dataset, model, phase, status,
    message`` for every run whose status is not ``done``; ``missing`` has ``dataset, model,
    phase, expected, done, missing`` where fewer runs finished (done or diverged) than expected.
    """
    problems = pd.DataFrame(
        [{"run_id": r.get("run_id"), "dataset": r.get("dataset"), "model": r.get("model"),
          "phase": r.get("phase"), "status": r.get("status"), "message": r.get("message") or ""}
         for r in records if r.get("status") != "done"],
        columns=["run_id", "dataset", "model", "phase", "status", "message"])
    done = [r for r in records if r.get("status") in ("done", "diverged")]
    exp = expected_runs(config or {})
    rows = []
    for e in exp.itertuples():
        have = sum(1 for r in done if (r.get("dataset"), r.get("model"), r.get("phase")) ==
                   (e.dataset, e.model, e.phase))
        if have < e.expected:
            rows.append({"dataset": e.dataset, "model": e.model, "phase": e.phase,
                         "expected": e.expected, "done": have, "missing": e.expected - have})
    missing = pd.DataFrame(rows, columns=["dataset", "model", "phase", "expected", "done",
                                          "missing"])
    return problems, missing


def versions_table(records: list[dict]) -> pd.DataFrame:
    """Package versions recorded by the runs: ``package, version, runs`` (one row per pair)."""
    seen: Counter = Counter()
    for r in records:
        for pkg, ver in (r.get("versions") or {}).items():
            seen[(str(pkg), str(ver))] += 1
    return pd.DataFrame([{"package": p, "version": v, "runs": n}
                         for (p, v), n in sorted(seen.items())],
                        columns=["package", "version", "runs"])


def write_table(out_dir: Path, stem: str, frame: pd.DataFrame, index: bool = False) -> list[Path]:
    """Write ``stem.csv`` and ``stem.tex`` (booktabs tabular) atomically; returns the paths."""
    csv = write_text(out_dir / f"{stem}.csv", frame.to_csv(index=index))
    tex = write_text(out_dir / f"{stem}.tex", latex_table(frame, index=index) + "\n")
    return [csv, tex]
