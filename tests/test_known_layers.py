"""Known (frozen, pretrained) layers (THEORY.md section 7): specs, SE, thresholds and GAMP
against independent checks (closed forms, a brute-force posterior, the q -> 1 limit)."""
import numpy as np
import pytest

from solvers import DeepAttentionSpec, MultiIndexSpec, SpecError, layer_thresholds, spec_from_dict
from solvers.channels.deep_attention import posterior_last_layer_known
from solvers.quadrature import t_halfwidth
from solvers.state_evolution import fixed_point
from solvers.statistics import outer_normals, output_statistics

PAPER_ALPHA_LAYER1_STAIRCASE = 0.719  # layer 1 without side information (README, standard precision)
PAPER_ALPHA_LAYER2 = 0.1854778  # layer 2 first, at Q = 0 (README, deterministic grid)


# ---------------------------------------------------------------------------------------
# Specs
# ---------------------------------------------------------------------------------------
def test_known_layers_are_validated_and_canonical():
    spec = DeepAttentionSpec(layers=3, tokens=2, known_layers=[2.0, 1])
    assert spec.known_layers == (1, 2)
    assert spec.to_dict()["known_layers"] == [1, 2]
    assert spec_from_dict(spec.to_dict()) == spec
    assert spec.channel().known == (0, 1) and spec.channel().unknown == (2,)
    # nothing known: the canonical dict (the cache key) is the one of before
    assert "known_layers" not in DeepAttentionSpec().to_dict()
    assert "known_layers" not in MultiIndexSpec(link="product").to_dict()
    assert MultiIndexSpec(link="product", known_layers=[2]).channel().known == (1,)


@pytest.mark.parametrize("kwargs,field", [
    (dict(layers=2, known_layers=[3]), "known_layers[0]"),
    (dict(layers=2, known_layers=[0]), "known_layers[0]"),
    (dict(layers=2, known_layers=[1, 2]), "known_layers"),  # all known
    (dict(layers=3, tokens=2, known_layers=[1, 1]), "known_layers"),  # duplicate
    (dict(layers=2, known_layers=[True]), "known_layers[0]"),
    (dict(layers=2, known_layers=1), "known_layers"),
    (dict(layers=3, tokens=2, known_layers=[3]), "known_layers"),  # last layer: L = 2, M = 2 only
    (dict(layers=2, noise=0.1, known_layers=[2]), "known_layers"),
])
def test_bad_known_layers_name_the_field_and_range(kwargs, field):
    with pytest.raises(SpecError) as err:
        DeepAttentionSpec(**kwargs)
    assert err.value.parameter == field
    assert "[1, " in err.value.allowed or "last" in err.value.allowed


def test_multi_index_known_indices_are_validated():
    with pytest.raises(SpecError) as err:
        MultiIndexSpec(link="product", known_layers=[1, 2])
    assert err.value.parameter == "known_layers" and "[1, 2]" in err.value.allowed
    with pytest.raises(SpecError):
        MultiIndexSpec(link="square", known_layers=[1])  # one index: knowing it is knowing all


# ---------------------------------------------------------------------------------------
# The L = 2, M = 2 posterior with z_2 known against brute force
# ---------------------------------------------------------------------------------------
def _a(z1, z2, c=1.0, beta=1.0):
    """a = (c I + softmax_rows(beta z_1 z_1^T)) z_2, vectorised over leading axes (written here
    from THEORY.md section 2, independently of the solver's kernels)."""
    G = beta * z1[..., :, None] * z1[..., None, :]
    E = np.exp(G - G.max(-1, keepdims=True))
    S = E / E.sum(-1, keepdims=True)
    return c * z2 + np.einsum("...ij,...j->...i", S, z2)


