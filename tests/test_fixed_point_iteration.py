"""The pieces of the SE fixed-point iteration (solvers.fixed_point_iteration), each on a
map whose answer is known."""
import numpy as np
import pytest

from solvers.fixed_point_iteration import (LEAVING_ZERO, NEAR_ONE, NEWTON_LOGIT_STEP, Q_MAX, AitkenExtrapolation,
                                           NewtonAccelerator, RayJumps, SEMap, SteadyMoves, StoppingRule,
                                           aitken_extrapolation, bounded_newton_target, coordinate_root,
                                           iterate_fixed_point, perfect_recovery_verdict)
import solvers.fixed_point_iteration as fp_iteration
from solvers.models import MultiIndexSpec
from solvers.statistics import outer_normals


class CountedMap:
    """A known map with the call interface of SEMap."""

    def __init__(self, function):
        self.function = function
        self.evaluations = 0

    def __call__(self, x):
        self.evaluations += 1
        return self.function(np.asarray(x, dtype=float))


def linear_map(fixed, A):
    fixed, A = np.asarray(fixed, dtype=float), np.asarray(A, dtype=float)
    return lambda x: fixed + A @ (x - fixed)


# ---------------------------------------------------------------------------------------
# Aitken
# ---------------------------------------------------------------------------------------
def test_aitken_lands_on_the_fixed_point_of_a_linear_map():
    """x' = a + s (x - a): after two plain steps the ratio of the steps is s and Aitken's jump
    x + s f / (1 - s) is a itself."""
    G = linear_map([0.6, 0.2], np.diag([0.5, 0.8]))
    x0 = np.array([0.3, 0.05])
    x1 = G(x0)
    x2 = G(x1)
    x_new, ratio = aitken_extrapolation(x2, x2 - x1, x1 - x0, np.ones(2, dtype=bool), True)
    np.testing.assert_allclose(x_new, [0.6, 0.2], rtol=1e-12)
    assert ratio == pytest.approx(0.8)


def test_aitken_leaves_growing_components_and_bounds_slow_ones():
    """A component moving away (ratio > 1) is not extrapolated; one contracting at s = 0.97
    jumps at most 20 of its steps (not the 32 that would land on the fixed point); at
    s = 0.99 (beyond the trusted range (0, 0.98)) none."""
    previous = np.array([0.01, 0.001, 0.001])
    step = np.array([0.02, 0.00097, 0.00099])  # ratios 2, 0.97, 0.99
    mapped = np.array([0.1, 0.5, 0.5])
    x_new, ratio = aitken_extrapolation(mapped, step, previous, np.ones(3, dtype=bool), True)
    assert x_new[0] == mapped[0] and x_new[2] == mapped[2]
    assert x_new[1] == pytest.approx(0.5 + 20 * 0.00097)
    assert ratio == pytest.approx(0.97)
    held, ratio = aitken_extrapolation(mapped, step, previous, np.array([True, False, True]), True)
    assert held[1] == mapped[1] and ratio == 0.0


def test_aitken_cadence_every_third_evaluation_after_a_plain_step():
    aitken = AitkenExtrapolation(clip_to_overlaps=True)
    G = linear_map([0.6], [[0.5]])
    x = np.array([0.3])
    taken = []
    for evaluation in range(1, 7):
        gx = G(x)
        x, ratio = aitken.next_point(gx, gx - x, np.ones(1, dtype=bool), evaluation)
        taken.append(ratio is not None)
    assert taken == [False, False, True, False, False, True]
    assert x[0] == pytest.approx(0.6, abs=1e-15)
    aitken.reset()
    x, ratio = aitken.next_point(np.array([0.5]), np.array([0.1]), np.ones(1, dtype=bool), 9)
    assert ratio is None  # no remembered step after a reset


