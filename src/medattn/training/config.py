"""Study configs (YAML): the schema, reading a config and its structure.

A study config names the data sets, the models, the hyper-parameter grid searched on a few splits,
the number of final splits, and the training settings shared by all runs. :func:`load_config`
validates it and raises :class:`medattn.errors.ConfigError` naming the offending key (with close
matches for typos). It expands into :class:`~medattn.training.runspec.RunSpec` (one training run,
the unit that backends execute; in :mod:`medattn.training.runspec`, importable from here too).
The checks of single values and of the ``final`` and ``train`` blocks are in
:mod:`medattn.training.config_checks`.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from medattn.data.kfold import check_kfold
from medattn.errors import ConfigError
from medattn.training.runspec import (  # noqa: F401  (RunSpec and its settings, public here too)
    AMP_MODES,
    AUGMENT,
    CHANNELS_LAST_MODES,
    SPLITS,
    RunSpec,
    TrainSettings,
    amp_mode,
    channels_last_mode,
    jsonable,
    parse_pretrained,
    spec_source,
)
from medattn.training.config_checks import (check_keys, check_label, check_model, check_spec,
                                             number, numbers, parse_final, parse_train)


@dataclass(frozen=True)
class DatasetConfig:
    name: str  # label used in run ids
    data: str  # source:PATH, PATH relative to the config's data_root
    ood: tuple[str, ...] = ()


@dataclass(frozen=True)
class StudyConfig:
    """A validated study: see ``docs/training.md`` for every key."""

    name: str
    datasets: tuple[DatasetConfig, ...]
    models: tuple[str, ...]
    search_lr: tuple[float, ...]
    search_weight_decay: tuple[float, ...]
    search_splits: int
    search_first_seed: int
    final_splits: int
    final_first_seed: int
    train: TrainSettings
    data_root: str = "."
    model_options: tuple[tuple[str, Any], ...] = ()
    hparams: tuple[tuple[str, float, float], ...] = ()  # (model, lr, wd) fixed: no search
    source: str = ""  # file the config came from
    # final phase: "random" (final_splits random splits) or "kfold" (final_splits = repeats
    # repetitions, seeds first_seed.., of final_folds grouped folds each); see docs/training.md
    final_scheme: str = "random"
    final_folds: int = 0

    def resolve(self, spec: str) -> str:
        """``source:PATH`` with PATH made absolute (a relative PATH is joined onto ``data_root``)."""
        source, _, path = spec.partition(":")
        path = os.path.expanduser(path)
        # Absolute, so that workers with another working directory (Ray) find the same files.
        return f"{source}:{os.path.abspath(os.path.join(self.data_root, path))}"

    def fixed_hparams(self, model: str) -> tuple[float, float] | None:
        for m, lr, wd in self.hparams:
            if m == model:
                return lr, wd
        return None

    def run_spec(self, phase: str, ds: DatasetConfig, model: str, lr: float, wd: float,
                 seed: int, fold: int | None = None) -> RunSpec:
        """One run; ``fold`` (final k-fold runs only) picks the test fold of repetition ``seed``."""
        kfold = fold is not None
        return RunSpec(phase=phase, dataset=ds.name, data=self.resolve(ds.data), model=model,
                       lr=float(lr), weight_decay=float(wd), split_seed=int(seed),
                       ood=tuple(self.resolve(s) for s in ds.ood),
                       model_options=self.model_options, train=self.train,
                       folds=self.final_folds if kfold else 0,
                       fold=int(fold) if fold is not None else None)

    def search_seeds(self) -> list[int]:
        return [self.search_first_seed + i for i in range(self.search_splits)]

    def final_seeds(self) -> list[int]:
        """Split seeds of the final phase (k-fold: one per repetition)."""
        return [self.final_first_seed + i for i in range(self.final_splits)]

    def final_units(self) -> list[tuple[int, int | None]]:
        """``(split seed, fold)`` of every final run of one model (fold None: random splits)."""
        if self.final_scheme == "kfold":
            return [(s, f) for s in self.final_seeds() for f in range(self.final_folds)]
        return [(s, None) for s in self.final_seeds()]

    def to_dict(self) -> dict[str, Any]:
        """The resolved config in the YAML schema (written to ``RUNS_DIR/study.yaml``)."""
        train = {k: jsonable(v) for k, v in dataclasses.asdict(self.train).items()}
        out: dict[str, Any] = {
            "name": self.name,
            "data_root": os.path.abspath(self.data_root),
            "datasets": [{"name": d.name, "data": d.data, "ood": list(d.ood)}
                         for d in self.datasets],
            "models": list(self.models),
            "model_options": dict(self.model_options),
            "search": {"lr": list(self.search_lr), "weight_decay": list(self.search_weight_decay),
                       "splits": self.search_splits, "first_seed": self.search_first_seed},
            "final": ({"splits": self.final_splits, "first_seed": self.final_first_seed}
                      if self.final_scheme == "random" else
                      {"scheme": "kfold", "folds": self.final_folds,
                       "repeats": self.final_splits, "first_seed": self.final_first_seed}),
            "train": train,
        }
        if self.hparams:
            out["hparams"] = {m: {"lr": lr, "weight_decay": wd} for m, lr, wd in self.hparams}
        return out


_TOP_KEYS = {"name", "data_root", "datasets", "models", "model_options", "search", "final",
             "train", "hparams"}
_SEARCH_KEYS = {"lr", "weight_decay", "splits", "first_seed"}
_FINAL_KEYS = {"scheme", "splits", "first_seed", "folds", "repeats"}
_DATASET_KEYS = {"name", "data", "ood"}
_TRAIN_KEYS = {f.name for f in dataclasses.fields(TrainSettings)}


def parse_config(raw: Any, src: str = "<config>", *, data_root: str | None = None,
                 overrides: dict[str, Any] | None = None) -> StudyConfig:
    """Validate a config mapping (as read from YAML) into a :class:`StudyConfig`.

    ``overrides`` replaces top-level keys (and ``train`` keys, merged) before validation;
    ``data_root`` replaces the config's ``data_root``.
    """
    raw = dict(check_keys(raw if raw is not None else {}, _TOP_KEYS, "(top level)", src))
    for k, v in (overrides or {}).items():
        if k == "train" and isinstance(v, dict):
            raw["train"] = {**(raw.get("train") or {}), **v}
        else:
            raw[k] = v
    check_keys(raw, _TOP_KEYS, "(top level)", src)
    for required in ("datasets", "models"):
        if required not in raw:
            raise ConfigError(f"{src}: missing required key `{required}`.")

    if raw.get("name") is not None:  # it names the default runs folder and the study's files
        name = check_label(raw["name"], "name", src)
    else:  # a file name cannot hold a path, but may hold characters a name may not
        name = re.sub(r"[^A-Za-z0-9_-]", "_", Path(src).stem) or "study"
    root = data_root if data_root is not None else raw.get("data_root", ".")
    if not isinstance(root, str):
        raise ConfigError(f"{src}: `data_root` must be a path, got {root!r}.")
    root = os.path.expanduser(root)  # relative to the working directory, like CLI paths

    datasets = _parse_datasets(raw["datasets"], src)
    models = raw["models"]
    models = [models] if isinstance(models, str) else models
    if not isinstance(models, list) or not models:
        raise ConfigError(f"{src}: `models` must be a non-empty list of model names.")
    models = tuple(check_model(m, f"models[{i}]", src) for i, m in enumerate(models))

    mopts = raw.get("model_options") or {}
    if not isinstance(mopts, dict):
        raise ConfigError(f"{src}: `model_options` must be a mapping (e.g. {{la_kernel: 7}}).")

    design = _parse_design(raw, src)
    train_raw = check_keys(raw.get("train") or {}, _TRAIN_KEYS, "train", src)
    train = parse_train(train_raw, src)
    if design["final_scheme"] == "kfold":
        if train.split == "official":
            raise ConfigError(f"{src}: `final.scheme: kfold` draws its own folds; it cannot be "
                              "combined with `train.split: official` (the data set's fixed "
                              "partition). Use one or the other.")
        try:
            check_kfold(design["final_folds"], train.fractions[1])
        except ConfigError as err:
            raise ConfigError(f"{src}: {err}") from None

    return StudyConfig(name=name, datasets=datasets, models=models, train=train,
                       data_root=str(root), model_options=tuple(sorted(mopts.items())),
                       hparams=_parse_hparams(raw.get("hparams") or {}, models, src),
                       source=src, **design)


def _parse_datasets(dsets: Any, src: str) -> tuple[DatasetConfig, ...]:
    """The `datasets` list (one mapping or spec string is a list of one)."""
    if isinstance(dsets, dict):
        dsets = [dsets]
    if not isinstance(dsets, list) or not dsets:
        raise ConfigError(f"{src}: `datasets` must be a list of {{data: source:PATH, ood: [...]}}.")
    datasets = []
    for i, d in enumerate(dsets):
        if isinstance(d, str):
            d = {"data": d}
        d = check_keys(d, _DATASET_KEYS, f"datasets[{i}]", src)
        if "data" not in d:
            raise ConfigError(f"{src}: `datasets[{i}]` needs a `data` key (source:PATH).")
        spec = check_spec(d["data"], f"datasets[{i}].data", src)
        ood = d.get("ood") or []
        ood = [ood] if isinstance(ood, str) else ood
        if not isinstance(ood, list):
            raise ConfigError(f"{src}: `datasets[{i}].ood` must be a list of source:PATH specs.")
        ood = tuple(check_spec(s, f"datasets[{i}].ood[{j}]", src) for j, s in enumerate(ood))
        label = check_label(d.get("name") or spec_source(spec), f"datasets[{i}].name", src)
        datasets.append(DatasetConfig(name=label, data=spec, ood=ood))
    labels = [d.name for d in datasets]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"{src}: two `datasets` share the name {labels}; give each a `name`.")
    return tuple(datasets)


def _parse_design(raw: dict, src: str) -> dict[str, Any]:
    """The `search` grid and the `final` splits, as :class:`StudyConfig` fields."""
    search = check_keys(raw.get("search") or {}, _SEARCH_KEYS, "search", src)
    final = check_keys(raw.get("final") or {}, _FINAL_KEYS, "final", src)
    lrs = numbers(search.get("lr", [0.01, 0.001, 0.0001]), "search.lr", src, positive=True)
    wds = numbers(search.get("weight_decay", [0.0, 0.0001, 0.001, 0.01]),
                  "search.weight_decay", src, minimum=0)
    s_splits = int(number(search.get("splits", 2), "search.splits", src, integer=True, minimum=1))
    s_seed = int(number(search.get("first_seed", 1000), "search.first_seed", src, integer=True))
    f_scheme, f_splits, f_folds = parse_final(final, src)
    f_seed = int(number(final.get("first_seed", 0), "final.first_seed", src, integer=True))
    if set(range(s_seed, s_seed + s_splits)) & set(range(f_seed, f_seed + f_splits)):
        raise ConfigError(f"{src}: `search.first_seed` and `final.first_seed` give overlapping "
                          "split seeds; final splits must differ from the search splits.")
    return {"search_lr": lrs, "search_weight_decay": wds, "search_splits": s_splits,
            "search_first_seed": s_seed, "final_splits": f_splits, "final_first_seed": f_seed,
            "final_scheme": f_scheme, "final_folds": f_folds}


def _parse_hparams(hp: Any, models: tuple[str, ...],
                   src: str) -> tuple[tuple[str, float, float], ...]:
    """The fixed `hparams` per model (each one of `models`, with both lr and weight_decay)."""
    if not isinstance(hp, dict):
        raise ConfigError(f"{src}: `hparams` must map model names to {{lr, weight_decay}}.")
    hparams = []
    for m, v in hp.items():
        check_model(m, f"hparams.{m}", src)
        if m not in models:
            raise ConfigError(f"{src}: `hparams.{m}`: {m} is not in `models`.")
        v = check_keys(v, {"lr", "weight_decay"}, f"hparams.{m}", src)
        if "lr" not in v or "weight_decay" not in v:
            raise ConfigError(f"{src}: `hparams.{m}` needs both `lr` and `weight_decay`.")
        hparams.append((m, number(v["lr"], f"hparams.{m}.lr", src, positive=True),
                        number(v["weight_decay"], f"hparams.{m}.weight_decay", src, minimum=0)))
    return tuple(hparams)


def load_config(path: str | os.PathLike, *, data_root: str | None = None,
                overrides: dict[str, Any] | None = None) -> StudyConfig:
    """Read and validate a study config; ``path`` may name a packaged config (``demo``)."""
    p = Path(path)
    if not p.exists():
        packaged = packaged_config(str(path))
        if packaged is None:
            names = ", ".join(list_packaged_configs())
            raise ConfigError(f"config {str(path)!r} not found (neither a file nor a packaged "
                              f"config; packaged: {names}).")
        p = packaged
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ConfigError(f"{p}: not valid YAML: {err}") from None
    return parse_config(raw, str(p), data_root=data_root, overrides=overrides)


def list_packaged_configs() -> list[str]:
    """Names of the configs shipped with medattn (``paper_isic``, ``paper_camelyon17``, ``demo``)."""
    root = resources.files("medattn") / "configs"
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".yaml"))


def packaged_config(name: str) -> Path | None:
    """Path of a shipped config by name (with or without ``.yaml``), or None."""
    stem = name[:-5] if name.endswith(".yaml") else name
    if "/" in stem or os.sep in stem:
        return None
    p = Path(str(resources.files("medattn") / "configs" / f"{stem}.yaml"))
    return p if p.exists() else None
