"""Table 3's statistics (issue 24, items 2-4): strata that are never merged, a magnitude as the
one effect size, Holm-adjusted families and a chance reference for k of N; and the option and
conditioning faults of issue 21 (a count k that leaves every class out, ``--condition diagnosis``
on data whose diagnoses split no class)."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from medattn.analysis.citests import cmiknn, rcot
from medattn.analysis.features.decisions import decide, feature_tests
from medattn.analysis.features.summary import chance_p, model_differences, usage_summary
from medattn.analysis.features.table3 import TABLE3_FEATURES
from medattn.errors import ConfigError

FAST = {"chsic": {"permutations": 199}, "cmiknn": {"permutations": 199}}
FEATURES = list(TABLE3_FEATURES)

# Class "other" (2): one common diagnosis and four rare ones (< 10 tested images each) whose
# patients differ in age (dermatofibroma ~35 y, actinic keratosis ~75 y, ...), and one singleton.
OTHER = {"basal cell carcinoma": (40, 70), "dermatofibroma": (9, 35), "actinic keratosis": (9, 75),
         "vascular lesion": (9, 40), "seborrheic keratosis": (9, 70), "scar": (1, 50)}


def rare_diagnoses_draw(seed: int):
    """(age (n, 1), prediction (n, 2), label (n,), diagnosis (n,)): a model that sees only the
    image, whose output differs between the diagnoses (they look different), never age."""
    rng = np.random.default_rng(seed)
    label, dx, age = [], [], []
    for lab, name, count, mean_age in [(0, "melanoma", 50, 60), (1, "nevus", 60, 40),
                                       *[(2, d, c, a) for d, (c, a) in OTHER.items()]]:
        label += [lab] * count
        dx += [name] * count
        age += list(mean_age + 6 * rng.standard_normal(count))
    label, dx = np.array(label), np.array(dx, dtype=object)
    # each diagnosis's appearance: the young ones (dermatofibroma, vascular lesion) look more
    # benign (nevus-like) than the keratoses of the old; the model only sees that
    look = {d: rng.normal(0, 0.5, 3) for d in sorted(set(dx))}
    for d in ("dermatofibroma", "vascular lesion"):
        look[d][1] += 3.0
    logits = np.array([look[d] for d in dx]) + 2 * np.eye(3)[label]
    logits += 0.5 * rng.standard_normal(logits.shape)
    prob = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return np.array(age)[:, None], prob[:, :2], label, dx


def used_for_age(min_per_diagnosis: int | None, draws: int = 5) -> tuple[int, list[dict]]:
    """Draws in which age is "used" by majority at 0.01 (None: the default conditioning)."""
    count, last = 0, []
    extra = {} if min_per_diagnosis is None else {"min_per_diagnosis": min_per_diagnosis}
    for d in range(draws):
        age, y, label, dx = rare_diagnoses_draw(d)
        last = feature_tests(age, y, label, dx, conditions=("diagnosis",),
                             seeds=[3 * d, 3 * d + 1, 3 * d + 2], options=FAST, **extra)
        count += sum(r["p_value"] < 0.01 for r in last) >= 2
    return count, last


@pytest.mark.slow
def test_rare_diagnoses_of_different_ages_are_never_merged_by_default():
    # The trap of merging: the rare diagnoses of "other" pooled into one rest stratum differ in
    # age and in the model's output, so age looks "used" by a model that never sees it.
    draws = 5
    used, rows = used_for_age(None, draws)  # the default
    assert used <= stats.binom.ppf(0.99, draws, 0.01)
    assert all(r["merged_images"] == 0 for r in rows)
    assert rows[0]["n_strata"] == 2 + len(OTHER)  # every diagnosis its own stratum
    # the singleton ("scar") is left out of each test and counted, never merged
    assert all(r["n_unused"] >= 1 for r in rows)
    merged, _ = used_for_age(10, draws)  # the old default merges them: the trap
    assert merged >= draws - 1


def test_images_without_a_diagnosis_are_left_out_and_counted():
    age, y, label, dx = rare_diagnoses_draw(0)
    dx = dx.copy()
    dx[:7] = None
    rows = feature_tests(age, y, label, dx, conditions=("diagnosis",), tests=("chsic",),
                         seeds=[0], options=FAST)
    assert rows[0]["no_diagnosis"] == 7 and rows[0]["n"] == len(age) - 7


def test_rcot_uses_its_permutation_null_with_small_strata():
    # Classes of 2: centring within them halves the residual variance the moment null assumes;
    # the LPB4 approximation (asymptotic_min=1) then rejects far too often, the default does not.
    rates, reps = {}, 150
    bound = stats.binom.ppf(0.99, reps, 0.05) / reps  # the binomial 99% bound at 0.05
    for kw in ({"permutations": 99}, {"asymptotic_min": 1}):  # the default first
        p = []
        for r in range(reps):
            rng = np.random.default_rng(r)
            z = np.repeat(np.arange(60), 2)
            mu = 2 * rng.standard_normal(60)
            x = mu[z] + rng.standard_normal(120)
            y = np.tanh(mu[z] + 0.5 * rng.standard_normal(120))
            p.append(rcot(x, y, z, seed=r, **kw))
        rates[next(iter(kw))] = np.mean(np.array(p) <= 0.05)
        if "permutations" in kw:  # the default: the permutation null
            assert rates["permutations"] <= bound
    assert rates["asymptotic_min"] > bound  # forcing LPB4: the old behaviour


def test_a_cmiknn_count_that_leaves_every_class_out_is_refused_with_its_range():
    rng = np.random.default_rng(0)
    x, y, z = rng.standard_normal(120), rng.standard_normal(120), np.repeat([0, 1], 60)
    with pytest.raises(ConfigError, match=r"k=1000000 .*largest has 60.* from 1 to 58"):
        cmiknn(x, y, z, k=1000000, permutations=9, full=True)
    # a fraction with classes too small for one neighbour: the test cannot run (NaN, not p = 1)
    res = cmiknn(x[:16], y[:16], np.arange(16) // 2, k=0.1, permutations=9, full=True)
    assert np.isnan(res.p_value) and res.n_left_out == 16


def _pvalues(p_by_feature: dict[str, float]) -> pd.DataFrame:
    rows = []
    for f in FEATURES:
        for t in ("chsic", "rcot", "cmiknn"):
            rows.append({"model": "m", "run_id": "r0", "split_seed": 0, "condition": "label",
                         "feature": f, "test": t, "p_value": p_by_feature.get(f, 0.5),
                         "effect": 0.0, "n": 100, "n_left_out": 0, "n_strata": 3,
                         "merged_diagnoses": 0, "merged_images": 0, "alpha": 0.01})
    return pd.DataFrame(rows)


def test_used_calls_adjust_each_tests_pvalues_over_the_features_before_the_vote():
    dec = decide(_pvalues({"A": 0.004, "B": 0.0005}), ("chsic", "rcot", "cmiknn")).set_index(
        "feature")
    # A: 0.004 < 0.01 raw, but Holm over 8 features gives 8 x 0.004 = 0.032: not used
    assert dec.loc["A", "used"] == 0 and dec.loc["A", "p_holm_chsic"] == pytest.approx(0.028)
    assert dec.loc["B", "used"] == 1 and dec.loc["B", "p_chsic"] == 0.0005
    assert dec["used"].sum() == 1


def _decisions(effects: dict[str, tuple[list, list]], z_gap: float = 0.0) -> pd.DataFrame:
    rows = []
    for f, (base, variant) in effects.items():
        for model, values in (("b", base), ("v", variant)):
            for s, e in enumerate(values):
                rows.append({"model": model, "run_id": f"{model}{s}", "split_seed": s,
                             "condition": "label", "feature": f, "used": 0.0,
                             "p_cmiknn": 0.5, "p_chsic": 0.5, "effect_cmiknn": e,
                             "z_chsic": (z_gap if model == "v" else 0.0) + s})
    return pd.DataFrame(rows)


MODELS = pd.DataFrame({"model": ["b", "v"], "backbone": "r", "variant": ["base", "ga"]})


def test_model_differences_are_on_cmi_and_holm_adjusted_over_the_features():
    base = [0.0] * 5
    modest = [0.02, 0.05, 0.01, 0.06, 0.02]  # p = 0.03 alone
    effects = {f: (base, modest) for f in FEATURES}
    effects["Colorful patches"] = (base, [0.30, 0.31, 0.30, 0.31, 0.30])
    diff = model_differences(_decisions(effects, z_gap=50.0), MODELS, ("chsic", "cmiknn"),
                             ratio=0.0).set_index("feature")
    assert set(diff["test"]) == {"cmiknn"}  # z-values are never compared
    assert (diff.drop("Colorful patches")["p"] < 0.05).all()  # each "more" alone ...
    assert (diff.drop("Colorful patches")["verdict"] == "no difference shown").all()  # ... not
    assert diff.loc["Colorful patches", "verdict"] == "more"
    assert diff.loc["A", "p"] == pytest.approx(0.03, abs=0.01)
    assert diff.loc["A", "p_holm"] == pytest.approx(7 * diff.loc["A", "p"])


def test_summary_gives_cmi_a_ci_z_as_evidence_and_k_of_n_a_chance_reference():
    effects = {f: ([0.0, 0.01, 0.02, 0.0], [0.0, 0.01, 0.0, 0.02]) for f in FEATURES}
    dec = _decisions(effects)
    dec.loc[(dec["model"] == "v") & (dec["feature"] == "A") & (dec["split_seed"] < 2), "used"] = 1
    dec.loc[(dec["model"] == "v") & (dec["feature"] == "B") & (dec["split_seed"] < 1), "used"] = 1
    s = usage_summary(dec, ("chsic", "cmiknn"), ratio=0.0, rate=0.01).set_index(
        ["model", "feature"])
    assert {"effect_cmiknn_low", "effect_cmiknn_high", "z_chsic"} <= set(s.columns)
    assert "effect_chsic" not in s and "effect_chsic_low" not in s
    assert s.loc[("v", "A"), "chance_p"] == pytest.approx(1 - 0.99 ** 4 - 4 * 0.01 * 0.99 ** 3)
    assert s.loc[("v", "A"), "cell"] == "2/4†"  # 2 of 4 by chance: p = 0.0006
    assert s.loc[("v", "B"), "cell"] == "1/4†"  # P(>= 1 of 4) = 0.039
    assert s.loc[("v", "C"), "cell"] == "0/4"
    # 1 of 10 runs happens by chance in 9.6% of studies even with independent runs: no mark
    assert chance_p(1, 10, 0.01) == pytest.approx(1 - 0.99 ** 10)
    assert chance_p(2, 10, 0.01) == pytest.approx(stats.binom.sf(1, 10, 0.01))