# ---------------------------------------------------------------------------------------
# Stopping rules
# ---------------------------------------------------------------------------------------
def test_stopping_rule_strict_residual_is_relative_near_one():
    rule = StoppingRule(tol=1e-6, statistical_tolerance=None, relative_near_one=True)
    x = np.array([0.5, 0.999])
    step = np.array([1e-7, 1e-8])
    assert rule.residual(x, step) == pytest.approx(1e-5)  # 1e-8 / (1 - 0.999)
    res, done = rule.converged(x, step, np.ones(2), np.array([True, True]))
    assert not done
    res, done = rule.converged(x, step, np.ones(2), np.array([True, False]))
    assert res == pytest.approx(2e-7) and done
    plain = StoppingRule(tol=1e-6, statistical_tolerance=None, relative_near_one=False)
    assert plain.residual(x, step) == pytest.approx(1e-7)
    assert plain.converged(x, step, np.ones(2), np.zeros(2, dtype=bool)) == (0.0, True)


def test_stopping_rule_statistical_against_the_monte_carlo_error():
    """Steps of 1e-5 are not converged by the strict rule; they are once they fall below 0.1
    of the map's standard error, on every component considered."""
    rule = StoppingRule(tol=1e-6, statistical_tolerance=0.1, relative_near_one=False)
    x = np.array([0.3, 0.6])
    step = np.array([1e-5, -1e-5])
    every = np.array([True, True])
    assert rule.converged(x, step, np.array([1e-3, 1e-3]), every)[1]
    assert not rule.converged(x, step, np.array([1e-3, 1e-5]), every)[1]
    assert rule.converged(x, step, np.array([1e-3, 1e-5]), np.array([True, False]))[1]
    strict = StoppingRule(tol=1e-6, statistical_tolerance=None, relative_near_one=False)
    assert not strict.converged(x, step, np.array([1.0, 1.0]), every)[1]


def test_perfect_recovery_verdict():
    near = np.array([False, True])
    x = np.array([0.5, 1.0 - 5e-7])
    step = np.array([0.0, 1e-9])
    contracting = np.array([0.5, 1.0 - 2.5e-7])  # 1 - q halves
    y, f, settled = perfect_recovery_verdict(x, contracting, step, near, marginal=False)
    assert settled and y[1] == Q_MAX and y[0] == 0.5
    leaving = np.array([0.5, 1.0 - 1e-6])
    y, f, settled = perfect_recovery_verdict(x, leaving, step, near, marginal=True)
    assert settled and y[1] == x[1] and f[1] == pytest.approx(5e-7)  # the distance left to Q_0
    assert perfect_recovery_verdict(x, leaving, step, near, marginal=False)[2] is False


# ---------------------------------------------------------------------------------------
# Newton and Broyden
# ---------------------------------------------------------------------------------------
def test_newton_step_solves_a_linear_two_dimensional_map():
    """On x' = a + A (x - a) (coupled, contracting) the finite-difference Jacobian is A and
    one Newton step lands on a, costing one evaluation per component."""
    a = np.array([0.4, 0.55])
    A = np.array([[0.7, 0.2], [0.1, 0.6]])
    G = CountedMap(linear_map(a, A))
    newton = NewtonAccelerator(logit=False)
    x = np.array([0.35, 0.5])
    gx = G(x)
    active = np.arange(2)
    x_new = newton.newton_step(G, x, x, gx, gx - x, active)
    np.testing.assert_allclose(x_new, a, rtol=1e-9)
    assert G.evaluations == 3
    J = newton.jacobian[0]
    np.testing.assert_allclose(J, A, rtol=1e-7)
    # Broyden's update keeps an exact Jacobian (the secant condition already holds) and the
    # next quasi-Newton step stays on a
    g_new = G(x_new)
    assert newton.broyden_step(x_new, x_new, g_new, g_new - x_new, active) is not None
    np.testing.assert_allclose(newton.jacobian[0], A, rtol=1e-6)


def test_newton_refuses_a_repelling_fixed_point():
    a = np.array([0.4, 0.55])
    G = CountedMap(linear_map(a, np.diag([1.5, 0.5])))
    newton = NewtonAccelerator(logit=False)
    x = np.array([0.35, 0.5])
    gx = G(x)
    assert newton.newton_step(G, x, x, gx, gx - x, np.arange(2)) is None
    assert newton.jacobian is None
    assert newton.broyden_step(x, x, gx, gx - x, np.arange(2)) is None