def _brute_force_posterior(z1, z2, c=1.0, beta=1.0):
    """Cov[z_1 | a up to sign, z_2] at Q = 0 (prior N(0, I)) by Newton from a 9 x 9 grid of starts
    for each target +-a, solutions deduplicated, weights phi(z) / |det da/dz_1| with a
    finite-difference Jacobian: no use of the closed form being tested."""
    n = len(z1)
    a = _a(z1, z2, c, beta)
    g = np.linspace(-4, 4, 9) + 0.137  # off z_1 = 0 and its diagonals, where da/dz_1 is singular
    starts = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)
    covs = np.empty((n, 2, 2))
    branches = np.empty(n, dtype=int)
    h = 1e-6
    for i in range(n):
        sols = []
        for sigma in (1.0, -1.0):
            u = starts.copy()
            b = np.broadcast_to(z2[i], u.shape)
            for _ in range(60):
                f = _a(u, b, c, beta) - sigma * a[i]
                J = np.stack([(_a(u + h * e, b, c, beta) - _a(u - h * e, b, c, beta)) / (2 * h)
                              for e in np.eye(2)], -1)
                step = np.linalg.pinv(J) @ f[..., None]
                u = u - np.clip(np.nan_to_num(step[..., 0]), -1.0, 1.0)
            f = _a(u, b, c, beta) - sigma * a[i]
            for s in u[np.abs(f).max(1) < 1e-10]:
                if not any(np.allclose(s, t, atol=1e-6) for t in sols):
                    sols.append(s)
        sols = np.array(sols)
        b = np.broadcast_to(z2[i], sols.shape)
        J = np.stack([(_a(sols + h * e, b, c, beta) - _a(sols - h * e, b, c, beta)) / (2 * h)
                      for e in np.eye(2)], -1)
        w = np.exp(-0.5 * (sols ** 2).sum(1)) / np.abs(np.linalg.det(J))
        w /= w.sum()
        covs[i] = np.einsum("k,ki,kj->ij", w, sols, sols) - np.outer(w @ sols, w @ sols)
        branches[i] = len(sols) // 2
    return covs, branches


def test_last_layer_known_posterior_matches_brute_force():
    rng = np.random.default_rng(3)
    n = 40
    z = rng.standard_normal((n, 2, 2))
    a = _a(z[:, 0], z[:, 1])
    post = posterior_last_layer_known(a, np.stack([np.zeros((n, 2)), z[:, 1]], 1), np.diag([1.0, 0.0]), 1.0, 1.0)
    covs, branches = _brute_force_posterior(z[:, 0], z[:, 1])
    np.testing.assert_allclose(post.cov[:, 0, :, 0, :], covs, atol=1e-5)
    np.testing.assert_allclose(post.mean[:, 1], z[:, 1])
    assert np.all(post.cov[:, 1] == 0.0)
    assert set(branches) <= {1, 2} and np.any(branches == 1)


# ---------------------------------------------------------------------------------------
# Thresholds with side information
# ---------------------------------------------------------------------------------------
def test_layer_one_known_gives_layer_two_the_one_sixth_of_observing_plus_minus_z():
    """z_1 known: B = A(z_1) is known, so a = B z_2 reveals z_2 up to sign and
    alpha_c(layer 2) = 1 / (M^2 + M) = 1/6 (THEORY.md section 4), down from 0.1855."""
    r = layer_thresholds(DeepAttentionSpec(known_layers=[1]), "fast", 0)
    (t,) = r.thresholds
    assert t.layer == 2 and t.kind == "linear_stability"
    assert abs(t.alpha - 1 / 6) <= t.ci95
    assert t.alpha + t.ci95 < PAPER_ALPHA_LAYER2
    assert abs(r.perfect_recovery_alpha - 0.5) < 1e-6  # counting: (L - 1) / M
    assert all(c.passed for c in r.checks)
    assert r.model["known_layers"] == [1]


