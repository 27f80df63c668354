"""Noiseless formula links in z1 alone that can be inverted (continuous, nowhere flat): the
posterior sits on the finitely many roots z_k of g(z1) = y,

    P(z_k | y) = N(z_k; omega, V) / |g'(z_k)| / Z_out,   Z_out = sum_k N(z_k; omega, V) / |g'(z_k)|

(solvers/channels/formula.py ``preimage_moments``, FormulaChannel in multi_index.py).  Checked
against the exact roots in numpy, the named square and abs links (posteriors, thresholds,
transitions, SE, GAMP) and noiseless linear regression; and the refusals (flat pieces, jumps,
P >= 2) with their reasons."""
from __future__ import annotations

import math

import numpy as np
import pytest

from solvers.channels import make_channel
from solvers.errors import SpecError
from solvers.models import MultiIndexSpec
from solvers.quadrature import t_halfwidth
from solvers.state_evolution import fixed_point
from solvers.statistics import outer_normals, output_statistics
from solvers.thresholds import layer_thresholds

# centred differences of g (step h = 6e-6 (1 + |z|)) err by about eps |g| / h + h^2 |g'''|:
# ~1e-10 absolute on g' for the formulas here, so a weight's relative error is 1e-10 / |g'|
SLOPE_ERROR = 1e-10


def _channel(formula, **kw):
    return MultiIndexSpec(link={"formula": formula}, **kw).channel()


def _draws(n, rng, v_low=1e-6, v_high=1.0):
    """omega ~ N(0, q), V = 1 - q per sample batch (one V per batch, as the engines pass it)."""
    v = float(np.exp(rng.uniform(np.log(v_low), np.log(v_high))))
    omega = math.sqrt(1.0 - v) * rng.normal(size=(n, 1, 1))
    z = omega + math.sqrt(v) * rng.normal(size=(n, 1, 1))
    return omega, z, np.array([[v]])


def _on_roots(roots, slopes, omega, v):
    """Mean, variance, log Z_out of the discrete posterior on the roots (numpy, per sample):
    roots and slopes (n, K) with NaN for absent roots."""
    logw = -0.5 * (roots - omega[:, None]) ** 2 / v - np.log(np.abs(slopes))
    logw = np.where(np.isnan(roots), -np.inf, logw)
    top = logw.max(1, keepdims=True)
    w = np.exp(logw - top)
    total = w.sum(1)
    r = np.nan_to_num(roots)
    mean = (w * r).sum(1) / total
    var = (w * (r - mean[:, None]) ** 2).sum(1) / total
    logz = top[:, 0] + np.log(total) - 0.5 * np.log(2 * np.pi * v)
    return mean, var, logz


def _assert_posterior(pm, mean, var, logz, min_slope):
    n = len(mean)
    np.testing.assert_allclose(pm.mean.reshape(n), mean, rtol=0, atol=1e-9)
    np.testing.assert_allclose(pm.cov.reshape(n), var, rtol=0, atol=1e-9)
    assert np.all(np.abs(pm.log_partition - logz) <= 1e-9 + SLOPE_ERROR / min_slope)


def test_two_root_posterior_against_the_exact_roots():
    """y = z^2 + z (no symmetry): roots (-1 +- sqrt(1 + 4y)) / 2, both with |g'| = |2z + 1| =
    sqrt(1 + 4y); at random (omega, V) from V = 1 down to 1e-6 (near perfect recovery) and
    at the tangency y = -1/4 (one double root, g' = 0: finite, at z = -1/2)."""
    ch = _channel("z1**2 + z1")
    rng = np.random.default_rng(3)
    for _ in range(4):
        omega, z, V = _draws(500, rng)
        y = ch.output(z)
        s = np.sqrt(1.0 + 4.0 * y)
        roots = np.stack([(-1.0 + s) / 2.0, (-1.0 - s) / 2.0], axis=1)
        mean, var, logz = _on_roots(roots, np.stack([s, s], axis=1), omega.reshape(-1), V[0, 0])
        _assert_posterior(ch.posterior_moments(y, omega, V), mean, var, logz, s)
    pm = ch.posterior_moments(np.array([-0.25]), np.zeros((1, 1, 1)), np.eye(1))
    assert np.all(np.isfinite(pm.log_partition)) and abs(pm.mean[0, 0, 0] + 0.5) < 1e-6
    assert pm.cov[0, 0, 0, 0, 0] < 1e-12


