"""Closed-form orthant moments (``_gauss.orthant_moments``, ``orthant_mixture``) against
independent references: scipy's bivariate normal CDF, a 1-D adaptive quadrature of the
conditional bivariate CDF for the trivariate one, the nested adaptive quadrature
(``orthant_moments_nested``, the method before solver 0.5.10) and tensor Gauss-Legendre
over the orthant, on random V (generic, strongly correlated, condition number up to 1e4),
omega up to 8 prior standard deviations inside and outside, every sign pattern.
"""
import math

import numpy as np
import pytest
from scipy import integrate, stats

from solvers.channels import _gauss
from solvers.channels._gauss import gauss_legendre
from solvers.channels.multi_index import GL_ORDER, CommitteeSignChannel, SignProductChannel, _regularise

from test_multi_index import _orthant_gl  # tests/ is on sys.path under pytest

X, W = gauss_legendre(GL_ORDER)


def _random_V(rng, d, kind):
    if kind == 0:  # generic
        A = rng.normal(size=(d, d))
        V = A @ A.T / d + 0.05 * np.eye(d)
    elif kind == 1:  # strongly correlated (|rho| up to ~0.99)
        u = rng.normal(size=d)
        V = np.outer(u, u) + 0.05 * np.diag(rng.uniform(0.5, 2.0, size=d))
    else:  # condition number up to 1e4
        Q, _ = np.linalg.qr(rng.normal(size=(d, d)))
        ev = np.exp(rng.uniform(math.log(1e-4), 0.0, size=d))
        ev[0] = 1.0
        V = (Q * ev) @ Q.T
    return np.ascontiguousarray(0.5 * (V + V.T) * math.exp(rng.uniform(math.log(0.01), math.log(3.0))))


def _cases(seed, d, n):
    rng = np.random.default_rng(seed)
    out = []
    for c in range(n):
        V = _random_V(rng, d, c % 3)
        sd = np.sqrt(np.diag(V))
        om = rng.uniform(-8.0, 8.0, size=d) * sd * rng.uniform() ** 2
        signs = rng.choice([-1.0, 1.0], size=d)
        out.append((om, V, signs))
    return out


def _errors(a, b, d):
    """|d log mass|, |d mean| / scale, |d cov| / scale^2 with scale^2 the mean posterior variance."""
    scale = math.sqrt(np.trace(b[2]) / d)
    return (abs(a[0] - b[0]), np.abs(a[1] - b[1]).max() / scale, np.abs(a[2] - b[2]).max() / scale ** 2)


def test_bvnu_against_scipy():
    rng = np.random.default_rng(0)
    worst = 0.0
    for r in list(rng.uniform(-1, 1, 150)) + [0.93, -0.93, 0.9999, -0.9999, 0.999999, -0.999999, 1e-13]:
        h, k = rng.normal(size=2) * 2.5
        ref = stats.multivariate_normal.cdf([-h, -k], [0.0, 0.0], [[1.0, r], [r, 1.0]])
        worst = max(worst, abs(_gauss.bvnu(h, k, r) - ref))
    assert worst < 1e-14


def _tvn_by_quad(h, R):
    """P(X < h), X ~ N(0, R): integral over x0 of phi(x0) times scipy's conditional bivariate CDF."""
    c = R[1:, 0]
    C = R[1:, 1:] - np.outer(c, c)

    def f(t):
        return stats.norm.pdf(t) * stats.multivariate_normal.cdf(h[1:] - c * t, [0.0, 0.0], C)

    return integrate.quad(f, -40.0, h[0], epsabs=1e-15, epsrel=1e-12, limit=200)[0]


def test_tvnl_against_quadrature_of_bivariate():
    rng = np.random.default_rng(1)
    for kind in range(3):
        for _ in range(4):
            V = _random_V(rng, 3, kind)
            s = np.sqrt(np.diag(V))
            R = V / np.outer(s, s)
            h = rng.normal(size=3) * 1.5
            p = _gauss.tvnl(h[0], h[1], h[2], R[1, 0], R[2, 0], R[2, 1])
            assert p == pytest.approx(_tvn_by_quad(h, R), abs=1e-13)


@pytest.mark.parametrize("d", [2, 3])
def test_orthant_moments_against_nested_quadrature(d):
    """Random V (also condition 1e4) and omega up to +-8 sd: log mass to 1e-8, mean and cov to
    1e-7 of the posterior scale; the closed form must carry most cases (else this would only
    test the fallback), and where it refuses (far tails) the answer is still the nested one."""
    n_fast = 0
    cases = _cases(10 + d, d, 240 if d == 2 else 90)
    for om, V, signs in cases:
        new = _gauss.orthant_moments(om, V, signs, X, W)
        ref = _gauss.orthant_moments_nested(om, V, signs, X, W)
        e = _errors(new, ref, d)
        assert e[0] < 1e-8 and e[1] < 1e-7 and e[2] < 1e-7, (om, V, signs, e)
        m0, m1, m2 = _gauss.orthant_raw(om, V, signs)
        n_fast += _gauss._fast_finish(m0, m1, m2, 1.0, V)[0]
    assert n_fast > 0.5 * len(cases)


