"""The end of a study in numbers: balanced accuracy of its final runs per data set, model and test
set (``final_summary``, also the demo's summary.csv) and the table ``medattn study`` prints.

It sits in analysis, not in training, because it reuses the summary Table 2 uses
(:func:`medattn.analysis.summary.summarize_runs`) and training never imports analysis.
"""

from __future__ import annotations

import pandas as pd

from medattn.analysis.paired import run_info
from medattn.analysis.summary import summarize_runs
from medattn.models import registry as R
from medattn.models.zoo import parse_model_name
from medattn.runs import store
from medattn.training.study import StudyResult

__all__ = ["final_summary", "format_study"]


def final_summary(finals: store.FinalRuns) -> pd.DataFrame:
    """Balanced accuracy of the current selection's finished final runs per data set, model and
    set (``test``, ``ood-<name>``): ``mean_pct``, ``sd_pct`` (ddof=1) and ``n`` from the summary
    Table 2 uses (:func:`medattn.analysis.summary.summarize_runs`), with ``n_diverged`` and
    ``n_failed``: such runs are counted apart, never averaged in."""
    frame = finals.current
    if frame.empty:
        return pd.DataFrame()
    summary = summarize_runs(frame, info=run_info(finals.records.values()))[0]
    found = {(r.dataset, r.backbone, r.model, "test" if r.set == "id" else r.set): r
             for r in summary.itertuples()}
    sets = [c[5:] for c in frame.columns if c.startswith("bacc_") and c != "bacc_val"]
    rows = []
    for (ds, model), g in frame.groupby(["dataset", "model"], sort=False):
        b, v = g["backbone"].iloc[0], g["variant"].iloc[0]
        for name in [x for x in sets if g[f"bacc_{x}"].notna().any()] or ["test"]:
            st = found.get((ds, b, v, name))
            rows.append(dict(dataset=ds, model=model, set=name,
                             mean_pct=st.mean if st else float("nan"),
                             sd_pct=st.sd if st else float("nan"), n=st.n if st else 0,
                             n_diverged=int((g["status"] == "diverged").sum()),
                             n_failed=int((g["status"] == "failed").sum())))
    return pd.DataFrame(rows)


def format_study(res: StudyResult) -> str:
    """The study's end summary for a terminal: run counts in words, then balanced accuracy per
    data set, model (the registry's label and order) and test set as an aligned table."""
    counts = res.records["status"].value_counts() if len(res.records) else pd.Series(dtype=int)
    order = ["done", "diverged", "failed"]
    words = [f"{int(counts[k])} {k}" for k in order + sorted(set(counts.index) - set(order))
             if k in counts.index]
    lines = [f"runs: {', '.join(words) or 'none'}"]
    s = final_summary(store.final_runs(res.runs_dir))
    if s is None or not len(s):
        return lines[0]
    specs = {m: parse_model_name(m) for m in s["model"].unique()}
    key = {m: (R.backbone_rank(p.backbone), p.backbone, R.variant_rank(p.variant))
           for m, p in specs.items()}
    datasets = list(dict.fromkeys(s["dataset"]))
    rows = sorted(s.itertuples(index=False), key=lambda r: (
        datasets.index(r.dataset), key[r.model], r.set != "test", r.set))
    table = [["data set", "model", "test set", "balanced accuracy (%)", "runs", "diverged",
              "failed"]]
    for r in rows:
        sd = "n/a" if r.sd_pct != r.sd_pct else f"{r.sd_pct:.1f}"
        acc = "–" if r.mean_pct != r.mean_pct else f"{r.mean_pct:.1f} ± {sd}"
        table.append([str(r.dataset), R.model_label(specs[r.model].backbone,
                                                    specs[r.model].variant),
                      "in-distribution" if r.set == "test" else str(r.set), acc, str(r.n),
                      str(r.n_diverged), str(r.n_failed)])
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in table]
    return "\n".join(lines)
