"""Exact multi-index channels against independent brute-force integration.

The brute force integrates the posterior density directly in the original coordinates
(scipy.integrate.quad / dblquad, or tensor Gauss-Legendre on each orthant), in log space
with a shift at the mode so that tiny V and large |omega| do not underflow.
"""
import math

import numpy as np
import pytest
from scipy import integrate, optimize, stats
from scipy.special import expit, k0, k1

from solvers.channels import make_channel
from solvers.channels.base import PosteriorMoments
from solvers.channels.multi_index import LINKS as LINK_CHANNELS
from solvers.models import MultiIndexSpec

LINKS = list(LINK_CHANNELS)


def _mvn_logpdf(z, om, V):
    z = np.atleast_2d(z)
    d = z - om
    Vi = np.linalg.inv(V)
    return (-0.5 * np.einsum("...i,ij,...j->...", d, Vi, d)
            - 0.5 * np.log(np.linalg.det(2 * np.pi * V)))


def _moments_1d(logf, a, b, mode):
    """Normaliser (log), mean, var of exp(logf) on [a, b] by adaptive quad (shifted)."""
    c = logf(mode)
    pts = [p for p in (mode,) if a < p < b]
    kw = dict(limit=400, epsabs=0, epsrel=1e-12, points=pts or None)
    f0 = integrate.quad(lambda z: math.exp(logf(z) - c), a, b, **kw)[0]
    f1 = integrate.quad(lambda z: (z - mode) * math.exp(logf(z) - c), a, b, **kw)[0]
    f2 = integrate.quad(lambda z: (z - mode) ** 2 * math.exp(logf(z) - c), a, b, **kw)[0]
    m = f1 / f0
    return math.log(f0) + c, m + mode, f2 / f0 - m * m


# ------------------------------------------------------------------ P = 1
P1_CASES = [  # (y, omega, v)
    (1.3, 0.4, 0.7),
    (0.2, -1.5, 1.0),
    (2.0, 3.0, 0.01),
    (0.5, -6.0, 0.01),
    (4.0, 0.0, 1.0),
]


@pytest.mark.parametrize("y,om,v", P1_CASES)
def test_square_and_abs_are_two_atoms(y, om, v):
    for link, s, jac in (("square", math.sqrt(y), 1 / (2 * math.sqrt(y))), ("abs", y, 1.0)):
        ch = make_channel(link, noise=0.0)
        pm = ch.posterior_moments(np.array([y if link == "square" else y]),
                                  np.array([[[om]]]), np.array([[v]]))
        lp = stats.norm.logpdf(s, om, math.sqrt(v))
        lm = stats.norm.logpdf(-s, om, math.sqrt(v))
        wp, wm = expit(lp - lm), expit(lm - lp)
        mean = s * (wp - wm)
        var = 4 * s * s * wp * wm
        assert pm.mean.shape == (1, 1, 1) and pm.cov.shape == (1, 1, 1, 1, 1)
        assert pm.mean[0, 0, 0] == pytest.approx(mean, rel=1e-10, abs=1e-12)
        assert pm.cov[0, 0, 0, 0, 0] == pytest.approx(var, rel=1e-8, abs=1e-300)
        assert pm.log_partition[0] == pytest.approx(np.logaddexp(lp, lm) + math.log(jac), rel=1e-10)


@pytest.mark.parametrize("y", [1.0, -1.0])
@pytest.mark.parametrize("om,v", [(0.4, 0.7), (-1.5, 1.0), (3.0, 0.01), (-6.0, 0.01),
                                  (-40.0, 1.0), (0.0, 1.0)])
def test_sign_against_quad(y, om, v):
    ch = make_channel("sign", noise=0.0)
    pm = ch.posterior_moments(np.array([y]), np.array([[[om]]]), np.array([[v]]))
    sd = math.sqrt(v)
    logf = lambda z: stats.norm.logpdf(z, om, sd)  # noqa: E731
    # the mode of the truncated density: omega or the boundary
    mode = om if y * om > 0 else 0.0
    a, b = (0.0, om + 60 * sd + 1) if y > 0 else (om - 60 * sd - 1, 0.0)
    a, b = (max(a, mode - 60 * sd), b) if y > 0 else (a, min(b, mode + 60 * sd))
    lz, m, var = _moments_1d(logf, a, b, mode if mode != 0 else (1e-12 * y))
    assert pm.log_partition[0] == pytest.approx(lz, rel=1e-8, abs=1e-9)
    assert pm.mean[0, 0, 0] == pytest.approx(m, rel=1e-7, abs=1e-9)
    assert pm.cov[0, 0, 0, 0, 0] == pytest.approx(var, rel=1e-6, abs=1e-12)


