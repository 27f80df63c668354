"""The generic importance-sampling NoisyChannel against direct quadrature of noisy posteriors."""
import math

import numpy as np
import pytest
from numba import njit
from scipy import integrate

from solvers.channels import make_channel
from solvers.channels.multi_index import g_product, g_square
from solvers.channels.deep_attention import deep_attention_link
from solvers.channels.noisy import NoisyChannel

DELTA = 0.1
CASES = [(1.3, 0.4, 0.7), (0.2, -1.0, 1.0), (2.5, 1.5, 0.3), (0.9, 0.0, 1.0)]  # (y, omega, v)


def _noisy_square_quad(y, om, v, delta):
    """Posterior of z ~ N(om, v) given y = z^2 + sqrt(delta) xi, by adaptive quad."""
    def logf(z):
        return (-(z - om) ** 2 / (2 * v) - 0.5 * math.log(2 * math.pi * v)
                - (y - z * z) ** 2 / (2 * delta) - 0.5 * math.log(2 * math.pi * delta))

    grid = np.linspace(-8, 8, 4001)
    c = max(logf(z) for z in grid)
    kw = dict(limit=500, epsabs=0, epsrel=1e-11, points=[-math.sqrt(max(y, 0)), 0.0, math.sqrt(max(y, 0))])
    mom = [integrate.quad(lambda z: z ** k * math.exp(logf(z) - c), -12, 12, **kw)[0] for k in range(3)]
    m = mom[1] / mom[0]
    return math.log(mom[0]) + c, m, mom[2] / mom[0] - m * m


def _errors(ch, resolution):
    y = np.array([c[0] for c in CASES])
    om = np.array([c[1] for c in CASES]).reshape(-1, 1, 1)
    errs = []
    for i, (yy, o, v) in enumerate(CASES):
        pm = ch.posterior_moments(np.array([yy]), np.array([[[o]]]), np.array([[v]]), resolution)
        lz, m, var = _noisy_square_quad(yy, o, v, DELTA)
        errs.append([abs(pm.log_partition[0] - lz), abs(pm.mean[0, 0, 0] - m),
                     abs(pm.cov[0, 0, 0, 0, 0] - var)])
    del y, om
    return np.array(errs)


def test_noisy_square_converges_to_quadrature():
    ch = NoisyChannel(g_square, 1, 1, 1, DELTA, bank_size=256, seed=3)
    e_small = _errors(ch, 1)          # K = 256
    e_large = _errors(ch, 256)        # K = 65536
    assert e_large.max() < 2e-3, e_large
    assert e_large.sum() < 0.2 * e_small.sum(), (e_small, e_large)
    ess = ch.last_effective_sample_size
    assert ess.shape == (1,) and 1.0 <= ess[0] <= 65536


def test_multi_index_square_uses_the_sampler_and_matches_quadrature():
    ch = make_channel("square", noise=DELTA)
    assert not ch.noiseless
    yy, o, v = CASES[0]
    pm = ch.posterior_moments(np.array([yy]), np.array([[[o]]]), np.array([[v]]), resolution=8)
    lz, m, var = _noisy_square_quad(yy, o, v, DELTA)
    assert pm.log_partition[0] == pytest.approx(lz, abs=5e-3)
    assert pm.mean[0, 0, 0] == pytest.approx(m, abs=5e-3)
    assert pm.cov[0, 0, 0, 0, 0] == pytest.approx(var, abs=5e-3)
    assert ch.last_effective_sample_size is not None


def test_small_noise_approaches_the_noiseless_posterior():
    """Delta -> 0 (with a large bank): the noisy moments approach the exact noiseless ones."""
    y, o, v = 1.3, 0.4, 0.7
    exact = make_channel("square", noise=0.0).posterior_moments(np.array([y]), np.array([[[o]]]),
                                                                np.array([[v]]))
    ch = NoisyChannel(g_square, 1, 1, 1, 1e-3, bank_size=1 << 16, seed=0)
    pm = ch.posterior_moments(np.array([y]), np.array([[[o]]]), np.array([[v]]))
    assert pm.mean[0, 0, 0] == pytest.approx(exact.mean[0, 0, 0], abs=0.02)
    assert pm.cov[0, 0, 0, 0, 0] == pytest.approx(exact.cov[0, 0, 0, 0, 0], rel=0.02)