def test_newton_in_logit_coordinates_is_bounded():
    """A steady geometric growth from q = 0 is a constant step in logit q (Jacobian ~1, no
    contraction): no Newton step.  Towards an attracting point far away, the move is at most
    NEWTON_LOGIT_STEP in logit q (a factor ~20 in q)."""
    G = CountedMap(lambda x: np.minimum(1.9 * x, Q_MAX))
    newton = NewtonAccelerator(logit=True)
    x = np.array([1e-3])
    gx = G(x)
    assert newton.newton_step(G, x, newton.coordinates(x), newton.coordinates(gx),
                              newton.coordinates(gx) - newton.coordinates(x), np.arange(1)) is None
    G = CountedMap(lambda x: 0.5 + 0.9 * (x - 0.5))
    x = np.array([1e-4])
    gx = G(x)
    xu, gu = newton.coordinates(x), newton.coordinates(gx)
    x_new = newton.newton_step(G, x, xu, gu, gu - xu, np.arange(1))
    assert newton.coordinates(x_new)[0] - xu[0] == pytest.approx(NEWTON_LOGIT_STEP)


def test_slow_components():
    newton = NewtonAccelerator(logit=False)
    eligible = np.ones(3, dtype=bool)
    assert not newton.slow_components(np.array([1.0, 1.0, 1.0]), eligible).any()  # no history
    slow = newton.slow_components(np.array([0.6, 0.4, -0.9]), eligible)
    assert slow.tolist() == [True, False, False]  # shrank by less than half, same sign
    newton.forget_step()
    assert not newton.slow_components(np.array([0.6, 0.4, -0.9]), eligible).any()


# ---------------------------------------------------------------------------------------
# Steady moves, jumps along 1 - q, coordinate roots
# ---------------------------------------------------------------------------------------
def test_steady_moves_count_and_ignore_barely_moving_steps():
    moves = SteadyMoves(2)
    mask = np.ones(2, dtype=bool)
    x = np.array([1e-3, 0.5])
    moves.observe(x, np.array([2e-3, 0.5]), mask)
    moves.observe(x, np.array([1.01e-3, 0.5]), mask)  # within the 2% margin: neither counts nor resets
    moves.observe(x, np.array([2e-3, 0.5]), mask)
    assert moves.growing.tolist() == [2, 0]
    moves.observe(x, np.array([2e-3, 0.5]), mask)
    assert moves.growing_steadily().tolist() == [True, False]
    moves.observe(x, np.array([0.5e-3, 0.5]), mask)  # shrinking resets
    assert moves.growing.tolist() == [0, 0]


def test_ray_jump_leaves_along_one_minus_q():
    """Three steady departures from q = 1 (v = 1 - q doubling, ratio of the components 1:2):
    the jump goes along v to the end of the linear regime, keeping the ratio; two jumps at most."""
    mask = np.ones(2, dtype=bool)
    x = 1.0 - np.array([1e-5, 2e-5])
    gx = 1.0 - np.array([2e-5, 4e-5])
    moves = SteadyMoves(2)
    rays = RayJumps()
    for _ in range(2):
        moves.observe(x, gx, mask)
        assert rays.jump(x, gx, mask, moves) is None
    moves.observe(x, gx, mask)
    y = rays.jump(x, gx, mask, moves)
    v = 1.0 - y
    assert v.max() == pytest.approx(LEAVING_ZERO)
    assert v[0] / v[1] == pytest.approx(0.5)
    assert rays.jump(x, gx, mask, moves) is not None
    assert rays.jump(x, gx, mask, moves) is None  # both leaving jumps used


def test_ray_jump_approaches_below_near_one():
    mask = np.ones(1, dtype=bool)
    x = 1.0 - np.array([1e-4])
    gx = 1.0 - np.array([0.5e-4])
    moves = SteadyMoves(1)
    rays = RayJumps()
    for _ in range(3):
        moves.observe(x, gx, mask)
    y = rays.jump(x, gx, mask, moves)
    assert 1.0 - y[0] == pytest.approx(0.5 * NEAR_ONE)


