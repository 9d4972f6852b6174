"""The answer first: one plain-words line per comparison of Table 2.

``+GA vs ResNet18 base on isic (in-distribution test): undecided: the data allow anything from
8.8 pp worse to 29.3 pp better (corrected t-test, 95% CI, 3 vs 3 runs); only a true difference of
22.4 pp or more is found with 80% power at this n``.

The lines read a :class:`medattn.analysis.compare.CompareResult` through its columns only
(``decision``, ``diff``, ``diff_ci_low``/``diff_ci_high``, ``significant``, ``p``, ``n``,
``ref_n``, ``detectable_diff``), so how those are computed can change without touching this
module. The decision is the Bayesian test's where the table has one, else the marking test's
(p < alpha). Used by the report's first section, ``medattn compare`` (printed first) and the
demo's hand-over (printed first).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from medattn.analysis.settings import TEST_LABELS, recorded
from medattn.models import registry as R

__all__ = ["Verdict", "deciding_table", "verdict_head", "verdict_lines", "verdict_markdown",
           "verdict_text", "verdicts"]


@dataclass
class Verdict:
    """One comparison in words: ``decision`` is better / worse / equivalent / undecided (Bayes)
    or better / worse / no difference shown (the marking test alone); differences in pp."""

    dataset: str
    set: str
    model: str  # the registry's label: ``+GA`` (vs its own base) or ``ViT-21k``
    reference: str  # ``ResNet18 base``
    decision: str
    diff: float
    ci_low: float
    ci_high: float
    n: str  # ``3 vs 3 runs``
    line: str  # ``<who>: <decision>: ...``
    who: str = ""  # ``+GA vs ResNet18 base on isic, in-distribution test``


def _ok(v) -> bool:
    return v is not None and v is not pd.NA and not (isinstance(v, float) and math.isnan(v))


def _true(v) -> bool:
    """True for True / numpy True; False for False, None and pandas' NA (nullable booleans)."""
    return v is not None and v is not pd.NA and bool(v == True)  # noqa: E712


def _pp(v: float) -> str:
    """A difference in words: ``8.8 pp worse`` / ``29.3 pp better`` / ``0.0 pp``."""
    if abs(v) < 0.05:
        return "no different (0.0 pp)"
    return f"{abs(v):.1f} pp {'better' if v > 0 else 'worse'}"


def _range(lo: float, hi: float) -> str:
    if lo < -100 and hi > 100:  # wider than the scale of a balanced accuracy in %
        return (f"anything: the CI [{lo:+.1f}, {hi:+.1f}] pp is wider than the whole scale "
                f"(±100 pp)")
    if lo >= 0 or hi <= 0:  # both ends on one side
        side = "better" if lo >= 0 else "worse"
        a, b = sorted((abs(lo), abs(hi)))
        return f"{a:.1f} to {b:.1f} pp {side}"
    return f"anything from {_pp(lo)} to {_pp(hi)}"


def _decision(r) -> str:
    if isinstance(getattr(r, "decision", None), str) and r.decision:
        return r.decision
    if _true(r.significant):
        return "better" if r.diff > 0 else "worse"
    return "no difference shown"


def _model(r) -> str:
    """The registry's label: ``+GA`` against its own base, ``ViT-21k`` against another's."""
    return (R.variant_label(r.model) if r.backbone == r.reference
            else R.model_label(r.backbone, r.model))


def _who(r) -> str:
    where = "in-distribution test" if r.set in ("id", "test") else f"OOD test {r.set[4:]}"
    return f"{_model(r)} vs {R.backbone_label(r.reference)} base on {r.dataset}, {where}"


def _line(r, decision: str, test: str, level: str, margin: float, power: float,
          design: str | None) -> str:
    who = _who(r)
    n = f"{r.n} vs {r.ref_n} runs"
    if not _ok(r.diff_ci_low) or not _ok(r.diff_ci_high):
        return f"{who}: {decision}: difference {r.diff:+.1f} pp, no CI ({n})."
    ci = f"{test}, {level} CI, {n}"
    if decision in ("better", "worse"):
        text = (f"{who}: {decision}: {_pp(r.diff)} on average; the data allow "
                f"{_range(r.diff_ci_low, r.diff_ci_high)} ({ci})")
    elif decision == "equivalent":
        text = (f"{who}: equivalent within ±{margin:g} pp: {r.diff:+.1f} pp; the data allow "
                f"{_range(r.diff_ci_low, r.diff_ci_high)} ({ci})")
    else:
        text = f"{who}: {decision}: the data allow {_range(r.diff_ci_low, r.diff_ci_high)} ({ci})"
        if decision == "undecided" and _true(r.significant):  # the two tests disagree
            text += (f"; the {test} marks it (p {r.p:.3f}), the Bayesian test cannot yet "
                     f"exclude a difference within ±{margin:g} pp")
        if _ok(r.detectable_diff) and r.detectable_diff > 100:
            text += (f"; at this n no possible difference (at most 100 pp) would be found with "
                     f"{power:.0%} power")
        elif _ok(r.detectable_diff):
            text += (f"; at this n only a true difference of {r.detectable_diff:.1f} pp or more "
                     f"would be found ({power:.0%} power)")
        if design:
            text += f"; a design that could decide: {design}"
    return text + "."


