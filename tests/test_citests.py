"""Conditional-independence tests: level under H0 (with a strong confounding label), power, the kNN
estimator against brute force, the LPB null approximation, seeding and input errors."""

import sys

import numpy as np
import pytest
from scipy import stats
from scipy.special import digamma
from threadpoolctl import threadpool_limits

from medattn.analysis.citests import TESTS, _cmi_kernel, chsic, cmiknn, rcot
from medattn.analysis.citests.cmiknn import _Stratum
from medattn.analysis.citests.rcot import hbe_sf, lpb4_sf
from medattn.errors import ConfigError, DataError


CMIKNN_MODULE = sys.modules["medattn.analysis.citests.cmiknn"]  # the name is shadowed by the function
needs_numba = pytest.mark.skipif(not _cmi_kernel.available(),
                                 reason="numba not installed (pip install 'medattn[fast]')")


@pytest.fixture(autouse=True)
def one_blas_thread():
    with threadpool_limits(1):
        yield


def draw(n, beta, rng, classes=3, binary=False):
    """X and Y both depend strongly on the label Z; X -> Y only when beta != 0."""
    z = rng.integers(0, classes, n)
    if binary:
        x = (rng.random(n) < 0.2 + 0.3 * z).astype(float)
    else:
        x = 2.0 * z + rng.standard_normal(n)
    logits = 3.0 * np.eye(classes)[z] + rng.standard_normal((n, classes))
    logits[:, 0] += beta * (x - x.mean())
    y = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return x, y, z


FAST = {"chsic": {"permutations": 99}, "rcot": {}, "cmiknn": {"permutations": 99}}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(TESTS))
def test_level_under_strong_confounding(name):
    # Unconditionally X and Y are strongly dependent through Z; a test that ignored the label would
    # reject nearly always. Within the binomial 99% band of 30 draws at alpha = 0.05: <= 5 rejections.
    rng = np.random.default_rng(0)
    pvals = np.array([TESTS[name](*draw(240, 0.0, rng), seed=r, **FAST[name]) for r in range(30)])
    assert np.sum(pvals < 0.05) <= stats.binom.ppf(0.995, 30, 0.05)
    # and the p-values are not piled up at 1 either (a uselessly conservative test)
    assert np.mean(pvals) > 0.25 and np.mean(pvals < 0.5) > 0.25


@pytest.mark.parametrize("name", list(TESTS))
@pytest.mark.parametrize("binary", [False, True])
def test_power_against_clear_alternative(name, binary):
    rng = np.random.default_rng(1)
    pvals = [TESTS[name](*draw(300, 2.0, rng, binary=binary), seed=r, **FAST[name]) for r in range(3)]
    assert max(pvals) <= 0.01  # 1 / (B + 1) is the smallest permutation p-value


def test_unconditional_dependence_is_detected_only_without_label():
    rng = np.random.default_rng(2)
    x, y, z = draw(300, 0.0, rng)
    assert chsic(x, y, None, seed=0, permutations=99) <= 0.01
    assert chsic(x, y, z, seed=0, permutations=99) > 0.01


@pytest.mark.parametrize("name", ["chsic", "cmiknn"])
def test_smallest_permutation_pvalue_is_one_over_b_plus_one(name):
    x, y, z = draw(200, 4.0, np.random.default_rng(3))
    assert TESTS[name](x, y, z, seed=0, permutations=99) == pytest.approx(0.01)


@pytest.mark.parametrize("name", list(TESTS))
def test_seeded_and_label_encoding_invariant(name):
    x, y, z = draw(150, 0.5, np.random.default_rng(4))
    opts = FAST[name]
    p1 = TESTS[name](x, y, z, seed=7, **opts)
    assert TESTS[name](x, y, z, seed=7, **opts) == p1
    names = np.array(["melanoma", "nevus", "other"])[z]  # string labels give the same strata
    assert TESTS[name](x, y, names, seed=7, **opts) == p1
    assert TESTS[name](x, y, z.astype(float), seed=7, z_discrete=True, **opts) == p1


@pytest.mark.parametrize("name", list(TESTS))
def test_continuous_conditioning(name):
    # X = f(Z) + e, Y = g(Z) + e': independent given the continuous Z, dependent without it.
    rng = np.random.default_rng(5)
    n = 150 if name == "cmiknn" else 400
    zc = rng.uniform(-2, 2, n)
    x = np.sin(zc) + 0.3 * rng.standard_normal(n)
    y = zc ** 2 / 2 + 0.3 * rng.standard_normal(n)
    opts = {"permutations": 49} if name != "rcot" else {}
    assert TESTS[name](x, y, zc, seed=0, **opts) > 0.02
    assert TESTS[name](x, y + 2 * x, zc, seed=0, **opts) <= 0.02