def test_coordinate_root_finds_the_least_root_above():
    """G_0(q) = q + q (0.4 - q) (q = 0 repels, q = 0.4 attracts) from q = 1e-3: the root 0.4;
    the other component is held at its value."""
    G = CountedMap(lambda x: np.array([x[0] + x[0] * (0.4 - x[0]), 0.5 * x[1]]))
    root = coordinate_root(G, 0, np.array([1e-3, 0.3]), 1)
    assert root == pytest.approx(0.4, rel=1e-3)
    down = coordinate_root(G, 0, np.array([0.9, 0.3]), -1)
    assert down == pytest.approx(0.4, rel=1e-3)


# ---------------------------------------------------------------------------------------
# The SE map and the driver, on phase retrieval
# ---------------------------------------------------------------------------------------
def test_se_map_counts_holds_frozen_components_and_keeps_its_statistics():
    channel = MultiIndexSpec(link="square").channel()
    normals = outer_normals(channel, 16, 4, 0)
    se_map = SEMap(channel, 2.0, normals, 1, np.array([False]))
    x = np.array([0.3])
    assert se_map(x)[0] == 0.3  # frozen
    free = SEMap(channel, 2.0, normals, 1, np.array([True]))
    gx = free(x)
    assert free.evaluations == 1 and 0.0 < gx[0] < 1.0 and gx[0] != 0.3
    assert free.statistics_at(x) is free.last_statistics and free.statistics_at(gx) is None
    assert free.standard_error.shape == (1,) and free.standard_error[0] > 0


def test_driver_phase_retrieval_above_and_below_its_threshold():
    """Real phase retrieval (y = z^2): weak recovery at alpha = 1/2, so Q = 0 below it (set to
    exactly 0 by its linear rate) and a positive overlap above; the evaluation count includes
    the rate evaluation at 0."""
    channel = MultiIndexSpec(link="square").channel()
    normals = outer_normals(channel, 32, 8, 0)
    below = iterate_fixed_point(channel, 0.3, np.eye(1) * 1e-3, normals, statistical_tolerance=0.1)
    assert below.converged and below.Q[0, 0] == 0.0 and below.statistics is not None
    above = iterate_fixed_point(channel, 1.5, np.eye(1) * 1e-3, normals, statistical_tolerance=0.1)
    assert above.converged and 0.3 < above.Q[0, 0] < 1.0


def test_ray_jump_with_every_component_at_one_is_no_jump():
    """The square link below its threshold from the informed start (seed 77 at fast): the map
    lands within 1e-8 of q = 1, where there is no ray to jump along (was a ValueError from the
    maximum of an empty array); plain iteration then goes down to q = 0."""
    from solvers import spec_from_dict, state_evolution

    point = state_evolution(spec_from_dict({"family": "multi_index", "link": "square"}), [0.125],
                            precision="fast", seed=77).points[0]
    assert point.informed.converged and point.informed.layer_overlaps[0] < 1e-6


def test_newton_target_of_a_negative_off_diagonal_overlap_is_bounded_like_a_positive_one():
    """Plain coordinates (an off-diagonal overlap of a channel that is not sign-symmetric): a
    negative entry moves as its mirror image would, so a target next to it is reached (before
    solver 0.5.6 it was clipped to at least q / 2: y = z1 z2 + noise as a formula cycled between
    Q_12 = -0.0059 and -0.0029 for 400 evaluations); positive entries are unchanged."""
    q = np.array([-0.006, 0.006, -0.5, 0.5])
    target = np.array([-0.0062, 0.0062, 0.9, -0.9])
    assert np.array_equal(bounded_newton_target(q, target, False), [-0.0062, 0.0062, -0.25, 0.25])
    assert np.array_equal(bounded_newton_target(q, -target, False), [-0.003, 0.003, -0.75, 0.75])


