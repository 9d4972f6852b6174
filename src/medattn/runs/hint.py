"""Which folder did the user mean? A RUNS_DIR is the folder that holds ``runs/`` (what `medattn
study --out` and `medattn train --runs` write). Given a missing path, a parent of RUNS_DIR or a
folder inside it, :func:`check_runs_dir` names the RUNS_DIR nearby, as the data errors name the
data folder.
"""

from __future__ import annotations

import os
from pathlib import Path

from medattn.errors import DataError

__all__ = ["check_runs_dir", "nearby_runs_dirs"]


def _is_runs_dir(p: Path) -> bool:
    return (p / "runs").is_dir()


def nearby_runs_dirs(path: str | os.PathLike, depth: int = 2) -> list[Path]:
    """RUNS_DIRs near ``path``: the nearest folder above it that is one (``path`` inside a
    study), else those up to ``depth`` levels below it, else below its nearest existing parent;
    at most 5, sorted."""
    p = Path(path).expanduser()
    for up in p.resolve().parents:  # inside a study: runs/, a run folder, runs/runs
        if _is_runs_dir(up):
            return [up]
    base = p if p.is_dir() else next((a for a in p.parents if a.is_dir()), None)
    if base is None:
        return []
    found, level = [], [base]
    for _ in range(depth):
        level = [c for d in level for c in sorted(_subdirs(d))]
        found += [c.resolve() for c in level if _is_runs_dir(c)]
    return sorted(set(found))[:5]


def _subdirs(d: Path) -> list[Path]:
    try:
        return [c for c in d.iterdir() if c.is_dir() and not c.name.startswith(".")]
    except OSError:
        return []


def check_runs_dir(path: str | os.PathLike, command: str | None = None) -> Path:
    """``path`` as a RUNS_DIR, or a :class:`DataError` that says what is wrong and names the
    RUNS_DIR(s) nearby: as `medattn <command> DIR` where a command is given (the CLI), else as
    the folders (the library's entry points)."""
    p = Path(path).expanduser()
    if _is_runs_dir(p):
        return p
    what = ("does not exist" if not p.exists() else "is not a folder" if not p.is_dir()
            else "has no 'runs/' folder, so it is not a RUNS_DIR")
    near = nearby_runs_dirs(p)
    written = "the folder that holds runs/, as `medattn study --out` or `medattn train --runs` wrote it"
    if near:
        shown = ", ".join(f"`medattn {command} {_shown(d)}`" if command else f"`{_shown(d)}`"
                          for d in near)
        message = f"{p} {what}; did you mean {shown}? (a RUNS_DIR is {written})"
    else:
        message = f"{p} {what}, and no RUNS_DIR was found near it; give {written}."
    raise DataError(message)


def _shown(p: Path) -> str:
    try:
        return str(p.resolve().relative_to(Path.cwd().resolve())) or "."
    except ValueError:
        return str(p)