@pytest.mark.parametrize("formula, g, slope", [
    ("z1**3", lambda z: z ** 3, lambda z: 3 * z ** 2),
    ("tanh(z1)", np.tanh, lambda z: 1 - np.tanh(z) ** 2),
    ("z1 + 0.3*z1**3", lambda z: z + 0.3 * z ** 3, lambda z: 1 + 0.9 * z ** 2),
])
def test_monotone_posterior_is_a_point_mass(formula, g, slope):
    """A strictly increasing g: y reveals z, so the posterior is the point mass at g^-1(y) and
    Z_out = N(z; omega, V) / g'(z)."""
    ch = _channel(formula)
    rng = np.random.default_rng(5)
    omega, z, V = _draws(1000, rng, 1e-3)
    y = ch.output(z)
    zz = z.reshape(-1)
    np.testing.assert_allclose(y, g(zz), rtol=1e-15, atol=0)
    mean, var, logz = _on_roots(zz[:, None], slope(zz)[:, None], omega.reshape(-1), V[0, 0])
    assert np.all(var == 0.0)
    _assert_posterior(ch.posterior_moments(y, omega, V), mean, var, logz, slope(zz))


@pytest.mark.parametrize("link, formula", [("square", "z1**2"), ("abs", "abs(z1)")])
def test_posterior_equals_the_named_link(link, formula):
    """The named links' closed forms (two atoms +-sqrt(y), +-|y|, with their log Jacobian
    -log 2 sqrt(y), 0): the same density convention for log Z_out."""
    ch, named = _channel(formula), make_channel(link)
    rng = np.random.default_rng(1)
    for _ in range(3):
        omega, z, V = _draws(1000, rng)
        y = named.output(z)
        a, b = ch.posterior_moments(y, omega, V), named.posterior_moments(y, omega, V)
        min_slope = 2 * np.sqrt(y) if link == "square" else np.ones_like(y)
        _assert_posterior(a, b.mean.reshape(-1), b.cov.reshape(-1), b.log_partition, min_slope)


def test_further_indices_are_gaussian_given_z1():
    """z1**2 with indices = 2 and correlated V: the posterior is the mixture over the roots r_k
    of N(z2; omega_2 + V_21 / V_11 (r_k - omega_1), V_22 - V_21^2 / V_11), summed here term by
    term (the channel uses the regression on z1)."""
    ch = _channel("z1**2", indices=2)
    rng = np.random.default_rng(2)
    V = np.array([[0.5, 0.2], [0.2, 0.6]])
    n = 300
    omega = rng.normal(size=(n, 2, 1)) * np.sqrt([0.5, 0.4])[None, :, None]
    z = omega + (np.linalg.cholesky(V) @ rng.normal(size=(n, 2, 1)))
    y = ch.output(z)
    pm = ch.posterior_moments(y, omega, V)
    s = np.sqrt(y)
    roots = np.stack([s, -s], axis=1)
    om1, om2 = omega[:, 0, 0], omega[:, 1, 0]
    logw = -0.5 * (roots - om1[:, None]) ** 2 / V[0, 0]
    w = np.exp(logw - logw.max(1, keepdims=True))
    w /= w.sum(1, keepdims=True)
    mu = np.stack([roots, om2[:, None] + V[1, 0] / V[0, 0] * (roots - om1[:, None])], axis=2)  # (n, 2, 2)
    within = np.diag([0.0, V[1, 1] - V[1, 0] ** 2 / V[0, 0]])
    mean = np.einsum("nk,nkp->np", w, mu)
    d = mu - mean[:, None]
    cov = within[None] + np.einsum("nk,nkp,nkq->npq", w, d, d)
    np.testing.assert_allclose(pm.mean.reshape(n, 2), mean, atol=1e-9)
    np.testing.assert_allclose(pm.cov.reshape(n, 2, 2), cov, atol=1e-9)


