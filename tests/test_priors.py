"""Weight priors (solvers/priors.py): the input side of SE against closed forms and brute-force
numerical integration, and the prior threaded through SE."""
import math

import numpy as np
import pytest
from scipy import integrate

from solvers.errors import SpecError
from solvers.models import DeepAttentionSpec, MultiIndexSpec, spec_from_dict
from solvers.priors import BINARY, GAUSSIAN, SparsePrior
from solvers.statistics import free_entropy, overlap_update

RNG = np.random.default_rng(3)


def _random_psd(P):
    A = RNG.standard_normal((P, P))
    return A @ A.T / P


@pytest.mark.parametrize("P", [1, 2, 3])
def test_gaussian_prior_is_the_historical_closed_form_bit_for_bit(P):
    """The engines' update and free entropy through the prior module equal the expressions
    they used before it existed, exactly (so every Gaussian result is unchanged)."""
    H = _random_psd(P)
    Q = _random_psd(P) / 3
    alpha, logz = 1.7, -0.31
    Qhat = alpha * (H + H.T) / 2
    assert np.array_equal(overlap_update(alpha, H), Qhat @ np.linalg.inv(np.eye(P) + Qhat))
    logdet = np.linalg.slogdet(np.eye(P) + Qhat)[1]
    old = float(-0.5 * np.trace(Q @ Qhat) + 0.5 * np.trace(Qhat) - 0.5 * logdet + alpha * logz)
    assert free_entropy(alpha, Q, H, logz) == old


def _brute_scalar_binary(qhat):
    """q = E[f_in^2] and Psi_w = E log Z_in for the +-1 prior by adaptive quadrature over xi
    (the posterior summed over w = +-1 directly), averaged over w* = +-1."""

    def posterior(r):
        vals = np.array([-1.0, 1.0])
        wts = 0.5 * np.exp(r * vals - qhat / 2)
        z = wts.sum()
        return (wts * vals).sum() / z, math.log(z)

    def outer(wstar):
        def f(xi, k):
            m, lz = posterior(qhat * wstar + math.sqrt(qhat) * xi)
            return (m * m if k == 0 else lz) * math.exp(-xi * xi / 2) / math.sqrt(2 * math.pi)
        return [integrate.quad(f, -12, 12, args=(k,), epsabs=1e-13, epsrel=1e-10, limit=200)[0] for k in (0, 1)]

    return np.mean([outer(-1.0), outer(1.0)], axis=0)


@pytest.mark.parametrize("qhat", [0.3, 2.5, 12.0])
def test_binary_input_update_and_free_entropy_match_brute_force(qhat):
    q, psi = _brute_scalar_binary(qhat)
    upd = BINARY.input_update(np.array([[qhat]]))
    assert abs(upd.Q[0, 0] - q) < 1e-8 and upd.ci95[0, 0] < 1e-8
    assert abs(BINARY.free_entropy_term(np.array([[qhat]])) - psi) < 1e-8


@pytest.mark.parametrize("rho,qhat", [(0.1, 0.8), (0.5, 3.0), (0.1, 40.0)])
def test_sparse_denoiser_matches_numerical_integration_over_w(rho, qhat):
    """Posterior mean, variance and log Z_in of the Gauss-Bernoulli prior at single r values,
    against the integrals over w done numerically (atom at 0 plus the Gaussian part)."""
    prior = SparsePrior(rho)
    r = np.array([-7.0, -0.3, 0.0, 1.1, 4.0, 25.0])
    d = prior.denoiser(r[:, None], np.array([[qhat]]))
    for i, ri in enumerate(r):
        a = qhat + rho
        w0, peak = ri / a, ri * ri / (2 * a)
        dens = lambda w: math.sqrt(rho / (2 * math.pi)) * math.exp(-a * w * w / 2 + ri * w - peak)
        lim = (w0 - 14 / math.sqrt(a), w0 + 14 / math.sqrt(a))
        z0, z1, z2 = (integrate.quad(lambda w: w ** k * dens(w), *lim, epsabs=1e-15, epsrel=1e-12)[0]
                      for k in range(3))
        scaled = (1 - rho) * math.exp(-peak) + rho * z0
        mean, second = rho * z1 / scaled, rho * z2 / scaled
        assert abs(d.mean[i, 0] - mean) < 1e-9 * max(1, abs(mean))
        assert abs(d.cov[i, 0, 0] - (second - mean ** 2)) < 1e-9 * max(1, second)
        assert abs(d.log_partition[i] - (peak + math.log(scaled))) < 1e-9 * max(1, peak)


@pytest.mark.parametrize("rho,qhat", [(0.1, 0.8), (0.5, 3.0), (0.1, 40.0)])
def test_sparse_input_update_and_free_entropy_match_monte_carlo(rho, qhat):
    """The outer expectation (trapezoid over the mixture of r) against plain Monte Carlo over
    the teacher w* ~ Gauss-Bernoulli and xi ~ N(0, 1): within 4 standard errors."""
    prior = SparsePrior(rho)
    rng = np.random.default_rng(11)
    n = 1_000_000
    w = np.where(rng.random(n) < rho, rng.standard_normal(n) / math.sqrt(rho), 0.0)
    d = prior.denoiser((qhat * w + math.sqrt(qhat) * rng.standard_normal(n))[:, None], np.array([[qhat]]))
    var, lz = d.cov[:, 0, 0], d.log_partition
    upd = prior.input_update(np.array([[qhat]]))
    assert abs((1 - upd.Q[0, 0]) - var.mean()) < 4 * var.std() / math.sqrt(n) + upd.ci95[0, 0]
    assert abs(prior.free_entropy_term(np.array([[qhat]])) - lz.mean()) < 4 * lz.std() / math.sqrt(n)


