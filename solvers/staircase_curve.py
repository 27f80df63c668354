"""A staircase step as a root in the learned overlap q (THEORY.md section 4).

With one direction learned at overlap q (the others at 0), q is the SE fixed point at
    alpha(q) = q / ((1 - q) h(q))        (from q = alpha h / (1 + alpha h); other priors:
                                          alpha(q) = qhat(q) / h(q), qhat the inverse of
                                          their scalar input update, Prior.alpha_at),
h(q) the learned direction's H, and the inactive directions leave 0 where
    alpha(q) rate(q) = 1,
rate(q) their linearised growth rate at that fixed point.  So the threshold is a root in q,
with no fixed-point iteration at all.  A :class:`StaircaseCurve` subclass supplies h and the
rate: an inactive layer's E||Cov[z_l | y, omega_k] - I||^2 while layer k is learned
(``thresholds``), or the Perron eigenvalue rho(F_q) on the complement of a learned trivial
direction (``linear_stability``).

:func:`refine_root` is the procedure both use: a pilot run on few outer points brackets the
root (:meth:`StaircaseCurve.pilot_root`) and measures its spread over the scrambles;
:func:`~solvers.precision.points_for` sizes the final run from that spread (QMC errors fall
at least like n^-1/2); the final run refines the root by secant steps and reports the root of
the pooled curve (the mean of the per-scramble roots before solver 0.5.14: biased up on few
points, :meth:`StaircaseCurve.pooled_root`).  The half-width is the Student-t interval of the
per-scramble roots plus the
inner sampler's bias, twice the root's change at double inner resolution
(:func:`~solvers.precision.inner_bias_bound`; before solver 0.5.6 the change itself), on a subset
of the points (a paired difference: the outer noise cancels, so few points suffice).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import optimize

from .fixed_point_iteration import Q_MAX
from .precision import SCRAMBLES, inner_bias_bound, points_for
from .quadrature import t_halfwidth
from .statistics import outer_normals


class StaircaseCurve:
    """h(q) = alpha(q) rate(q) - 1 on one fixed set of outer points (common random numbers:
    the per-scramble curves are smooth in q); statistics memoised per (q, resolution).

    A subclass supplies ``compute_statistics(q, resolution)``, the per-scramble and pooled
    (h, rate) from them (``rates``, ``pooled_rates``), ``root_between`` (the interpolation
    of a root on the pair around q, per scramble or pooled), ``on_points`` (the same
    curve on other outer points), and its bracketing ``GRID`` (dense towards q = 1).  ``seed``,
    the outer seed of ``normals``, picks each scramble's inner bank
    (:func:`~solvers.statistics.output_statistics`)."""

    GRID: tuple[float, ...] = ()
    ROOT_STEPS = 8

    def __init__(self, channel, normals: np.ndarray, memo: dict | None = None, seed: int | None = None):
        self.channel, self.normals, self.seed = channel, normals, seed  # seed: that of the normals
        self._memo = {} if memo is None else memo

    @property
    def points(self) -> int:
        """Outer points per scramble."""
        return self.normals.shape[1]

    def compute_statistics(self, q: float, resolution: int):
        raise NotImplementedError

    def rates(self, q: float, resolution: int) -> tuple[np.ndarray, np.ndarray]:
        """Per-scramble (h, rate) at q."""
        raise NotImplementedError

    def pooled_rates(self, q: float, resolution: int) -> tuple[float, float]:
        """(h, rate) from the scramble-pooled statistics at q."""
        raise NotImplementedError

    def root_between(self, q1: float, q2: float, a1, ar1, a2, ar2):
        """alpha at the root of alpha(q) rate(q) = 1 from its values at q1 < q2 (alpha a, and
        ar = alpha rate; arrays, one per scramble, or pooled scalars): the subclass's
        interpolation."""
        raise NotImplementedError

    def per_scramble_roots(self, q: float, resolution: int = 1) -> np.ndarray:
        """alpha at the root of each scramble's curve, from the pair around q: their spread
        gives the half-width."""
        q1, q2 = self.pair(q)
        return self.root_between(q1, q2, *self.per_scramble(q1, resolution), *self.per_scramble(q2, resolution))

    def pooled_root(self, q: float, resolution: int = 1) -> float:
        """alpha at the root of the pooled curve, from the pair around q: the reported value.
        Not the mean of the per-scramble roots (before solver 0.5.14): each scramble's root is a
        nonlinear function (about 1 / rate) of a rate estimated on few points, so their mean is
        biased up by about the square of its relative spread (committee_sign's staircase step at
        fast, 16 points per scramble: mean over seeds 0-19 19.84, the pooled root 19.39, the
        independent reduction 19.2326)."""
        q1, q2 = self.pair(q)
        return float(self.root_between(q1, q2, *self.pooled_alpha(q1, resolution), *self.pooled_alpha(q2, resolution)))

    def on_points(self, normals: np.ndarray) -> StaircaseCurve:
        raise NotImplementedError

    def statistics(self, q: float, resolution: int = 1):
        key = (q, resolution)
        if key not in self._memo:
            self._memo[key] = self.compute_statistics(q, resolution)
        return self._memo[key]

    def per_scramble(self, q: float, resolution: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """(alpha(q), alpha(q) rate(q)), one value per scramble."""
        h, rate = self.rates(q, resolution)
        alpha = self.channel.prior.alpha_at(q, h)
        return alpha, alpha * rate

    def pooled_alpha(self, q: float, resolution: int = 1) -> tuple[float, float]:
        """(alpha(q), alpha(q) rate(q)) from the scramble-pooled statistics."""
        h, rate = self.pooled_rates(q, resolution)
        alpha = self.channel.prior.alpha_at(q, h)
        return alpha, alpha * rate

    def pooled(self, q: float, resolution: int = 1) -> float:
        """h(q) from the scramble-pooled statistics (the estimate whose root we report)."""
        return self.pooled_alpha(q, resolution)[1] - 1.0

    def bracket(self) -> tuple[float, float] | None:
        """The first sign change of the pooled curve on ``GRID`` (from q = 1e-6), or None."""
        lo = 1e-6
        for q in self.GRID:
            if self.pooled(q) > 0:
                return lo, q
            lo = q
        return None

    def pair(self, q: float) -> tuple[float, float]:
        """Two points around q for finite differences, on a scale where the per-sample
        adaptive quadrature (changes ~1e-5) cannot disturb the slope: at least 1e-6 apart,
        except within 5e-4 of q = 1, where the curve lives on the scale of 1 - q itself."""
        dq = 2e-3 * (1.0 - q) if 1.0 - q < 5e-4 else max(1e-6, 2e-3 * (1.0 - q))
        return q - dq, min(q + dq, Q_MAX)

    def slope(self, q: float, resolution: int = 1) -> float:
        """The pooled curve's slope at q, from the pair around q."""
        q1, q2 = self.pair(q)
        return (self.pooled(q2, resolution) - self.pooled(q1, resolution)) / (q2 - q1)

    def root_near(self, q: float, resolution: int = 1, slope: float | None = None) -> float:
        """Root of the pooled curve by secant steps from a nearby guess, the slope taken on the
        pair around the current point; stops when the root falls within two pair widths, so
        the pair of the returned point also serves the per-scramble roots.

        ``slope``: the curve's slope near q on other outer points (the pilot's); the first
        step is then a Newton step with it from the value at q alone, one evaluation on these
        points instead of the pair's two."""
        if slope is not None and slope != 0.0 and math.isfinite(slope):
            q = _bounded_step(q, q - self.pooled(q, resolution) / slope)
        for _ in range(self.ROOT_STEPS):
            q1, q2 = self.pair(q)
            h1, h2 = self.pooled(q1, resolution), self.pooled(q2, resolution)
            if h2 == h1:
                break
            qr = q1 - h1 * (q2 - q1) / (h2 - h1)
            if abs(qr - q) <= 2.0 * (q2 - q1):
                return q
            q = _bounded_step(q, qr)
        return q

    def pilot_root(self) -> StaircaseRoot | None:
        """A rough root (brentq in the bracket, to 1e-3 of 1 - q) and the mean and Student-t
        half-width of the per-scramble roots there; None when the curve has no root on GRID."""
        bracket = self.bracket()
        if bracket is None:
            return None
        q = optimize.brentq(self.pooled, *bracket, xtol=1e-3 * (1.0 - bracket[1]))
        return StaircaseRoot(self.pooled_root(q), float(t_halfwidth(self.per_scramble_roots(q))), q, self)


