"""One training run: its settings (:class:`TrainSettings`) and its specification (:class:`RunSpec`,
the unit that backends execute), with the run id that names its folder in the store.

Study configs (:mod:`medattn.training.config`) expand into these.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medattn.errors import ArgumentError, ConfigError

__all__ = ["AMP_MODES", "AUGMENT", "CHANNELS_LAST_MODES", "SPLITS", "RunSpec", "TrainSettings",
           "amp_mode", "channels_last_mode", "parse_pretrained"]


@dataclass(frozen=True)
class TrainSettings:
    """Settings shared by every run of a study (defaults follow the paper where it says)."""

    epochs: int = 30
    batch_size: int = 32
    image_size: int = 224
    momentum: float = 0.9
    schedule: str = "cosine"  # "cosine" (per epoch, to 0) or "constant"
    # True: timm's ImageNet weights (hub or its cache); False: random; str: a local weight file
    pretrained: bool | str = True
    fractions: tuple[float, float, float] = (0.7, 0.1, 0.2)
    split: str = "random"  # "random" (grouped splits by seed) or "official" (the data set's own)
    augment: str = "paper"  # "paper" (Perez et al. 2018's scheme) or "light" (see AUGMENT)
    chance_margin: float = 0.02  # selected val balanced accuracy <= 1/K + margin -> diverged
    amp: str = "auto"  # auto (CUDA: bf16, else fp16 + scaler; CPU: off), bf16, fp16, off
    channels_last: str = "auto"  # auto (CUDA only), on, off
    num_workers: int = 0
    cache: bool = True  # decoded, resized images cached under RUNS_DIR/cache
    tensorboard: bool = False
    threads: int = 0  # torch intra-op threads for a run; 0 = leave as is

    def __post_init__(self):  # canonical modes: YAML reads `on`/`off`/`true` as booleans
        object.__setattr__(self, "amp", amp_mode(self.amp))
        object.__setattr__(self, "channels_last", channels_last_mode(self.channels_last))


AMP_MODES = ("auto", "bf16", "fp16", "off")
CHANNELS_LAST_MODES = ("auto", "on", "off")
# YAML 1.1 (PyYAML) reads `on`/`off`/`true`/`false` as booleans: `channels_last: on` arrives as
# True and means "on"; `amp: off` arrives as False, and `amp: true` is the documented "auto".
_AMP_ALIASES = {True: "auto", False: "off", "true": "auto", "false": "off", "bfloat16": "bf16",
                "float16": "fp16"}
_CL_ALIASES = {True: "on", False: "off", "true": "on", "false": "off"}


def _mode(value: Any, key: str, modes: tuple[str, ...], aliases: dict) -> str:
    # bool or lower-case str only: other types never match (1 == True would)
    v = value.lower() if isinstance(value, str) else value if isinstance(value, bool) else None
    mode = aliases.get(v, v)
    if not isinstance(mode, str) or mode not in modes:
        raise ConfigError(f"`train.{key}` must be one of {', '.join(modes)} (or true/false), "
                          f"got {value!r}.")
    return mode


def amp_mode(value: Any) -> str:
    """Canonical ``train.amp`` value (``auto``, ``bf16``, ``fp16`` or ``off``) of a config value."""
    return _mode(value, "amp", AMP_MODES, _AMP_ALIASES)


def channels_last_mode(value: Any) -> str:
    """Canonical ``train.channels_last`` value (``auto``, ``on`` or ``off``) of a config value."""
    return _mode(value, "channels_last", CHANNELS_LAST_MODES, _CL_ALIASES)


# Settings that change a run's result; the others (workers, cache, logging) do not enter its id.
_RESULT_FIELDS = ("epochs", "batch_size", "image_size", "momentum", "schedule", "pretrained",
                  "fractions", "augment", "chance_margin", "amp")

# How a run's train/val/test parts are drawn: grouped random splits by seed, or the data set's own
# partition (its `subset` column), with which runs differ only by the (training) seed.
SPLITS = ("random", "official")

# Training augmentation presets: keyword arguments of medattn.data.build_transform. "paper" is the
# data part's default (random resized crop, affine, flips, colour jitter as in Perez et al. 2018);
# "light" keeps crops and flips mild, for tiny from-scratch runs (the demo) that cannot afford to
# learn invariance to strong rotations and colour shifts in a few epochs.
AUGMENT = {"paper": {},
           "light": {"scale": (0.7, 1.0), "degrees": 0.0, "shear": 0.0, "jitter": 0.1,
                     "hue": 0.0}}


@dataclass(frozen=True)
class RunSpec:
    """One training run: a model, a data set, a split seed and hyper-parameters.

    ``data``/``ood`` are the resolved data specs (``source:PATH``) the run loads; ``dataset`` is the
    short label used in the run id (paths do not enter the id, so moving the data keeps results).
    The training seed equals ``split_seed``: split and initialisation vary together across runs.
    A k-fold run (``folds`` > 0) tests on fold ``fold`` of repetition ``split_seed`` and its
    training seed derives from both (:attr:`train_seed`).
    """

    phase: str  # "search" or "final"
    dataset: str
    data: str
    model: str
    lr: float
    weight_decay: float
    split_seed: int
    ood: tuple[str, ...] = ()
    model_options: tuple[tuple[str, Any], ...] = ()
    train: TrainSettings = field(default_factory=TrainSettings)
    # Final runs: the hyper-parameter selection they are trained under (id, lr, weight_decay,
    # source, mean_val_bacc, search_runs), copied into the record. Not part of the run id.
    selection: dict[str, Any] | None = field(default=None, compare=False)
    folds: int = 0  # k of a k-fold final run; 0: a random (or official) split
    fold: int | None = None  # its test fold, 0 .. folds - 1

    @property
    def train_seed(self) -> int:
        """Seed of initialisation and data order: ``split_seed``, or for a k-fold run a hash of
        (repetition seed, folds, fold), so each fold of a repetition starts differently."""
        if not self.folds:
            return int(self.split_seed)
        ss = np.random.SeedSequence([int(self.split_seed), int(self.folds), int(self.fold)])
        return int(ss.generate_state(1)[0] >> 1)  # 31 bits: any generator takes it

    @property
    def run_id(self) -> str:
        """Deterministic id: readable prefix plus a hash of everything that changes the result."""
        key = {
            "phase": self.phase, "dataset": self.dataset, "model": self.model,
            "lr": float(self.lr), "weight_decay": float(self.weight_decay),
            "split_seed": int(self.split_seed),
            "ood": [spec_source(s) for s in self.ood],
            "model_options": [list(kv) for kv in self.model_options],
            **{k: jsonable(getattr(self.train, k)) for k in _RESULT_FIELDS},
            "split": self.train.split,
            "kfold": [int(self.folds), None if self.fold is None else int(self.fold)],
        }
        if isinstance(self.train.pretrained, str):  # the file's content, not where it lies
            key["pretrained"] = f"file:{_file_digest(self.train.pretrained)}"
        fold = f"-fold{self.fold}of{self.folds}" if self.folds else ""
        digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:8]
        return (f"{self.phase}-{self.dataset}-{self.model}-lr{self.lr:g}-wd{self.weight_decay:g}"
                f"-split{self.split_seed}{fold}-{digest}")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (also what crosses process boundaries for the Ray backend)."""
        d = dataclasses.asdict(self)
        d["ood"] = list(self.ood)
        d["model_options"] = dict(self.model_options)
        d["train"]["fractions"] = list(self.train.fractions)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunSpec:
        d = dict(d)
        train = dict(d.pop("train", {}))
        if "fractions" in train:
            train["fractions"] = tuple(train["fractions"])
        return cls(ood=tuple(d.pop("ood", ())),
                   model_options=tuple(sorted(dict(d.pop("model_options", {})).items())),
                   train=TrainSettings(**train), **d)


