"""Checks of a study config's values: each names the offending key and says what it must be.

:func:`medattn.training.config.parse_config` reads the config's structure and calls these on each
value and on the ``final`` and ``train`` blocks; every failure is a
:class:`~medattn.errors.ConfigError` naming the file and the key (with close matches for typos).
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any

from medattn.errors import ConfigError
from medattn.kfold_designs import check_kfold_design
from medattn.models.registry import PluginError
from medattn.training.runspec import (AUGMENT, SPLITS, TrainSettings, amp_mode,
                                      channels_last_mode, parse_pretrained)


def check_keys(d: Any, allowed: set[str], where: str, src: str) -> dict:
    """``d`` as a mapping whose keys are all in ``allowed`` (``where``: its key path)."""
    if not isinstance(d, dict):
        raise ConfigError(f"{src}: `{where}` must be a mapping of keys to values, got "
                          f"{type(d).__name__}.")
    for key in d:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), sorted(allowed), n=2)
            hint = f" Did you mean {' or '.join(f'`{c}`' for c in close)}?" if close else ""
            full = f"{where}.{key}" if where != "(top level)" else str(key)
            raise ConfigError(f"{src}: unknown key `{full}`.{hint} Allowed here: "
                              f"{', '.join(sorted(allowed))}.")
    return d


def number(v: Any, key: str, src: str, *, positive: bool = False, integer: bool = False,
           minimum: float | None = None) -> float:
    """``v`` as a number (an int with ``integer``), checked against the bounds asked for."""
    try:
        if isinstance(v, bool):
            raise ValueError
        x = float(v)  # YAML 1.1 reads 1e-3 as a string; accept it
        if integer:
            if x != int(x):
                raise ValueError
            x = int(x)
    except (TypeError, ValueError):
        kind = "an integer" if integer else "a number"
        raise ConfigError(f"{src}: `{key}` must be {kind}, got {v!r}.") from None
    if positive and not x > 0:
        raise ConfigError(f"{src}: `{key}` must be > 0, got {v!r}.")
    if minimum is not None and x < minimum:
        raise ConfigError(f"{src}: `{key}` must be >= {minimum}, got {v!r}.")
    return x


def numbers(v: Any, key: str, src: str, **kw) -> tuple[float, ...]:
    """``v`` (one value or a non-empty list) as a tuple of :func:`number`."""
    items = v if isinstance(v, list) else [v]
    if not items:
        raise ConfigError(f"{src}: `{key}` must list at least one value.")
    return tuple(number(x, f"{key}[{i}]", src, **kw) for i, x in enumerate(items))


def check_model(name: Any, key: str, src: str) -> str:
    """``name`` if it is a registered model written in its canonical form."""
    if not isinstance(name, str):
        raise ConfigError(f"{src}: `{key}` must be a model name, got {name!r}.")
    try:  # start-up time: the zoo imports timm, which importing medattn.training does not need
        from medattn.models import list_models, parse_model_name
    except ImportError:  # models part absent: create_model reports bad names later
        return name

    try:  # any registered backbone x attention (registered in this process or by a plugin)
        canonical = parse_model_name(name).name
    except PluginError as err:  # its models are unknown: no guess at a similar name
        raise ConfigError(f"{src}: `{key}` {name!r}: {err}") from None
    except ConfigError as err:
        close = difflib.get_close_matches(name, list_models(), n=2)
        hint = f" Did you mean {' or '.join(close)}?" if close else ""
        raise ConfigError(f"{src}: `{key}`: {err}.{hint}") from None
    if canonical != name:
        raise ConfigError(f"{src}: `{key}`: write the model {name!r} as {canonical!r} (runs and "
                          "tables use that name).")
    return name


def check_label(label: Any, key: str, src: str) -> str:
    """A study's or data set's name: letters, digits, '-' and '_' only (it names folders, so
    '..', '/' or an absolute path would write outside the runs folder)."""
    label = str(label)
    if not label.replace("-", "").replace("_", "").isalnum():
        raise ConfigError(f"{src}: `{key}` {label!r} may only hold letters, digits, '-' and '_' "
                          "(it names folders); e.g. `name: my_study`.")
    return label


def check_spec(spec: Any, key: str, src: str) -> str:
    """``spec`` if it is a data spec ``source:PATH``."""
    if not isinstance(spec, str) or ":" not in spec or not spec.partition(":")[2]:
        raise ConfigError(f"{src}: `{key}` must be a data spec `source:PATH` "
                          f"(e.g. isic:data/isic), got {spec!r}.")
    return spec


def parse_final(final: dict, src: str) -> tuple[str, int, int]:
    """``(scheme, splits, folds)`` of the `final` block; k-fold: splits = repeats."""
    scheme = final.get("scheme", "random")
    if scheme not in ("random", "kfold"):
        raise ConfigError(f"{src}: `final.scheme` must be `random` (J random splits, the "
                          f"paper's design) or `kfold` (repeated grouped k-fold), got {scheme!r}.")
    if scheme == "random":
        for key in ("folds", "repeats"):
            if key in final:
                raise ConfigError(f"{src}: `final.{key}` is for `final.scheme: kfold`; random "
                                  "splits take `final.splits` (or set `scheme: kfold`).")
        return scheme, int(number(final.get("splits", 10), "final.splits", src, integer=True,
                                minimum=1)), 0
    if "splits" in final:
        raise ConfigError(f"{src}: `final.splits` is for random splits; `final.scheme: kfold` "
                          "runs `final.folds` x `final.repeats` (e.g. folds: 5, repeats: 2).")
    folds = int(number(final.get("folds", 5), "final.folds", src, integer=True, minimum=3))
    repeats = int(number(final.get("repeats", 1), "final.repeats", src, integer=True, minimum=1))
    try:
        check_kfold_design(folds, repeats)
    except ConfigError as err:
        raise ConfigError(f"{src}: {err}") from None
    return scheme, repeats, folds


def parse_train(t: dict, src: str) -> TrainSettings:
    """The ``train`` block (keys already checked) as :class:`TrainSettings`."""
    d = TrainSettings()
    kw: dict[str, Any] = {}
    for key, value in t.items():
        k = f"train.{key}"
        default = getattr(d, key)
        if key == "pretrained":
            kw[key] = parse_pretrained(value, f"{src}: `{k}`")
        elif isinstance(default, bool):
            if not isinstance(value, bool):
                raise ConfigError(f"{src}: `{k}` must be true or false, got {value!r}.")
            kw[key] = value
        elif key in ("amp", "channels_last"):
            try:
                kw[key] = amp_mode(value) if key == "amp" else channels_last_mode(value)
            except ConfigError as err:
                raise ConfigError(f"{src}: {err}") from None
        elif key == "schedule":
            if value not in ("cosine", "constant"):
                raise ConfigError(f"{src}: `{k}` must be `cosine` or `constant`, got {value!r}.")
            kw[key] = value
        elif key == "split":
            if value not in SPLITS:
                raise ConfigError(f"{src}: `{k}` must be one of {', '.join(SPLITS)}, got {value!r}.")
            kw[key] = value
        elif key == "augment":
            if value not in AUGMENT:
                raise ConfigError(f"{src}: `{k}` must be one of {', '.join(AUGMENT)}, got "
                                  f"{value!r}.")
            kw[key] = value
        elif key == "fractions":
            if not isinstance(value, list) or len(value) != 3:
                raise ConfigError(f"{src}: `{k}` must be [train, val, test] fractions.")
            fr = tuple(number(x, f"{k}[{i}]", src, positive=True) for i, x in enumerate(value))
            if abs(sum(fr) - 1) > 1e-6:
                raise ConfigError(f"{src}: `{k}` must sum to 1, got {sum(fr):g}.")
            kw[key] = fr
        elif isinstance(default, int):
            minimum = 0 if key in ("num_workers", "threads") else 1
            kw[key] = int(number(value, k, src, integer=True, minimum=minimum))
        else:
            kw[key] = number(value, k, src, minimum=0)
    return dataclasses.replace(d, **kw)
