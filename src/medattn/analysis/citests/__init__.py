"""Conditional-independence tests with one interface: ``f(x, y, z, *, seed=None, **options) -> p``.

x, y: arrays of shape (n,) or (n, d); z: class labels (n,) (integer, bool or str: the tests then
work within classes) or a continuous (n, d) float array. With ``full=True`` each returns a
:class:`CIResult` (p-value, statistic, effect size, counts). See ``docs/features.md``.
"""

from collections.abc import Callable
from typing import Any

from medattn.analysis.citests._common import CIResult
from medattn.analysis.citests.chsic import chsic
from medattn.analysis.citests.cmiknn import cmiknn
from medattn.analysis.citests.rcot import rcot

TESTS: dict[str, Callable[..., Any]] = {"chsic": chsic, "rcot": rcot, "cmiknn": cmiknn}

__all__ = ["chsic", "rcot", "cmiknn", "TESTS", "CIResult"]
