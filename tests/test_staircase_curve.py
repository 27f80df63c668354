"""The staircase-curve base (solvers.staircase_curve) on a curve whose root is known:
h(q) = 1 and rate_r = c_r, so alpha(q) rate = c q / (1 - q) and the root is q* = 1 / (1 + c),
alpha* = 1 / c."""
import numpy as np
import pytest

from solvers.models import MultiIndexSpec
from solvers.staircase_curve import StaircaseCurve, refine_root
from solvers.statistics import outer_normals

RATES = np.array([0.2, 0.25, 0.3, 0.25])  # per scramble: pooled 0.25, root q* = 0.8, alpha* = 4


class ConstantRateCurve(StaircaseCurve):
    GRID = (0.2, 0.5, 0.9, 0.99)

    def __init__(self, channel, normals, calls):
        super().__init__(channel, normals)
        self.calls = calls

    def compute_statistics(self, q, resolution):
        self.calls.append((q, resolution))
        return RATES

    def rates(self, q, resolution):
        return np.ones(len(RATES)), self.statistics(q, resolution)

    def pooled_rates(self, q, resolution):
        return 1.0, self.statistics(q, resolution).mean()

    def root_between(self, q1, q2, a1, r1, a2, r2):
        qr = q1 - (r1 - 1.0) * (q2 - q1) / (r2 - r1)
        return a1 + (a2 - a1) / (q2 - q1) * (qr - q1)

    def on_points(self, normals):
        return ConstantRateCurve(self.channel, normals, self.calls)


@pytest.fixture
def channel():
    return MultiIndexSpec(link="square").channel()


def test_bracket_pilot_root_and_root_near(channel):
    calls = []
    curve = ConstantRateCurve(channel, outer_normals(channel, 4, 4, 0), calls)
    assert curve.bracket() == (0.5, 0.9)
    pilot = curve.pilot_root()
    assert pilot.q == pytest.approx(0.8, abs=1e-3 * 0.1)
    # the pooled curve's root, 1 / mean(rate) = 4, not the mean of the scrambles' roots,
    # mean(1 / rate) = 4.083 (Jensen: what solver 0.5.13 reported)
    assert pilot.alpha == pytest.approx(1 / np.mean(RATES), rel=1e-3)
    np.testing.assert_allclose(curve.per_scramble_roots(pilot.q), 1 / RATES, rtol=1e-3)
    assert pilot.ci95 > 0
    assert curve.root_near(0.7) == pytest.approx(0.8, abs=2 * 2 * 2e-3 * 0.2)
    n = len(calls)
    curve.statistics(0.9)  # a grid point of the bracket
    assert len(calls) == n  # memoised per (q, resolution)


def test_refine_root_on_the_pilot_points(channel):
    """With the cap at the pilot's size no new points are drawn; the root is refined there
    only when asked to, and the half-width includes the resolution change (0 here)."""
    calls = []
    pilot = ConstantRateCurve(channel, outer_normals(channel, 4, 4, 0), calls).pilot_root()
    kept = refine_root(pilot, 0, 1e-9, 4, 4, refine_on_pilot_points=False)
    assert kept.q == pilot.q and kept.curve is pilot.curve
    assert kept.alpha == pytest.approx(pilot.alpha) and kept.ci95 == pytest.approx(pilot.ci95)
    refined = refine_root(pilot, 0, 1e-9, 4, 4, refine_on_pilot_points=True)
    assert abs(refined.q - 0.8) <= abs(pilot.q - 0.8) + 1e-12
    grown = refine_root(pilot, 0, 1e-9, 16, 4, refine_on_pilot_points=False)
    assert grown.curve.points == 16


class BiasedRateCurve(ConstantRateCurve):
    """Every scramble's rate is 1 / (4 + BIAS / resolution): the root is alpha = 4 + BIAS /
    resolution exactly, an inner sampler whose bias falls like 1 / K with no outer spread."""
    BIAS = 0.4

    def compute_statistics(self, q, resolution):
        self.calls.append((q, resolution))
        return np.full(len(RATES), 1.0 / (4.0 + self.BIAS / resolution))

    def on_points(self, normals):
        return BiasedRateCurve(self.channel, normals, self.calls)


def test_refine_root_half_width_covers_a_one_over_k_inner_bias(channel):
    """The half-width's inner term is twice the change at double resolution (Richardson for a
    1 / K bias): it reaches the limit alpha = 4, where the change alone (0.2) falls short."""
    pilot = BiasedRateCurve(channel, outer_normals(channel, 4, 4, 0), []).pilot_root()
    root = refine_root(pilot, 0, 1e-9, 4, 4, refine_on_pilot_points=True)
    assert root.alpha == pytest.approx(4.0 + BiasedRateCurve.BIAS, rel=1e-6)
    assert root.ci95 == pytest.approx(BiasedRateCurve.BIAS, rel=1e-5)
    assert root.alpha - root.ci95 <= 4.0 + 1e-6


def test_root_near_takes_its_first_step_with_a_given_slope(channel):
    """With the slope known from other points (the pilot's), the first step needs h at q
    alone: from q = 0.79 the curve c q / (1 - q) - 1 is evaluated at q and then at the new
    point's pair (3 points), where the pair's own secant takes two pairs (4 points); both land
    within two pair widths of the root q* = 0.8."""
    normals = outer_normals(channel, 4, 4, 0)
    without = []
    q_plain = ConstantRateCurve(channel, normals, without).root_near(0.79)
    given = []
    curve = ConstantRateCurve(channel, normals, given)
    q_slope = curve.root_near(0.79, slope=0.25 / (1 - 0.79) ** 2)  # d/dq of c q / (1 - q) at 0.79
    width = 2 * 2 * 2e-3 * 0.2
    assert q_plain == pytest.approx(0.8, abs=width) and q_slope == pytest.approx(0.8, abs=width)
    assert len(without) == 4 and len(given) == 3
    assert given[0] == (0.79, 1) and set(given[1:]) == set((q, 1) for q in curve.pair(q_slope))