@pytest.mark.parametrize("formula, reason", [
    ("relu(z1)", "flat (g = 0 for z1 in [-inf, 0])"),
    ("min(z1, 0)", "flat (g = 0 for z1 in [0, inf])"),
    ("where(0 < z1, z1, 0)", "flat (g = 0 for z1 in [-inf, 0])"),
    ("where(abs(z1) < 1, 0, z1)", "flat (g = 0 for z1 in [-1, 1])"),
    ("z1 + sign(z1)", "jumps at z1 = 0 (from -1 to 1)"),
    ("z1*z2", "2 variables"),
    ("z1**2 + z2", "2 variables"),
])
def test_formulas_that_cannot_be_inverted_need_noise(formula, reason):
    with pytest.raises(SpecError) as exc:
        MultiIndexSpec(link={"formula": formula})
    assert exc.value.parameter == "link.formula"
    assert "cannot be inverted" in exc.value.allowed and reason in exc.value.allowed
    assert "noise level" in exc.value.allowed
    MultiIndexSpec(link={"formula": formula}, noise=0.1)  # with noise: the importance sampler


def test_a_kink_is_not_a_jump():
    """where(0 < z1, z1, 2 z1) is continuous (a kink at 0) and increasing: accepted, and y
    reveals z (the point mass at z)."""
    ch = _channel("where(0 < z1, z1, 2*z1)")
    z = np.array([-1.3, -0.2, 0.4, 2.0]).reshape(-1, 1, 1)
    pm = ch.posterior_moments(ch.output(z), np.zeros_like(z), np.eye(1))
    np.testing.assert_allclose(pm.mean.reshape(-1), z.reshape(-1), atol=1e-12)


def _thresholds(link):
    return layer_thresholds(MultiIndexSpec(link=link), precision="fast")


@pytest.mark.parametrize("link, formula", [("square", "z1**2"), ("abs", "abs(z1)")])
def test_thresholds_and_transitions_equal_the_named_link(link, formula):
    """Weak recovery 1/2 (THEORY.md: alpha_c = 1 / E[(Cov[z | y] - 1)^2] = 1/2 for phase
    retrieval at Q = 0; y = |z| reveals the same as z^2), perfect recovery information-
    theoretically at 1 and algorithmically at ~1.13, each within the CIs of the named link's."""
    a, b = _thresholds({"formula": formula}), _thresholds(link)
    (ta,), (tb,) = a.thresholds, b.thresholds
    assert ta.kind == tb.kind == "linear_stability"
    assert abs(ta.alpha - 0.5) <= ta.ci95 and abs(ta.alpha - tb.alpha) <= ta.ci95 + tb.ci95
    kinds = {t.kind: t for t in a.transitions}
    for t in b.transitions:
        assert abs(kinds[t.kind].alpha - t.alpha) <= kinds[t.kind].ci95 + t.ci95
    assert abs(kinds["information_theoretic"].alpha - 1.0) <= kinds["information_theoretic"].ci95
    alg = kinds["algorithmic"]
    assert abs(alg.alpha - 1.13) <= max(alg.ci95, 0.003) and not alg.coincide


def test_square_formula_state_evolution_equals_the_named_link():
    """SE fixed points from the uninformed start below (0.8) and above (1.3) the algorithmic
    threshold, with their free entropies."""
    for alpha in (0.8, 1.3):
        a = fixed_point(MultiIndexSpec(link={"formula": "z1**2"}), alpha, "uninformed", "fast", 0)
        b = fixed_point(MultiIndexSpec(link="square"), alpha, "uninformed", "fast", 0)
        assert abs(a.layer_overlaps[0] - b.layer_overlaps[0]) <= a.overlap_ci95[0] + b.overlap_ci95[0] + 1e-12
        assert abs(a.free_entropy - b.free_entropy) <= 1e-6 * (1 + abs(b.free_entropy))
    assert b.layer_overlaps[0] > 0.999  # 1.3 > 1.13: perfect recovery