@pytest.mark.parametrize("y,om,v", [(0.0, 0.4, 0.7), (0.0, 5.0, 0.01), (0.0, -3.0, 2.0),
                                    (1.2, 0.4, 0.7), (0.3, -5.0, 0.01)])
def test_relu_against_quad(y, om, v):
    ch = make_channel("relu", noise=0.0)
    pm = ch.posterior_moments(np.array([y]), np.array([[[om]]]), np.array([[v]]))
    if y > 0:
        assert pm.mean[0, 0, 0] == y and pm.cov[0, 0, 0, 0, 0] == 0.0
        assert pm.log_partition[0] == pytest.approx(stats.norm.logpdf(y, om, math.sqrt(v)), rel=1e-12)
        return
    sd = math.sqrt(v)
    mode = min(om, 0.0) - 1e-12
    lz, m, var = _moments_1d(lambda z: stats.norm.logpdf(z, om, sd), mode - 60 * sd - 1, 0.0, mode)
    assert pm.log_partition[0] == pytest.approx(lz, rel=1e-8, abs=1e-9)
    assert pm.mean[0, 0, 0] == pytest.approx(m, rel=1e-7, abs=1e-9)
    assert pm.cov[0, 0, 0, 0, 0] == pytest.approx(var, rel=1e-6, abs=1e-12)


# ------------------------------------------------------------------ P = 2, 3 cases
V_GENERAL = np.array([[1.0, 0.45], [0.45, 0.7]])
P2_CASES = [  # (omega, V)
    (np.array([0.3, -0.5]), np.eye(2)),
    (np.array([0.3, -0.5]), V_GENERAL),
    (np.array([2.5, -3.0]), 0.01 * np.eye(2)),
    (np.array([2.5, 1.0]), 0.01 * np.array([[1.0, -0.6], [-0.6, 1.0]])),
    (np.array([-4.0, 5.0]), np.array([[0.5, -0.3], [-0.3, 0.4]])),
]


def _product_bruteforce(y, om, V):
    """Posterior on z1 z2 = y by quad in z1 (density N(z1, y/z1) / |z1|)."""
    def logf(z1):
        return float(_mvn_logpdf(np.array([z1, y / z1]), om, V)[0]) - math.log(abs(z1))

    # locate modes on a fine grid per half line, integrate each half line with breakpoints
    res = []
    for sgn in (1.0, -1.0):
        grid = sgn * np.exp(np.linspace(-12, 4, 40001))
        lg = np.array([logf(g) for g in grid[::20]])
        res.append((sgn, grid[::20], lg))
    c = max(r[2].max() for r in res)
    tot = np.zeros(6)
    for sgn, grid, lg in res:
        keep = lg > c - 60
        if not keep.any():
            continue
        lo, hi = grid[keep].min(), grid[keep].max()
        lo, hi = min(lo, hi), max(lo, hi)
        # widen by one grid step either side
        lo, hi = lo * (1.05 if lo < 0 else 0.95), hi * (0.95 if hi < 0 else 1.05)
        pts = list(grid[keep][np.argsort(lg[keep])[-5:]])
        for k, fn in enumerate([lambda z: 1.0, lambda z: z, lambda z: y / z, lambda z: z * z,
                                lambda z: y, lambda z: (y / z) ** 2]):
            tot[k] += integrate.quad(lambda z: fn(z) * math.exp(logf(z) - c), lo, hi, points=pts,
                                     limit=1000, epsabs=0, epsrel=1e-11)[0]
    m = tot[1:3] / tot[0]
    cov = np.array([[tot[3] / tot[0] - m[0] ** 2, tot[4] / tot[0] - m[0] * m[1]],
                    [tot[4] / tot[0] - m[0] * m[1], tot[5] / tot[0] - m[1] ** 2]])
    return math.log(tot[0]) + c, m, cov


