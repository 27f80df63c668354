"""Deep tied attention: thresholds, state evolution and posterior moments against
independent checks (closed forms, a second integrator, grid refinement, published SE)."""
import csv
import math
from pathlib import Path

import numpy as np
import pytest

from solvers import DeepAttentionSpec, SpecError, layer_thresholds, state_evolution
from solvers.channels import attention_kernels as K
from solvers.channels.deep_attention import inner_bank
from solvers.statistics import outer_normals, output_statistics, overlap_update, sample_outer
from solvers.precision import PRECISION_TARGETS, THRESHOLD_SETTLED_POINTS
from solvers.quadrature import t_halfwidth
from solvers.fixed_point_iteration import iterate_fixed_point
from shared_results import thresholds
from solvers.thresholds import (_LearnedOverlapsRoot, _alpha_at_zero, contraction_rates, perfect_recovery,
                               rates_at_zero, resolution_change_at_zero, revealed_jacobians,
                               unsettled_relative_ci)

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference"
PAPER = DeepAttentionSpec(layers=2, tokens=2, skip=1.0, beta=1.0)


def read_reference(name):
    with open(REFERENCE / name) as fh:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(fh)]


@pytest.fixture(scope="module")
def paper_channel():
    return PAPER.channel()


def test_forward_model_matches_the_definition():
    """L = 2, M = 2: y = S(a a^T) with a = (I + S(z_1 z_1^T)) z_2 (THEORY.md section 2)."""
    rng = np.random.default_rng(1)
    Z = rng.standard_normal((5, 2, 2))
    ch = PAPER.channel()

    def S(a):
        e = np.exp(np.outer(a, a) - np.outer(a, a).max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    for z in Z:
        a = (np.eye(2) + S(z[0])) @ z[1]
        np.testing.assert_allclose(ch.output(z[None])[0], S(a), rtol=1e-12)
        obs = ch.observation_from_output(ch.output(z[None]))[0]
        np.testing.assert_allclose(np.abs(obs), np.abs(a), rtol=1e-7)


def test_three_layer_forward_model():
    """L = 3: a = A_2 A_1 z_3 with A_1 = A(z_1), A_2 = A(A_1 z_2)."""
    spec = DeepAttentionSpec(layers=3, tokens=3, skip=[0.5, 2.0, 1.0], beta=[1.0, 0.5, 2.0])
    ch = spec.channel()
    z = np.random.default_rng(2).standard_normal((3, 3))

    def A(a, c, b):
        e = np.exp(b * np.outer(a, a))
        return c * np.eye(3) + e / e.sum(1, keepdims=True)

    A1 = A(z[0], 0.5, 1.0)
    A2 = A(A1 @ z[1], 2.0, 0.5)
    a = A2 @ A1 @ z[2]
    e = np.exp(2.0 * np.outer(a, a))
    np.testing.assert_allclose(ch.output(z[None])[0], e / e.sum(1, keepdims=True), rtol=1e-12)
    np.testing.assert_allclose(np.abs(ch.last_preactivation(z[None])[0]), np.abs(a), rtol=1e-12)


def test_paper_model_thresholds_at_zero_agree_with_qmc(paper_channel):
    """Deterministic nested grids vs the generic QMC outer + posterior grid (independent paths)."""
    grid = rates_at_zero(paper_channel, "standard", 0)
    assert np.argmin(grid.alpha) == 1  # layer 2 is learned first
    assert np.all(grid.ci95 <= 0.005 * grid.alpha)
    normals = outer_normals(paper_channel, 1024, 16, 3)
    dev = output_statistics(paper_channel, np.zeros((2, 2)), normals).cov_deviation
    qmc_alpha = 1.0 / dev.mean(0)
    qmc_ci = qmc_alpha * 2.2 * dev.std(0, ddof=1) / 4 / dev.mean(0)
    assert abs(qmc_alpha[1] - grid.alpha[1]) <= qmc_ci[1] + grid.ci95[1]
    assert abs(qmc_alpha[0] - grid.alpha[0]) <= qmc_ci[0] + grid.ci95[0]


def test_single_layer_is_observing_plus_minus_z():
    """L = 1 reveals +-z exactly: alpha_c = 1 / (M^2 + M) for any skip."""
    for M in (2, 3):
        res = rates_at_zero(DeepAttentionSpec(layers=1, tokens=M, skip=7.0).channel(), "standard", 0)
        exact = 1.0 / (M * M + M)
        assert abs(res.alpha[0] - exact) <= max(res.ci95[0], 1e-9) + 1e-9
        assert res.ci95[0] <= 0.01 * exact


def test_large_skip_limit_is_one_sixth():
    """An attention layer with skip c = 50 before the readout: layer 2 sees ~ +-z_2, alpha -> 1/6."""
    zero = rates_at_zero(DeepAttentionSpec(layers=2, tokens=2, skip=50.0).channel(), "standard", 0)
    assert np.argmin(zero.alpha) == 1
    assert abs(zero.alpha[1] - 1 / 6) <= 0.01 / 6
    assert zero.ci95[1] <= 0.005 * zero.alpha[1]


def test_rates_at_zero_refine_only_the_first_threshold_and_the_order():
    """rates_at_zero grows its points while the least threshold misses the target or the order
    is open; a later index need not meet the target when it lies clearly above (its value is
    the staircase's).  The value returned is the relative half-width the points are sized by."""
    target = 0.02
    assert unsettled_relative_ci(np.array([1.0, 0.1]), np.array([0.5, 0.001]), target, (0, 1)) == 0.0
    assert unsettled_relative_ci(np.array([0.2, 0.1]), np.array([0.15, 0.001]), target, (0, 1)) == pytest.approx(0.75)  # order open
    assert unsettled_relative_ci(np.array([1.0, 0.1]), np.array([0.01, 0.01]), target, (0, 1)) == pytest.approx(0.1)  # first at 10%
    assert unsettled_relative_ci(np.array([0.1, 0.1]), np.array([0.001, 0.002]), target, (0, 1)) == 0.0  # tie, both met
    # a known index (not among the unknown ones) neither orders nor must meet anything
    assert unsettled_relative_ci(np.array([0.05, 0.1]), np.array([0.04, 0.001]), target, (1,)) == 0.0
    never = np.array([np.inf, 0.1])  # index 0 never learned at Q = 0
    assert unsettled_relative_ci(never, np.array([np.nan, 0.001]), target, (0, 1)) == 0.0
    assert unsettled_relative_ci(never, np.array([np.nan, 0.01]), target, (0, 1)) == pytest.approx(0.1)


def test_rates_at_zero_on_nested_points_equal_one_run_on_all_of_them():
    """rates_at_zero doubles its points per step and computes only the new ones (Sobol points
    are nested): its alpha must be that of one run on all the points it ends on, at least
    THRESHOLD_SETTLED_POINTS, and its half-width, the inner sampler's term included, must meet
    fast's target for the first threshold.  L = 3, M = 2 at fast: 128, doubled to 2048 (before
    solver 0.5.15 it jumped to 4096 on points_for's n^-1/2 sizing, where the errors fell like
    n^-0.95)."""
    ch = DeepAttentionSpec(layers=3, tokens=2).channel()
    zero = rates_at_zero(ch, "fast", 0)
    assert THRESHOLD_SETTLED_POINTS <= zero.points <= 2 * THRESHOLD_SETTLED_POINTS
    whole = _alpha_at_zero(ch, outer_normals(ch, zero.points, 16, 0), 1, seed=0)
    np.testing.assert_allclose(zero.alpha, whole, rtol=1e-12)
    first = int(np.argmin(zero.alpha))
    assert first == 2 and zero.ci95[first] <= PRECISION_TARGETS["fast"][0] * zero.alpha[first]


def _iterate(channel, alpha, Q, normals, steps):
    for _ in range(steps):
        Q = overlap_update(alpha, output_statistics(channel, Q, normals).H.mean(0))
        Q = np.diag(np.diag(Q))
    return Q


def test_state_evolution_grows_iff_above_threshold(paper_channel):
    """Consistency: SE from q_2 = 1e-3 decays at 0.97 alpha_c and grows at 1.03 alpha_c."""
    alpha_c = rates_at_zero(paper_channel, "standard", 0).alpha[1]
    normals = outer_normals(paper_channel, 256, 16, 0)
    start = np.diag([0.0, 1e-3])
    below = _iterate(paper_channel, 0.97 * alpha_c, start, normals, 12)[1, 1]
    above = _iterate(paper_channel, 1.03 * alpha_c, start, normals, 12)[1, 1]
    assert below < 1e-3 * 0.97 ** 6
    assert above > 1e-3 * 1.03 ** 6


@pytest.mark.parametrize("beta, centre, half_widths", [
    (1.0, (0.3, -0.5), (3.0, 1.5)),     # every row by the exponentials' recurrence
    (5.0, (2.0, -1.0), (4.0, 4.0)),     # rows on both sides of EXP_DIRECT
    (100.0, (1.0, -1.0), (2.0, 2.0)),   # large beta: most rows exponentiate per point
])
def test_grid_log_weights_match_the_forward_map(beta, centre, half_widths):
    """The L = 2, M = 2 grid's log weights (softmax exponentials by a recurrence along each row)
    against the definition: B = c I + S(z_1 z_1^T), z_2 = s B^{-1} a,
    log w = log N(z_1; omega_1, v_1) + log N(z_2; omega_2, v_2) - log det B (up to constants)."""
    n, skip, sign = 37, 0.7, -1.0
    a, omega, v = np.array([1.3, -0.4]), np.array([[0.2, -0.1], [0.5, 0.3]]), np.array([0.8, 0.3])
    theta = 0.6
    U = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    c, h = np.array(centre), np.array(half_widths)
    logw, pts, F = np.empty((n, n)), np.empty((n, n, 4)), np.empty((n * n, 8))
    K.grid_factors(c, U, h, n, skip, beta, F)
    mx = K._branch_log_weights(a, omega, v, sign, F, n, logw, pts)
    t = np.linspace(-1.0, 1.0, n)
    T0, T1 = np.meshgrid(h[0] * t, h[1] * t, indexing="ij")
    z1 = c + np.stack([T0, T1], -1) @ U.T
    logits = beta * z1[..., :, None] * z1[..., None, :]
    S = np.exp(logits - logits.max(-1, keepdims=True))
    B = skip * np.eye(2) + S / S.sum(-1, keepdims=True)
    z2 = sign * np.linalg.solve(B, np.broadcast_to(a, z1.shape)[..., None])[..., 0]
    expected = (-0.5 * ((z1 - omega[0]) ** 2).sum(-1) / v[0] - 0.5 * ((z2 - omega[1]) ** 2).sum(-1) / v[1]
                - np.log(np.linalg.det(B)))
    np.testing.assert_allclose(pts[..., :2], z1, rtol=0, atol=1e-12)
    np.testing.assert_allclose(pts[..., 2:], z2, rtol=1e-11, atol=1e-11)
    np.testing.assert_allclose(logw, expected, rtol=1e-11, atol=1e-10)
    assert mx == logw.max()


def test_prior_box_tables_give_the_grid_posterior_bit_for_bit(paper_channel):
    """At q_1 = 0 every sample's first pass is on the same prior box, whose softmax factors a
    batch tabulates once (prior_box_tables): the batch's moments equal those of each sample
    alone (no table below 8 samples) bit for bit, and the tables are the box's grid factors."""
    normals = outer_normals(paper_channel, 32, 2, 4)[0]
    for q in ((0.0, 0.0), (0.0, 0.6)):
        omega, _, obs, V = sample_outer(paper_channel, np.diag(q), normals)
        a, om, v = np.ascontiguousarray(obs), np.ascontiguousarray(omega), np.diag(V).copy()
        batch = K.posterior_grid_L2(a, om, v, 1.0, 1.0, 24, 5, 1e-3)
        for t in range(len(a)):
            alone = K.posterior_grid_L2(a[t:t + 1], om[t:t + 1], v, 1.0, 1.0, 24, 5, 1e-3)
            for x, y in zip(batch, alone):
                np.testing.assert_array_equal(x[t:t + 1], y)
    tables, offsets, hp = K.prior_box_tables(24, np.array([1.0, 0.4]), 1.0, 1.0, True)
    assert [k for k in range(len(offsets)) if offsets[k] >= 0] == [16, 24, 36, 54, 81] and hp == 8.0
    work = np.empty((K.GRID_MAX ** 2, 8))
    box = (np.zeros(2), np.eye(2), np.full(2, hp))
    F = K._factors(*box, 36, 1.0, 1.0, (tables, offsets, hp), work)
    assert np.shares_memory(F, tables)
    expected = np.empty((36 * 36, 8))
    K.grid_factors(*box, 36, 1.0, 1.0, expected)
    np.testing.assert_array_equal(F, expected)
    moved = (np.array([0.0, 1e-9]), np.eye(2), np.full(2, hp))
    assert not np.shares_memory(K._factors(*moved, 36, 1.0, 1.0, (tables, offsets, hp), work), tables)


def test_grid_and_importance_sampling_posteriors_agree():
    """The zooming grid (L = 2, M = 2) against the adaptive importance sampler."""
    rng = np.random.default_rng(5)
    ch = PAPER.channel()
    for q in ((0.0, 0.0), (0.3, 0.6), (0.0, 0.95)):
        v = 1.0 - np.array(q)
        Z = rng.standard_normal((6, 2, 2))
        omega = np.sqrt(np.array(q))[None, :, None] * Z + np.sqrt(v)[None, :, None] * rng.standard_normal(Z.shape)
        omega, Z = omega, Z  # Z is the truth, omega the side information
        Zs = omega + np.sqrt(v)[None, :, None] * rng.standard_normal(Z.shape)
        a = ch.last_preactivation(Zs)
        mg, cg, lg = K.posterior_grid_L2(a, omega, v, 1.0, 1.0, 96, 5)
        mi, ci, li = K.posterior_importance(a, omega, v, ch.skips, ch.betas, inner_bank(2, 65536), True)
        np.testing.assert_allclose(mg, mi, atol=0.03)
        np.testing.assert_allclose(cg, ci, atol=0.03)
        np.testing.assert_allclose(lg, li, atol=0.03)


@pytest.mark.parametrize("layers,tokens", [(3, 2), (2, 3), (4, 4)])
def test_block_preimages_are_the_per_point_forward_map_and_solve_bit_for_bit(layers, tokens):
    """last_layer_preimages (a block of inner points, structure of arrays) does the arithmetic of
    inner_product_matrix and solve_small per point in the same order: equal, not just close
    (the importance sampler's numbers did not move when it replaced them)."""
    L, M = layers, tokens
    rng = np.random.default_rng(3)
    n, block = 200, 256
    Zin = np.zeros(((L - 1) * M, block))
    Zin[:, :n] = 1.5 * rng.standard_normal(((L - 1) * M, n))
    skips, betas = np.linspace(0.5, 1.5, L), np.linspace(2.0, 0.5, L)
    a = rng.standard_normal(M)
    B, A, W = (np.empty((M, M, block)) for _ in range(3))
    av, X = np.empty((M, block)), np.empty((M, block))
    mx, ssum, det = np.empty(block), np.empty(block), np.empty(block)
    K.last_layer_preimages(Zin, n, skips, betas, a, B, A, W, av, mx, np.empty(block, np.int64), ssum, X, det)
    Bk, Ak, work, avec, x = np.empty((M, M)), np.empty((M, M)), np.empty((M, M)), np.empty(M), np.empty(M)
    for k in range(n):
        z = np.vstack([Zin[:, k].reshape(L - 1, M), np.zeros((1, M))])
        K.inner_product_matrix(z, skips, betas, L - 1, Bk, Ak, work, avec)
        assert K.solve_small(Bk, a, x, work) == det[k]
        assert np.array_equal(x, X[:, k])


@pytest.mark.parametrize("layers,tokens", [(3, 2), (2, 3)])
def test_prior_bank_tables_give_the_importance_sampler_exactly(layers, tokens):
    """While the inner layers are at their prior (Q = 0, or only the last layer learned), the
    posterior reads B^{-1} and log det B from tables shared by every sample instead of running
    the forward map per sample and inner point: the same estimate (stage 1, and stage 2 where
    the effective sample size is low), so equal to rounding."""
    spec = DeepAttentionSpec(layers=layers, tokens=tokens)
    ch = spec.channel()
    L, M = layers, tokens
    bank = inner_bank((L - 1) * M, 512)
    inv, logdet = K.prior_bank_inverses(bank, ch.skips, ch.betas, M)
    normals = outer_normals(ch, 16, 16, 3).reshape(256, -1)
    stage_two = 0
    for q in (0.0, 0.95):
        Q = np.zeros((L, L))
        Q[L - 1, L - 1] = q
        omega, _, obs, V = sample_outer(ch, Q, normals)
        a, om, v = np.ascontiguousarray(obs), np.ascontiguousarray(omega), np.diag(V).copy()
        shared = K.posterior_prior_bank(a, om, v, ch.skips, ch.betas, bank, inv, logdet, True)
        direct = K.posterior_importance(a, om, v, ch.skips, ch.betas, bank, True)
        for x, y in zip(shared, direct):
            np.testing.assert_allclose(x, y, rtol=1e-9, atol=1e-10)
        stage1 = K.posterior_prior_bank(a, om, v, ch.skips, ch.betas, bank, inv, logdet, False)
        stage_two += int(np.sum(np.abs(stage1[2] - shared[2]) > 1e-12))
    assert stage_two > 0  # the comparison covered samples that needed stage 2


def test_learned_overlaps_root_is_where_se_leaves_the_next_layer():
    """L = 3 with layers 3 and 1 learned: the root in their overlaps (Newton on the fixed-point
    equations plus alpha F_2 = 1) is, on the same outer points, an SE fixed point (by iteration
    from the last step's overlaps) at which alpha F_2 = 1: the two solve the same equations."""
    ch = DeepAttentionSpec(layers=3, tokens=2).channel()
    normals = outer_normals(ch, 32, 16, 0)
    root = _LearnedOverlapsRoot(ch, [2, 0], 1, seed=0)
    alpha, ci, u, _ = root.solve(np.log(np.array([0.98, 0.2]) / np.array([0.02, 0.8])), normals, 16)
    assert 1.0 < alpha < 1.3 and 0 < ci < 0.2 * alpha
    q = 1.0 / (1.0 + np.exp(-u))
    fp = iterate_fixed_point(ch, alpha, np.diag([0.0, 0.0, 0.9788]), normals, tol=1e-9,
                             frozen=np.array([False, True, False]), seed=0)  # the root's inner banks
    assert fp.converged
    np.testing.assert_allclose(np.diag(fp.Q)[[2, 0]], q, rtol=1e-3)
    rate = alpha * output_statistics(ch, fp.Q, normals, 1, seed=0).cov_deviation[:, 1].mean()
    assert abs(rate - 1.0) < 1e-3


def test_learned_overlaps_root_takes_its_last_small_step_on_the_linearisation(monkeypatch):
    """With a tolerance (a tenth of a precision's target), Newton stops once its next step is
    small and takes it on the linearisation: the root agrees with Newton's to 1e-5 (|G| <= 1e-5)
    within that tolerance, in fewer evaluations, and the step it did not iterate is in the
    half-width: beyond its Student-t and inner-sampler parts (recorded) lies at least the
    distance to Newton's root.  (Comparing the two half-widths whole, as this test did before,
    compared those parts at two points, where they differ by 1e-3 on these 32 points per
    scramble, more than the 3e-5 between the roots.)"""
    import solvers.thresholds as thresholds_module
    parts = []
    for name in ("t_halfwidth", "inner_bias_bound"):
        original = getattr(thresholds_module, name)
        monkeypatch.setattr(thresholds_module, name,
                            lambda x, original=original, name=name: parts.append((name, original(x))) or parts[-1][1])
    ch = DeepAttentionSpec(layers=3, tokens=2).channel()
    normals = outer_normals(ch, 32, 16, 0)
    start = np.log(np.array([0.98, 0.2]) / np.array([0.02, 0.8]))
    found = {}
    for tolerance in (0.0, 0.002):
        root = _LearnedOverlapsRoot(ch, [2, 0], 1, seed=0)
        calls = []
        residuals = root.residuals
        root.residuals = lambda u, n, resolution=1: calls.append(n.shape) or residuals(u, n, resolution)
        parts.clear()
        alpha, ci, u, _ = root.solve(start, normals, 16, tolerance=tolerance)
        recorded = dict(parts[-2:])  # the returned half-width's: inner-sampler bound, then Student t
        remainder = ci - recorded["t_halfwidth"] - alpha * float(recorded["inner_bias_bound"])
        found[tolerance] = alpha, remainder, u, sum(1 for shape in calls if shape == normals.shape)
    (alpha, remainder, u, calls), (alpha_lin, remainder_lin, u_lin, calls_lin) = found[0.0], found[0.002]
    assert calls_lin < calls
    assert abs(np.log(alpha_lin / alpha)) <= 0.002
    np.testing.assert_allclose(u_lin, u, atol=0.02)
    assert 0 <= remainder < 1e-5  # Newton's own root: only its last step, taken at |G| <= 1e-5
    assert remainder_lin >= abs(alpha_lin - alpha) > 0  # the untaken step is not hidden


def test_learned_overlaps_root_updates_a_borrowed_jacobian_along_its_moves(monkeypatch):
    """The final run starts from the pilot's root and Jacobian (other points).  Each chord move
    corrects that Jacobian by Broyden's update: the same root (|G| <= 1e-5) in fewer evaluations
    than with the borrowed Jacobian kept as it was (8 against 12 here)."""
    import solvers.thresholds as thresholds_module

    ch = DeepAttentionSpec(layers=3, tokens=2).channel()
    pilot, final = outer_normals(ch, 16, 16, 0), outer_normals(ch, 64, 16, 0)
    start = np.log(np.array([0.98, 0.2]) / np.array([0.02, 0.8]))
    borrowed = _LearnedOverlapsRoot(ch, [2, 0], 1, seed=0).solve(start, pilot, 16)
    found = {}
    for update in ("broyden", "kept"):
        if update == "kept":
            monkeypatch.setattr(thresholds_module, "broyden_update", lambda J, dx, dg: J)
        root = _LearnedOverlapsRoot(ch, [2, 0], 1, seed=0)
        calls = []
        residuals = root.residuals
        root.residuals = lambda u, n, resolution=1: calls.append(n.shape) or residuals(u, n, resolution)
        alpha, _, u, _ = root.solve(borrowed[2], final, 16, borrowed[3])
        found[update] = alpha, u, sum(1 for shape in calls if shape == final.shape)
    (alpha, u, calls), (alpha_kept, u_kept, calls_kept) = found["broyden"], found["kept"]
    assert calls < calls_kept, (calls, calls_kept)
    assert abs(np.log(alpha / alpha_kept)) <= 1e-4
    np.testing.assert_allclose(u, u_kept, atol=1e-3)


@pytest.mark.parametrize("tokens", [2, 3])
def test_uninformed_state_evolution_brackets_the_exact_threshold(tokens):
    """L = 1 observes +-z: alpha_c = 1 / (M^2 + M) exactly (THEORY.md).  From the uninformed
    start, SE at fast reports exactly 0 at 0.95x and 0.99x and a positive overlap at 1.01x and
    1.05x.  (It used to stop at its start 1e-3, where the map's step is below its statistical
    error, at 0.99x for M = 2, and to report 0.012 at 0.95x for M = 3.)"""
    spec = DeepAttentionSpec(layers=1, tokens=tokens)
    alpha_c = 1.0 / (tokens ** 2 + tokens)
    for factor in (0.95, 0.99, 1.01, 1.05):
        fp = state_evolution(spec, [factor * alpha_c], precision="fast").points[0].uninformed
        assert fp.converged
        if factor < 1:
            assert fp.layer_overlaps[0] == 0.0, factor
        else:
            assert fp.layer_overlaps[0] > 0.0, factor


def test_posterior_moments_stay_converged_as_the_posterior_collapses(paper_channel):
    """At Q = 0.99 on both layers the posterior is narrow; refining the grid 4x changes nothing."""
    normals = outer_normals(paper_channel, 64, 2, 11)
    Q = np.diag([0.99, 0.99])
    from solvers.statistics import sample_outer

    omega, Z, obs, V = sample_outer(paper_channel, Q, normals.reshape(128, -1))
    p1 = paper_channel.posterior_moments(obs, omega, V, 1)
    p4 = paper_channel.posterior_moments(obs, omega, V, 4)
    np.testing.assert_allclose(p1.mean, p4.mean, atol=1e-6)
    np.testing.assert_allclose(p1.cov, p4.cov, atol=1e-6)
    # the posterior covariance is O(v): it must not be the prior's
    assert np.trace(p1.cov[:, 0, :, 0, :].mean(0)) < 0.02


def _posterior_by_z2_trapezoid(a, omega, v1, v2, c=1.0, beta=1.0, n=401, half=7.0):
    """Brute-force reference for one sample of the L = 2, M = 2 noiseless posterior: a fine
    trapezoid rule over z_2 in omega_2 +- 7 sqrt(v_2) (spacing 0.035 sqrt(v_2)), at each node the
    <= 4 preimages z_1 of the closed form (checked against a Newton root search in
    test_known_layers), weighted by N(z_2; omega_2, v_2 I) N(z_1; omega_1, v_1 I) / |det da/dz_1|.
    Returns the 4-vector mean, the 4 x 4 covariance and log Z_out."""
    from solvers.channels.deep_attention import _known_z2_preimages

    t = np.linspace(-half, half, n)
    X = np.stack(np.meshgrid(t, t, indexing="ij"), -1).reshape(-1, 2)
    k = X.shape[0]
    pts, lw = _known_z2_preimages(np.broadcast_to(a, (k, 2)), np.broadcast_to(omega[0], (k, 2)),
                                  omega[1] + math.sqrt(v2) * X, v1, c, beta)
    lw = lw - 0.5 * (X ** 2).sum(1)[:, None]
    top = lw.max()
    p = np.exp(lw - top)
    total = p.sum()
    p /= total
    z = np.concatenate([pts, np.broadcast_to(math.sqrt(v2) * X[:, None, :], pts.shape)], axis=2)  # z_2 - omega_2
    mean = np.einsum("kj,kji->i", p, z)
    dev = z - mean
    cov = np.einsum("kj,kji,kjl->il", p, dev, dev)
    mean[2:] += omega[1]
    log_z = top + math.log(total * (t[1] - t[0]) ** 2 / (2 * math.pi))
    return mean, cov, log_z


def test_posterior_with_a_thin_last_layer_matches_brute_force(paper_channel):
    """v_2 << v_1 (layer 2 learned, layer 1 not: GAMP on the binary paper model above the jump).
    The posterior in z_1 is then two sharp modes +-z_1* per sign branch, which the z_1 grid
    missed (one mode only, or wrong masses: E[z_1] = +-z_1* with omega_1 = 0, which sent GAMP's
    layer 1 to random confident signs).  Against the brute-force trapezoid over z_2: z_1's
    moments, g_2 = (E[z_2] - omega_2) / v_2 and log Z_out; and with omega_1 = 0 (v_1 = 1)
    E[z_1] = 0 exactly, by the symmetry z_1 -> -z_1 of the channel and the prior."""
    rng = np.random.default_rng(7)
    n = 3
    for v1 in (1.0, 0.3):
        for v2 in (1e-7, 1e-9):
            sd = np.sqrt([v1, v2])[None, :, None]
            omega = np.sqrt(1.0 - sd ** 2) * rng.standard_normal((n, 2, 2))
            Z = omega + sd * rng.standard_normal((n, 2, 2))
            a = paper_channel.observation(Z)
            post = paper_channel.posterior_moments(a, omega, np.diag([v1, v2]))
            for i in range(n):
                mean, cov, log_z = _posterior_by_z2_trapezoid(a[i], omega[i], v1, v2)
                where = (v1, v2, i)
                np.testing.assert_allclose(post.mean[i, 0], mean[:2], atol=1e-3, err_msg=str(where))
                np.testing.assert_allclose(post.cov[i, 0, :, 0, :], cov[:2, :2], atol=1e-3, err_msg=str(where))
                np.testing.assert_allclose((post.mean[i, 1] - omega[i, 1]) / v2, (mean[2:] - omega[i, 1]) / v2,
                                           rtol=1e-3, atol=1e-2, err_msg=str(where))
                assert abs(post.log_partition[i] - log_z) < 1e-3, where
                if v1 == 1.0:
                    assert np.all(np.abs(post.mean[i, 0]) < 1e-9), where


def test_perfect_recovery_matches_counting():
    """Near Q_0 the SE contracts iff alpha > L / M (dimensions revealed per sample: M), and
    at the stationary ratio of the v_l every layer contracts at the same rate."""
    for spec in (PAPER, DeepAttentionSpec(layers=1, tokens=3), DeepAttentionSpec(layers=3, tokens=2)):
        pr = perfect_recovery(spec.channel(), seed=0)
        exact = spec.layers / spec.tokens
        assert pr.counting_bound == exact
        assert abs(pr.alpha - exact) <= pr.ci95 + 1e-9 * exact
        np.testing.assert_allclose(pr.rates, 1.0 / exact, rtol=1e-8)


@pytest.mark.parametrize("layers,tokens", [(2, 3), pytest.param(2, 2, marks=pytest.mark.slow),
                                           pytest.param(3, 2, marks=pytest.mark.slow)])
def test_perfect_recovery_rates_match_the_posterior_at_small_v(layers, tokens):
    """The Laplace rates t_l of perfect_recovery (Jacobian of a_L, V -> 0) against the SE
    statistic itself, M - E Tr Cov[z_l | a, omega, V] / v_l from the channel's posterior
    (grid or importance sampling) at V = 1e-8 diag(ratio), on the same outer points: at
    equal v_l and at the stationary ratio, within the posterior's quadrature error (the
    change from resolution 8 to 16), its distance from V -> 0 (the change from 1e-6 to 1e-8)
    and the Student-t interval of the paired differences.
    At the default resolution the importance sampler underestimates the posterior covariance
    by about 1e-3 (relative): that bias is what made the old estimate, which drove the v_l to
    the stationary ratio inside the sampler, 1.4796 for L = 3 (below L / M = 1.5)."""
    ch = DeepAttentionSpec(layers=layers, tokens=tokens).channel()
    pr = perfect_recovery(ch, seed=0)
    normals = outer_normals(ch, 16, 16, 3)
    R, n, _ = normals.shape
    Z = normals[:, :, : layers * tokens].reshape(R * n, layers, tokens)
    J = revealed_jacobians(ch, Z, 1e-5)
    gram = np.einsum("nkpm,njpm->npkj", J, J)
    for ratio in (np.ones(layers), pr.ratio):
        laplace = contraction_rates(gram, ratio).reshape(R, n, layers).mean(1)

        def posterior_rates(v, resolution):
            st = output_statistics(ch, np.diag(1.0 - v), normals, resolution)
            return np.stack([st.H_nishimori[:, l, l] * v[l] for l in range(layers)], axis=1)

        fine = posterior_rates(1e-8 * ratio, 16)
        # the two errors of the posterior side: quadrature (resolution 8 -> 16) and the
        # distance from V -> 0 (O(sqrt v): bounded by the change from v = 1e-6 to 1e-8)
        quadrature = np.abs(fine.mean(0) - posterior_rates(1e-8 * ratio, 8).mean(0))
        finite_v = np.abs(fine.mean(0) - posterior_rates(1e-6 * ratio, 16).mean(0))
        diff = fine - laplace
        # plus a tenth of the tightest promise (precise: 0.1%): the importance sampler's bias
        # levels off near 1e-4 relative at the stationary ratio, beyond what 8 -> 16 shows
        promise = 0.1 * PRECISION_TARGETS["precise"][0] * laplace.mean(0)
        assert np.all(np.abs(diff.mean(0)) <= quadrature + finite_v + t_halfwidth(diff) + promise), (
            ratio, diff.mean(0), quadrature, finite_v)


def test_state_evolution_around_perfect_recovery(paper_channel):
    """Around alpha_PR = L / M = 1 (the counting of test_perfect_recovery_matches_counting),
    the informed start converges: above it to Q_0; at it (where 1 - q shrinks only
    algebraically) to Q_0 within its half-width; just below it, it leaves Q_0 (the overlaps
    moving together along the map's Perron direction) and meets the fixed point reached
    from below (a start under it, so the monotone map climbs to it) within their half-widths."""
    from solvers.state_evolution import Q_MAX, fixed_point

    above = fixed_point(PAPER, 1.05, "informed", "fast")
    assert above.converged and min(above.layer_overlaps) >= Q_MAX
    at = fixed_point(PAPER, 1.0, "informed", "fast")
    assert at.converged and all(q + ci >= Q_MAX for q, ci in zip(at.layer_overlaps, at.overlap_ci95))
    from_above = fixed_point(PAPER, 0.95, "informed", "fast")
    from_below = fixed_point(PAPER, 0.95, "uninformed", "fast", Q_start=np.diag([0.5, 0.99]))
    assert from_above.converged and from_below.converged
    assert from_above.layer_overlaps[0] < 0.9  # left perfect recovery
    for l in range(2):
        assert abs(from_above.layer_overlaps[l] - from_below.layer_overlaps[l]) <= (
            from_above.overlap_ci95[l] + from_below.overlap_ci95[l])


def test_statistical_stopping_moves_overlaps_far_less_than_their_half_width(paper_channel):
    """SE stops once the map's step is below a tenth of its Monte-Carlo standard error (and
    adds the propagated step to the half-width).  Iterating on to a residual of 1e-8 moves
    the overlaps by less than a tenth of the reported half-width (theory: about 5%)."""
    from solvers.state_evolution import _fixed_point_result, iterate_fixed_point

    normals = outer_normals(paper_channel, 64, 16, 0)
    for alpha, start in ((0.5, (1e-3, 0.6)), (0.85, (0.3, 0.98))):
        stopped = iterate_fixed_point(paper_channel, alpha, np.diag(start), normals, statistical_tolerance=0.1)
        strict = iterate_fixed_point(paper_channel, alpha, np.diag(start), normals, tol=1e-8, max_iterations=600)
        assert stopped.converged and strict.converged
        assert stopped.iterations < strict.iterations
        ci = _fixed_point_result(paper_channel, alpha, "uninformed", stopped, normals, 1, seed=0).overlap_ci95
        moved = np.abs(np.diag(stopped.Q) - np.diag(strict.Q))
        assert np.all(moved <= 0.1 * np.asarray(ci)), (alpha, moved, ci)


def test_state_evolution_curve_keeps_perfect_recovery_without_iterating():
    """Above the first alpha where the uninformed branch reaches Q_0, the curve reuses it (the
    SE map is monotone in alpha) for both starts; iterating from scratch there agrees."""
    from solvers.state_evolution import Q_MAX, fixed_point

    one_layer = DeepAttentionSpec(layers=1, tokens=2)  # alpha_PR = 1 / 2
    curve = state_evolution(one_layer, [0.6, 0.9], precision="fast")
    reused = curve.points[1]
    assert reused.uninformed.iterations == 0 and reused.informed.iterations == 0
    assert reused.uninformed.layer_overlaps == reused.informed.layer_overlaps == (Q_MAX,)
    direct = fixed_point(one_layer, 0.9, "uninformed", "fast")
    assert direct.converged and direct.iterations > 0 and direct.layer_overlaps == (Q_MAX,)


def test_reference_overlaps_and_plugin_error_fast():
    """Layer-2 overlap within 0.03 of the published SE in [0.3, 0.8]; plug-in error within 10%."""
    ref = {round(r["alpha"], 3): r for r in read_reference("se_overlaps_L2_M2_c1.csv")}
    perr = {round(r["alpha"], 3): r["gen_error"] for r in read_reference("se_plugin_error_L2_M2_c1.csv")}
    alphas = [0.3, 0.4, 0.6]
    res = state_evolution(PAPER, alphas, precision="fast")
    for p in res.points:
        key = round(p.alpha, 3)
        ours = p.informed if p.bayes_optimal == "informed" else p.uninformed
        assert abs(ours.layer_overlaps[1] - ref[key]["Q22"]) <= 0.03, (p.alpha, ours.layer_overlaps)
        assert abs(ours.prediction_error_plugin - perr[key]) <= 0.1 * perr[key]
        assert p.uninformed.converged and p.informed.converged


def test_results_are_reproducible_bit_for_bit(paper_channel):
    one_layer = DeepAttentionSpec(layers=1, tokens=2)
    assert (state_evolution(one_layer, [0.3, 1.0], precision="fast", seed=3)
            .points == state_evolution(one_layer, [0.3, 1.0], precision="fast", seed=3).points)
    Q = np.diag([0.2, 0.7])
    a = output_statistics(paper_channel, Q, outer_normals(paper_channel, 32, 16, 3))
    b = output_statistics(paper_channel, Q, outer_normals(paper_channel, 32, 16, 3))
    for x, y in zip(a.__dict__.values(), b.__dict__.values()):
        assert np.array_equal(x, y)


@pytest.mark.parametrize("params,name", [
    ({"layers": 5}, "layers"), ({"tokens": 1}, "tokens"), ({"skip": -1.0}, "skip"),
    ({"beta": 0.0}, "beta"), ({"noise": float("nan")}, "noise"), ({"skip": [1.0]}, "skip"),
    ({"layers": 2.5}, "layers"),
])
def test_bad_parameters_name_the_parameter(params, name):
    with pytest.raises(SpecError) as err:
        DeepAttentionSpec(**params)
    assert err.value.parameter == name
    assert "[" in err.value.allowed or "list" in err.value.allowed or "(" in err.value.allowed


def test_bad_precision_and_alpha():
    with pytest.raises(SpecError) as err:
        layer_thresholds(PAPER, precision="exact")
    assert err.value.parameter == "precision"
    with pytest.raises(SpecError) as err:
        state_evolution(PAPER, [-1.0], precision="fast")
    assert err.value.parameter == "alpha"


# ---------------------------------------------------------------------------------------
# Long checks (run by .ci/run after the default suite)
# ---------------------------------------------------------------------------------------
@pytest.mark.slow
def test_resolution_term_at_zero_bounds_the_inner_bias():
    """The half-width's inner term at Q = 0 (twice the change at double resolution, on a subset
    of the points) against an independent high-resolution run: resolution 4 (4x the inner
    bank) on all 16 x 1024 outer points of L = 2, M = 3 at fast (the points rates_at_zero ends
    on), both layers.  On the same outer points the difference is the inner sampler's error
    alone; the change itself (without the factor 2) missed it for layer 2 (1.8e-5 against
    2.6e-5)."""
    ch = DeepAttentionSpec(layers=2, tokens=3).channel()
    normals = outer_normals(ch, 1024, 16, 0)
    term = resolution_change_at_zero(ch, normals, seed=0)
    error = np.abs(_alpha_at_zero(ch, normals, 1, seed=0) - _alpha_at_zero(ch, normals, 4, seed=0))
    assert np.all(error <= term), (error, term)


@pytest.mark.slow
def test_paper_model_staircase():
    """Layer 2 first (CI <= 0.5%), layer 1 by the staircase (CI <= 1%); SE at 0.95x / 1.05x."""
    res = thresholds(PAPER, "standard")  # shared with test_calibration's agreement across precisions
    t2, t1 = res.thresholds
    assert (t2.layer, t2.kind) == (2, "linear_stability") and t2.ci95 <= 0.005 * t2.alpha
    assert (t1.layer, t1.kind) == (1, "staircase") and t1.ci95 <= 0.01 * t1.alpha
    se = state_evolution(PAPER, [0.95 * t1.alpha, 1.05 * t1.alpha], precision="standard")
    below, above = se.points
    assert below.uninformed.layer_overlaps[0] < 1e-4
    assert above.uninformed.layer_overlaps[0] > 0.02


@pytest.mark.slow
def test_reference_overlaps_full_range():
    """The published curve over [0.3, 0.8] at every other of its points (8 of 15, both ends
    included: all 15 took 142 s of CI's slow-test time; the default suite checks 0.3, 0.4, 0.6):
    layer 2's overlap within 0.03, the plug-in error within 10% up to 0.7."""
    ref = read_reference("se_overlaps_L2_M2_c1.csv")
    perr = {round(r["alpha"], 3): r["gen_error"] for r in read_reference("se_plugin_error_L2_M2_c1.csv")}
    rows = [r for r in ref if 0.3 <= r["alpha"] <= 0.8][::2]
    res = state_evolution(PAPER, [r["alpha"] for r in rows], precision="fast")
    for r, p in zip(rows, res.points):
        ours = p.informed if p.bayes_optimal == "informed" else p.uninformed
        assert abs(ours.layer_overlaps[1] - r["Q22"]) <= 0.03, (r, ours.layer_overlaps)
        if r["alpha"] <= 0.7:
            assert abs(ours.prediction_error_plugin - perr[round(r["alpha"], 3)]) <= 0.1 * perr[round(r["alpha"], 3)]


@pytest.mark.slow
def test_three_layers_all_thresholds_in_order():
    res = layer_thresholds(DeepAttentionSpec(layers=3, tokens=2, skip=1.0), precision="fast")
    layers = [t.layer for t in res.thresholds]
    assert sorted(layers) == [1, 2, 3]
    alphas = [t.alpha for t in res.thresholds]
    assert all(math.isfinite(a) for a in alphas) and alphas == sorted(alphas)
    assert res.thresholds[0].kind == "linear_stability"
    assert all(t.kind == "staircase" for t in res.thresholds[1:])


@pytest.mark.slow
@pytest.mark.parametrize("skip", [0.1, 4.0])  # the extremes; tests/test_sweeps.py sweeps c = 0.5 to 4 on workers
def test_skip_sweep_two_layers(skip):
    """Both thresholds finite.  The staircase threshold of layer 1 hardly moves with c
    (0.72 at c = 0.25 ... 4, while its Q = 0 rate goes from 1.4 to 54): layer 1 is learned
    only once layer 2 is nearly known (q_2 ~ 0.97 to 0.997), and with z_2 known the output
    a = c z_2 + S(z_1) z_2 informs z_1 independently of c.  SE, an independent check, agrees:
    started cold it leaves q_1 = 0 at 0.95x the threshold and learns layer 1 at 1.05x."""
    spec = DeepAttentionSpec(layers=2, tokens=2, skip=skip)
    res = layer_thresholds(spec, precision="fast")
    assert len(res.thresholds) == 2
    for t in res.thresholds:
        assert math.isfinite(t.alpha) and math.isfinite(t.ci95) and t.alpha > 0
    if skip == 4.0:
        t1 = res.thresholds[1]
        assert t1.layer == 1 and abs(t1.alpha - 0.72) < 0.03
        below, above = state_evolution(spec, [0.95 * t1.alpha, 1.05 * t1.alpha], precision="fast").points
        assert below.uninformed.layer_overlaps[0] == 0.0
        assert above.uninformed.layer_overlaps[0] > 0.02
