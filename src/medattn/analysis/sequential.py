"""Stop when decided: the Bayesian correlated t-test applied after every batch of replicates.

A sequential comparison adds paired differences in batches (a batch of replicates: random
splits today, k-fold repetitions later) and looks at the Bayesian correlated t-test
(:func:`medattn.analysis.stats.bayes_correlated`) after each batch, at the planned numbers of
pairs ``looks = (J_1 < J_2 < ... < J_K)``. It stops at the first look where one posterior
probability (worse / equivalent / better, ROPE +-m) exceeds a threshold, or at J_K undecided.

Looking repeatedly and stopping on the first "decided" inflates the error rates of the fixed
0.95 rule (every look is another chance for noise to cross it; Armitage, McPherson & Rowe 1969).
The threshold here is therefore *calibrated by simulation of the whole sequential procedure*:
a constant posterior threshold across looks (the shape of Pocock's 1977 group-sequential
boundary, on the posterior scale) chosen so that, under the corrected test's data model
(differences ``d_j = delta + c + e_j`` with a shared pool effect ``c`` of variance
``rho sigma^2``, ``rho = r / (1 + r)``, and independent ``e_j``), the studentised mean errors

    T_k = (mean_k(d) - delta) / (s_k sqrt(1/J_k + r))          (t with J_k - 1 df at each look)

cross ``+-t_(thr, J_k - 1)`` at *some* look with probability ``alpha`` (two-sided). Because
every wrong decision needs such a crossing, this one number bounds all error rates at once,
for every sd and every true difference (a bound, not an approximation):

- false "better" or "worse" (true difference inside the ROPE, or of the opposite sign):
  deciding "better" needs ``mean - m > t se`` i.e. ``T > t + (m - delta)/se >= t`` when
  ``delta <= m``; likewise "worse"; so P(false better or worse) <= P(some |T_k| > t) = alpha.
- false "equivalent" (true ``|delta| >= 2m``, indeed ``>= m``): needs ``mean + t se < m``, i.e.
  ``T < -t``: one side of the crossing, probability <= alpha (about alpha / 2).

The bound is reached only where the ROPE is negligible against the standard error. The same
boundary gives *repeated confidence intervals* (Jennison & Turnbull 1989; Jennison & Turnbull
2000, "Group Sequential Methods with Applications to Clinical Trials", ch. 9):
``mean_k -+ t_(thr, J_k - 1) se_k`` covers the true difference at all looks simultaneously with
probability >= 1 - alpha, so the interval at the stopping look is valid whatever caused the stop,
unlike the fixed-design CI (optimistic after optional stopping). An error-spending boundary
(Lan & DeMets 1983, O'Brien-Fleming type) would spend less alpha early; the constant threshold
was chosen because it needs no information-fraction model (the corrected se has a floor, so the
information does not grow like J) and its calibration is one quantile of a simulation.

A decision counts only with >= 3 pairs and a non-zero sd (:data:`MIN_PAIRS`). Units: pp.
``benchmarks/calibrate_sequential.py`` checks the error rates and the runs saved
(docs/statistics.md).
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy import stats as ss

from medattn.analysis import stats

__all__ = ["DECISIONS", "MIN_PAIRS", "STATE_FILE", "SequentialDecision", "calibrate_threshold",
           "decide", "first_decisions", "planned_looks", "read_state", "sequential_note"]

MIN_PAIRS = stats.MIN_DECISION_PAIRS  # the one rule: Table 2 reports no decision below it
DECISIONS = ("worse", "equivalent", "better")
STATE_FILE = "sequential.json"  # a sequential study's state in its runs folder
_ZERO_SD = stats.ZERO_SD  # the same zero as the fixed design's tests


def planned_looks(batch: int, max_pairs: int) -> tuple[int, ...]:
    """Numbers of pairs after each batch of ``batch`` replicates, up to ``max_pairs`` (the last
    look is ``max_pairs`` even if it is not a multiple); looks before :data:`MIN_PAIRS` pairs are
    dropped (they can decide nothing). E.g. ``planned_looks(2, 7) == (4, 6, 7)``."""
    if batch < 1 or max_pairs < MIN_PAIRS:
        raise ValueError(f"need batch >= 1 and max_pairs >= {MIN_PAIRS}, got {batch}, "
                         f"{max_pairs}")
    looks = list(range(batch, max_pairs, batch)) + [max_pairs]
    return tuple(j for j in looks if j >= MIN_PAIRS)


def _studentised_max(looks: tuple[int, ...], r: float, n_sim: int, seed: int) -> np.ndarray:
    """Per simulated study: max over looks of the two-sided t level ``F_(J-1)(|T_J|)`` (shape
    ``(n_sim,)``) under the equicorrelated model with delta = 0, sigma = 1."""
    rng = np.random.default_rng(seed)
    rho = r / (1 + r)
    n = looks[-1]
    c = rng.standard_normal(n_sim) * math.sqrt(rho)
    e = rng.standard_normal((n_sim, n)) * math.sqrt(1 - rho)
    s1, s2 = np.cumsum(e, axis=1), np.cumsum(e * e, axis=1)
    out = np.zeros(n_sim)
    for j in looks:
        mean = s1[:, j - 1] / j
        sd = np.sqrt(np.maximum(s2[:, j - 1] - j * mean**2, 0.0) / (j - 1))
        t = np.abs(c + mean) / (sd * math.sqrt(1 / j + r))
        out = np.maximum(out, ss.t.cdf(t, j - 1))
    return out


@functools.lru_cache(maxsize=64)
def _calibrate(looks: tuple[int, ...], r: float, alpha: float, n_sim: int, seed: int) -> float:
    m = _studentised_max(looks, r, n_sim, seed)
    return float(np.quantile(m, 1 - alpha, method="higher"))


def calibrate_threshold(looks, test_train_ratio: float, alpha: float = 0.05,
                        n_sim: int = 200_000, seed: int = 20231) -> float:
    """The posterior threshold of the sequential rule for the planned ``looks`` (pairs at each
    look, increasing) and the corrected test's ``r = test_train_ratio``: the 1 - ``alpha``
    quantile of ``max_k F_(J_k-1)(|T_k|)`` over ``n_sim`` simulated studies (module docstring).

    One look gives 1 - alpha/2 (0.975 at alpha 0.05); more looks give more. Deterministic for
    given arguments (fixed ``seed``; Monte Carlo error of the attained alpha about
    ``sqrt(alpha (1 - alpha) / n_sim)``, 0.0005 by default); ``r`` is rounded to 3 decimals.
    """
    looks = tuple(sorted({int(j) for j in looks if int(j) >= MIN_PAIRS}))
    if not looks:
        raise ValueError(f"no look with >= {MIN_PAIRS} pairs")
    if not test_train_ratio >= 0 or not 0 < alpha < 1:
        raise ValueError(f"need test_train_ratio >= 0 and 0 < alpha < 1, got "
                         f"{test_train_ratio}, {alpha}")
    return _calibrate(looks, round(float(test_train_ratio), 3), float(alpha), int(n_sim),
                      int(seed))


@dataclass(frozen=True)
class SequentialDecision:
    """One look at one comparison. ``decision``: worse / equivalent / better / undecided, or
    ``""`` when the look cannot decide (``reason`` says why); ``n``: pairs; ``diff``, ``se``: mean
    and corrected se (pp); ``p_*``: posterior probabilities; ``threshold``: the calibrated one;
    ``rci_low/high``: the repeated confidence interval (simultaneous 1 - alpha over the looks)."""

    decision: str
    n: int
    diff: float
    se: float
    p_worse: float
    p_equivalent: float
    p_better: float
    threshold: float
    rci_low: float
    rci_high: float
    reason: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


def decide(diffs, test_train_ratio: float, rope: float, looks, alpha: float = 0.05
           ) -> SequentialDecision:
    """The sequential rule at one look: the Bayesian correlated t-test of ``diffs`` (1-D, pp)
    with ROPE ``+-rope`` against the threshold calibrated for ``looks``. Undecidable
    (``decision == ""``) with fewer than 3 pairs or a zero / undefined sd."""
    thr = calibrate_threshold(looks, test_train_ratio, alpha)
    c = stats.corrected_ttest(diffs, test_train_ratio)
    nan = math.nan
    if c.n < MIN_PAIRS:
        return SequentialDecision("", c.n, c.diff, nan, nan, nan, nan, thr, nan, nan,
                                  f"fewer than {MIN_PAIRS} pairs")
    if not (np.isfinite(c.sd) and c.sd > _ZERO_SD * max(1.0, abs(c.diff))):
        return SequentialDecision("", c.n, c.diff, nan, nan, nan, nan, thr, nan, nan,
                                  "zero sd of the differences")
    probs = stats.bayes_from_t(c.diff, c.se, c.df, rope)
    half = float(ss.t.ppf(thr, c.df)) * c.se
    return SequentialDecision(stats.bayes_decision(probs, thr), c.n, c.diff, c.se, *probs, thr,
                              c.diff - half, c.diff + half)


def first_decisions(diffs: np.ndarray, test_train_ratio: float, rope: float, looks,
                    threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised whole procedure for simulations: ``diffs`` of shape ``(n_studies, looks[-1])``
    (pp). Returns ``(code, n_used)``: code -1 worse, 0 equivalent, 1 better, 2 undecided at the
    last look; n_used the pairs at the stopping look. Same rule as :func:`decide`."""
    d = np.asarray(diffs, dtype=float)
    r = float(test_train_ratio)
    code = np.full(len(d), 2)
    used = np.full(len(d), looks[-1])
    open_ = np.ones(len(d), bool)
    s1, s2 = np.cumsum(d, axis=1), np.cumsum(d * d, axis=1)
    for j in looks:
        if j < MIN_PAIRS:
            continue
        mean = s1[:, j - 1] / j
        sd = np.sqrt(np.maximum(s2[:, j - 1] - j * mean**2, 0.0) / (j - 1))
        se = sd * math.sqrt(1 / j + r)
        ok = open_ & (sd > _ZERO_SD * np.maximum(1.0, np.abs(mean)))
        with np.errstate(divide="ignore", invalid="ignore"):
            worse = ss.t.cdf((-rope - mean) / se, j - 1)
            better = ss.t.sf((rope - mean) / se, j - 1)
        equiv = 1 - worse - better
        for value, p in ((-1, worse), (0, equiv), (1, better)):
            hit = ok & (p > threshold)
            code[hit], used[hit] = value, j
            open_ &= ~hit
            ok &= ~hit
    return code, used