@pytest.mark.parametrize("y", [0.8, -1.7, 0.05])
@pytest.mark.parametrize("case", range(len(P2_CASES)))
def test_product_against_quad(y, case):
    om, V = P2_CASES[case]
    ch = make_channel("product", noise=0.0)
    pm = ch.posterior_moments(np.array([y]), om.reshape(1, 2, 1), V)
    lz, m, cov = _product_bruteforce(y, om, V)
    scale = math.sqrt(max(np.abs(cov).max(), 1e-12))
    assert pm.log_partition[0] == pytest.approx(lz, abs=1e-7)
    np.testing.assert_allclose(pm.mean[0, :, 0], m, rtol=1e-7, atol=1e-7 * scale)
    np.testing.assert_allclose(pm.cov[0, :, 0, :, 0], cov, rtol=1e-6, atol=1e-6 * scale ** 2)


def _orthant_gl(om, V, signs, n=64):
    """Tensor Gauss-Legendre over one orthant.

    The box is +-10 prior standard deviations around the constrained mode (the point of
    the orthant nearest to omega in the V^{-1} metric, found with L-BFGS-B): by strong
    log-concavity every point with density above exp(-38) times the maximum lies in it.
    """
    P = len(om)
    sd = np.sqrt(np.diag(V))
    Vi = np.linalg.inv(V)
    bounds = [(0.0, None) if sg > 0 else (None, 0.0) for sg in signs]
    x0 = np.where(np.asarray(signs) > 0, np.maximum(om, 0.0), np.minimum(om, 0.0))
    res = optimize.minimize(lambda z: 0.5 * (z - om) @ Vi @ (z - om), x0,
                            jac=lambda z: Vi @ (z - om), method="L-BFGS-B", bounds=bounds,
                            options=dict(ftol=1e-15, gtol=1e-12, maxiter=1000))
    mode = res.x
    x, w = np.polynomial.legendre.leggauss(n)
    axes, weights = [], []
    for k in range(P):
        lo, hi = mode[k] - 10 * sd[k], mode[k] + 10 * sd[k]
        lo, hi = (max(lo, 0.0), hi) if signs[k] > 0 else (lo, min(hi, 0.0))
        axes.append(0.5 * (hi + lo) + 0.5 * (hi - lo) * x)
        weights.append(0.5 * (hi - lo) * w)
    grids = np.meshgrid(*axes, indexing="ij")
    z = np.stack([g.ravel() for g in grids], axis=1)
    wt = np.ones(1)
    for ww in weights:
        wt = np.multiply.outer(wt, ww)
    wt = wt.ravel()
    lf = _mvn_logpdf(z, om, V) + np.log(wt)
    c = lf.max()
    p = np.exp(lf - c)
    return c, p, z


def _orthant_union_bruteforce(om, V, patterns):
    logs, ps, zs = [], [], []
    for s in patterns:
        c, p, z = _orthant_gl(om, V, s)
        logs.append(c)
        ps.append(p)
        zs.append(z)
    C = max(logs)
    p = np.concatenate([pp * math.exp(c - C) for pp, c in zip(ps, logs)])
    z = np.concatenate(zs)
    tot = p.sum()
    m = (p[:, None] * z).sum(0) / tot
    d = z - m
    cov = (p[:, None, None] * d[:, :, None] * d[:, None, :]).sum(0) / tot
    return C + math.log(tot), m, cov


@pytest.mark.parametrize("y", [1.0, -1.0])
@pytest.mark.parametrize("case", range(len(P2_CASES)))
def test_sign_product_against_quadrature(y, case):
    om, V = P2_CASES[case]
    ch = make_channel("sign_product", noise=0.0)
    pm = ch.posterior_moments(np.array([y]), om.reshape(1, 2, 1), V)
    pats = [s for s in ([1, 1], [-1, -1], [1, -1], [-1, 1]) if s[0] * s[1] == y]
    lz, m, cov = _orthant_union_bruteforce(om, V, pats)
    assert pm.log_partition[0] == pytest.approx(lz, abs=1e-8)
    np.testing.assert_allclose(pm.mean[0, :, 0], m, rtol=1e-7, atol=1e-8)
    np.testing.assert_allclose(pm.cov[0, :, 0, :, 0], cov, rtol=1e-6, atol=1e-8)