def test_noisy_product_against_grid_quadrature():
    om = np.array([0.3, -0.5])
    V = np.array([[1.0, 0.3], [0.3, 0.8]])
    y = 0.7
    delta = 0.2
    # brute force on a fine 2-D grid
    g = np.linspace(-9, 9, 1201)
    h = g[1] - g[0]
    Z1, Z2 = np.meshgrid(g, g, indexing="ij")
    z = np.stack([Z1.ravel(), Z2.ravel()], 1)
    d = z - om
    Vi = np.linalg.inv(V)
    lf = (-0.5 * np.einsum("ni,ij,nj->n", d, Vi, d) - 0.5 * np.log(np.linalg.det(2 * np.pi * V))
          - (y - z[:, 0] * z[:, 1]) ** 2 / (2 * delta) - 0.5 * np.log(2 * np.pi * delta))
    c = lf.max()
    p = np.exp(lf - c)
    lz = c + np.log(p.sum() * h * h)
    p /= p.sum()
    m = p @ z
    cov = (p[:, None] * (z - m)).T @ (z - m)
    ch = make_channel("product", noise=delta)
    pm = ch.posterior_moments(np.array([y]), om.reshape(1, 2, 1), V, resolution=16)
    assert pm.log_partition[0] == pytest.approx(lz, abs=5e-3)
    np.testing.assert_allclose(pm.mean[0, :, 0], m, atol=5e-3)
    np.testing.assert_allclose(pm.cov[0, :, 0, :, 0], cov, atol=5e-3)


@pytest.mark.parametrize("link", ["sign", "sign_product", "committee_sign"])
def test_noisy_sign_links_are_exact_mixtures(link):
    """Outputs +-1 plus noise: exact mixture; compare with the sampler at a large bank."""
    ch = make_channel(link, noise=0.3)
    P = ch.n_indices
    rng = np.random.default_rng(4)
    Z = rng.standard_normal((6, P, 1))
    y = ch.observation(Z, rng.standard_normal((6, 1)))
    om = 0.5 * rng.standard_normal((6, P, 1))
    V = 0.6 * np.eye(P) + 0.1
    exact = ch.posterior_moments(y, om, V)
    from solvers.channels.multi_index import LINKS

    sampler = NoisyChannel(LINKS[link].numba_link, P, 1, 1, 0.3, bank_size=1 << 16, seed=1)
    approx = sampler.posterior_moments(y.reshape(-1, 1), om, V)
    np.testing.assert_allclose(exact.mean, approx.mean, atol=4e-3)
    np.testing.assert_allclose(exact.cov, approx.cov, atol=4e-3)
    np.testing.assert_allclose(exact.log_partition, approx.log_partition, atol=4e-3)


def test_reproducible_bit_for_bit_and_seed_dependent():
    rng = np.random.default_rng(0)
    y = rng.standard_normal((16, 1)) ** 2
    om = rng.standard_normal((16, 2, 1))
    V = np.array([[0.7, 0.2], [0.2, 0.5]])
    a = NoisyChannel(g_product, 2, 1, 1, 0.1, bank_size=1024, seed=5).posterior_moments(y, om, V)
    b = NoisyChannel(g_product, 2, 1, 1, 0.1, bank_size=1024, seed=5).posterior_moments(y, om, V)
    c = NoisyChannel(g_product, 2, 1, 1, 0.1, bank_size=1024, seed=6).posterior_moments(y, om, V)
    for f in ("mean", "cov", "log_partition"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f))
        assert not np.array_equal(getattr(a, f), getattr(c, f))


def test_sampling_and_observation_match_the_link():
    ch = NoisyChannel(g_product, 2, 1, 1, 0.25, bank_size=64)
    Z = np.random.default_rng(2).standard_normal((1000, 2, 1))
    np.testing.assert_array_equal(ch.output(Z)[:, 0], Z[:, 0, 0] * Z[:, 1, 0])
    y = ch.sample_output(Z, np.random.default_rng(9))
    y2 = ch.sample_output(Z, np.random.default_rng(9))
    np.testing.assert_array_equal(y, y2)
    r = (y - ch.output(Z))[:, 0]
    assert abs(r.std() - 0.5) < 0.05 and abs(r.mean()) < 0.05
    xi = np.random.default_rng(3).standard_normal((1000, 1))
    np.testing.assert_allclose(ch.observation(Z, xi), ch.output(Z) + 0.5 * xi)
    assert ch.noise_shape == (1,)