def read_state(runs_dir) -> dict | None:
    """A sequential study's state (:data:`STATE_FILE`) in ``runs_dir``, or None."""
    p = Path(runs_dir) / STATE_FILE
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None


def sequential_note(runs_dir) -> list[str]:
    """The lines Table 2 of a sequential study carries (empty for a fixed design): the design,
    where models stopped, and each comparison's sequential decision with its repeated CI."""
    state = read_state(runs_dir)
    if not state:
        return []
    stops = sorted({(m.get("stopped_batch"), m.get("reason", "")) for m in
                    (state.get("models") or {}).values() if m.get("stopped_batch")})
    where = "; ".join(f"batch {b}: {why}" for b, why in stops) or "not stopped yet"
    lines = [f"sequential design (stop when decided, batches of {state.get('batch')}, at most "
             f"{state.get('max_splits')} splits, posterior threshold "
             f"{state.get('threshold_note', 'calibrated')}): stopped at {where}. The fixed-design "
             f"CIs, p-values and the 0.95 Bayes column of this table are optimistic after optional "
             f"stopping; the design's decisions and repeated 95% CIs follow (also in "
             f"{STATE_FILE})."]
    for key, c in (state.get("comparisons") or {}).items():
        lo, hi = c.get("rci_low"), c.get("rci_high")
        ci = f"repeated CI [{lo:+.2f}, {hi:+.2f}] pp" if lo is not None and hi is not None \
            else "no interval"
        lines.append(f"sequential: {key}: {c.get('decision') or 'undecidable'} at batch "
                     f"{c.get('batch')} ({c.get('n')} pairs), {ci}")
    return lines
