"""Exclusive locks on a runs folder and on one run, held while a process works on them.

A lock is an ``flock`` on a small file (``RUNS_DIR/.lock``, ``runs/<id>/.lock``). The kernel drops
it when its holder exits, however it exits (Ctrl-C, ``kill -9``, a crash, a lost Ray worker), so
there is never a stale lock to clean up by hand. The file holds the holder's PID, host, start time
and command line, which a refused process quotes. (The ``filelock`` package locks the same way but
does not tell who holds a lock, see docs/dependencies.md.) Locks are re-entrant within one thread.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from medattn.runs.atomic import write_error
from medattn.errors import StoreError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

log = logging.getLogger("medattn.train")

_held: dict[str, list] = {}  # path -> [fd, thread id, depth]
_guard = threading.Lock()


def holder(path: str | os.PathLike) -> dict:
    """What the lock file at ``path`` says about its (last) holder: ``pid``, ``host``, ``since``,
    ``command``; empty if unknown. Whether the lock is held now is not checked."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return {}


def _describe(info: dict) -> str:
    if not info.get("pid"):
        return "another process"
    host = "" if info.get("host") == socket.gethostname() else f" on {info.get('host')}"
    cmd = f" (`{info['command']}`)" if info.get("command") else ""
    return f"process {info['pid']}{host}{cmd}, since {info.get('since', '?')}"


def _open(path: Path) -> int:
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
    except PermissionError as denied:  # a colleague's lock file (0644): flock works read-only
        try:
            return os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:  # no lock file, and the folder is not writable: say that
            raise write_error(denied, path, "create the lock file") from None
        except OSError as err:
            raise write_error(err, path) from None
    except OSError as err:
        if path.exists():  # a read-only file system: lock it read-only; writes fail later, clearly
            with contextlib.suppress(OSError):
                return os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        raise write_error(err, path, "create the lock file") from None  # the first error


@contextlib.contextmanager
def exclusive(path: str | os.PathLike, what: str, timeout: float = 0.0) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if absent) for the ``with`` block.

    If another process (or another thread of this one) holds it, wait up to ``timeout`` seconds,
    then raise :class:`StoreError` naming ``what`` and the holder's PID.
    """
    path = Path(path).absolute()
    key, me = str(path), threading.get_ident()
    with _guard:
        entry = _held.get(key)
        if entry is not None and entry[1] == me:
            entry[2] += 1
            reentered = True
        else:
            reentered = False
    if reentered:
        try:
            yield
        finally:
            with _guard:
                _held[key][2] -= 1
        return
    if entry is not None:  # another thread of this process
        raise StoreError(f"{what} is in use by another thread of this process ({os.getpid()}).")
    if fcntl is None:  # pragma: no cover - Windows: no flock
        log.warning("no file locking on this platform: do not start two processes on %s", what)
        yield
        return
    if not path.parent.is_dir():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise write_error(err, path.parent) from None
    fd = _open(path)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except (BlockingIOError, PermissionError):  # held (some NFS setups say EACCES)
                if time.monotonic() >= deadline:
                    raise StoreError(f"{what} is in use by {_describe(holder(path))}; wait for it "
                                     "to finish or stop it, then run again.") from None
                time.sleep(0.1)
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "since": _dt.datetime.now().isoformat(timespec="seconds"),
                "command": " ".join([os.path.basename(sys.argv[0] or "python"),
                                     *sys.argv[1:]])[:200]}
        with contextlib.suppress(OSError):  # informative only; a read-only handle cannot write
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(info).encode(), 0)
        with _guard:
            _held[key] = [fd, me, 0]
        try:
            yield
        finally:
            with _guard:
                del _held[key]
    finally:
        os.close(fd)  # closing the only descriptor releases the flock
