"""Checks of a published summary before its comparisons are read: a standard deviation of a
balanced accuracy in percent above 50 pp is implausible (accuracies between chance and 100% can
hardly spread that far over splits; the paper's ViT-1k OOD sd of 113.45 is one, presumably a
typo) and makes every comparison with it uninformative."""

from __future__ import annotations

import pandas as pd

from medattn.models import registry as R

__all__ = ["SD_LIMIT", "implausible_sds"]

SD_LIMIT = 50.0  # pp


def implausible_sds(table: pd.DataFrame, limit: float = SD_LIMIT) -> list[str]:
    """One warning per summary row (data set, model, set) whose sd exceeds ``limit`` pp, naming
    the comparisons it enters and their CI. ``table``: compare's long table."""
    out = []
    rows = table.drop_duplicates(["dataset", "backbone", "model", "set"])
    for r in rows[rows["sd"] > limit].itertuples(index=False):
        uses = table[((table["backbone"] == r.backbone) & (table["model"] == r.model)
                      & (table["dataset"] == r.dataset) & (table["set"] == r.set)
                      & table["reference"].notna())]
        cis = "; ".join(f"vs {R.backbone_label(u.reference)} base: CI [{u.diff_ci_low:+.1f}, "
                        f"{u.diff_ci_high:+.1f}] pp" for u in uses.itertuples(index=False))
        out.append(f"implausible published sd: {r.dataset} {r.set} "
                   f"{R.model_label(r.backbone, r.model)} has sd {r.sd:.2f} pp (> {limit:g} pp; "
                   f"a balanced accuracy in % cannot spread that far, likely a typo in the "
                   f"source), so its comparisons say nothing" + (f" ({cis})" if cis else "")
                   + "; check the value before reading them.")
    return out
