"""Gibbs sampler of the hierarchical model across data sets (Corani et al. 2017), vectorised over a
batch of independent problems (chains of one fit, or the replicates of a simulation).

Model (all in percentage points, pp), data set i = 1..D with J_i per-split differences x_ij:

    x_i ~ MVN(delta_i 1, sigma_i^2 M_i),  M_i = (1 - rho_i) I + rho_i 1 1',  rho_i = r_i / (1 + r_i)
    delta_i ~ Student-t(nu, delta_0, sigma_0)
    delta_0 ~ N(0, delta0_sd^2);  sigma_0 ~ U(0, sigma0_max);  s_i ~ U(0, within_max);
    nu ~ Gamma(2, 0.1) on a grid

with s_i^2 = sigma_i^2 (1 - rho_i) the variance of the differences around their mean (what a
sample sd estimates). By the eigen-decomposition of M_i the likelihood depends on the data only
through the mean m_i and the within sum of squares W_i, which are independent:

    m_i ~ N(delta_i, c_i s_i^2 + v_i),  c_i = 1/J_i + r_i     (v_i: optional extra test-sampling
    W_i / s_i^2 ~ chi2(J_i - 1)                                variance when runs share a test set)

So one sweep costs O(D) per problem, not O(J). Steps of a sweep (a partially collapsed Gibbs):

1. (sigma_0, delta_0, delta) | lambda, s, nu: sigma_0 from its marginal on a grid of cells (delta_0
   and delta integrated out: everything is normal given the mixing weights lambda), uniform within
   the cell; then delta_0, then every delta_i, each from its normal conditional. Drawing sigma_0
   with the data-set effects integrated out avoids the "funnel" where a centred Gibbs sampler sticks
   near sigma_0 = 0.
2. mu_i | delta_i, s_i where v_i > 0 (the data set's true mean on its shared test set).
3. s_i | W_i, m_i - mu_i: the precision 1/s_i^2 is a gamma truncated below at 1/within_max^2.
4. lambda_i | delta_i, ...: the Student-t as a normal scale mixture, lambda_i ~ Gamma(nu/2, nu/2).
5. nu | lambda on its grid (the prior Gamma(2, 0.1) of Juarez & Steel, as Corani et al., restricted
   to the grid and truncated to [1, 100]).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import special

__all__ = ["Priors", "Draws", "gibbs", "nu_grid"]


@dataclass(frozen=True)
class Priors:
    """Priors in percentage points, fixed (not scaled by the data) so that simulation-based
    calibration can draw from them. ``sigma0_cells``: grid resolution of sigma_0's draw."""

    delta0_sd: float = 10.0  # delta_0 ~ N(0, delta0_sd^2)
    sigma0_max: float = 10.0  # sigma_0 ~ U(0, sigma0_max)
    within_max: float = 20.0  # s_i ~ U(0, within_max): sd of a data set's per-split differences
    nu_shape: float = 2.0  # nu ~ Gamma(shape, rate) on nu_grid()
    nu_rate: float = 0.1
    sigma0_cells: int = 48


def nu_grid(priors: Priors) -> tuple[np.ndarray, np.ndarray]:
    """``(values, log prior weights)``: nu on 32 geometric points in [1, 100], prior Gamma(shape,
    rate) density times the cell width, normalised."""
    edges = np.geomspace(1.0, 100.0, 33)
    values = np.sqrt(edges[1:] * edges[:-1])
    logw = ((priors.nu_shape - 1) * np.log(values) - priors.nu_rate * values
            + np.log(np.diff(edges)))
    return values, logw - special.logsumexp(logw)


@dataclass
class Draws:
    """Posterior draws after warm-up; leading axes ``(problems, draws)``: ``delta0``, ``sigma0``,
    ``nu`` of shape (R, N); ``delta`` and ``within_sd`` of shape (R, N, D)."""

    delta0: np.ndarray
    sigma0: np.ndarray
    nu: np.ndarray
    delta: np.ndarray
    within_sd: np.ndarray


def _trunc_gamma(shape, rate, low, rng):
    """Gamma(shape, rate) draws truncated to (low, inf), by inverting the upper incomplete gamma."""
    q_low = special.gammaincc(shape, low * rate)
    u = rng.random(np.shape(q_low)) * q_low
    x = special.gammainccinv(shape, np.maximum(u, 1e-300)) / rate
    # where the whole mass lies below `low` (q_low underflows) the draw sits at the boundary
    return np.where((q_low > 1e-290) & np.isfinite(x), np.maximum(x, low), low)


def _pick(logp: np.ndarray, rng) -> np.ndarray:
    """One index per row of ``logp`` (R, K), with probability proportional to exp(logp)."""
    p = np.exp(logp - logp.max(axis=1, keepdims=True))
    cum = np.cumsum(p, axis=1)
    u = rng.random((logp.shape[0], 1)) * cum[:, -1:]
    return np.minimum((cum < u).sum(axis=1), logp.shape[1] - 1)