def test_layer_two_known_gives_layer_one_the_q2_to_one_limit():
    """z_2 known: y and z_2 reveal z_1 up to sign (c >= 1/2, posterior_last_layer_known's
    derivation), so layer 1's threshold is the closed form 1 / (M^2 + M) = 1/6, down from
    today's staircase value 0.719."""
    r = layer_thresholds(DeepAttentionSpec(known_layers=[2]), "fast", 0)
    (t,) = r.thresholds
    assert t.layer == 1
    assert abs(t.alpha - 1 / 6) <= t.ci95
    assert t.alpha < PAPER_ALPHA_LAYER1_STAIRCASE / 4
    assert abs(r.perfect_recovery_alpha - 0.5) < 1e-6
    assert all(c.passed for c in r.checks)


@pytest.mark.slow
def test_layer_two_known_threshold_matches_the_brute_force_expectation():
    """The same threshold from the brute-force posterior (Newton from a grid of starts) on 640
    plain Monte-Carlo points (about 1 min)."""
    t = layer_thresholds(DeepAttentionSpec(known_layers=[2]), "fast", 0).thresholds[0]
    z = np.random.default_rng(11).standard_normal((640, 2, 2))
    covs, branches = _brute_force_posterior(z[:, 0], z[:, 1])
    dev = ((covs - np.eye(2)) ** 2).sum((1, 2)).reshape(16, 40).mean(1)
    brute = 1 / dev.mean()
    brute_hw = brute * t_halfwidth(dev) / dev.mean()
    assert abs(t.alpha - brute) <= t.ci95 + brute_hw
    assert np.all(branches == 1)  # c >= 1/2: -a is never reachable (the docstring's derivation)


def test_known_layer_rates_match_the_staircase_curve_as_q2_goes_to_one():
    """The known-layer rate is the limit of layer 1's staircase rate F_1(q_2) (no layer known,
    grid posterior) as q_2 -> 1: F_1 increases toward it on common outer points."""
    nrm = outer_normals(DeepAttentionSpec().channel(), 64, 16, 0)
    known = output_statistics(DeepAttentionSpec(known_layers=[2]).channel(), np.zeros((2, 2)), nrm)
    f_known = known.cov_deviation[:, 0].mean()
    free = DeepAttentionSpec().channel()
    rates = [output_statistics(free, np.diag([0.0, 1 - v]), nrm).cov_deviation[:, 0].mean() for v in (1e-2, 1e-4)]
    assert rates[0] < rates[1] < f_known
    assert f_known - rates[1] < 0.5 * (f_known - rates[0])


# ---------------------------------------------------------------------------------------
# State evolution
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("known,alpha,learned", [([2], 0.3, 0), ([1], 0.12, 1)])
def test_state_evolution_keeps_known_layers_at_one(known, alpha, learned):
    """The known layer stays at overlap 1 (Q_MAX) with no half-width; the other one is learned
    above its threshold (~0.167 with the side information, 0.3 > it) and not below (0.12)."""
    fp = fixed_point(DeepAttentionSpec(known_layers=known), alpha, precision="fast")
    k = known[0] - 1
    assert fp.layer_overlaps[k] > 1 - 1e-9 and fp.overlap_ci95[k] == 0.0
    q = fp.layer_overlaps[learned]
    assert (q > 0.2) if alpha > 0.2 else (q == 0.0)
    assert fp.converged


@pytest.mark.parametrize("alpha", [0.3, 0.6])
def test_product_with_one_index_known_is_linear_regression(alpha):
    """y = z_1 z_2 with z_2 known reveals z_1 = y / z_2: noiseless linear regression, whose SE
    fixed point is q = alpha below alpha = 1 (v = v / (v + alpha))."""
    fp = fixed_point(MultiIndexSpec(link="product", known_layers=[2]), alpha, precision="fast")
    assert abs(fp.layer_overlaps[0] - alpha) <= 1e-6 + fp.overlap_ci95[0]
    assert fp.layer_overlaps[1] > 1 - 1e-9