def test_deterministic_cycle_reports_the_largest_step_over_the_cycle():
    visited, steps = {}, []
    xs = [0.1, 0.2, 0.3, 0.2]  # the fourth iterate repeats the second: a cycle of two steps
    fs = [np.array([0.5]), np.array([-2e-5]), np.array([3e-5]), np.array([-2e-5])]
    out = [fp_iteration.deterministic_cycle(visited, steps, (np.array([x]).tobytes(),), f) for x, f in zip(xs, fs)]
    assert out[:3] == [None, None, None]
    np.testing.assert_array_equal(out[3], [3e-5])
    # the same iterate in another state of the iteration (another key) is no cycle
    assert fp_iteration.deterministic_cycle(visited, steps, (np.array([0.2]).tobytes(), "grown"), fs[1]) is None


def test_state_evolution_stops_on_a_cycle_within_its_statistical_error():
    """The named sign link at alpha = 16, fast, seed 0: on fixed outer points the map jumps by
    about 1e-5 where a sampled sign flips, and the iteration revisited the same iterates every 15
    evaluations until its 400 ran out (not converged).  It now stops on the cycle, whose
    amplitude (1.35e-5) is within the map's standard error (4e-5), and agrees with `standard`
    (other points, its own iteration) within the two half-widths."""
    from solvers.state_evolution import fixed_point

    spec = MultiIndexSpec(link="sign")
    fast = fixed_point(spec, 16.0, "uninformed", "fast", 0)
    assert fast.converged and fast.iterations < 100, fast
    standard = fixed_point(spec, 16.0, "uninformed", "standard", 0)
    assert standard.converged
    assert abs(fast.layer_overlaps[0] - standard.layer_overlaps[0]) <= fast.overlap_ci95[0] + standard.overlap_ci95[0]


def test_state_evolution_stops_on_a_cycle_through_an_eigendecomposition():
    """committee_sign at alpha = 3 (its overlap matrix leaves the diagonal: (1, 1, 1) is learned
    first), fast, seed 0: the iteration alternated between two iterates (steps 1.3e-4 against
    standard errors of 5e-4 to 1.4e-3) until its 400 evaluations ran out, not converged, because
    the non-diagonal Q's eigendecomposition rounds the last bits differently on each visit and
    the cycle was looked up bit for bit.  It now stops on the cycle; `standard` (other points,
    its own iteration) agrees within the two half-widths."""
    from solvers.state_evolution import fixed_point

    spec = MultiIndexSpec(link="committee_sign")
    fast = fixed_point(spec, 3.0, "uninformed", "fast", 0)
    assert fast.converged and fast.iterations < 100, fast
    standard = fixed_point(spec, 3.0, "uninformed", "standard", 0)
    assert standard.converged, standard
    for a, b, ca, cb in zip(fast.layer_overlaps, standard.layer_overlaps, fast.overlap_ci95, standard.overlap_ci95):
        assert abs(a - b) <= ca + cb, (fast, standard)


def test_a_stall_is_found_only_where_the_iterates_stay_within_the_maps_resolution():
    """stalled_fixed_point: iterates wandering within STALLED_SPREAD standard errors for
    STALLED_EVALUATIONS evaluations give the one with the smallest scaled step, reported with at
    least half the iterates' range; a steady drift of the same step size, fewer evaluations, or a
    wider wander give None."""
    n = fp_iteration.STALLED_EVALUATIONS
    se = np.array([1e-3, 1e-3])
    on = np.array([True, True])
    rng = np.random.default_rng(0)
    xs = 0.2 + 1e-3 * rng.uniform(-1.0, 1.0, (n, 2))  # spread at most 2e-3 = 2 standard errors
    fs = 1e-3 * rng.uniform(-1.5, 1.5, (n, 2))
    fs[17] = [2e-4, -1e-4]
    x, f = fp_iteration.stalled_fixed_point(list(zip(xs, fs)), se, on)
    np.testing.assert_array_equal(x, xs[17])
    np.testing.assert_allclose(f, np.maximum(np.abs(fs[17]), (xs.max(0) - xs.min(0)) / 2))
    assert fp_iteration.stalled_fixed_point(list(zip(xs, fs))[1:], se, on) is None
    drift = 0.2 + 1.2e-3 * np.arange(n)[:, None] * np.ones(2)  # steps of 1.2 standard errors, one way
    assert fp_iteration.stalled_fixed_point(list(zip(drift, fs)), se, on) is None
    wide = xs.copy()
    wide[5, 1] = xs[:, 1].max() + 3e-3  # a spread above 4 standard errors
    assert fp_iteration.stalled_fixed_point(list(zip(wide, fs)), se, on) is None
    # a component not tested (near 1, or small) does not count
    assert fp_iteration.stalled_fixed_point(list(zip(wide, fs)), se, np.array([True, False])) is not None