def test_binary_update_is_accurate_near_perfect_recovery():
    """1 - q = E sech^2(r) (Nishimori form) down to the tiny values near Q_0: against quad."""
    qhat = 30.0
    exact = 0.5 * sum(integrate.quad(lambda x, s=s: (1 - math.tanh(qhat * s + math.sqrt(qhat) * x) ** 2)
                                     * math.exp(-x * x / 2) / math.sqrt(2 * math.pi), -12, 12,
                                     points=[-math.sqrt(qhat)], epsabs=0, epsrel=1e-10, limit=400)[0]
                      for s in (-1.0, 1.0))
    got = 1 - BINARY.input_update(np.array([[qhat]])).Q[0, 0]
    assert exact < 1e-6 and abs(got - exact) < 1e-3 * exact


def test_sparse_prior_at_density_one_is_the_gaussian():
    for qhat in (0.1, 1.0, 10.0):
        Qh = np.array([[qhat]])
        assert abs(SparsePrior(1.0).input_update(Qh).Q[0, 0] - qhat / (1 + qhat)) < 1e-12
        assert abs(SparsePrior(1.0).free_entropy_term(Qh) - GAUSSIAN.free_entropy_term(Qh)) < 1e-10
    Qh = np.array([[1.0, 0.3], [0.3, 2.0]])  # the P-dimensional QMC path
    upd = SparsePrior(1.0).input_update(Qh)
    assert np.all(np.abs(upd.Q - GAUSSIAN.input_update(Qh).Q) <= upd.ci95 + 1e-12)


@pytest.mark.parametrize("prior", [BINARY, SparsePrior(0.3)])
def test_p_dimensional_update_agrees_with_the_scalar_one_for_a_diagonal_qhat(prior):
    """The QMC path over xi in R^P (non-diagonal Qhat) against the exact scalar rules: a
    nearly diagonal Qhat gives nearly the product of the scalar updates."""
    Qh = np.array([[1.5, 1e-9], [1e-9, 0.4]])
    upd = prior.input_update(Qh)
    exact = [prior.scalar_overlap(1.5), prior.scalar_overlap(0.4)]
    assert np.all(np.abs(np.diag(upd.Q) - exact) <= np.maximum(np.diag(upd.ci95), 1e-6) * 1.5)
    assert abs(upd.Q[0, 1]) < 1e-3


@pytest.mark.parametrize("prior", [GAUSSIAN, BINARY, SparsePrior(0.1), SparsePrior(0.5)])
def test_unit_variance_priors_share_the_linearisation_at_zero(prior):
    """q(qhat) = qhat + O(qhat^2) for every unit-variance prior: the weak-recovery threshold at
    Q = 0 (the linearised map) does not depend on the prior."""
    fourth_moment = 3.0 / getattr(prior, "density", 1.0) if prior is not BINARY else 1.0
    for qhat in (1e-3, 1e-4, 1e-5):
        assert abs(prior.scalar_overlap(qhat) / qhat - 1) < 2 * fourth_moment * qhat


def test_inverse_update_inverts_the_scalar_update():
    for prior in (BINARY, SparsePrior(0.1)):
        for q in (0.01, 0.5, 0.99):
            assert abs(prior.scalar_overlap(prior.inverse_update(q)) - q) < 1e-9


def test_phase_retrieval_weak_recovery_threshold_is_unchanged_by_the_prior():
    """SE itself: noiseless phase retrieval (link square) leaves Q = 0 at alpha = 1/2 whatever
    the unit-variance prior (binary, sparse at 0.5): 0 just below, positive just above."""
    from solvers import state_evolution

    for prior in ({"kind": "binary"}, {"kind": "sparse", "density": 0.5}):
        res = state_evolution(MultiIndexSpec(link="square", prior=prior), [0.45, 0.6], precision="fast")
        below, above = res.points
        assert below.uninformed.layer_overlaps == (0.0,) and below.uninformed.converged
        assert above.uninformed.layer_overlaps[0] > 0.01


def test_spec_prior_field_and_canonical_dict():
    assert "prior" not in MultiIndexSpec(link="sign").to_dict()  # cache keys of Gaussian questions unchanged
    assert "prior" not in DeepAttentionSpec(prior={"kind": "gaussian"}).to_dict()
    d = spec_from_dict({"family": "multi_index", "link": "sign", "prior": {"kind": "sparse", "density": 0.5}})
    assert d.to_dict()["prior"] == {"kind": "sparse", "density": 0.5}
    assert d.channel().prior == SparsePrior(0.5)
    for bad in (0, -0.1, 1.5, "x", None, float("nan"), True):
        with pytest.raises(SpecError) as e:
            MultiIndexSpec(prior={"kind": "sparse", "density": bad})
        assert e.value.parameter == "prior.density" and "(0, 1]" in str(e.value)
    with pytest.raises(SpecError) as e:
        MultiIndexSpec(prior={"kind": "laplace"})
    assert e.value.parameter == "prior.kind"