def _bounded_step(q: float, target: float) -> float:
    """From q towards target, bounded in log(1 - q): at most a factor e in 1 - q per step."""
    u, ur = math.log1p(-q), math.log1p(-min(max(target, 0.0), Q_MAX))
    return -math.expm1(min(max(ur, u - 1.0), u + 1.0))


@dataclass(frozen=True)
class StaircaseRoot:
    """A staircase threshold: alpha with its 95% half-width, the learned overlap q at the root,
    and the curve (its outer points) it was found on."""

    alpha: float
    ci95: float
    q: float
    curve: StaircaseCurve


def refine_root(pilot: StaircaseRoot, seed: int, target: float, cap: int, min_subset_points: int,
                refine_on_pilot_points: bool) -> StaircaseRoot:
    """From a pilot root to the reported one (see the module docstring): the points per
    scramble sized by ``points_for`` for the relative half-width ``target`` (at most ``cap``),
    the root refined by :meth:`StaircaseCurve.root_near` on new points, its first step with the
    slope on the points before (and on the pilot's own when they suffice, if
    ``refine_on_pilot_points``), the half-width plus twice the change at
    double inner resolution on the first 4 scrambles and max(``min_subset_points``, n / 4)
    points; repeated, resized from the last spread, until the target or the cap."""
    curve, q, alpha0, ci0 = pilot.curve, pilot.q, pilot.alpha, pilot.ci95
    n = curve.points
    while True:
        n_new = points_for(n, ci0 / alpha0, target, cap)
        grown = n_new != n
        slope = None
        if grown:
            slope = curve.slope(q)  # on the points before (memoised there: their pair around q)
            n = n_new
            curve = curve.on_points(outer_normals(curve.channel, n, SCRAMBLES, seed))
        if grown or refine_on_pilot_points:
            q = curve.root_near(q, slope=slope)
        alpha_c, ci = curve.pooled_root(q), float(t_halfwidth(curve.per_scramble_roots(q)))
        sub = curve.on_points(curve.normals[:4, : max(min_subset_points, n // 4)])
        ci += inner_bias_bound(sub.pooled_root(q, 2) - sub.pooled_root(q, 1))
        if ci <= target * alpha_c or n >= cap:
            return StaircaseRoot(alpha_c, ci, q, curve)
        alpha0, ci0 = alpha_c, ci