def test_state_evolution_stops_where_it_wanders_at_the_maps_resolution():
    """committee_sign at alpha = 2 (Q = q 11^T: the committee's mean direction is learned), fast,
    seed 1: the steps stayed near one standard error (2e-4 to 6e-4 against 3e-4 to 8e-4, no exact
    cycle) until 400 evaluations ran out, both starts not converged, 20 s.  It now stops on the
    stall, and both branches agree with `standard` at seed 0 within the two half-widths."""
    from solvers.state_evolution import fixed_point

    spec = MultiIndexSpec(link="committee_sign")
    standard = fixed_point(spec, 2.0, "uninformed", "standard", 0)
    assert standard.converged, standard
    for start in ("uninformed", "informed"):
        fast = fixed_point(spec, 2.0, start, "fast", 1)
        assert fast.converged and fast.iterations < 200, fast
        for a, b, ca, cb in zip(fast.layer_overlaps, standard.layer_overlaps, fast.overlap_ci95,
                                standard.overlap_ci95):
            assert abs(a - b) <= ca + cb, (fast, standard)


# ---------------------------------------------------------------------------------------
# Half-widths of SE fixed points of links with finitely many outputs
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("link, q", [("committee_sign", 0.19), ("sign", 0.19),
                                     ({"formula": "sign(abs(z1) - 0.6745)"}, 0.99)])
def test_summing_finitely_many_outputs_gives_the_same_statistics_smoothly_in_q(link, q):
    """output_statistics(outputs_summed=True) sums y over its values weighted by P(y | omega, V)
    instead of sampling it: H agrees with the sampled estimator on 16x the points (an
    independent draw), and on fixed points the exact orthant posteriors make it smooth in Q:
    forward differences at steps 1e-4 and 1e-3 agree to 1%.  The formula at q = 0.99 sums over
    outputs its region bank never reaches for some omega (the wide proposal's weights underflowed
    and its effective sample size divided 0 by 0: ZeroDivisionError before)."""
    from solvers.statistics import output_statistics

    ch = MultiIndexSpec(link=link).channel()
    P = ch.n_indices
    Q = q * np.eye(P)

    def H(Q, summed, points, seed):
        st = output_statistics(ch, Q, outer_normals(ch, points, 16, seed), 1, seed=seed, outputs_summed=summed)
        assert np.all(np.isfinite(st.H)) and np.all(np.isfinite(st.log_partition))
        return np.diagonal(st.H, axis1=1, axis2=2)

    sampled, summed = H(Q, False, 1024, 1), H(Q, True, 64, 0)
    err = np.hypot(sampled.std(0, ddof=1), summed.std(0, ddof=1)) / 4
    assert np.all(np.abs(sampled.mean(0) - summed.mean(0)) <= 4 * err), (sampled.mean(0), summed.mean(0), err)
    if isinstance(link, dict):
        return  # the region bank's membership jumps with omega: smooth only up to the bank's size
    shift = np.zeros((P, P))
    shift[0, 0] = 1.0
    base = summed.mean(0)
    slopes = [(H(Q + h * shift, True, 64, 0).mean(0) - base) / h for h in (1e-4, 1e-3)]
    np.testing.assert_allclose(slopes[0], slopes[1], rtol=1e-2, atol=1e-3)