@pytest.mark.parametrize("d", [2, 3])
def test_orthant_mass_against_scipy_and_quadrature(d):
    """The closed-form mass itself, where it is used, against scipy (d = 2) or the 1-D
    quadrature of scipy's bivariate CDF (d = 3)."""
    checked = 0
    for om, V, signs in _cases(20 + d, d, 60 if d == 2 else 20):
        m0, m1, m2 = _gauss.orthant_raw(om, V, signs)
        if not _gauss._fast_finish(m0, m1, m2, 1.0, V)[0]:
            continue
        # P(S z > 0) = P(-S (z - omega) < S omega)
        s = np.sqrt(np.diag(V))
        h = signs * om / s
        R = np.outer(signs, signs) * V / np.outer(s, s)
        if d == 2:
            ref = stats.multivariate_normal.cdf(h, np.zeros(2), R)
        else:
            ref = _tvn_by_quad(h, R)
        assert math.log(m0) == pytest.approx(math.log(ref), abs=1e-8)
        checked += 1
    assert checked >= (30 if d == 2 else 8)


TENSOR_CASES = [  # (omega, V): strongly correlated, near singular, tails inside and outside
    (np.array([0.3, -0.5, 0.1]), np.array([[1.0, 0.9, -0.8], [0.9, 1.0, -0.75], [-0.8, -0.75, 1.0]])),
    (np.array([2.0, 2.5, -1.5]), 0.1 * np.array([[1.0, 0.95, 0.9], [0.95, 1.0, 0.95], [0.9, 0.95, 1.0]])),
    (np.array([-1.0, 0.5, 2.0]), np.array([[1.0, -0.6, 0.3], [-0.6, 0.5, -0.2], [0.3, -0.2, 0.4]])),
]


@pytest.mark.parametrize("case", range(len(TENSOR_CASES)))
def test_orthant_moments_against_tensor_quadrature(case):
    om, V = TENSOR_CASES[case]
    for signs in ([1.0, 1.0, 1.0], [1.0, -1.0, 1.0], [-1.0, -1.0, -1.0]):
        signs = np.array(signs)
        new = _gauss.orthant_moments(om, V, signs, X, W)
        c, p, z = _orthant_gl(om, V, signs, n=128)  # 64 nodes are too few for the ridge of case 1
        tot = p.sum()
        m = p @ z / tot
        ref = (c + math.log(tot), m, np.einsum("n,ni,nj->ij", p, z - m, z - m) / tot)
        e = _errors(new, ref, 3)
        assert e[0] < 1e-8 and e[1] < 1e-7 and e[2] < 1e-7, (signs, e)


def _se_like(channel, V, n, seed):
    rng = np.random.default_rng(seed)
    P = V.shape[0]
    om = rng.multivariate_normal(np.zeros(P), np.eye(P) - V, size=n, check_valid="ignore")
    z = om + rng.multivariate_normal(np.zeros(P), V, size=n, check_valid="ignore")
    return np.ascontiguousarray(channel.vectorised_link(z)), np.ascontiguousarray(om)


def _nested_mixture(y, om, V, ch, noise):
    out = []
    for i in range(len(y)):
        logw, means, covs = [], [], []
        for pat, g in zip(ch.patterns, ch.outputs):
            ll = _gauss._piece_loglik(y[i], g, noise)
            if ll == -np.inf:
                continue
            lz, m, c = _gauss.orthant_moments_nested(om[i], V, pat, X, W)
            logw.append(lz + ll)
            means.append(m)
            covs.append(c)
        out.append(_gauss._mix(np.array(logw), np.array(means), np.array(covs)))
    return out


