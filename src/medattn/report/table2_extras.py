"""Display tables of the paired statistics of Table 2 (strings, for Markdown / HTML / LaTeX).

Each function takes a part of :class:`medattn.analysis.compare.CompareResult` and returns a
DataFrame of formatted strings; ``compare``'s Markdown output and the HTML report show the same.
"""

from __future__ import annotations

import math

import pandas as pd

from medattn.analysis.labels import model_label
from medattn.analysis.settings import TEST_LABELS, recorded
from medattn.models.registry import backbone_label

__all__ = ["divergence_display", "pairs_display", "recheck_display", "sensitivity_display",
           "terminal_table"]


def _num(v, spec: str) -> str:
    if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
        return ""
    return format(v, spec)


def _p(v) -> str:
    if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
        return ""
    return f"{v:.2g}" if v < 0.001 else f"{v:.3f}"


def _vs(reference: str) -> str:
    return f"{backbone_label(reference)} base"


def pairs_display(pairs: pd.DataFrame) -> pd.DataFrame:
    """Per-split differences variant − reference (pp), one row per comparison, one column per
    split seed (``s<seed>``; k-fold runs: ``s<seed>f<fold>``); empty where a split has no pair."""
    if pairs is None or pairs.empty:
        return pd.DataFrame()
    keys = ["dataset", "set", "backbone", "model", "reference"]
    # one column per pairing unit: split seed, and for k-fold runs (repetition seed, fold)
    fold = pairs["fold"] if "fold" in pairs else pd.Series(float("nan"), index=pairs.index)
    unit = pairs.assign(_fold=fold.fillna(-1).astype(int))
    wide = unit.pivot_table(index=keys, columns=["split_seed", "_fold"], values="diff",
                            sort=False)
    out = pd.DataFrame({
        "dataset": [k[0] for k in wide.index], "set": [k[1] for k in wide.index],
        "model": [model_label(k[2], k[3]) for k in wide.index],
        "vs": [_vs(k[4]) for k in wide.index]})
    for seed, f in sorted(wide.columns):
        name = f"s{int(seed)}" if f < 0 else f"s{int(seed)}f{int(f)}"
        out[name] = [_num(v, "+.2f") for v in wide[(seed, f)].to_numpy()]
    return out


def divergence_display(divergence: pd.DataFrame) -> pd.DataFrame:
    """Diverged / finished final runs per model with the rate and its 95% Clopper-Pearson CI."""
    if divergence is None or divergence.empty:
        return pd.DataFrame()
    d = divergence
    return pd.DataFrame({
        "dataset": d["dataset"].to_numpy(),
        "model": [model_label(b, m) for b, m in zip(d["backbone"], d["model"])],
        "diverged / finished": [f"{k} / {n}" for k, n in zip(d["diverged"], d["finished"])],
        "rate [95% CI] (%)": [f"{100 * r:.0f} [{100 * lo:.0f}, {100 * hi:.0f}]"
                              for r, lo, hi in zip(d["rate"], d["ci_low"], d["ci_high"])],
    })


def sensitivity_display(sensitivity: pd.DataFrame) -> pd.DataFrame:
    """The comparison on converged runs and on all runs (diverged counted), side by side."""
    if sensitivity is None or sensitivity.empty:
        return pd.DataFrame()
    s = sensitivity
    out = pd.DataFrame({
        "dataset": s["dataset"].to_numpy(), "set": s["set"].to_numpy(),
        "model": [model_label(b, m) for b, m in zip(s["backbone"], s["model"])],
        "vs": [_vs(r) for r in s["reference"]]})
    for name, label in (("converged", "converged"), ("all", "all runs")):
        out[f"{label}: pairs"] = [_num(v, "d") if pd.notna(v) else "" for v in s[f"{name}_n_pairs"]]
        out[f"{label}: diff (pp)"] = [_num(v, "+.2f") for v in s[f"{name}_diff"]]
        out[f"{label}: p"] = [_p(v) for v in s[f"{name}_p"]]
        out[f"{label}: Bayes"] = [v if isinstance(v, str) else "" for v in s[f"{name}_decision"]]
    return out


