"""Disk space of a medattn installation and of each extra, measured in this Python environment.

    python benchmarks/install_size.py

Walks the requirements of the installed medattn (its core, then each extra) through the installed
distributions and adds up the files each distribution installed (its RECORD), so it measures what
``pip install`` put on this disk, with the versions installed here. The torch stack (torch and
what it pulls in: CUDA libraries and triton with a CUDA build, nothing with a CPU build) is shown
apart, since it depends on the build. A requirement that is not installed is listed as missing
(its size then is not counted). Run it in a fresh virtual environment for a clean figure.
"""

from __future__ import annotations

import re
from importlib import metadata

from packaging.requirements import Requirement

EXTRAS = ("test", "fast", "ray", "tensorboard", "mlflow", "dev")


def _name(text: str) -> str:
    return re.sub(r"[-_.]+", "-", text).lower()


def _dist(name: str):
    try:
        return metadata.distribution(name)
    except metadata.PackageNotFoundError:
        return None


def size_mb(name: str) -> float:
    dist = _dist(name)
    if dist is None:
        return 0.0
    total = 0
    for f in dist.files or []:
        p = f.locate()
        if p.is_file():
            total += p.stat().st_size
    return total / 2**20


def closure(requirements: list[str], extras: tuple[str, ...] = ()) -> tuple[set, set]:
    """(installed distribution names reachable from ``requirements``, missing ones)."""
    seen, missing = set(), set()
    todo = [(r, extras) for r in requirements]
    while todo:
        text, active = todo.pop()
        req = Requirement(text)
        if req.marker and not any(req.marker.evaluate({"extra": e}) for e in active or ("",)):
            continue
        name = _name(req.name)
        dist = _dist(name)
        if dist is None:
            missing.add(name)
            continue
        key = (name, tuple(sorted(req.extras)))
        if key in seen:
            continue
        seen.add(key)
        todo += [(r, tuple(req.extras)) for r in dist.requires or []]
    return {n for n, _ in seen}, missing


def main() -> None:
    own = metadata.distribution("medattn")
    reqs = own.requires or []
    core, core_missing = closure([r for r in reqs if "extra ==" not in r])
    torch_stack, _ = closure(["torch"])
    rows = [("torch stack", sorted(torch_stack), set()),
            ("medattn core (without the torch stack)", sorted(core - torch_stack), core_missing)]
    for extra in EXTRAS:
        deps, missing = closure([r for r in reqs if f'extra == "{extra}"' in r], (extra,))
        deps.discard("medattn")
        rows.append((f"[{extra}] beyond the core", sorted(deps - core), missing))
    print(f"{'part':<42} {'MB':>8}  packages")
    for label, names, missing in rows:
        mb = sum(size_mb(n) for n in names)
        note = f"  (missing: {', '.join(sorted(missing))})" if missing else ""
        print(f"{label:<42} {mb:8.0f}  {len(names)}{note}")
    torch = _dist("torch")
    print(f"\ntorch {torch.version if torch else 'missing'}; sizes in MiB of installed files")


if __name__ == "__main__":
    main()