def test_committee_fixed_point_half_widths_follow_the_spread_of_seeds():
    """committee_sign at alpha = 2, fast, seeds 0-19.  The half-widths (the per-scramble spread
    propagated through (I - J)^{-1}) were 0.0005 to 0.034 for seeds whose overlaps agree to
    0.0004, because J came from forward differences of a map whose sampled y jumps (solver
    0.5.13 sums y in J); and the sampled map wandered for up to 85 evaluations at its
    resolution.  With y summed in the map itself (solver 0.5.14): at most 10 evaluations, the
    three overlaps equal by symmetry, the median half-width within 1.5x of 1.96 times the
    seeds' spread, and at least 17 of the 20 intervals (the calibration tests' binomial floor)
    contain `precise`."""
    from solvers.state_evolution import fixed_point

    spec = MultiIndexSpec(link="committee_sign")
    precise = fixed_point(spec, 2.0, "uninformed", "precise", 0)
    reference = float(np.mean(precise.layer_overlaps))
    runs = [fixed_point(spec, 2.0, "uninformed", "fast", seed) for seed in range(20)]
    assert all(run.converged and run.iterations <= 10 for run in runs), [run.iterations for run in runs]
    q = np.array([run.layer_overlaps for run in runs])
    half_widths = np.array([run.overlap_ci95 for run in runs])
    assert np.max(q.max(1) - q.min(1)) < 1e-5
    spread = 1.96 * q[:, 0].std(ddof=1)
    assert spread / 1.5 <= np.median(half_widths) <= 1.5 * spread, (np.median(half_widths), spread)
    covered = int(np.sum(np.abs(q[:, 0] - reference) <= half_widths[:, 0] + max(precise.overlap_ci95)))
    assert covered >= 17, (covered, q[:, 0], half_widths[:, 0], reference)


def test_half_widths_at_a_rank_deficient_overlap_respect_its_symmetry():
    """committee_sign at alpha = 6 learns its mean direction only: Q = q 11^T, rank 1.  The
    delta method's J added a step to Q_jj alone, which raises Q's rank, so the map on fixed
    outer points moved as sqrt(step): J came out asymmetric and the three half-widths of equal
    overlaps were 0.008, 0.012 and 0.002 at seed 1 (the seeds spread by sd 0.00014).  Growing
    index j's correlations with it keeps the rank (state_evolution.grown_overlap): the three
    half-widths equal, below 0.002, and containing `precise`."""
    from solvers.state_evolution import fixed_point, grown_overlap

    Q = 0.3 * np.ones((3, 3))
    grown = grown_overlap(Q, 1, 1e-4)
    assert abs(grown[1, 1] - 0.3001) < 1e-15 and np.linalg.matrix_rank(grown, tol=1e-12) == 1
    np.testing.assert_array_equal(grown_overlap(np.diag([0.2, 0.5]), 0, 1e-3), np.diag([0.201, 0.5]))
    spec = MultiIndexSpec(link="committee_sign")
    precise = fixed_point(spec, 6.0, "uninformed", "precise", 0)
    for seed in range(5):
        fast = fixed_point(spec, 6.0, "uninformed", "fast", seed)
        ci = np.array(fast.overlap_ci95)
        assert ci.max() < 0.002 and ci.max() <= 1.1 * ci.min(), (seed, ci)
        assert np.all(np.abs(np.array(fast.layer_overlaps) - precise.layer_overlaps[0])
                      <= ci + max(precise.overlap_ci95)), (seed, fast.layer_overlaps, ci, precise)


