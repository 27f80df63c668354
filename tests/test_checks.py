"""The self-checks results carry (solvers.checks): each one fails on the numbers it exists to
catch, and passes on real results."""
import math

import numpy as np

from solvers import DeepAttentionSpec, MultiIndexSpec, layer_thresholds, state_evolution
from solvers import checks
from solvers.results import FixedPoint, StateEvolutionPoint, Threshold


def test_counting_bound_rejects_the_old_l3_estimate():
    """The estimate this issue started from: 1.4796 +- 0.0032 for L / M = 1.5."""
    assert not checks.counting_bound(1.4796, 0.0032, 1.5).passed
    assert not checks.counting_bound(1.53, 0.01, 1.5).passed  # above is wrong too: SE equals it
    assert checks.counting_bound(1.4994, 0.0025, 1.5).passed
    assert checks.counting_bound(1.5 + 2e-16, 0.0, 1.5).passed  # rounding of an exact identity


def test_precision_target_names_each_miss():
    ok = [Threshold(0.185, 0.001, "linear_stability", layer=2), Threshold(0.72, 0.01, "staircase", layer=1)]
    assert checks.precision_target(ok, "fast").passed
    miss = checks.precision_target(ok, "standard")  # 0.54% > 0.5% at Q = 0, 1.39% > 1% staircase
    assert not miss.passed and "layer 2" in miss.detail and "layer 1" in miss.detail
    committee = [Threshold(0.0, 0.0, "trivial", direction=(0.577, 0.577, 0.577)),
                 Threshold(19.2168, 1.1619, "staircase", direction=(0.707, -0.707, 0.0))]
    assert not checks.precision_target(committee, "fast").passed  # 6.0% > 2%
    assert not checks.precision_target(ok, "fast", perfect_recovery=(1.5, 0.1)).passed


def test_staircase_order_rejects_a_step_below_its_predecessor():
    first = Threshold(0.5, 0.01, "linear_stability", layer=2)
    assert checks.staircase_order([first, Threshold(0.7, 0.01, "staircase", layer=1)]).passed
    assert checks.staircase_order([first, Threshold(0.495, 0.01, "staircase", layer=1)]).passed  # within CIs
    assert not checks.staircase_order([first, Threshold(0.4, 0.01, "staircase", layer=1)]).passed
    assert checks.staircase_order([first, Threshold(math.inf, math.inf, "staircase", layer=1)]).passed


def test_se_bracket_compares_each_threshold_with_state_evolution():
    """A fake SE whose layer p is on above on_at[p]: the right thresholds pass, a threshold
    10% too low or a wrong order fails."""
    on_at = np.array([0.7, 0.2])

    def overlaps(alpha):
        return np.where(alpha > on_at, 0.1, 0.0), np.full(2, 0.01)

    right = [Threshold(0.2, 0.001, "linear_stability", layer=2), Threshold(0.7, 0.01, "staircase", layer=1)]
    assert checks.se_bracket(right, 2, overlaps).passed
    low = [Threshold(0.2, 0.001, "linear_stability", layer=2), Threshold(0.6, 0.01, "staircase", layer=1)]
    failed = checks.se_bracket(low, 2, overlaps)
    assert not failed.passed and "index [1]" in failed.detail
    swapped = [Threshold(0.2, 0.001, "linear_stability", layer=1), Threshold(0.7, 0.01, "staircase", layer=2)]
    assert not checks.se_bracket(swapped, 2, overlaps).passed

    def stuck_at_start(alpha):  # SE that never leaves its start 1e-3 below the threshold
        return np.where(alpha > on_at, 0.1, 1e-3), np.full(2, 1e-4)

    assert checks.se_bracket(right, 2, stuck_at_start, start_overlap=1e-3).passed
    assert not checks.se_bracket(right, 2, stuck_at_start).passed  # 1e-3 > its half-width: not 0


def _point(alpha, uninformed, informed, ci=0.01, converged=True):
    def fp(start, q):
        return FixedPoint(alpha, start, ((q,),), (q,), (ci,), 1 - q, 0, 0, 0, converged, 3, 0.0)
    return StateEvolutionPoint(alpha, fp("uninformed", uninformed), fp("informed", informed), "informed", False)


def test_state_evolution_checks_fail_on_crossed_branches_and_unconverged_points():
    assert checks.branch_order([_point(1.0, 0.3, 0.9)]).passed
    assert not checks.branch_order([_point(1.0, 0.9, 0.3)]).passed
    assert checks.fixed_points_converged([_point(1.0, 0.3, 0.9)]).passed
    assert not checks.fixed_points_converged([_point(1.0, 0.3, 0.9, converged=False)]).passed


def test_real_results_carry_their_checks():
    square = layer_thresholds(MultiIndexSpec(link="square"), "fast", 0, se_bracket=True)
    assert {c.name for c in square.checks} == {"staircase order", "precision target", "SE bracket"}
    assert all(c.passed for c in square.checks), square.checks
    one_layer = layer_thresholds(DeepAttentionSpec(layers=1, tokens=3), "fast", 0)
    names = {c.name: c for c in one_layer.checks}
    assert names["counting bound"].passed and "0.333333" in names["counting bound"].detail
    curve = state_evolution(MultiIndexSpec(link="square"), [0.4, 0.8], precision="fast")
    assert [c.name for c in curve.checks] == ["converged", "branch order"]
    assert all(c.passed for c in curve.checks)


def test_a_threshold_not_found_carries_its_reason_to_the_response():
    """An infinite threshold is rendered as alpha null with the solver's reason beside it."""
    from service import render

    raw = {"thresholds": [{"alpha": 0.1855, "ci95": 1e-9, "kind": "linear_stability", "layer": 2},
                          {"alpha": math.inf, "ci95": math.inf, "kind": "staircase", "layer": 1,
                           "reason": "no staircase root: ..."}]}
    body = render.thresholds(raw, {"precision": "fast", "seed": 0, "dimension": 768}, "miss")
    never = body["thresholds"][1]
    assert never["alpha"] is None and never["samples_needed"] is None
    assert never["reason"].startswith("no staircase root")
    assert "reason" not in body["thresholds"][0]