def _brute_ksg(u, v, k):
    n = len(u)
    du = np.abs(u[:, None, :] - u[None]).max(-1)
    dv = np.abs(v[:, None, :] - v[None]).max(-1)
    d = np.maximum(du, dv)
    np.fill_diagonal(d, np.inf)
    eps = np.sort(d, 1)[:, k - 1] * (1 - 1e-9)
    nu, nv = (du < eps[:, None]).sum(1), (dv < eps[:, None]).sum(1)
    return np.sum(digamma(k) + digamma(n) - digamma(nu) - digamma(nv))


@pytest.mark.parametrize("du,dv,rows_limit", [(1, 1, 2500), (1, 2, 2500), (2, 2, 2500),
                                              (1, 3, 2500), (2, 2, 10)])
def test_cmiknn_statistic_equals_brute_force_frenzel_pompe(du, dv, rows_limit, monkeypatch):
    # The cached sub-space counters (sorted values, sorted distance rows, or a k-d tree for large
    # classes, forced here by rows_limit) must give exactly the counts of a brute-force KSG estimate.
    monkeypatch.setattr(CMIKNN_MODULE, "_FULL_ROWS_LIMIT", rows_limit)
    rng = np.random.default_rng(6)
    u, v = rng.standard_normal((300, du)), rng.standard_normal((300, dv))
    v[:, 0] += u[:, 0]
    stratum = _Stratum(u, v, k=7, compiled=False)
    perms = np.array([np.arange(300)] + [rng.permutation(300) for _ in range(4)])
    expected = [_brute_ksg(u[p], v, 7) for p in perms]
    np.testing.assert_allclose(stratum.cmi_sums(perms), expected, rtol=1e-10, atol=1e-8)


@pytest.mark.slow
@needs_numba
@pytest.mark.parametrize("du,dv,width,ties", [(1, 1, 512, False), (1, 2, 512, False),
                                              (1, 3, 512, False), (1, 2, 12, False),
                                              (1, 2, 512, True), (1, 2, 12, True),
                                              (2, 2, 512, False), (2, 2, 12, False),
                                              (2, 1, 12, True)])
def test_compiled_cmiknn_sums_equal_brute_force(du, dv, width, ties, monkeypatch):
    # The compiled scan must find the exact k-th neighbour distances and counts whatever its first
    # guess: too small (every sample falls back to the ordered scan), calibrated, or far too large;
    # a short neighbour list (width 12) forces the full scans, rounded data forces ties.
    monkeypatch.setattr(CMIKNN_MODULE, "_LIST_WIDTH", width)
    monkeypatch.setattr(CMIKNN_MODULE, "_LIST_PER_K", 1)
    rng = np.random.default_rng(6)
    u, v = rng.standard_normal((300, du)), rng.standard_normal((300, dv))
    v[:, 0] += u[:, 0]
    if ties:
        u, v = np.round(u, 1), np.round(v, 1)
    stratum = _Stratum(u, v, k=7, compiled=True)
    assert stratum.compiled
    perms = np.array([np.arange(300)] + [rng.permutation(300) for _ in range(40)])
    expected = np.array([_brute_ksg(u[p], v, 7) for p in perms])
    np.testing.assert_allclose(stratum.cmi_sums(perms[:1]), expected[:1], rtol=1e-10, atol=1e-8)
    np.testing.assert_allclose(stratum.cmi_sums(perms[1:32]), expected[1:32], rtol=1e-10, atol=1e-8)
    assert stratum.calibrated and 0 < stratum.factor < np.inf
    for factor in (1e-6, stratum.factor, 1e6):
        stratum.factor = factor
        np.testing.assert_allclose(stratum.cmi_sums(perms[32:]), expected[32:], rtol=1e-10,
                                   atol=1e-8)