# ---------------------------------------------------------------------------------------
# Order parameters of channels whose SE keeps Q diagonal
# ---------------------------------------------------------------------------------------
def test_a_channel_with_odd_rows_iterates_on_the_diagonal_and_lands_on_its_branch_curve():
    """y = sign(z1 z2): each row flip maps y to -y, so SE keeps Q diagonal and the iteration
    runs on the diagonal alone (before solver 0.5.9 on the upper triangle, where the
    accelerators turned the off-diagonal noise into nearly singular V = I - Q and alpha = 4 at
    fast took 310 s and 89 evaluations).  Its fixed point must lie on the line's branch curve
    alpha(q) = qhat(q) / H(q I) (solvers.transitions: the same statistics, no iteration):
    alpha(q*) = 4 within the curve's scatter at q* and the fixed point's own half-width."""
    from solvers.precision import SCRAMBLES, SE_POINTS
    from solvers.quadrature import t_halfwidth
    from solvers.state_evolution import fixed_point
    from solvers.transitions import branch_curve

    spec = MultiIndexSpec(link="sign_product")
    fp = fixed_point(spec, 4.0, precision="fast", seed=0)
    Q = np.array(fp.overlap)
    assert Q[0, 1] == 0.0 and fp.converged and fp.iterations <= 60, (fp.overlap, fp.iterations)
    q, ci = float(np.mean(fp.layer_overlaps)), float(np.max(fp.overlap_ci95))
    channel = spec.channel()
    normals = outer_normals(channel, 4 * SE_POINTS["fast"], SCRAMBLES, 1)
    curve = branch_curve(channel, np.array([q - ci, q + ci]), normals, seed=1).alpha
    assert curve[:, 0].mean() - t_halfwidth(curve[:, 0]) < 4.0 < curve[:, 1].mean() + t_halfwidth(curve[:, 1]), (
        q, ci, curve.mean(0))


def test_the_overlaps_of_a_finite_valued_channel_are_capped_where_the_outer_points_resolve_them():
    """sign_product with +-1 weights at alpha = 4, twice its information-theoretic perfect
    recovery threshold (2, bit counting) and above its algorithmic one (about 3.05): SE from
    the uninformed start goes to Q_0.  Its outer points cannot estimate H within 1e-6 of
    q = 1 (at 1 - q = 1e-8 they give H = 0 exactly), so before solver 0.5.9 the map sent
    q = 1 back to q = 0 and SE reported Q = 0 as converged.  Now the overlaps stop at
    1 - RESOLVED_DEFICIT and the half-width reaches 1; a known row stays at Q_0 (Q_MAX)."""
    from solvers.state_evolution import fixed_point

    spec = MultiIndexSpec(link="sign_product", prior={"kind": "binary"})
    for start in ("uninformed", "informed"):
        fp = fixed_point(spec, 4.0, start=start, precision="fast", seed=0)
        assert fp.converged and fp.layer_overlaps == (1 - fp_iteration.RESOLVED_DEFICIT,) * 2, fp
        assert all(q + ci >= 1.0 for q, ci in zip(fp.layer_overlaps, fp.overlap_ci95)), fp
    below = fixed_point(spec, 2.9, precision="fast", seed=0)  # above weak recovery (pi^2 / 4), below the jump
    assert all(0.1 < q < 0.5 for q in below.layer_overlaps), below
    known = fixed_point(MultiIndexSpec(link="sign_product", prior={"kind": "binary"}, known_layers=[2]), 4.0,
                        precision="fast", seed=0)
    assert known.layer_overlaps[1] == Q_MAX and known.layer_overlaps[0] == 1 - fp_iteration.RESOLVED_DEFICIT, known


def test_the_informed_start_of_a_sign_symmetric_finite_valued_link_descends_to_its_fixed_point():
    """y = sign(|z1| - 0.6745) (a fair coin, even in z1), Gaussian weights, alpha = 4: no
    perfect recovery, and both starts reach the same fixed point.  The informed start 1 - 1e-4
    sits where the outer points resolve nothing (the map's standard error there is of order 1),
    so before solver 0.5.9 the statistical stopping rule stopped it at once: q = 0.9999 +- 1.0
    "converged" after 1 evaluation.  Capped at 1 - RESOLVED_DEFICIT it descends."""
    from solvers.state_evolution import fixed_point

    spec = MultiIndexSpec(link={"formula": "sign(abs(z1) - 0.6745)"})
    low, high = (fixed_point(spec, 4.0, start=s, precision="fast", seed=0) for s in ("uninformed", "informed"))
    assert high.iterations > 1 and high.layer_overlaps[0] < 0.99, high
    assert abs(high.layer_overlaps[0] - low.layer_overlaps[0]) <= high.overlap_ci95[0] + low.overlap_ci95[0], (low, high)