def recheck_display(table: pd.DataFrame) -> pd.DataFrame:
    """Every comparison Welch's test marks (p < alpha, the paper's bold) and what the marking test
    and the Bayesian test say about it. Empty when Welch marks the table itself."""
    t = table[table["reference"].notna() & (table["welch_significant"] == True)]  # noqa: E712
    if t.empty or (t["test"] == "welch").all():
        return pd.DataFrame()
    test = t["test"].iloc[0]
    survives = ["yes, also after correction" if adj is True else "yes" if sig is True else "no"
                for sig, adj in zip(t["significant"], t["significant_adjusted"])]
    return pd.DataFrame({
        "dataset": t["dataset"].to_numpy(), "set": t["set"].to_numpy(),
        "model": [model_label(b, m) for b, m in zip(t["backbone"], t["model"])],
        "vs": [_vs(r) for r in t["reference"]],
        "Welch p": [_p(v) for v in t["welch_p"]],
        f"{TEST_LABELS.get(test, test)} p": [_p(v) for v in t["p"]],
        "mark survives": survives,
        "Bayes": [v if isinstance(v, str) else "" for v in t["decision"]],
    })


def _diff_cell(r) -> str:
    if not _num(r.diff, "+.1f"):
        return "n/a"
    ci = (f" [{_num(r.diff_ci_low, '+.1f')}, {_num(r.diff_ci_high, '+.1f')}]"
          if _num(r.diff_ci_low, "+.1f") else "")
    return _num(r.diff, "+.1f") + ci


def terminal_table(result) -> str:
    """Table 2 in brief for a terminal (plain text, about 100 columns): per data set, test set
    and model the balanced accuracy, and for each variant its difference from the base with the
    marking test's CI and p and the Bayesian P(better); ``medattn compare`` has the rest."""
    t = result.table
    if t is None or t.empty:
        return "Table 2: no finished final runs to compare."
    st = recorded(result.settings)
    alpha, margin = st.alpha, st.margin
    test = TEST_LABELS.get(t["test"].dropna().iloc[0] if t["test"].notna().any() else "welch")
    level = f"{100 * (1 - alpha):g}%"
    rows = []
    for r in t.itertuples(index=False):
        base = not isinstance(r.reference, str)
        mark = "*" if r.significant is True else ""
        rows.append({
            "data set": r.dataset, "set": r.set,
            "model": model_label(r.backbone, r.model) + ("" if base or r.reference == r.backbone
                                                    else f" vs {_vs(r.reference)}"),
            "bacc (%)": f"{r.mean:.1f} ± {_num(r.sd, '.1f') or 'n/a'}",
            "n": str(r.n),
            f"vs base (pp) [{level} CI]": "" if base else _diff_cell(r) + mark,
            "p": "" if base else _p(r.p),
            "P(better)": "" if base else _num(r.p_better, ".2f"),
            "Bayes": "" if base or not isinstance(r.decision, str) else r.decision})
    frame = pd.DataFrame(rows)
    frame = frame[[c for c in frame.columns if (frame[c] != "").any()]]
    head = (f"Table 2: balanced accuracy over the final runs (mean ± sd); each variant minus its "
            f"base in percentage points, {test} p (* p < {alpha:g}), Bayesian probability of a "
            f"gain above {margin:g} pp.")
    widths = {c: max(len(c), *(len(v) for v in frame[c])) for c in frame.columns}
    lines = ["  ".join(c.ljust(widths[c]) for c in frame.columns).rstrip()]
    lines += ["  ".join(v.ljust(widths[c]) for c, v in zip(frame.columns, row)).rstrip()
              for row in frame.itertuples(index=False)]
    return head + "\n\n" + "\n".join(lines)
