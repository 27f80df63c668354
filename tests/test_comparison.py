"""solvers.comparison on synthetic curves whose answers are known in closed form."""
from __future__ import annotations

import math

import pytest

from solvers.comparison import (TheoryCurve, Threshold, alpha_for_error, compare, error_halfwidth,
                                learned_layers, sharpest_drop, theory_alphas, thresholds_near)
from solvers.limits import MAX_ALPHA


def log_linear_curve(alphas, lo=1.0 / 1024, hi=1024.0):
    """e(alpha) = 1 - log2(alpha / lo) / log2(hi / lo): linear in log alpha, from 1 to 0; one
    layer with overlap q = 1 - e, half-width 0.01."""
    span = math.log2(hi / lo)
    errors = [1.0 - math.log2(a / lo) / span for a in alphas]
    return TheoryCurve(tuple(alphas), tuple(errors), tuple((1.0 - e,) for e in errors),
                       tuple((0.01,) for _ in alphas))


def test_theory_grid_is_canonical_and_holds_the_user_alphas():
    grid = theory_alphas([0.3, 1.7])
    assert 0.3 in grid and 1.7 in grid
    assert grid == sorted(grid)
    others = [a for a in grid if a not in (0.3, 1.7)]
    assert all(math.isclose(4 * math.log2(a), round(4 * math.log2(a)), abs_tol=1e-12) for a in others)
    assert min(grid) <= 0.3 / 4 < min(grid) * 2 ** 0.25 and max(grid) >= 1.7 * 4 > max(grid) / 2 ** 0.25
    # an overlapping comparison asks for the same grid points where the ranges overlap
    shared = set(theory_alphas([1.0, 3.0])) & set(others)
    assert {a for a in others if 0.25 <= a <= 6.8} <= shared
    near_top = theory_alphas([900.0])  # clipped to the largest alpha a request may ask
    assert max(near_top) == 900.0 and all(a <= MAX_ALPHA for a in near_top) and len(near_top) > 8


def test_inversion_is_exact_on_a_log_linear_curve():
    alphas = [2.0 ** (k / 4) for k in range(-12, 13)]  # 1/8 .. 8
    curve = log_linear_curve(alphas)
    for alpha in (0.2, 1.0, 3.3, 7.9):
        target = log_linear_curve([alpha]).errors[0]
        inv = alpha_for_error(curve, target)
        assert inv.status == "bracketed"
        assert inv.alpha == pytest.approx(alpha, rel=1e-9)
        assert inv.lower <= alpha <= inv.upper and inv.upper / inv.lower == pytest.approx(2 ** 0.25)
    first = alpha_for_error(curve, 0.99)  # reached at the curve's first alpha already
    assert first.status == "at_most" and first.alpha == alphas[0] and first.lower == 0.0
    never = alpha_for_error(curve, 0.01)  # below the curve everywhere
    assert never.status == "not_reached" and never.alpha is None and never.lower == alphas[-1]


def test_inversion_takes_the_first_crossing_of_a_jump():
    curve = TheoryCurve((0.5, 1.0, 2.0, 4.0), (0.8, 0.8, 0.1, 0.05), ((0,),) * 4, ((0,),) * 4)
    inv = alpha_for_error(curve, 0.45)  # halfway down the jump between alpha 1 and 2
    assert (inv.lower, inv.upper) == (1.0, 2.0) and inv.alpha == pytest.approx(2 ** 0.5)


def test_error_halfwidth_is_the_overlap_halfwidth_times_the_chord_slope():
    # e = q^2, one layer; at q = 0.5 the chords to 0.4 and 0.6 have slopes 0.9 and 1.1
    qs = (0.4, 0.5, 0.6)
    curve = TheoryCurve((1.0, 2.0, 3.0), tuple(q * q for q in qs), tuple((q,) for q in qs),
                        ((0.01,), (0.01,), (0.01,)))
    assert error_halfwidth(curve, 1) == pytest.approx(0.009)  # the smoother (smaller) side
    assert error_halfwidth(curve, 0) == pytest.approx(0.009)
    assert error_halfwidth(curve, 2) == pytest.approx(0.011)
    flat = TheoryCurve((1.0, 2.0), (0.7, 0.7), ((0.0,), (0.0,)), ((1e-6,), (1e-6,)))
    assert error_halfwidth(flat, 0) == 0.0  # no layer moves: nothing to carry


