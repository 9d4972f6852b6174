"""What a run was trained on: the data fingerprint, a per-part summary, and what changed since.

A run stores both in its record; a finished run is checked against the data on disk before it is
returned as done, and a resume state is refused when its fingerprint differs.
"""

from __future__ import annotations

import hashlib
from typing import Any

from medattn.data import fingerprint


def data_fingerprint(table, ood: dict) -> str:
    """Hash of the sample tables' ids, labels and groups, in-distribution pool and OOD sets
    (image files are not read); equals ``medattn.data.fingerprint(table)`` without OOD sets."""
    if not ood:
        return fingerprint(table)
    h = hashlib.sha256(fingerprint(table).encode())
    for name, t in sorted(ood.items()):
        h.update(f"|{name}:{fingerprint(t)}".encode())
    return h.hexdigest()[:16]


def data_summary(table, ood: dict) -> dict[str, Any]:
    """What a run was trained on, to say later what changed: per part (``pool``, ``ood-<name>``)
    the number of images, the images per class and the part's fingerprint."""
    parts = {"pool": table, **{f"ood-{n}": t for n, t in sorted(ood.items())}}
    classes = list(table.attrs.get("classes") or [])
    out = {}
    for name, t in parts.items():
        counts = t["label"].value_counts()
        out[name] = {"images": int(len(t)), "fingerprint": fingerprint(t),
                     "per_class": {str(c): int(counts.get(k, 0)) for k, c in enumerate(classes)}}
    return out


def data_change(record: dict, task) -> str | None:
    """None if ``record`` was trained on the data ``task`` holds now, else what changed."""
    if record.get("data_fingerprint") in (None, data_fingerprint(task.table, task.ood)):
        return None
    then, now = record.get("data_summary") or {}, data_summary(task.table, task.ood)
    changes = []
    for part in sorted(set(then) | set(now)) if then else ():
        a, b = then.get(part), now.get(part)
        if a is None or b is None:
            changes.append(f"{part} {'added' if a is None else 'removed'}")
        elif a["fingerprint"] != b["fingerprint"]:
            diff = [f"{c} {a['per_class'].get(c, 0)} -> {b['per_class'].get(c, 0)}"
                    for c in dict.fromkeys([*a["per_class"], *b["per_class"]])
                    if a["per_class"].get(c, 0) != b["per_class"].get(c, 0)]
            what = f"{a['images']} -> {b['images']} images" + (f" ({', '.join(diff)})" if diff
                                                              else ", other ids/labels/groups")
            changes.append(f"{part}: {what}")
    if not changes:  # the same counts with other ids, labels or groups
        return (f"data fingerprint {record['data_fingerprint']} when trained, "
                f"{data_fingerprint(task.table, task.ood)} now")
    return "; ".join(changes)
