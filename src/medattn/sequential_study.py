"""A study that stops when decided: the final phase in batches, every comparison after each.

Above both :mod:`medattn.training` (which trains, and never imports analysis) and
:mod:`medattn.analysis` (which decides): batch k trains the final runs of the first ``k * B``
replicates (split seeds ``first_seed .. first_seed + kB - 1``) of every model still active, then
every comparison of Table 2 is looked at with the sequential rule of
:mod:`medattn.analysis.sequential` on exactly those replicates. A comparison's first decision
is final (the rule's error rates are those of stopping at the first decision). A model stops when
every comparison it is in is decided, as the variant or as the reference (a base keeps training
while any of its variants is undecided), or at ``max_splits``.

State: ``RUNS_DIR/sequential.json`` (written atomically after each look) holds the settings, the
batch reached, the active models, each model's stop (batch, splits, why) and each comparison's
decision with its repeated CI. A resumed study replays the looks from the first on the records
(finished runs are skipped, an interrupted one resumes), so it ends with the decisions an
uninterrupted study reaches; settings that differ from the stored ones are refused.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from medattn.analysis import sequential as seq
from medattn.analysis.compare import compare_runs
from medattn.analysis.labels import comparison_label
from medattn.analysis.settings import CompareSettings, SequentialSettings
from medattn.errors import ArgumentError, ConfigError
from medattn.runs import store
from medattn.training.backends import resolve_backend
from medattn.training.config import StudyConfig, load_config
from medattn.training.study import run_study

log = logging.getLogger("medattn.train")

SETTINGS = ("batch", "max_splits", "first_seed", "margin", "alpha")


# A replicate is what one batch adds B of. Today: one random split (its seed), one pair per
# comparison. A design with several pairs per replicate (repeated k-fold: a repetition of k
# folds) plugs in here: its replicate index, and planned looks counted in pairs (B * k per batch).
def spec_replicate(spec, first_seed: int) -> int:
    """0-based replicate index of a final run (random splits: split seed - first seed)."""
    return spec.split_seed - first_seed


def pairs_upto(pairs: pd.DataFrame, first_seed: int, n_replicates: int) -> pd.DataFrame:
    """The pairs (``compare`` pairs, one row per split seed) of the first ``n_replicates``."""
    return pairs[(pairs["split_seed"] - first_seed) < n_replicates]


@dataclass
class SequentialResult:
    """``study``: the last batch's :class:`~medattn.training.study.StudyResult`; ``models``: per
    (dataset, model) ``stopped_batch, n_splits, reason``; ``comparisons``: per comparison its
    decision, the batch and pairs it was decided at, diff and repeated CI (pp); ``state``: the
    JSON written to ``RUNS_DIR/sequential.json``; ``paths``: the files written (``state``)."""

    runs_dir: Path
    study: object
    models: pd.DataFrame
    comparisons: pd.DataFrame
    state: dict
    paths: dict[str, Path] = field(default_factory=dict)


def batch_ends(batch: int, max_splits: int) -> list[int]:
    """Replicates trained after each batch: ``[B, 2B, ..., max_splits]``."""
    return list(range(batch, max_splits, batch)) + [max_splits]


def look(runs_dir: Path, first_seed: int, n_splits: int, looks: tuple[int, ...], margin: float,
         alpha: float) -> list[dict]:
    """Every comparison of Table 2 on the replicates ``first_seed .. first_seed + n_splits - 1``:
    dicts with the keys of Table 2 (dataset, backbone, model, set, reference), ``key`` and the
    fields of :class:`~medattn.analysis.sequential.SequentialDecision`."""
    res = compare_runs(runs_dir, settings=CompareSettings(margin=margin, alpha=alpha, bootstrap=0))
    pairs = pairs_upto(res.pairs, first_seed, n_splits)
    keys = ["dataset", "backbone", "model", "set", "reference"]
    out = []
    for row in res.table.to_dict("records"):
        if not isinstance(row.get("reference"), str):
            continue  # no reference (a base, or a backbone without one)
        mine = pairs
        for k in keys:
            mine = mine[mine[k] == row[k]]
        ratio = row.get("test_train_ratio")
        ratio = 0.0 if ratio is None or not ratio == ratio else float(ratio)
        d = seq.decide(mine["diff"].to_numpy(), ratio, margin, looks, alpha)
        out.append({**{k: row[k] for k in keys}, "key": comparison_label(row), **d.as_dict()})
    return out


def _model_names(runs_dir: Path) -> dict[tuple[str, str, str], str]:
    """(dataset, backbone, variant) -> the config's model name, from the final records."""
    cur = store.final_runs(runs_dir).current
    if cur.empty:
        return {}
    return {(r.dataset, r.backbone, r.variant): r.model
            for r in cur[["dataset", "backbone", "variant", "model"]].itertuples()}


def _members(comp: dict, names: dict) -> list[tuple[str, str]]:
    """The (dataset, model name) of a comparison's variant and reference."""
    ds = comp["dataset"]
    return [(ds, names[k]) for k in ((ds, comp["backbone"], comp["model"]),
                                     (ds, comp["reference"], "base")) if k in names]