def test_monotone_formula_is_noiseless_linear_regression():
    """y = g(z) with g strictly increasing reveals z = w.x / sqrt(D): noiseless linear regression.

    The posterior of z is the point mass at z, so g_out = (z - omega) / V and, with V = 1 - q
    and z - omega ~ N(0, V),
        qhat = alpha E[g_out^2] = alpha / (1 - q)     (H(q) = 1 / (1 - q)),
    and the Gaussian prior's update q = qhat / (1 + qhat) gives q = alpha / (1 - q + alpha), i.e.
    (q - 1)(q - alpha) = 0: q = alpha is the attracting fixed point for alpha < 1 (the map's
    slope there is alpha) and q = 1 for alpha >= 1 (slope 1 / alpha).  At Q = 0 E[z | y] = z != 0:
    the first threshold is trivial (alpha = 0), and perfect recovery is at alpha = 1 both ways.

    Checked: H(q) = 1 / (1 - q) at two overlaps (the direct form E[(E[z|y] - omega)^2] / V^2,
    QMC, within its CI; the Nishimori form 1/V - Var[z|y]/V^2 exactly), the SE fixed points,
    the trivial threshold and the transitions."""
    spec = MultiIndexSpec(link={"formula": "z1 + 0.3*z1**3"})
    ch = spec.channel()
    normals = outer_normals(ch, 1024, 16, 0)
    for q in (0.3, 0.7):
        st = output_statistics(ch, np.array([[q]]), normals)
        direct = st.H_direct[:, 0, 0]
        assert abs(direct.mean() - 1 / (1 - q)) <= t_halfwidth(direct)
        np.testing.assert_allclose(st.H_nishimori[:, 0, 0], 1 / (1 - q), rtol=1e-9)
    for alpha in (0.5, 0.8, 1.5):
        fp = fixed_point(spec, alpha, "uninformed", "fast", 0)
        # the driver stops when its step is below 0.1 standard error and adds the step to the
        # half-width; the geometric tail beyond that step (the map's slope r = alpha below 1,
        # 1 / alpha above) adds at most r / (1 - r) steps
        rate = min(alpha, 1.0 / alpha)
        assert abs(fp.layer_overlaps[0] - min(alpha, 1.0)) <= fp.overlap_ci95[0] / (1.0 - rate)
    r = _thresholds({"formula": "z1**3"})
    (t,) = r.thresholds
    assert t.kind == "trivial" and t.alpha == 0.0 and t.direction == (1.0,)
    for tr in r.transitions:
        assert abs(tr.alpha - 1.0) <= tr.ci95 + 1e-9, tr


def test_asymmetric_two_root_formula_has_a_trivial_direction():
    """y = z^2 + z: E[z | y] = (sum_k w_k z_k) != 0 at Q = 0 (the roots' weights differ): the
    first threshold is trivial, as the posterior test's exact roots say."""
    (t,) = [t for t in _thresholds({"formula": "z1**2 + z1"}).thresholds if t.kind == "trivial"]
    assert t.alpha == 0.0 and t.direction == (1.0,)


def test_gamp_on_the_square_formula_follows_the_named_link_and_se():
    """GAMP (its output denoiser is the same posterior_moments) on y = z1**2 at D = 1000,
    alpha = 1.3 > 1.13: the same trajectory as the named square link's on the same instance
    (the posteriors agree to 1e-11), and both reach SE's fixed point, perfect recovery."""
    from solvers.amp import amp_simulation

    runs = {str(link): amp_simulation(MultiIndexSpec(link=link), 1000, 1.3, seeds=[0], iterations=80)
            for link in ("square", {"formula": "z1**2"})}
    named, formula = runs["square"], runs[str({"formula": "z1**2"})]
    assert np.max(np.abs(named.layer_overlaps_mean - formula.layer_overlaps_mean)) < 1e-6
    se = fixed_point(MultiIndexSpec(link={"formula": "z1**2"}), 1.3, "uninformed", "fast", 0)
    assert se.layer_overlaps[0] > 0.999
    assert abs(formula.final_layer_overlaps_mean[0] - se.layer_overlaps[0]) < 1e-3  # finite D