def test_sharpest_drop_per_log_sample():
    drop = sharpest_drop([100, 200, 400, 800], [1.0, 0.9, 0.2, 0.1])
    assert (drop.samples_from, drop.samples_to) == (200, 400)
    assert drop.rate == pytest.approx(0.7 / math.log(2))
    # per log-sample, not per point: a smaller fall over a much shorter interval is sharper
    drop = sharpest_drop([100, 1000, 1100], [1.0, 0.5, 0.4])
    assert (drop.samples_from, drop.samples_to) == (1000, 1100)
    # repeated sample sizes are averaged, unsorted input is sorted
    drop = sharpest_drop([400, 100, 100, 400], [0.2, 1.0, 0.8, 0.4])
    assert drop.error_from == pytest.approx(0.9) and drop.error_to == pytest.approx(0.3)
    assert sharpest_drop([100, 200], [0.1, 0.3]) is None  # never falls
    assert sharpest_drop([100, 100], [0.5, 0.4]) is None  # one sample size


def test_thresholds_near_and_learned_layers():
    ths = [Threshold("layer 2", 0.2, 0.01), Threshold("layer 1", 0.7, 0.05), Threshold("layer 3", None, None)]
    assert thresholds_near(0.5, 1.0, ths) == (["layer 1"], "layer 1", 1.0)
    inside, nearest, factor = thresholds_near(0.25, 0.3, ths)
    assert inside == [] and nearest == "layer 2" and factor == pytest.approx(1.25)
    assert learned_layers(0.5, ths) == (["layer 2"], [])
    assert learned_layers(0.72, ths) == (["layer 2", "layer 1"], ["layer 1"])


def test_compare_reports_samples_needed_and_ratio():
    D = 1000
    user_n = [500, 2000]
    alphas = theory_alphas([n / D for n in user_n])
    bo = log_linear_curve(alphas)
    amp = log_linear_curve(alphas, lo=1.0 / 256)  # AMP's curve lies above: it needs more samples
    # the user reaches at N the Bayes-optimal error of N / 4 (and at 2000 the one of 250)
    errors = [log_linear_curve([n / D / 4]).errors[0]
              for n in user_n]
    ths = [Threshold("layer 1", 1.0, 0.01)]
    out = compare(D, user_n, errors, [None, 0.01], bo, amp, ths)
    p0, p1 = out.points
    assert p0.bayes_optimal.samples_needed == 125 and p0.bayes_optimal.samples_ratio == pytest.approx(4.0)
    assert p1.bayes_optimal.samples_needed == 500 and p1.bayes_optimal.samples_ratio == pytest.approx(4.0)
    assert p0.bayes_optimal.error == pytest.approx(bo.errors[bo.index(0.5)])
    assert p0.amp.samples_needed > p0.bayes_optimal.samples_needed
    assert p0.learned_layers == () and p1.learned_layers == ("layer 1",)
    s = out.summary
    assert (s.sharpest_drop.samples_from, s.sharpest_drop.samples_to) == (500, 2000)
    assert s.thresholds_inside == ("layer 1",) and s.nearest_threshold_factor == 1.0
    # a log-linear curve falls equally fast everywhere: 1 / ln(2^20) per log-sample, up to the
    # rounding of the grid's N = ceil(alpha D) (N >= 125 here: about 1 / (125 ln 2^(1/4)) = 5%)
    assert s.bayes_optimal_sharpest_drop.rate == pytest.approx(1 / math.log(1024 * 1024), rel=0.05)
    assert out.to_dict()["points"][1]["error_bar"] == 0.01


def test_qmc_halfwidth_adds_and_widens_the_needed_range():
    alphas = [2.0 ** (k / 4) for k in range(-12, 13)]
    plain = log_linear_curve(alphas)
    qmc = TheoryCurve(plain.alphas, plain.errors, plain.overlaps, plain.overlap_ci95,
                      error_ci95=tuple(0.05 for _ in alphas))
    assert error_halfwidth(qmc, 5) == pytest.approx(error_halfwidth(plain, 5) + 0.05)
    # the band e +- h, h = 0.05 + 0.01 (the overlap's: de/dq = 1), reaches the target 0.5 between
    # the alphas where the band's edges cross it; the range holds both, to grid points
    D, n = 1000, 1000
    out = compare(D, [n], [0.5], [None], qmc, qmc, [])
    est = out.points[0].bayes_optimal
    lo, hi = est.alpha_needed_range
    span = math.log2(1024 * 1024)
    assert est.alpha_needed == pytest.approx(1.0)
    assert lo <= 2 ** (-0.06 * span) and hi >= 2 ** (0.06 * span)
    assert lo > 2 ** (-0.06 * span - 0.25) - 1e-12 and hi < 2 ** (0.06 * span + 0.25) + 1e-12


def test_transitions_count_for_the_summary_not_for_learned_layers():
    alphas = theory_alphas([1.0, 2.0])
    curve = log_linear_curve(alphas)
    ths = [Threshold("layer 1", 0.1, 0.01)]
    out = compare(1000, [1000, 2000], [0.9, 0.2], [None, None], curve, curve, ths,
                  [Threshold("perfect recovery", 1.5, None)])
    assert out.summary.thresholds_inside == ("perfect recovery",)
    assert all(p.learned_layers == ("layer 1",) for p in out.points)