def jsonable(v: Any) -> Any:
    """``v`` as JSON holds it: a tuple becomes a list, anything else is returned as is."""
    return list(v) if isinstance(v, tuple) else v


def _file_digest(path: str) -> str:
    """SHA-256 prefix of a file's content (cached per path, size and modification time)."""
    try:
        st = os.stat(path)
    except OSError:
        raise ArgumentError(f"pretrained weight file {path!r} does not exist ({{pretrained}} / "
                            "train.pretrained).", "pretrained") from None
    return _digest(path, st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _digest(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def parse_pretrained(value: Any, where: str) -> bool | str:
    """``train.pretrained`` / ``--pretrained``: true or ``timm`` (timm's ImageNet weights), false
    (random initialisation), or the path of a local weight file (made absolute, so that workers
    with another working directory find it; it must exist). ``where`` names the key or flag."""
    if isinstance(value, bool):
        return value
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where} must be true, false, `timm` or the path of a weight file, "
                          f"got {value!r}.")
    if value.strip().lower() == "timm":
        return True
    path = os.path.abspath(os.path.expanduser(value))
    if not os.path.isfile(path):
        raise ConfigError(f"{where}: no weight file {value!r} (a timm .safetensors file, e.g. "
                          "model.safetensors from https://huggingface.co/timm/<model>; or "
                          "`timm` for timm's own download).")
    return path


def spec_source(spec: str) -> str:
    """The source of a data spec: ``isic`` of ``isic:/data/isic``."""
    return spec.split(":", 1)[0]
