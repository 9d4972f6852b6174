"""The run record: one type for what ``runs/<run_id>/record.json`` holds.

A :class:`RunRecord` is what the store reads and writes; study, compare, features, explain and the
report all read runs through it (or through :func:`medattn.runs.store.final_runs`, whose frame
rows are :meth:`RunRecord.row`). Fields are listed in ``docs/architecture.md``.

Naming: ``dataset`` is the study config's name of the data set (``datasets[i].name``; the source
when a config gives none; for ``medattn train`` the source unless ``train(dataset=...)`` names
it); ``source`` is the data source it was read with (``isic``, ``camelyon17``, ...). Two data
sets of one study may share a source (e.g. ISIC with two label sets); ``dataset`` keeps them apart.
Balanced accuracies are fractions in [0, 1]; a percentage always carries a ``_pct`` suffix.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from medattn.errors import StoreError

# Scalar fields that become frame columns (:meth:`RunRecord.row`), in column order.
SCALARS = ("run_id", "status", "phase", "model", "backbone", "variant", "dataset", "source",
           "data", "split_seed", "fold", "lr", "weight_decay", "batch_size", "epochs", "image_size",
           "best_epoch", "data_fingerprint", "message")
FRAME_COLUMNS = SCALARS + ("seconds", "selection_id")


@dataclass(eq=False)
class RunRecord(Mapping):
    """One run's record (``record.json``), typed.

    It also reads as the JSON object it is stored as (``rec["status"]``, ``rec.get("metrics")``,
    ``dict(rec)``): every field is a key (``None`` where unset), and keys this version does not
    know are kept in ``extra`` and written back unchanged. Change a record with
    :func:`dataclasses.replace`.
    """

    run_id: str
    status: str
    phase: str
    model: str | None = None
    backbone: str | None = None
    variant: str | None = None
    dataset: str | None = None  # the study config's name of the data set
    source: str | None = None  # the data source (reader) it was read with
    data: str | None = None  # source:PATH
    ood: dict[str, str] | None = None  # OOD set name -> source:PATH
    classes: list[str] | None = None
    split_seed: int | None = None  # random split's seed; k-fold: the repetition's seed
    fold: int | None = None  # k-fold runs: the test fold (0 .. folds - 1) of repetition split_seed
    folds: int | None = None  # k-fold runs: k
    lr: float | None = None
    weight_decay: float | None = None
    batch_size: int | None = None
    epochs: int | None = None
    image_size: int | None = None
    history: list[dict] | None = None
    best_epoch: int | None = None
    metrics: dict[str, dict] | None = None  # set -> balanced_accuracy (fraction), recalls, ...
    data_fingerprint: str | None = None
    data_summary: dict | None = None
    versions: dict | None = None
    timings: dict | None = None
    config: dict | None = None
    message: str | None = None
    split: dict | None = None
    split_sizes: dict | None = None
    selection: dict | None = None
    worker: dict | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    # -- conversion ---------------------------------------------------------------------------

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> RunRecord:
        """A record from its JSON object; ``source`` defaults to the source of ``data``,
        ``dataset`` to ``source``."""
        if isinstance(raw, RunRecord):
            return dataclasses.replace(raw, extra=dict(raw.extra))
        raw = dict(raw)
        if raw.get("source") is None:
            raw["source"] = _source_of(raw.get("data")) or raw.get("dataset")
        if raw.get("dataset") is None:
            raw["dataset"] = raw.get("source")
        missing = [k for k in ("run_id", "status", "phase") if k not in raw]
        if missing:
            raise StoreError(f"run record {raw.get('run_id', '(no run_id)')}: lacks "
                             f"{', '.join(missing)}; a record needs run_id, status and phase.")
        known = {k: raw.pop(k) for k in _FIELDS if k in raw}
        return cls(**known, extra=raw)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object stored as ``record.json`` (every field, then the unknown keys)."""
        out = {k: getattr(self, k) for k in _FIELDS}
        out.update(self.extra)
        return out

    # -- the JSON object's view ---------------------------------------------------------------

    def __getitem__(self, key: str) -> Any:
        if key in _FIELD_SET:
            return getattr(self, key)
        return self.extra[key]

    def __iter__(self) -> Iterator[str]:
        yield from _FIELDS
        yield from self.extra

    def __len__(self) -> int:
        return len(_FIELDS) + len(self.extra)

    # -- derived values -----------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        return self.status in ("done", "diverged")

    def bacc(self, set_name: str) -> float:
        """Balanced accuracy (fraction) on ``set_name`` (``val``, ``test``, ``ood-<name>``);
        NaN where the set was not evaluated."""
        v = ((self.metrics or {}).get(set_name) or {}).get("balanced_accuracy")
        return float("nan") if v is None else float(v)

    def row(self) -> dict[str, Any]:
        """The frame row of this run: :data:`SCALARS`, ``seconds`` (total training time),
        ``selection_id`` and ``bacc_<set>`` (fraction) per evaluated set."""
        row = {k: getattr(self, k) for k in SCALARS}
        row["seconds"] = (self.timings or {}).get("total_seconds")
        row["selection_id"] = (self.selection or {}).get("id")
        for name in self.metrics or {}:
            row[f"bacc_{name}"] = self.bacc(name)
        return row


_FIELDS = tuple(f.name for f in dataclasses.fields(RunRecord) if f.name != "extra")
_FIELD_SET = frozenset(_FIELDS)


def _source_of(data: Any) -> str | None:
    """``isic`` of ``isic:/data/isic`` (the spec as written; aliases are the reader's business)."""
    if not isinstance(data, str) or ":" not in data:
        return None
    return data.split(":", 1)[0].strip().lower() or None


def best_runs(frame, by: tuple[str, ...] = ("dataset", "model"), metric: str = "val"):
    """The best run per ``by`` group of a runs frame (:meth:`RunRecord.row` rows): the highest
    balanced accuracy on ``metric`` (``val`` by default: choosing on the test set would select on
    the data the tables report), ties broken by the other of val/test, then by run id. Runs
    without the metric rank last. Returns the chosen rows in the frame's order of groups."""
    if metric not in ("val", "test"):
        raise ValueError(f"metric must be 'val' or 'test', got {metric!r}")
    if frame.empty:
        return frame
    other = "test" if metric == "val" else "val"
    nan = pd.Series(math.nan, index=frame.index)
    ranked = frame.assign(_k1=frame.get(f"bacc_{metric}", nan).fillna(-1.0),
                          _k2=frame.get(f"bacc_{other}", nan).fillna(-1.0))
    ranked = ranked.sort_values(["_k1", "_k2", "run_id"], ascending=[False, False, True],
                                kind="stable")
    best = ranked.groupby(list(by), sort=False).head(1).drop(columns=["_k1", "_k2"])
    groups = {k: i for i, k in enumerate(dict.fromkeys(
        frame[list(by)].itertuples(index=False, name=None)))}
    keys = [groups[k] for k in best[list(by)].itertuples(index=False, name=None)]
    return best.iloc[sorted(range(len(best)), key=keys.__getitem__)]