@needs_numba
@pytest.mark.parametrize("binary,classes", [(False, 2), (True, 3)])
def test_cmiknn_backends_give_the_same_pvalue(binary, classes):
    rng = np.random.default_rng(11)
    n = 240
    z = rng.integers(0, classes, n)
    x = (rng.random(n) < 0.3 + 0.1 * z) if binary else rng.standard_normal(n) + z
    logits = np.eye(classes)[z] + rng.standard_normal((n, classes))
    logits[:, 0] += 0.8 * x
    y = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    for seed in range(3):
        p_scipy = cmiknn(x, y[:, :classes - 1], z, seed=seed, permutations=199, backend="scipy")
        p_numba = cmiknn(x, y[:, :classes - 1], z, seed=seed, permutations=199, backend="numba")
        assert p_numba == p_scipy


@needs_numba
@pytest.mark.filterwarnings("ignore:cmiknn.*left out:RuntimeWarning")  # tiny classes, on purpose
def test_cmiknn_backends_agree_on_random_small_inputs_with_exact_ties():
    # jitter=0 with rounded data gives exact distance ties, the hardest case for "strictly closer"
    rng = np.random.default_rng(123)
    for case in range(12):
        n, du, dv, classes = int(rng.integers(12, 120)), *rng.integers(1, 4, size=3)
        z = rng.integers(0, classes, n)
        x = np.round(rng.standard_normal((n, du)))
        y = np.round(rng.standard_normal((n, dv)) + 0.5 * x[:, :1], 1)
        kw = dict(seed=case, permutations=29, k=int(rng.integers(1, 12)),
                  jitter=0.0 if case % 2 else 1e-6)
        assert cmiknn(x, y, z, backend="numba", **kw) == cmiknn(x, y, z, backend="scipy", **kw)


def test_cmiknn_backend_option_errors(monkeypatch):
    x, y, z = np.zeros(20), np.arange(20.0), np.repeat([0, 1], 10)
    with pytest.raises(ConfigError, match="backend='gpu' must be one of"):
        cmiknn(x, y, z, backend="gpu")
    monkeypatch.setattr(_cmi_kernel, "numba", None)
    with pytest.raises(ConfigError, match=r"pip install 'medattn\[fast\]'"):
        cmiknn(x, y, z, backend="numba")
    with pytest.warns(RuntimeWarning, match="numba is not installed"):  # auto: the scipy path
        assert 0 < cmiknn(x + np.arange(20), y, z, permutations=9) <= 1


@pytest.mark.parametrize("weights", [np.array([5, 1, 0.5, 0.2, 0.1, 0.05]),
                                     np.random.default_rng(7).exponential(size=25)])
def test_lpb4_matches_monte_carlo(weights):
    rng = np.random.default_rng(8)
    sims = (rng.chisquare(1, size=(200_000, len(weights))) * weights).sum(1)
    for q in np.quantile(sims, [0.5, 0.95, 0.99]):
        tail = np.mean(sims > q)
        assert lpb4_sf(weights, q) == pytest.approx(tail, rel=0.05, abs=5e-4)
        assert hbe_sf(weights, q) == pytest.approx(tail, rel=0.25, abs=2e-3)


def test_lpb4_declines_fewer_than_four_weights_and_rcot_falls_back():
    assert lpb4_sf(np.array([1.0, 0.5]), 3.0) is None
    # binary x and binary y: a single non-zero weight, so RCoT uses its permutation fallback,
    # whose p-values are multiples of 1 / (B + 1)
    rng = np.random.default_rng(9)
    z = rng.integers(0, 2, 300)
    x = (rng.random(300) < 0.5).astype(float)
    y = (rng.random(300) < 0.3 + 0.4 * z).astype(float)
    p = rcot(x, y, z, seed=0, permutations=99)
    assert p > 0.01 and (p * 100) == pytest.approx(round(p * 100))


def test_bad_input_errors_name_the_problem():
    x, y, z = draw(50, 0.0, np.random.default_rng(10))
    x[3] = np.nan
    with pytest.raises(DataError, match="x has NaN.*row 3"):
        chsic(x, y, z)
    with pytest.raises(DataError, match="z has 49 rows"):
        rcot(y[:, 0], y, z[:-1])
    with pytest.raises(ConfigError, match="permutations"):
        cmiknn(y[:, 0], y, z, permutations=0)
    with pytest.raises(ConfigError, match="null="):
        rcot(y[:, 0], y, z, null="chi2")