def verdicts(result, design: str | None = None) -> list[Verdict]:
    """One :class:`Verdict` per comparison of ``result.table`` (rows with a reference), in the
    table's order. ``design``: where the reader finds a design that could decide (``see
    Design``), added to the undecided lines."""
    t = result.table
    if t is None or t.empty:
        return []
    st = recorded(result.settings)
    alpha, margin, power = st.alpha, st.margin, st.power
    level = f"{100 * (1 - alpha):g}%"
    out = []
    for r in t[t["reference"].notna()].itertuples(index=False):
        test = TEST_LABELS.get(r.test, str(r.test)) if isinstance(r.test, str) else "test"
        decision = _decision(r)
        out.append(Verdict(r.dataset, r.set, _model(r), f"{R.backbone_label(r.reference)} base",
                           decision, float(r.diff), float(r.diff_ci_low) if _ok(r.diff_ci_low)
                           else math.nan, float(r.diff_ci_high) if _ok(r.diff_ci_high)
                           else math.nan, f"{r.n} vs {r.ref_n} runs",
                           _line(r, decision, test, level, margin, power, design), _who(r)))
    return out


def verdict_lines(result, design: str | None = None) -> list[str]:
    """The plain-words lines of :func:`verdicts`."""
    return [v.line for v in verdicts(result, design)]


def _source(result) -> str:
    t = result.table
    has_bayes = t is not None and "decision" in t and t["decision"].notna().any()
    st = recorded(result.settings)
    alpha, test = st.alpha, TEST_LABELS.get(st.marking_test, "marking test")
    the = "" if test.startswith("Welch") else "the "
    return (f"decision by the Bayesian correlated t-test, CI of {the}{test}" if has_bayes
            else f"decision by {the}{test} at alpha {alpha:g}, and its CI")


def verdict_head(result) -> str:
    """The line above the verdicts: what they compare and which test decides."""
    return f"What the study found (each variant minus its base; {_source(result)}):"


def verdict_text(result, design: str | None = None) -> str:
    """The verdict block for a terminal or Markdown: a heading line, then one ``- `` line per
    comparison; empty when there is nothing to compare."""
    lines = verdict_lines(result, design)
    if not lines:
        return ""
    return verdict_head(result) + "\n" + "\n".join(f"- {x}" for x in lines)


def verdict_markdown(result, design: str | None = None) -> str:
    """As :func:`verdict_text`, each line's comparison and decision in bold, the head apart."""
    vs = verdicts(result, design)
    if not vs:
        return ""
    cut = [len(v.who) + 2 + len(v.decision) for v in vs]  # "<who>: <decision>" in bold
    return verdict_head(result) + "\n\n" + "\n".join(
        f"- **{v.line[:k]}**{v.line[k:]}" for v, k in zip(vs, cut))


def deciding_table(result) -> pd.DataFrame:
    """The columns that decide, one row per comparison (strings): data set, test set, model,
    reference, difference and the marking test's CI (pp, one decimal), decision, n (runs)."""
    vs = verdicts(result)
    alpha = recorded(result.settings).alpha
    level = f"{100 * (1 - alpha):g}%"
    return pd.DataFrame({
        "data set": [v.dataset for v in vs],
        "test set": ["in-distribution" if v.set in ("id", "test") else f"OOD {v.set[4:]}".strip()
                     for v in vs],
        "model": [v.model for v in vs],
        "vs": [v.reference for v in vs],
        "difference (pp)": [f"{v.diff:+.1f}" for v in vs],
        f"{level} CI (pp)": ["" if math.isnan(v.ci_low) else f"[{v.ci_low:+.1f}, {v.ci_high:+.1f}]"
                            for v in vs],
        "decision": [v.decision for v in vs],
        "n (runs)": [v.n.replace(" runs", "") for v in vs],
    }, columns=["data set", "test set", "model", "vs", "difference (pp)", f"{level} CI (pp)",
                "decision", "n (runs)"])
