"""The one atomic file writer of medattn: every file the package writes goes through it.

:func:`atomic_write` has a writer fill a temporary file in the target's folder, flushes it to disk
and moves it onto the target with :func:`os.replace`, so a kill or a crash at any moment leaves
either the old or the new file, never a torn one. The file gets the mode ``open()`` would give it
(0644 under the usual umask 022), also when the writer (safetensors, a library) creates its
file 0600 itself. Failing file-system calls raise :class:`~medattn.errors.StoreError` naming the
file and the fix. Temporary files are ``.<name>.<pid>-<random>.tmp``; a killed writer's are
removed by :func:`medattn.runs.store.sweep`.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import secrets
import stat
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from medattn.errors import StoreError

__all__ = ["atomic_write", "json_safe", "write_error", "write_json", "write_text"]


def write_error(err: OSError, path: str | os.PathLike, action: str = "write") -> StoreError:
    """A one-line :class:`StoreError` for a failed file-system call on ``path``."""
    code = getattr(err, "errno", None)
    if code in (errno.ENOSPC, errno.EDQUOT):
        what = "no space left on the device" if code == errno.ENOSPC else "disk quota exceeded"
        return StoreError(f"{path}: cannot {action}: {what}; free some space and run again "
                          "(finished work is kept).")
    if code == errno.EROFS:
        return StoreError(f"{path}: cannot {action}: the file system is read-only; copy the "
                          "folder to a writable place or write the results elsewhere.")
    if code in (errno.EACCES, errno.EPERM):
        return StoreError(f"{path}: cannot {action}: permission denied; make the folder "
                          "writable (and readable) for you, or write the results elsewhere.")
    return StoreError(f"{path}: cannot {action}: {getattr(err, 'strerror', None) or err}.")


def _space_error(err: BaseException) -> OSError | None:
    """The full-disk OSError behind a library's own exception (its message), if that is what it
    is; libraries that write files themselves do not all raise OSError."""
    text = str(err)
    for code in (errno.ENOSPC, errno.EDQUOT):
        if os.strerror(code) in text or f"os error {code})" in text:
            return OSError(code, os.strerror(code))
    return None


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[str], None], *,
                 durable: bool = True) -> Path:
    """Call ``write(tmp_path)``, then move the temporary file onto ``path`` atomically.

    Creates the parent folder. ``durable`` flushes the file to disk before the move (so a
    machine crash, too, leaves the old or the new file); a cache entry that is rebuilt when lost
    can skip it. If ``write`` raises, the temporary file is removed, ``path`` is untouched and the
    exception propagates (a full disk or another failing file-system call as
    :class:`StoreError`). Returns ``path``.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(3)}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        mode = stat.S_IMODE(os.fstat(fd).st_mode)
        os.close(fd)
    except OSError as err:
        raise write_error(err, path) from None
    try:
        write(str(tmp))
        if stat.S_IMODE(os.stat(tmp).st_mode) != mode:  # safetensors makes its own file (0600)
            os.chmod(tmp, mode)
        if durable:
            _fsync(tmp)
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(err, OSError):
            raise write_error(err, path) from None
        space = _space_error(err) if isinstance(err, Exception) else None
        if space is not None:
            raise write_error(space, path) from err
        raise
    return path


def write_text(path: str | os.PathLike, data: str | bytes, *, durable: bool = True) -> Path:
    """Write ``data`` (text as UTF-8, or bytes) to ``path`` atomically; returns ``path``."""
    raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(raw)
    return atomic_write(path, write, durable=durable)


def json_safe(obj: Any) -> Any:
    """JSON-safe copy: numpy scalars to Python, NaN/inf to None (JSON has no NaN)."""
    if isinstance(obj, Mapping):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON (NaN as null) to ``path`` atomically; returns ``path``."""
    return write_text(path, json.dumps(json_safe(obj), indent=2, sort_keys=False) + "\n")