def test_cmiknn_k_as_a_fraction_is_taken_of_each_class():
    # The statistic with k = 0.1 is the class-share-weighted KSG estimate with k_c = round(0.1 n_c)
    # neighbours in each class (brute force); with jitter 0 and continuous data no ties arise.
    rng = np.random.default_rng(12)
    z = np.repeat([0, 1, 2], [150, 90, 40])
    x = rng.standard_normal(len(z)) + z
    y = rng.standard_normal((len(z), 2))
    y[:, 0] += 0.5 * x
    res = cmiknn(x, y, z, seed=0, k=0.1, jitter=0.0, permutations=19, full=True)
    xs = (x - x.mean()) / x.std()
    ys = (y - y.mean(0)) / y.std(0)
    expected = sum(_brute_ksg(xs[z == c][:, None], ys[z == c], k) for c, k in [(0, 15), (1, 9),
                                                                                (2, 4)])
    assert res.statistic == pytest.approx(expected / len(z), rel=1e-10)
    assert res.n == len(z) and res.n_left_out == 0
    assert [CMIKNN_MODULE.neighbours(k, n) for k, n in [(0.1, 150), (0.1, 5), (7, 3), (0.5, 3)]] \
        == [15, 1, 7, 2]
    for bad in (0, -0.1, 1.5, "10"):
        with pytest.raises(ConfigError, match="option k="):
            cmiknn(x, y, z, k=bad)


@needs_numba
@pytest.mark.parametrize("backend", ["numba", "scipy"])
def test_cmiknn_shuffling_x_or_y_gives_the_same_statistics(backend, monkeypatch):
    # Shuffling y by the inverse permutation pairs the same (x, y) as shuffling x: the choice made
    # for speed (per class) must not change a single number.
    x, y, z = draw(240, 0.6, np.random.default_rng(13))
    y = y[:, :2]
    out = []
    for shuffle_x in (True, False):
        monkeypatch.setattr(CMIKNN_MODULE, "_shuffle_x", lambda *a, s=shuffle_x: s)
        out.append(cmiknn(x, y, z, seed=3, permutations=99, backend=backend, full=True))
    assert out[0].p_value == out[1].p_value
    assert out[0].statistic == pytest.approx(out[1].statistic, rel=1e-12)
    assert out[0].null_mean == pytest.approx(out[1].null_mean, rel=1e-12)


def test_small_classes_are_left_out_and_counted_never_silently():
    x, y, z = draw(200, 0.0, np.random.default_rng(14))
    z = z.copy()
    z[:3] = 7  # a class of 3 samples: too few for k = 10 neighbours, nothing for a singleton
    z[3] = 8
    with pytest.warns(RuntimeWarning, match="4 of 200 samples are in classes with at most"):
        cmiknn(x, y, z, seed=0, k=10, permutations=19)
    res = cmiknn(x, y, z, seed=0, k=10, permutations=19, full=True)
    assert (res.n, res.n_left_out) == (196, 4)
    for test in (chsic, rcot):  # a class of one sample has nothing to compare
        res = test(x, y, z, seed=0, full=True, **({"permutations": 19} if test is chsic else {}))
        assert (res.n, res.n_left_out) == (199, 1)


@pytest.mark.parametrize("name", list(TESTS))
def test_effect_sizes_are_near_zero_under_h0_and_large_under_h1(name):
    rng = np.random.default_rng(15)
    h0 = [TESTS[name](*draw(300, 0.0, rng), seed=r, full=True, **FAST[name]) for r in range(6)]
    h1 = TESTS[name](*draw(300, 2.0, rng), seed=0, full=True, **FAST[name])
    assert float(h1) == h1.p_value and h1.n == 300
    effects = np.array([r.effect for r in h0])
    if name == "cmiknn":  # nats: the estimate minus its shuffle mean
        assert h1.effect > 0.05 and np.abs(effects).max() < 0.02
        assert h1.statistic == pytest.approx(h1.effect + h1.null_mean)
    else:  # standardised by the null: a z-score
        assert h1.effect > 5 and np.abs(effects).mean() < 1.5
        assert h1.effect == pytest.approx((h1.statistic - h1.null_mean) / h1.null_sd)


def test_rcot_moment_effect_agrees_with_its_permutation_null():
    # RCoT standardises S by the exact mean and sd of its weighted chi-square null; the
    # permutation null of the same statistic must give about the same mean and sd.
    x, y, z = draw(400, 0.3, np.random.default_rng(16))
    lpb = rcot(x, y, z, seed=2, full=True)
    perm = rcot(x, y, z, seed=2, null="permutation", permutations=999, full=True)
    assert lpb.statistic == perm.statistic
    assert lpb.null_mean == pytest.approx(perm.null_mean, rel=0.1)
    assert lpb.null_sd == pytest.approx(perm.null_sd, rel=0.2)