def test_sign_product_with_one_index_known_is_the_perceptron():
    """y = sign(z_1) sign(z_2) with z_2 known is y = sign(z_1) (the link 'sign'): the same SE
    fixed point, and index 1 is a trivial direction (threshold 0)."""
    fp = fixed_point(MultiIndexSpec(link="sign_product", known_layers=[2]), 0.6, precision="fast")
    ref = fixed_point(MultiIndexSpec(link="sign"), 0.6, precision="fast")
    assert abs(fp.layer_overlaps[0] - ref.layer_overlaps[0]) <= fp.overlap_ci95[0] + ref.overlap_ci95[0] + 1e-4
    r = layer_thresholds(MultiIndexSpec(link="sign_product", known_layers=[2]), "fast", 0)
    (t,) = r.thresholds
    assert t.kind == "trivial" and t.direction == (1.0, 0.0)


# ---------------------------------------------------------------------------------------
# GAMP on finite instances
# ---------------------------------------------------------------------------------------
def _gamp_vs_se(spec, alpha, dimension, seeds, iterations):
    from solvers.amp import amp_simulation

    r = amp_simulation(spec, dimension, alpha, seeds=seeds, iterations=iterations)
    final = np.array([run.layer_overlaps[-1] for run in r.runs])  # (seeds, P)
    return final, fixed_point(spec, alpha, precision="fast")


def test_gamp_holds_the_known_index_and_tracks_se_for_the_product():
    """GAMP with z_2 known on y = z_1 z_2 (linear regression for z_1): the known row stays the
    teacher's; q_1 tracks SE's exact alpha = 0.6 within the finite-size spread (D = 400)."""
    final, fp = _gamp_vs_se(MultiIndexSpec(link="product", known_layers=[2]), 0.6, 400, 3, 30)
    np.testing.assert_allclose(final[:, 1], 1.0, atol=1e-12)
    spread = final[:, 0].std(ddof=1)
    assert abs(final[:, 0].mean() - fp.layer_overlaps[0]) <= 3 * spread / np.sqrt(3) + 0.03


@pytest.mark.slow
@pytest.mark.parametrize("known", [[1], [2]])
def test_gamp_tracks_se_with_a_known_attention_layer(known):
    """Paper model at alpha = 0.35 (above the 1/6 threshold, below perfect recovery at 0.5),
    D = 1000, 3 seeds (about 1-2.5 min): measured GAMP 0.388 (layer 2; SE 0.432 +- 0.048) and
    0.398 (layer 1; SE 0.407 +- 0.050)."""
    final, fp = _gamp_vs_se(DeepAttentionSpec(known_layers=known), 0.35, 1000, 3, 60)
    k, l = known[0] - 1, 2 - known[0]
    np.testing.assert_allclose(final[:, k], 1.0, atol=1e-12)
    spread = final[:, l].std(ddof=1)
    assert abs(final[:, l].mean() - fp.layer_overlaps[l]) <= 3 * spread / np.sqrt(3) + fp.overlap_ci95[l]


def test_sample_size_targets_count_only_the_layers_to_learn():
    from solvers.sample_size import check_target

    spec = DeepAttentionSpec(layers=3, tokens=2, known_layers=[1])
    assert check_target(spec, {"kind": "weak_recovery", "layers": 2})["layers"] == 2
    with pytest.raises(SpecError) as err:
        check_target(spec, {"kind": "weak_recovery", "layers": 3})
    assert err.value.parameter == "target.layers" and "[1, 2]" in err.value.allowed


@pytest.mark.slow
def test_three_layers_with_the_first_two_known_leave_one_sixth():
    """L = 3, M = 2 with z_1, z_2 known: B = A_2 A_1 is known and a = B z_3 reveals z_3 up to
    sign, so alpha_c(layer 3) = 1/6 (measured 0.1676 +- 0.0030; about 20 s) and perfect
    recovery (L - 2) / M = 1/2."""
    r = layer_thresholds(DeepAttentionSpec(layers=3, tokens=2, known_layers=[1, 2]), "fast", 0)
    (t,) = r.thresholds
    assert t.layer == 3 and abs(t.alpha - 1 / 6) <= t.ci95
    assert abs(r.perfect_recovery_alpha - 0.5) < 1e-6 and all(c.passed for c in r.checks)
