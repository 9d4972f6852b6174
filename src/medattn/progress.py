"""Console output that suits a terminal, a log file and a script alike.

* :func:`progress_bar` is tqdm on a terminal (and in a notebook); where stderr is not a terminal
  (a log file, a pipe, a batch job) it writes a plain line at most every :data:`LINE_INTERVAL`
  seconds instead: no carriage returns, no escape codes, nested bars included.
* Quiet mode (``--quiet``; :func:`set_quiet`) turns every bar off and logging down to warnings.
  It travels in the environment (``MEDATTN_QUIET=1``), so worker processes follow it.
* :func:`warn_once` shows a warning once per process tree: a worker started after the warning was
  shown stays silent (the mark travels in the environment too), so a notice printed before the
  work starts is not repeated from inside it.
* :func:`setup_console` (what the CLI calls) sends log lines and warnings through ``tqdm.write``,
  so they never tear a bar, and shows each warning text once, as one short line.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import time
import warnings
from typing import Any

from tqdm import tqdm as _plain_tqdm

QUIET_ENV = "MEDATTN_QUIET"
SHOWN_ENV = "MEDATTN_SHOWN_WARNINGS"  # hashes of warnings already shown in this process tree
LINE_INTERVAL = 30.0  # seconds between two lines of a bar that is not on a terminal


def quiet() -> bool:
    """True in quiet mode (``--quiet``): no progress bars, no info log lines."""
    return os.environ.get(QUIET_ENV) == "1"


def set_quiet(on: bool = True) -> None:
    """Turn quiet mode on or off for this process and the workers it starts from now on."""
    if on:
        os.environ[QUIET_ENV] = "1"
    else:
        os.environ.pop(QUIET_ENV, None)


def _in_notebook() -> bool:
    if "IPython" not in sys.modules:
        return False
    try:
        ip = sys.modules["IPython"].get_ipython()
        return ip is not None and "IPKernelApp" in ip.config
    except Exception:  # noqa: BLE001 - any doubt: not a notebook
        return False


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or closed
        return False


class LineBar(_plain_tqdm):
    """A tqdm bar for files and pipes: its state as one plain line, at most every ``mininterval``
    seconds (default :data:`LINE_INTERVAL`) and when it closes (if ``leave``), never at zero."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("mininterval", LINE_INTERVAL)
        kwargs["maxinterval"] = max(kwargs["mininterval"], 1.0)
        kwargs["ascii"] = True
        kwargs["dynamic_ncols"] = False
        kwargs["file"] = _Lines(kwargs.get("file") or sys.stderr)
        self._last_n, self._last_t, self._closing = 0, time.time(), False
        super().__init__(*args, **kwargs)

    def __str__(self) -> str:
        d = self.format_dict
        if d["total"] and not d["bar_format"]:  # "desc: 12/48 (25%) [00:30<01:30, 0.40it/s]"
            d["bar_format"] = (("{desc}: " if d["prefix"] else "") + "{n_fmt}/{total_fmt} "
                               "({percentage:.0f}%) [{elapsed}<{remaining}, {rate_fmt}{postfix}]")
        return self.format_meter(**d)

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        # a line per change of the count, at most every mininterval (refresh(), e.g. from
        # set_postfix on every step, is not throttled by tqdm itself), and the last one
        now = self._time()
        if (msg is None and self.n != self._last_n
                and (self._closing or now - self._last_t >= self.mininterval)):
            self._last_n, self._last_t = self.n, now
            self.fp.write(str(self).strip() + "\n")
            self.fp.flush()
        return True

    def close(self) -> None:
        self._closing = True
        super().close()


class _Lines:
    """The stream of a :class:`LineBar`: drops tqdm's bare carriage returns and newlines (its
    terminal line handling), passes everything else through."""

    def __init__(self, stream: Any):
        self._stream = stream

    def write(self, s: str) -> None:
        if s.strip("\r\n"):
            self._stream.write(s)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def progress_bar(iterable: Any = None, *, disable: bool = False, file: Any = None,
                 **kwargs) -> _plain_tqdm:
    """A progress bar (tqdm's arguments: ``total``, ``desc``, ``unit``, ``leave``, ...).

    tqdm's own on a terminal or in a notebook; a :class:`LineBar` where the output is a file or
    pipe; disabled in quiet mode.
    """
    stream = file if file is not None else sys.stderr
    disable = bool(disable) or quiet()
    if _in_notebook():
        from tqdm.auto import tqdm as auto  # notebooks only: it imports ipywidgets

        return auto(iterable, disable=disable, file=file, **kwargs)
    if _is_terminal(stream):
        return _plain_tqdm(iterable, disable=disable, file=stream, **kwargs)
    return LineBar(iterable, disable=disable, file=stream, **kwargs)


def _key(message: str) -> str:
    return hashlib.sha1(message.encode()).hexdigest()[:10]


def warn_once(message: str, category: type[Warning] = UserWarning, stacklevel: int = 2) -> None:
    """``warnings.warn`` unless this text was already warned in this process or in the one
    that started it (the mark travels in the environment)."""
    seen = set(filter(None, os.environ.get(SHOWN_ENV, "").split(",")))
    if _key(message) in seen:
        return
    os.environ[SHOWN_ENV] = ",".join(sorted(seen | {_key(message)}))
    warnings.warn(message, category, stacklevel=stacklevel + 1)


class _WriteHandler(logging.StreamHandler):
    """Log lines through ``tqdm.write``: open bars are lifted, the line printed, bars redrawn."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            _plain_tqdm.write(self.format(record), file=self.stream)
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)


_SHOWN: set[str] = set()  # warning texts shown by this process (setup_console's display)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    text = str(message)
    if text in _SHOWN:  # once per text, whatever resets the warnings module's own registries
        return
    _SHOWN.add(text)
    _plain_tqdm.write(f"warning: {text}", file=file or sys.stderr)


def setup_console(quiet_mode: bool | None = None, level: int = logging.INFO) -> None:
    """Console set-up of the CLI and of worker processes: log lines (``level``, or warnings only
    in quiet mode) and warnings shown once each, as short lines, without tearing progress bars.
    ``quiet_mode`` None keeps the current mode (the environment's)."""
    if quiet_mode is not None:
        set_quiet(quiet_mode)
    root = logging.getLogger()
    for h in [h for h in root.handlers if isinstance(h, _WriteHandler)]:
        root.removeHandler(h)
    if not root.handlers:
        handler = _WriteHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        root.addHandler(handler)
    root.setLevel(logging.WARNING if quiet() else level)
    warnings.showwarning = _show_warning