def test_multi_token_link_and_shapes():
    """A P = 2, M = 3 link: y = (sum_m z_1m z_2m, z_11): shapes and Gaussian sanity check."""
    @njit
    def g(Z):
        out = np.empty(2)
        s = 0.0
        for m in range(Z.shape[1]):
            s += Z[0, m] * Z[1, m]
        out[0] = s
        out[1] = Z[0, 0]
        return out

    ch = NoisyChannel(g, 2, 3, 2, 0.5, bank_size=2048, seed=1)
    rng = np.random.default_rng(0)
    Z = rng.standard_normal((5, 2, 3))
    y = ch.observation(Z, rng.standard_normal((5, 2)))
    pm = ch.posterior_moments(y, np.zeros((5, 2, 3)), np.eye(2))
    assert pm.mean.shape == (5, 2, 3) and pm.cov.shape == (5, 2, 3, 2, 3)
    C = pm.cov.reshape(5, 6, 6)
    np.testing.assert_allclose(C, np.transpose(C, (0, 2, 1)), atol=1e-12)
    assert np.linalg.eigvalsh(C).min() > -1e-10
    # the second output is Gaussian in z_11: its posterior mean must be pulled towards y_2
    assert np.corrcoef(pm.mean[:, 0, 0], y[:, 1])[0, 1] > 0.5


def test_deep_attention_link_matches_the_channel_output():
    from solvers.models import DeepAttentionSpec

    for L, M in ((2, 2), (3, 3)):
        spec = DeepAttentionSpec(layers=L, tokens=M, skip=0.7, beta=1.3, noise=0.1)
        da = spec.channel()
        noisy = da.noisy_channel(bank_size=256)
        Z = np.random.default_rng(0).standard_normal((20, L, M))
        params = np.concatenate([da.skips, da.betas])
        direct = np.stack([deep_attention_link(np.ascontiguousarray(z), params) for z in Z])
        np.testing.assert_allclose(direct.reshape(20, M, M), da.output(Z), atol=1e-14)
        y = noisy.observation(Z, np.zeros((20, M, M)))
        pm = noisy.posterior_moments(y, np.zeros((20, L, M)), np.eye(L))
        assert np.all(np.isfinite(pm.mean)) and pm.cov.shape == (20, L, M, L, M)


def test_shared_prior_table_gives_the_per_observation_numbers():
    """When every observation has the same prior (omega equal, as at Q = 0) the adaptive kernel
    evaluates the prior bank's link outputs once for all observations; it must give what the
    per-observation evaluation gives, bit for bit (both paths of ``_adaptive_kernel``)."""
    from solvers.channels.noisy import _adaptive_kernel, psd_sqrt

    ch = NoisyChannel(g_product, n_indices=2, n_tokens=1, output_size=1, noise=0.1, bank_size=256, seed=3)
    rng = np.random.default_rng(4)
    n = 12
    y = rng.standard_normal((n, 1))
    omega = np.tile(rng.standard_normal((1, 2, 1)), (n, 1, 1))
    V = np.array([[0.7, 0.1], [0.1, 0.5]])
    S = np.ascontiguousarray(psd_sqrt(V))
    Vinv = np.ascontiguousarray(np.linalg.inv(V))
    logdetV = float(np.linalg.slogdet(V)[1])
    args = (ch._link, ch._params, y, omega, S, Vinv, logdetV, ch.bank(1), ch.noise, ch.ridge)
    shared = _adaptive_kernel(*args, True)
    separate = _adaptive_kernel(*args, False)
    for a, b in zip(shared, separate):
        assert np.array_equal(a, b)
    assert np.all(np.isfinite(shared[2])) and np.ptp(shared[0][:, 0, 0]) > 0  # distinct posteriors