def _sigma0_delta(m, V, lam, priors, rng, sigma0_fixed):
    """Step 1: sigma_0, delta_0 and delta given the mixing weights ``lam`` and variances ``V``."""
    R, _ = m.shape
    p0 = 1.0 / priors.delta0_sd**2
    if sigma0_fixed is None:
        width = priors.sigma0_max / priors.sigma0_cells
        grid = (np.arange(priors.sigma0_cells) + 0.5) * width
        w = 1.0 / (grid[None, :, None] ** 2 / lam[:, None, :] + V[:, None, :])  # (R, G, D)
        A = p0 + w.sum(axis=2)
        B = (w * m[:, None, :]).sum(axis=2)
        C = (w * m[:, None, :] ** 2).sum(axis=2)
        logp = 0.5 * np.log(w).sum(axis=2) - 0.5 * np.log(A) - 0.5 * (C - B**2 / A)
        sigma0 = grid[_pick(logp, rng)] + (rng.random(R) - 0.5) * width
    else:
        sigma0 = np.full(R, float(sigma0_fixed))
    w = 1.0 / (sigma0[:, None] ** 2 / lam + V)
    A = p0 + w.sum(axis=1)
    delta0 = (w * m).sum(axis=1) / A + rng.standard_normal(R) / np.sqrt(A)
    prec_prior = lam / sigma0[:, None] ** 2
    prec = prec_prior + 1.0 / V
    mean = (prec_prior * delta0[:, None] + m / V) / prec
    delta = mean + rng.standard_normal(m.shape) / np.sqrt(prec)
    return sigma0, delta0, delta


def gibbs(m: np.ndarray, W: np.ndarray, J: np.ndarray, c: np.ndarray, v: np.ndarray | None = None,
          *, priors: Priors = Priors(), n_iter: int = 2000, n_warmup: int = 500, thin: int = 1,
          rng: np.random.Generator | None = None, sigma0_fixed: float | None = None,
          within_sd_fixed: np.ndarray | None = None, nu_fixed: float | None = None) -> Draws:
    """Run the sampler on R independent problems of D data sets each.

    ``m``, ``W``: (R, D) means (pp) and within sums of squares (pp^2) of the differences; ``J``,
    ``c``, ``v``: (D,) or (R, D) numbers of differences, 1/J + r, and extra variance of the mean
    (pp^2, 0 = none). ``n_iter`` sweeps after ``n_warmup``, keeping every ``thin``-th.
    ``sigma0_fixed``, ``within_sd_fixed`` ((D,) or (R, D)), ``nu_fixed``: hold that parameter at
    a known value (for checks against closed forms). Returns :class:`Draws`.
    """
    rng = rng or np.random.default_rng(0)
    m = np.asarray(m, float)
    R, D = m.shape
    W = np.broadcast_to(np.asarray(W, float), (R, D))
    J = np.broadcast_to(np.asarray(J, float), (R, D))
    c = np.broadcast_to(np.asarray(c, float), (R, D))
    v = np.zeros((R, D)) if v is None else np.broadcast_to(np.asarray(v, float), (R, D))
    shared = v > 0
    nus, nu_logw = nu_grid(priors)
    nu = np.full(R, 5.0 if nu_fixed is None else float(nu_fixed))
    if within_sd_fixed is not None:
        s = np.broadcast_to(np.asarray(within_sd_fixed, float), (R, D)).copy()
    else:
        s = np.clip(np.sqrt(W / np.maximum(J - 1, 1)), 0.05, priors.within_max)
    lam = np.ones((R, D))
    low_s = 1.0 / priors.within_max**2
    keep = np.arange(n_warmup, n_warmup + n_iter, thin)
    out = {k: np.empty((R, len(keep))) for k in ("delta0", "sigma0", "nu")}
    out["delta"] = np.empty((R, len(keep), D))
    out["within_sd"] = np.empty((R, len(keep), D))
    k = 0
    for it in range(n_warmup + n_iter):
        V = c * s**2 + v
        sigma0, delta0, delta = _sigma0_delta(m, V, lam, priors, rng, sigma0_fixed)
        if within_sd_fixed is None:
            mu = delta
            if shared.any():  # the data set's mean on its shared test set, given delta_i
                pm = 1.0 / (c * s**2) + 1.0 / np.where(shared, v, 1.0)
                draw = ((m / (c * s**2) + delta / np.where(shared, v, 1.0)) / pm
                        + rng.standard_normal((R, D)) / np.sqrt(pm))
                mu = np.where(shared, draw, delta)
            rate = 0.5 * np.maximum(W + (m - mu) ** 2 / c, 1e-12)
            s = 1.0 / np.sqrt(_trunc_gamma(0.5 * (J - 1), rate, low_s, rng))
        z2 = (delta - delta0[:, None]) ** 2 / sigma0[:, None] ** 2
        lam = rng.gamma(0.5 * (nu[:, None] + 1), 1.0 / (0.5 * (nu[:, None] + z2)))
        if nu_fixed is None:
            sl, sm = np.log(lam).sum(axis=1, keepdims=True), lam.sum(axis=1, keepdims=True)
            h = nus[None, :] / 2
            logp = nu_logw + D * (h * np.log(h) - special.gammaln(h)) + (h - 1) * sl - h * sm
            nu = nus[_pick(logp, rng)]
        if k < len(keep) and it == keep[k]:
            for name, val in (("delta0", delta0), ("sigma0", sigma0), ("nu", nu)):
                out[name][:, k] = val
            out["delta"][:, k] = delta
            out["within_sd"][:, k] = s
            k += 1
    return Draws(**out)