def _update(state: dict, batch: int, n_splits: int, found: list[dict], names: dict,
            last: bool) -> None:
    """Freeze new decisions, then stop the models whose comparisons are all decided."""
    comps = state["comparisons"]
    for c in found:
        old = comps.get(c["key"])
        if old and old["decision"] in seq.DECISIONS:
            continue  # the first decision is final
        comps[c["key"]] = {**{k: (None if isinstance(v, float) and math.isnan(v) else v)
                              for k, v in c.items()}, "batch": batch}
    pending: dict[tuple[str, str], list[str]] = {}
    for c in comps.values():
        for m in _members(c, names):
            if c["decision"] not in seq.DECISIONS:
                pending.setdefault(m, []).append(c["key"])
    for (ds, model) in [tuple(m.split("/", 1)) for m in state["active"]]:
        open_ = pending.get((ds, model), [])
        if open_ and not last:
            continue
        if open_:
            why = f"max splits reached with {len(open_)} comparison(s) undecided"
        elif any((ds, model) in _members(c, names) for c in comps.values()):
            why = "every comparison decided"
        else:
            why = "no comparison to decide"
        state["models"][f"{ds}/{model}"] = {"stopped_batch": batch, "n_splits": n_splits,
                                            "reason": why}
    state["active"] = [m for m in state["active"] if m not in state["models"]]


def _check_settings(old: dict | None, new: dict, runs_dir: Path) -> None:
    if not old:
        return
    diff = [k for k in SETTINGS if old.get(k) != new[k]]
    if diff:
        said = ", ".join(f"{k} {old.get(k)} (now {new[k]})" for k in diff)
        raise ArgumentError(f"{runs_dir}: holds a sequential study run with {said}; resume it "
                            "with the same {batch}, {max_splits} and {margin}, or give another "
                            "{runs_dir}.", "batch", "max_splits", "margin", "runs_dir")


def run_until_decided(config, runs_dir: str | os.PathLike | None = None,
                      backend: str | object = "local", *,
                      settings: SequentialSettings = SequentialSettings(),
                      data_root: str | None = None, restart: bool = False,
                      tracking: str | None = None, **backend_options) -> SequentialResult:
    """Run (or resume) ``config`` with a final phase that stops when decided.

    ``settings``: the batch, the most splits per model (default the config's ``final.splits``),
    the ROPE and the bound on false decisions
    (:class:`~medattn.analysis.settings.SequentialSettings`). Other arguments as
    :func:`medattn.training.study.run_study`.
    """
    if not isinstance(config, StudyConfig):
        config = load_config(config, data_root=data_root)
    if config.final_scheme != "random":
        # Looks are counted in replicates of one pair each and the threshold is calibrated for
        # the random-split variance factor; a k-fold repetition adds k correlated pairs.
        raise ConfigError(
            f"a study that stops when decided runs random-split final phases only; "
            f"{config.name!r} uses final.scheme: {config.final_scheme} (its sequential rule is "
            "not calibrated). Run it with a fixed number of splits (`medattn study` without "
            "--until-decided, or run_study), or set final.scheme: random in the config.")
    batch, margin, alpha = settings.batch, settings.margin, settings.alpha
    backend = resolve_backend(backend, backend_options, "run_until_decided",
                              "; the sequential settings go in settings=SequentialSettings(...)")
    n_max = int(settings.max_splits if settings.max_splits is not None else config.final_splits)
    if n_max < seq.MIN_PAIRS:
        raise ArgumentError(f"{{max_splits}} must be >= {seq.MIN_PAIRS} (a decision needs "
                            f"{seq.MIN_PAIRS} pairs), got {n_max}.", "max_splits")
    if n_max != config.final_splits:
        # The study trains the splits its config names; max_splits is how many it may reach.
        config = dataclasses.replace(config, final_splits=n_max)
    runs_dir = Path(runs_dir if runs_dir is not None else Path("runs") / config.name).resolve()
    looks = seq.planned_looks(batch, n_max)
    first = config.final_first_seed
    recorded = {"batch": batch, "max_splits": n_max, "first_seed": first, "margin": margin,
                "alpha": alpha}
    _check_settings(seq.read_state(runs_dir), recorded, runs_dir)
    fr = config.train.fractions
    state = {**recorded, "looks": list(looks), "batches_done": 0,
             "threshold_note": f"{seq.calibrate_threshold(looks, fr[2] / fr[0], alpha):.4f}",
             "active": [f"{d.name}/{m}" for d in config.datasets for m in config.models],
             "models": {}, "comparisons": {}}
    ends = batch_ends(batch, n_max)
    study = None
    for k, n_splits in enumerate(ends, 1):
        active = set(state["active"])

        def keep(spec, n=n_splits, active=active) -> bool:
            return (spec_replicate(spec, first) < n
                    and f"{spec.dataset}/{spec.model}" in active)

        log.info("sequential study %s: batch %d of at most %d (%d splits, %d active models)",
                 config.name, k, len(ends), n_splits, len(active))
        study = run_study(config, runs_dir, backend, restart=restart, tracking=tracking,
                          final_filter=keep)
        state["batches_done"] = k
        if n_splits >= seq.MIN_PAIRS:
            found = look(runs_dir, first, n_splits, looks, margin, alpha)
            _update(state, k, n_splits, found, _model_names(runs_dir), last=k == len(ends))
        store.write_json(runs_dir / seq.STATE_FILE, state)
        if not state["active"]:
            break
    return SequentialResult(runs_dir, study, _models_table(state), _comparisons_table(state),
                            state, {"state": runs_dir / seq.STATE_FILE})


def _models_table(state: dict) -> pd.DataFrame:
    rows = [{"dataset": k.split("/", 1)[0], "model": k.split("/", 1)[1], **v}
            for k, v in state["models"].items()]
    return pd.DataFrame(rows, columns=["dataset", "model", "stopped_batch", "n_splits", "reason"])


def _comparisons_table(state: dict) -> pd.DataFrame:
    cols = ["key", "decision", "batch", "n", "diff", "rci_low", "rci_high", "p_worse",
            "p_equivalent", "p_better", "threshold", "reason"]
    return pd.DataFrame(list(state["comparisons"].values())).reindex(columns=cols)