@pytest.mark.parametrize("link,V,noise", [
    ("committee_sign", np.eye(3) - 0.196 * np.ones((3, 3)), 0.0),
    ("committee_sign", np.eye(3) - (0.9 * np.eye(3) + 0.04 * (np.ones((3, 3)) - np.eye(3))), 0.0),
    ("committee_sign", np.eye(3) - 0.196 * np.ones((3, 3)), 0.1),
    ("sign_product", np.array([[0.5, 0.3], [0.3, 0.5]]), 0.0),
    ("sign_product", np.array([[0.436, 0.433], [0.433, 0.434]]), 0.0),
    ("sign_product", np.array([[0.05, -0.045], [-0.045, 0.05]]), 0.01),
])
def test_orthant_mixture_against_nested(link, V, noise):
    ch = (CommitteeSignChannel if link == "committee_sign" else SignProductChannel)()
    P = V.shape[0]
    y, om = _se_like(ch, V, 40, 7)
    if noise:
        y = y + math.sqrt(noise) * np.random.default_rng(8).normal(size=y.shape)
    # a few observations far from their omega: the mixture's own tail check
    om[:4] = om[:4] + 6.0 * np.sqrt(np.diag(V)) * np.where(y[:4, None] > 0, -1.0, 1.0)
    mean, cov, logz = _gauss.orthant_mixture(y, om, V, ch.patterns, ch.outputs, noise, X, W)
    for i, ref in enumerate(_nested_mixture(y, om, V, ch, noise)):
        e = _errors((logz[i], mean[i], cov[i]), ref, P)
        assert e[0] < 1e-8 and e[1] < 1e-7 and e[2] < 1e-7, (i, e)


def test_summed_mixture_weights_an_improbable_y_exactly():
    """For a sum over y weighted by P(y | omega, V) (state evolution's ``outputs_summed``), the
    orthant mixture keeps the closed form for a y of probability below SUMMED_NEGLIGIBLE_MASS
    and where its bound promises SUMMED_FAST_TOL, skipping the nested quadrature (15.7 s for one
    committee_sign evaluation near Q = I).  What the sum uses is each y's probability times its
    first and second moments: against the nested quadrature, exact to 1e-10 in absolute terms
    for every y, improbable ones included; the probable ones' normalised moments to 1e-6."""
    ch = CommitteeSignChannel()
    V = np.eye(3) - (0.957 * np.eye(3) + 0.001 * (np.ones((3, 3)) - np.eye(3)))
    _, om = _se_like(ch, V, 100, 11)
    improbable = 0
    for value in (-1.0, 1.0):
        y = np.full(len(om), value)
        mean, cov, logz = _gauss.orthant_mixture(y, om, V, ch.patterns, ch.outputs, 0.0, X, W, True)
        for i, (lz, m, c) in enumerate(_nested_mixture(y, om, V, ch, 0.0)):
            p, p_ref = math.exp(logz[i]), math.exp(lz)
            improbable += p_ref < _gauss.SUMMED_NEGLIGIBLE_MASS
            assert abs(p - p_ref) <= 1e-10
            np.testing.assert_allclose(p * mean[i], p_ref * m, rtol=0, atol=1e-10)
            np.testing.assert_allclose(p * (cov[i] + np.outer(mean[i], mean[i])), p_ref * (c + np.outer(m, m)),
                                       rtol=0, atol=1e-10)
            if p_ref >= _gauss.SUMMED_NEGLIGIBLE_MASS:
                e = _errors((logz[i], mean[i], cov[i]), (lz, m, c), 3)
                assert max(e) < 1e-6, (i, e)
    assert improbable >= 10  # the case this is about


def test_nearly_singular_V_against_one_dimensional_quadrature():
    """V with eigenvalues 0.87 and 1e-12 (as _regularise leaves a singular V): z2 given z1
    is a step; the nested quadrature was 1e-2 off here, the closed form is exact."""
    V = _regularise(np.array([[0.436, 0.435], [0.435, 0.434]]), 2)
    b = V[1, 0] / V[0, 0]
    c = (V[0, 0] * V[1, 1] - V[0, 1] ** 2) / V[0, 0]
    for om in (np.array([1.3953757, 0.16658414]), np.array([-0.3, 0.4]), np.array([0.05, -0.02])):
        for signs in ([1.0, 1.0], [1.0, -1.0], [-1.0, -1.0]):
            signs = np.array(signs)
            kink = om[0] - om[1] / b
            lim = (0.0, om[0] + 40.0) if signs[0] > 0 else (om[0] - 40.0, 0.0)
            pts = [kink] if lim[0] < kink < lim[1] else None

            def f(z1):
                m = om[1] + b * (z1 - om[0])
                return stats.norm.pdf(z1, om[0], math.sqrt(V[0, 0])) * stats.norm.cdf(signs[1] * m / math.sqrt(c))

            ref = integrate.quad(f, *lim, points=pts, epsabs=0.0, epsrel=1e-13, limit=400)[0]
            lz = _gauss.orthant_moments(om, V, signs, X, W)[0]
            if ref == 0.0:
                assert lz < -30.0
            else:
                assert lz == pytest.approx(math.log(ref), abs=1e-8), (om, signs)