P3_CASES = [
    (np.array([0.3, -0.5, 0.1]), np.eye(3)),
    (np.array([0.3, -0.5, 0.1]), np.array([[1.0, 0.3, -0.2], [0.3, 0.8, 0.25], [-0.2, 0.25, 0.6]])),
    (np.array([-2.0, -2.5, 1.5]), 0.01 * np.array([[1.0, 0.5, 0.5], [0.5, 1.0, 0.5], [0.5, 0.5, 1.0]])),
    (np.array([4.0, -4.0, -5.0]), 0.5 * np.eye(3) + 0.2),
]


@pytest.mark.parametrize("y", [1.0, -1.0])
@pytest.mark.parametrize("case", range(len(P3_CASES)))
def test_committee_sign_against_quadrature(y, case):
    om, V = P3_CASES[case]
    ch = make_channel("committee_sign", noise=0.0)
    pm = ch.posterior_moments(np.array([y]), om.reshape(1, 3, 1), V)
    pats = [s for s in np.array(np.meshgrid([1, -1], [1, -1], [1, -1])).reshape(3, -1).T
            if np.sign(s.sum()) == y]
    lz, m, cov = _orthant_union_bruteforce(om, V, pats)
    assert pm.log_partition[0] == pytest.approx(lz, abs=1e-7)
    np.testing.assert_allclose(pm.mean[0, :, 0], m, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(pm.cov[0, :, 0, :, 0], cov, rtol=1e-5, atol=1e-7)


def test_general_V_method_matches_diagonal_closed_form():
    """A tiny correlation switches to nested quadrature: it must agree with the closed form."""
    rng = np.random.default_rng(3)
    for link, P in (("sign_product", 2), ("committee_sign", 3)):
        ch = make_channel(link, noise=0.0)
        om = rng.standard_normal((20, P, 1)) * 2
        y = ch.output(rng.standard_normal((20, P, 1)))
        V = np.diag(rng.uniform(0.05, 1.5, P))
        Vc = V.copy()
        Vc[0, 1] = Vc[1, 0] = 1e-13
        a = ch.posterior_moments(y, om, V)
        b = ch.posterior_moments(y, om, Vc)
        np.testing.assert_allclose(a.mean, b.mean, rtol=1e-9, atol=1e-10)
        np.testing.assert_allclose(a.cov, b.cov, rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(a.log_partition, b.log_partition, rtol=1e-10, atol=1e-10)


# ------------------------------------------------------------------ generic properties
@pytest.mark.parametrize("link", LINKS)
def test_registered_shapes_finite_and_sampling(link):
    spec = MultiIndexSpec(link=link)
    ch = spec.channel()
    P = ch.n_indices
    assert ch.n_tokens == 1 and len(ch.index_names) == P and ch.noiseless
    rng = np.random.default_rng(0)
    Z = rng.standard_normal((64, P, 1))
    y = ch.sample_output(Z, rng)
    np.testing.assert_array_equal(y, ch.output(Z))
    np.testing.assert_array_equal(y, ch.observation(Z))
    z = Z[:, :, 0]
    expect = {"square": lambda: z[:, 0] ** 2, "abs": lambda: np.abs(z[:, 0]),
              "sign": lambda: np.sign(z[:, 0]), "relu": lambda: np.maximum(z[:, 0], 0),
              "product": lambda: z[:, 0] * z[:, 1],
              "sign_product": lambda: np.sign(z[:, 0] * z[:, 1]),
              "committee_sign": lambda: np.sign(np.sign(z).sum(1))}[link]()
    np.testing.assert_array_equal(y, expect)
    # hard regimes: tiny V, large omega; never NaN
    for scale, v in ((1.0, 1.0), (8.0, 1e-2), (30.0, 1e-4)):
        om = scale * rng.standard_normal((64, P, 1))
        pm = ch.posterior_moments(y, om, v * np.eye(P))
        assert isinstance(pm, PosteriorMoments)
        assert pm.mean.shape == (64, P, 1) and pm.cov.shape == (64, P, 1, P, 1)
        assert pm.log_partition.shape == (64,)
        assert np.all(np.isfinite(pm.mean)) and np.all(np.isfinite(pm.cov))
        assert not np.any(np.isnan(pm.log_partition))
        ev = np.linalg.eigvalsh(pm.cov.reshape(64, P, P))
        assert ev.min() > -1e-9 * max(1.0, np.abs(ev).max())


@pytest.mark.parametrize("link", LINKS)
def test_noisy_sampling_reproducible(link):
    ch = make_channel(link, noise=0.1)
    P = ch.n_indices
    Z = np.random.default_rng(1).standard_normal((32, P, 1))
    a = ch.sample_output(Z, np.random.default_rng(7))
    b = ch.sample_output(Z, np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)
    resid = a - ch.output(Z)
    assert 0 < resid.std() < 1.0
    assert ch.noise_shape == (1,)
    xi = np.random.default_rng(2).standard_normal((32, 1))
    np.testing.assert_allclose(ch.observation(Z, xi), ch.output(Z) + math.sqrt(0.1) * xi[:, 0])


def test_singular_V_does_not_crash():
    for link in LINKS:
        ch = make_channel(link, noise=0.0)
        P = ch.n_indices
        V = np.zeros((P, P))
        V[0, 0] = 1.0  # rank one
        rng = np.random.default_rng(0)
        y = ch.output(rng.standard_normal((8, P, 1)))
        pm = ch.posterior_moments(y, rng.standard_normal((8, P, 1)), V)
        assert not np.any(np.isnan(pm.mean)) and not np.any(np.isnan(pm.cov))


def test_sign_symmetric_multi_index_thresholds_name_their_direction():
    """Multi-index thresholds name a direction in R^P, not a layer, also for links whose
    threshold comes from the staircase path (square, abs: overlaps stay diagonal)."""
    from solvers import layer_thresholds

    (t,) = layer_thresholds(MultiIndexSpec(link="square"), precision="fast").thresholds
    assert t.layer is None and t.direction == (1.0,)
    assert abs(t.alpha - 0.5) <= t.ci95


def test_phase_retrieval_state_evolution_has_the_known_computational_gap():
    """Noiseless real phase retrieval, Gaussian prior (Barbier et al., PNAS 2019): weak
    recovery at alpha = 1/2, perfect recovery information-theoretically at alpha = 1, but AMP
    (the uninformed branch) reaches it only at alpha_alg ~ 1.13."""
    from solvers import state_evolution

    res = state_evolution(MultiIndexSpec(link="square"), [0.45, 0.55, 0.98, 1.05, 1.11, 1.16], precision="standard")
    below, above, no_gap, gap, still_gap, recovered = res.points
    assert below.uninformed.layer_overlaps == (0.0,) and below.uninformed.converged
    assert 0.0 < above.uninformed.layer_overlaps[0] < 0.2
    assert not no_gap.gap and no_gap.informed.layer_overlaps[0] < 0.6
    for p in (gap, still_gap):
        assert p.gap and p.bayes_optimal == "informed"
        assert p.informed.layer_overlaps[0] > 1 - 1e-6 > 0.9 > p.uninformed.layer_overlaps[0]
    assert not recovered.gap and recovered.uninformed.layer_overlaps[0] > 1 - 1e-6


@pytest.mark.parametrize("y", [-3.71935024e-07, 2.46727891e-07, 1e-12, 1e-30, 0.5, -2.0])
def test_product_posterior_at_small_y_matches_bessel(y):
    """y = z_1 z_2 with z ~ N(0, I): along the hyperbola E[z_1^2 | y] = |y| K_1(|y|) / K_0(|y|)
    and E[z_1 z_2 | y] = y.  Tiny |y| (the hyperbola hugging the axes, a nearly flat log
    density in u) made the quadrature overflow to NaN: product thresholds at `precise`
    (2^15 outer points per scramble) raised LinAlgError."""
    ch = MultiIndexSpec(link="product").channel()
    Z = np.array([[[1.0], [y]]])
    post = ch.posterior_moments(ch.observation(Z), np.zeros_like(Z), np.eye(2), 1)
    a = abs(y)
    exact = a * k1(a) / k0(a)
    cov = post.cov.reshape(2, 2)
    np.testing.assert_allclose([cov[0, 0], cov[1, 1]], [exact, exact], rtol=1e-8)
    np.testing.assert_allclose(cov[0, 1], y, rtol=1e-8, atol=1e-8 * exact)  # relative to the variances
    assert np.all(np.abs(post.mean) < 1e-12)
