"""Iteration of the SE map to a fixed point (THEORY.md section 3): a small driver loop
(:func:`iterate_fixed_point`) with its accelerators and stopping rules as separate pieces.

The order parameters are a vector x: the diagonal overlaps q_l for channels whose SE keeps Q
diagonal (sign-symmetric ones, and those whose row flips map y to -y), the upper triangle of Q
otherwise.  The pieces:

- :class:`SEMap`: x -> G(x), the SE map Q <- Qhat (I + Qhat)^{-1}, Qhat = alpha H(Q), counting
  its evaluations and keeping the last one's statistics and Monte-Carlo standard error;
- :class:`StoppingRule`: the strict scaled residual and the statistical stopping rule;
- :func:`perfect_recovery_verdict`: whether components near q = 1 go to Q_0;
- :class:`AitkenExtrapolation`: bounded Aitken jumps of geometrically contracting components;
- :class:`NewtonAccelerator`: Newton, then Broyden-updated, steps where the map contracts slowly;
- :class:`SteadyMoves` and :class:`RayJumps`: steady geometric moves near q = 0 and q = 1, and
  the jumps along v = 1 - q near perfect recovery;
- :func:`coordinate_root`: the root of one component's own map (a layer leaving q = 0).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import optimize

from .channels.base import Channel
from .quadrature import t_halfwidth
from .statistics import OutputStatistics, output_statistics, overlap_update

Q_MAX = 1.0 - 1e-10  # overlaps are capped here: beyond, recovery is perfect to machine precision
LEAVING_ZERO = 1e-2  # a slowly growing layer below this jumps to the least root of its own map
NEAR_ONE = 1e-6  # 1 - q below this: perfect recovery decided by the contraction of 1 - q
SMALL_OVERLAP = 1e-3  # below, a layer's fate (0 or growth) is decided by its linear rate at q = 0
GROWN_SMALL_OVERLAP = 1e-5  # the same for a layer grown from 0 to the least root of its map
NEWTON_LOGIT_STEP = 3.0  # largest Newton move in logit q: a factor e^3 ~ 20 in q or in 1 - q
STEADY_STEPS = 3  # consecutive steady geometric steps that trigger a jump
CYCLE_DECIMALS = 12  # iterates equal to this many decimals are the same (deterministic_cycle)
# 1 - q below which the outer QMC points of a noiseless finite-valued channel no longer see the
# observation's information (:func:`capped_near_one`): the posterior moves only for outer
# points within about sqrt(1 - q) of where y changes.  At fast
# (16 x 64 points) the scrambles' H of sign / sign_product spread by 13-21% at 1 - q = 1e-3,
# 60-105% at 1e-4; at 1e-8 H is exactly 0, so the map sent q = 1 back to 0 and SE reported
# Q = 0 "converged" for sign_product with +-1 weights at alpha = 4 (twice its bit-counting
# perfect-recovery threshold).  The map is capped here instead, and a fixed point on the cap
# reports the distance to 1 in its half-width.  (relu's H ~ 1/(1 - q) is sampled well at
# every 1 - q: continuous outputs are not capped.)
RESOLVED_DEFICIT = 1e-3


@dataclass(frozen=True)
class FixedPointIteration:
    """Raw result of :func:`iterate_fixed_point` (see :class:`solvers.results.FixedPoint`)."""

    Q: np.ndarray
    converged: bool
    iterations: int
    residual: float
    contraction: float
    step: np.ndarray  # map(Q) - Q at the last evaluation (order-parameter vector)
    statistics: OutputStatistics | None = None  # at Q itself, when the last evaluation was there
    normals: np.ndarray | None = None  # the outer points it ended on (the decision points, if it moved to them)


# ---------------------------------------------------------------------------------------
# Order parameters
# ---------------------------------------------------------------------------------------
def diagonal_order(channel: Channel) -> bool:
    """Whether the order parameters are the diagonal of Q alone: SE keeps Q diagonal
    (``Channel.keeps_overlaps_diagonal``: every row flip maps y to +-y), so an off-diagonal
    entry of the trajectory from a diagonal start is exactly 0.  The estimators do not know it:
    the named sign_product link at alpha = 4, fast, iterated on the upper triangle, and its
    accelerators turned Monte-Carlo noise of order 1e-2 in the off-diagonal map into iterates
    like Q = [[0.564, -0.435], [-0.435, 0.566]], where V = I - Q is nearly singular and each
    evaluation took 20-40 s instead of 0.1 s (310 s in all, for the fixed point (0.635, 0.637)
    with off-diagonal -0.009, that is 0 within its noise)."""
    return channel.keeps_overlaps_diagonal


def order_vector(channel: Channel, Q: np.ndarray) -> np.ndarray:
    """The order parameters of Q: its diagonal (:func:`diagonal_order`) or upper triangle."""
    if diagonal_order(channel):
        return np.diag(Q).copy()
    return Q[np.triu_indices(Q.shape[0])].copy()


def order_diagonal(channel: Channel, x: np.ndarray) -> np.ndarray:
    """The diagonal overlaps q_l among the order parameters x (or a step in them)."""
    if diagonal_order(channel):
        return np.asarray(x)
    return np.diag(symmetric_from_upper(channel.n_indices, x))


def diagonal_entries(channel: Channel) -> np.ndarray:
    """Mask of the diagonal overlaps q_l among the order parameters."""
    P = channel.n_indices
    if diagonal_order(channel):
        return np.ones(P, dtype=bool)
    return np.eye(P)[np.triu_indices(P)] > 0


def resolved_overlaps(channel: Channel, q: np.ndarray) -> np.ndarray:
    """Diagonal overlaps capped at 1 - RESOLVED_DEFICIT where :func:`capped_near_one`,
    unchanged otherwise."""
    if capped_near_one(channel):
        return np.minimum(q, 1.0 - RESOLVED_DEFICIT)
    return q


# an overlap at or above this sits on the cap of resolved_overlaps (room for the rounding of
# the map's blend of its two forms)
ON_CAP = 1.0 - 1.001 * RESOLVED_DEFICIT


def on_resolved_cap(channel: Channel, q) -> np.ndarray:
    """Whether diagonal overlaps ``q`` sit on the cap of :func:`resolved_overlaps`: the fixed
    point lies somewhere between there and 1."""
    return capped_near_one(channel) & (np.asarray(q, dtype=float) >= ON_CAP)


def unresolved_deficit(channel: Channel, q: np.ndarray) -> np.ndarray:
    """1 - q for the diagonal overlaps on the cap of :func:`resolved_overlaps` (part of the
    fixed point's half-width), 0 for the others."""
    q = np.asarray(q, dtype=float)
    return np.where(on_resolved_cap(channel, q), 1.0 - q, 0.0)


def capped_near_one(channel: Channel) -> bool:
    """Whether the SE map's overlaps are capped at 1 - RESOLVED_DEFICIT: a noiseless channel
    with finitely many outputs.  Sign-symmetric ones too: their verdict at Q_0
    (:func:`perfect_recovery_verdict`, within NEAR_ONE of 1) would read estimates that carry no
    information there, and their informed start 1 - 1e-4 stopped at once on the map's huge
    standard error (``sign(abs(z1) - 0.6745)``, Gaussian weights, alpha = 4, fast: q = 0.9999
    +- 1.0 "converged" after 1 evaluation, where the uninformed branch has 0.956)."""
    return channel.finite_outputs is not None


def symmetric_from_upper(P: int, x: np.ndarray) -> np.ndarray:
    """The symmetric P x P matrix whose upper triangle (row-major) is x."""
    Q = np.zeros((P, P))
    Q[np.triu_indices(P)] = x
    return Q + Q.T - np.diag(np.diag(Q))


def overlap_matrix(channel: Channel, x: np.ndarray) -> np.ndarray:
    """The overlap matrix of the order parameters x, its eigenvalues clipped to [0, Q_MAX]."""
    P = channel.n_indices
    if diagonal_order(channel):
        return np.diag(np.clip(x, 0.0, Q_MAX))
    w, U = np.linalg.eigh(symmetric_from_upper(P, x))
    return (U * np.clip(w, 0.0, Q_MAX)) @ U.T


def known_mask(channel: Channel) -> np.ndarray:
    """P x P indicator of the overlaps on a known row or column (held at Q_0's entries)."""
    P = channel.n_indices
    K = np.zeros((P, P))
    K[list(channel.known), :] = 1.0
    K[:, list(channel.known)] = 1.0
    return K > 0


def difference_step(q: float) -> float:
    """Finite-difference step for the SE map in an overlap q: relative to 1 - q (and inwards)
    near q = 1, where a fixed step would leave [0, Q_MAX] and 1 - q contracts by a finite ratio."""
    return -1e-2 * (1.0 - q) if q > 0.5 else 1e-4


def exact_zero_layers(x: np.ndarray, mapped: np.ndarray) -> np.ndarray:
    """The map's values with every layer at q_l = 0 sent to exactly 0 (sign-symmetric channels).

    At q_l = 0 (omega_l = 0, V_ll = 1) the posterior of z_l given y and the other layers is
    even in z_l (P_out is invariant under z_l -> -z_l), so E[z_l | y, omega] = 0, g_l = 0 and
    H_ll = 0 exactly: 0 is a fixed point of the layer, stable or not by its linear rate.  The
    estimators do not know it: deep attention's inner Sobol bank (L >= 3) is not symmetric
    under the sign flip of one layer's block, so its posterior mean of z_l is off 0 and H_ll
    = E||g_l||^2 > 0.  L = 3, M = 2 at alpha = 1.068 with layers 1 and 3 learned: layer 2 at 0
    was mapped to 0.0044 +- 0.0005 (its rate 0.89 +- 0.02 < 1), so the iteration left the
    exact 0 and settled at offset / (1 - rate), 0.0246 +- 0.0146 (before solver 0.5.4: the SE
    bracket of layer 2's threshold failed).  Layers above 0 keep the estimators' value."""
    return np.where(x > 0, mapped, 0.0)


class SEMap:
    """The SE map on the order parameters, x -> vec(Q(Qhat)), Qhat = alpha H(Q(x)) (Q(Qhat) the
    prior's input update, Qhat (I + Qhat)^{-1} for the Gaussian),
    H averaged over the scrambles (THEORY.md section 3); components outside ``mask`` are held.

    Counts its evaluations (``evaluations``) and keeps the last one's point, output statistics
    and the map's Monte-Carlo standard error per component (the spread over the R scrambles of
    the per-scramble maps / sqrt R)."""

    def __init__(self, channel: Channel, alpha: float, normals: np.ndarray, resolution: int, mask: np.ndarray,
                 seed: int | None = None):
        self.channel, self.alpha, self.normals, self.resolution, self.mask = channel, alpha, normals, resolution, mask
        self.seed = seed  # the outer seed of the normals: it picks each scramble's inner bank
        self.evaluations = 0
        self.last_point: np.ndarray | None = None
        self.last_statistics: OutputStatistics | None = None
        self.standard_error: np.ndarray | None = None

    def output_statistics(self, x: np.ndarray) -> OutputStatistics:
        """Output statistics (with the plug-in error) at the overlaps x: one evaluation."""
        self.evaluations += 1
        return output_statistics(self.channel, overlap_matrix(self.channel, x), self.normals, self.resolution,
                                 plugin=True, seed=self.seed)

    def on(self, normals: np.ndarray) -> "SEMap":
        """The same map on other outer points, its evaluation count carried over."""
        finer = SEMap(self.channel, self.alpha, normals, self.resolution, self.mask, self.seed)
        finer.evaluations = self.evaluations
        return finer

    def remember(self, x: np.ndarray, statistics: OutputStatistics) -> None:
        self.last_point, self.last_statistics = x, statistics

    def __call__(self, x: np.ndarray) -> np.ndarray:
        channel, alpha = self.channel, self.alpha
        st = self.output_statistics(x)
        out = order_vector(channel, overlap_update(alpha, st.H.mean(0), channel.prior))
        per_scramble = np.array([order_vector(channel, overlap_update(alpha, H, channel.prior)) for H in st.H])
        if channel.sign_symmetric:
            out, per_scramble = exact_zero_layers(x, out), exact_zero_layers(x, per_scramble)
        out = np.where(self.mask, out, x)
        self.remember(x.copy(), st)
        self.standard_error = per_scramble.std(0, ddof=1) / math.sqrt(len(st.H))
        if channel.sign_symmetric:
            out = np.clip(out, 0.0, Q_MAX)
        return np.where(self.mask & diagonal_entries(channel), resolved_overlaps(channel, out), out)

    def statistics_at(self, x: np.ndarray) -> OutputStatistics | None:
        """The output statistics at x if the last evaluation was there."""
        return self.last_statistics if np.array_equal(self.last_point, x) else None


def deterministic_cycle(visited: dict, steps: list, key: tuple, step: np.ndarray) -> np.ndarray | None:
    """The largest |step| per component over a cycle of the iteration, or None (and ``key``,
    the iterate with the iteration's state, and ``step`` are recorded).

    On fixed outer points the SE map is piecewise smooth: a sampled output of a finite-valued
    channel flips as Q moves (y = sign(sqrt(q) xi + sqrt(1 - q) eta)), so the map jumps by about
    1 / (number of points).  Near its fixed point the accelerated iteration can then cycle:
    the named sign link at alpha = 16, fast, seed 0 revisited the same iterates every 15
    evaluations (steps of +-1e-5 against a standard error of 4e-5) until its 400 ran out.  An
    iterate seen before, to CYCLE_DECIMALS and in the same state, is such a cycle (not bit for
    bit: a non-diagonal Q passes through an eigendecomposition, which rounds the last bits
    differently on each visit; committee_sign at alpha = 3, fast, alternated between two
    iterates, steps 1.3e-4 against standard errors of 5e-4 to 1.4e-3, for 400 evaluations)."""
    if key in visited:
        return np.max(np.abs(np.array(steps[visited[key]:])), axis=0)
    visited[key] = len(steps)
    steps.append(np.asarray(step, dtype=float).copy())
    return None


# An iteration that has not converged after this many evaluations, whose iterates over as many
# stayed within STALLED_SPREAD standard errors of the map per component, has stalled at the
# map's resolution (stalled_fixed_point)
STALLED_EVALUATIONS = 40
STALLED_SPREAD = 4.0


def stalled_fixed_point(history: list, standard_error: np.ndarray,
                        components: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(iterate, step) to report when the iteration has stalled, or None.

    ``history``: (iterate, step) of the evaluations so far in one state of the iteration.  The
    statistical stopping rule asks for every step within a tenth of the map's standard error;
    where the map is nearly neutral in some direction its noise keeps the accelerated steps
    near one standard error, and the iteration wanders without drifting (committee_sign, alpha
    = 2, fast, seed 1: Q = q 11^T with q = 0.1910, steps of 2e-4 to 6e-4 against standard errors
    of 3e-4 to 8e-4, for all 400 evaluations; seed 0 converged after 5).  Stalled: the last
    STALLED_EVALUATIONS iterates lie within STALLED_SPREAD standard errors of each other on the
    tested components.  Reported: the iterate with the smallest largest scaled step, and as its
    step the larger of that step and half the iterates' range, which the caller adds to the
    half-width (the fixed point of the sampled map lies among the iterates, not just one step
    away).  A drift (a slowly growing overlap near a threshold) leaves the range and never
    stalls."""
    if len(history) < STALLED_EVALUATIONS or not np.any(components):
        return None
    xs = np.array([h[0] for h in history[-STALLED_EVALUATIONS:]])
    fs = np.array([h[1] for h in history[-STALLED_EVALUATIONS:]])
    spread = xs.max(0) - xs.min(0)
    if np.any(spread[components] > STALLED_SPREAD * standard_error[components]):
        return None
    scaled = np.max(np.abs(fs[:, components]) / np.maximum(standard_error[components], 1e-300), axis=1)
    best = int(np.argmin(scaled))
    return xs[best], np.where(components, np.maximum(np.abs(fs[best]), spread / 2), fs[best])


# ---------------------------------------------------------------------------------------
# Stopping rules
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StoppingRule:
    """When the iteration has converged, on a set of components.

    Strict: the scaled residual max |G(x) - x|, relative to 1 - q when ``relative_near_one``
    (sign-symmetric channels, whose overlaps converge to Q_0 geometrically), is at most ``tol``.
    Statistical (``statistical_tolerance`` not None): every |G(x) - x| is at most that fraction
    of the map's Monte-Carlo standard error: iterating further would refine Q far below its
    statistical uncertainty (near q = 1 the relative residual cannot fall below the inner
    quadrature's noise)."""

    tol: float
    statistical_tolerance: float | None
    relative_near_one: bool

    def residual(self, x: np.ndarray, step: np.ndarray) -> float:
        if self.relative_near_one:
            return float(np.max(np.abs(step) / np.clip(1.0 - x, 1e-12, 1.0)))
        return float(np.max(np.abs(step)))

    def within_statistical_error(self, step: np.ndarray, standard_error: np.ndarray, components: np.ndarray) -> bool:
        return self.statistical_tolerance is not None and bool(
            np.all(np.abs(step[components]) <= self.statistical_tolerance * standard_error[components]))

    def converged(self, x: np.ndarray, step: np.ndarray, standard_error: np.ndarray,
                  components: np.ndarray) -> tuple[float, bool]:
        """(residual on the components, whether either rule holds there); residual 0 on none."""
        res = self.residual(x[components], step[components]) if np.any(components) else 0.0
        return res, res <= self.tol or self.within_statistical_error(step, standard_error, components)


def perfect_recovery_verdict(x: np.ndarray, mapped: np.ndarray, step: np.ndarray, near_one: np.ndarray,
                             marginal: bool) -> tuple[np.ndarray, np.ndarray, bool]:
    """Settle the components within NEAR_ONE of q = 1: (x, step, settled).

    Collatz-Wielandt: the map of v = 1 - q near Q_0 (monotone, 1-homogeneous) has spectral
    radius <= max_l v'_l / v_l; below 1, Q_0 attracts and these components go there.
    Otherwise, if ``marginal`` (their step is within the statistical error: alpha_PR itself),
    the fixed point lies between here and Q_0, so the step reported is the distance left."""
    if np.max((1.0 - mapped[near_one]) / (1.0 - x[near_one])) < 1.0:
        return np.where(near_one, Q_MAX, x), step, True
    if marginal:
        return x, np.where(near_one, 1.0 - x, step), True
    return x, step, False


# ---------------------------------------------------------------------------------------
# Accelerators
# ---------------------------------------------------------------------------------------
def aitken_extrapolation(mapped: np.ndarray, step: np.ndarray, previous_step: np.ndarray, mask: np.ndarray,
                         clip_to_overlaps: bool) -> tuple[np.ndarray, float]:
    """Aitken's jump x + s f / (1 - s), s = f / f_prev, for components whose last two steps
    shrink with ratio s in (0, 0.98); returns (next point, largest such s, 0 if none).

    Bounded: at most 20 plain steps, and never onto 0 or Q_0 in one go, where exact (possibly
    unstable) fixed points would capture the iteration for good.  Components moving away from
    a fixed point are never extrapolated, so no unstable one (Q = 0 above threshold) attracts."""
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.where(np.abs(previous_step) > 0, step / previous_step, 0.0)
    ok = (s > 0) & (s < 0.98) & mask
    jump = np.clip(s * step / (1.0 - s), -20 * np.abs(step), 20 * np.abs(step))
    target = np.clip(mapped + jump, 1e-3 * mapped, 1.0 - 1e-3 * (1.0 - mapped))
    x_new = np.where(ok, target, mapped)
    if clip_to_overlaps:
        x_new = np.clip(x_new, 0.0, Q_MAX)
    return x_new, float(np.max(np.where(ok, s, 0.0)))


class AitkenExtrapolation:
    """Plain steps, with an Aitken jump (:func:`aitken_extrapolation`) at every evaluation count
    divisible by 3 that follows a remembered plain step; ``reset`` after any other jump."""

    def __init__(self, clip_to_overlaps: bool):
        self.clip_to_overlaps = clip_to_overlaps
        self.previous_step: np.ndarray | None = None

    def reset(self) -> None:
        self.previous_step = None

    def next_point(self, mapped: np.ndarray, step: np.ndarray, mask: np.ndarray,
                   evaluations: int) -> tuple[np.ndarray, float | None]:
        """(next point, contraction ratio of the jump or None for a plain step)."""
        if self.previous_step is not None and evaluations % 3 == 0:
            x_new, ratio = aitken_extrapolation(mapped, step, self.previous_step, mask, self.clip_to_overlaps)
            self.previous_step = None
            return x_new, ratio
        self.previous_step = step
        return mapped, None


def newton_coordinates(q: np.ndarray, logit: bool) -> np.ndarray:
    """Coordinates of the Newton steps: logit q = log q - log(1 - q) for the diagonal overlaps
    of sign-symmetric channels, q itself otherwise.  Near Q = 0 and Q = Q_0 the SE map of
    such channels is linear in q (in 1 - q), so in logit coordinates a steady geometric move
    is a constant step, and Newton's step estimates where it ends (from the curvature) instead
    of being pulled onto the (possibly unstable) end point 0 or Q_0 itself."""
    if not logit:
        return np.asarray(q, dtype=float).copy()
    q = np.clip(q, 1e-300, Q_MAX)
    return np.log(q) - np.log1p(-q)


def bounded_newton_target(q: np.ndarray, target: np.ndarray, logit: bool) -> np.ndarray:
    """The overlaps at a Newton target, the move bounded: at most NEWTON_LOGIT_STEP in logit
    q; in plain coordinates never more than halving |q| or 1 - |q| (an off-diagonal overlap
    may be negative: mirrored).  Before solver 0.5.6 a negative entry was clipped to at least
    q / 2, so every Newton step halved it however close it sat to its fixed point, and plain
    steps took it back: y = z1 z2 + noise 0.1 as a formula at alpha = 1.5 cycled between
    Q_12 = -0.0059 and -0.0029 until the 400 evaluations ran out."""
    if logit:
        u = newton_coordinates(q, True)
        u = np.clip(target, u - NEWTON_LOGIT_STEP, u + NEWTON_LOGIT_STEP)
        return np.minimum(1.0 / (1.0 + np.exp(-u)), Q_MAX)
    sign = np.where(q < 0, -1.0, 1.0)
    return sign * np.clip(sign * target, 0.5 * np.abs(q), np.minimum(1.0 - 0.5 * (1.0 - np.abs(q)), Q_MAX))


def newton_target(x: np.ndarray, step_u: np.ndarray, J: np.ndarray, active: np.ndarray, logit: bool) -> np.ndarray:
    """u + (I - J)^{-1} (Phi(u) - u) on the active components, in Newton's coordinates u
    (``step_u`` = Phi(u) - u, J the Jacobian of Phi there), the move bounded
    (:func:`bounded_newton_target`); the other components unchanged."""
    u = newton_coordinates(x[active], logit)
    target = u + np.linalg.solve(np.eye(active.size) - J, step_u[active])
    out = x.copy()
    out[active] = bounded_newton_target(x[active], target, logit)
    return out


def finite_difference_jacobian(se_map: SEMap, x: np.ndarray, x_u: np.ndarray, mapped_u: np.ndarray,
                               active: np.ndarray, logit: bool) -> np.ndarray:
    """Jacobian of the map in Newton's coordinates on the active components, one forward
    difference (:func:`difference_step`) per component: ``active.size`` evaluations."""
    J = np.empty((active.size, active.size))
    for k, j in enumerate(active):
        y = x.copy()
        y[j] += difference_step(x[j])
        y_u = newton_coordinates(y, logit)
        J[:, k] = (newton_coordinates(se_map(y), logit)[active] - mapped_u[active]) / (y_u[j] - x_u[j])
    return J


def contracting(J: np.ndarray) -> bool:
    """Spectral radius of the map's Jacobian below 1: the nearby fixed point attracts."""
    return bool(np.max(np.abs(np.linalg.eigvals(J))) < 0.999)


class NewtonAccelerator:
    """Newton, then Broyden-updated, steps in Newton's coordinates (:func:`newton_coordinates`)
    when the contraction is slow (critical slowing down near a transition), only while the
    map's Jacobian has spectral radius below 1: towards the attracting fixed point the
    iteration was heading for.

    State: the last step in Newton's coordinates (for :meth:`slow_components`; None after a
    jump) and, after a Newton step, (J, its active components, the residual norm, u and Phi(u)
    on them) for Broyden's update (None when the quasi-Newton steps stopped)."""

    def __init__(self, logit: bool):
        self.logit = logit
        self.previous_step_u: np.ndarray | None = None
        self.jacobian: tuple | None = None

    def coordinates(self, q: np.ndarray) -> np.ndarray:
        return newton_coordinates(q, self.logit)

    def forget_step(self) -> None:
        self.previous_step_u = None

    def slow_components(self, step_u: np.ndarray, eligible: np.ndarray) -> np.ndarray:
        """Eligible components whose step kept its sign and shrank by less than half; the step
        is remembered for the next call."""
        previous, self.previous_step_u = self.previous_step_u, step_u
        if previous is None:
            return np.zeros(step_u.shape, dtype=bool)
        return (np.abs(step_u) >= 0.5 * np.abs(previous)) & (step_u * previous > 0) & eligible

    def _take(self, J, active, x, x_u, mapped_u, step_u) -> np.ndarray:
        self.jacobian = (J, active, np.linalg.norm(step_u[active]), x_u[active], mapped_u[active])
        return newton_target(x, step_u, J, active, self.logit)

    def broyden_step(self, x: np.ndarray, x_u: np.ndarray, mapped_u: np.ndarray, step_u: np.ndarray,
                     active: np.ndarray) -> np.ndarray | None:
        """After a Newton step, on the same active components and while the residual norm at
        least halves per step: the next point with Broyden's rank-one update of the Jacobian
        from the last move, if it still contracts.  Otherwise None (and the quasi-Newton steps
        stop)."""
        if self.jacobian is not None:
            J, was_active, last, x_last, g_last = self.jacobian
            if np.array_equal(active, was_active) and np.linalg.norm(step_u[active]) < 0.5 * last:
                J = broyden_update(J, x_u[active] - x_last, mapped_u[active] - g_last)
                if contracting(J):
                    return self._take(J, active, x, x_u, mapped_u, step_u)
        self.jacobian = None
        return None

    def newton_step(self, se_map: SEMap, x: np.ndarray, x_u: np.ndarray, mapped_u: np.ndarray,
                    step_u: np.ndarray, active: np.ndarray) -> np.ndarray | None:
        """The Newton point from a finite-difference Jacobian if the map contracts there, else None."""
        J = finite_difference_jacobian(se_map, x, x_u, mapped_u, active, self.logit)
        if not contracting(J):
            return None
        self.forget_step()
        return self._take(J, active, x, x_u, mapped_u, step_u)


def broyden_update(J: np.ndarray, dx: np.ndarray, dg: np.ndarray) -> np.ndarray:
    """Broyden's rank-one update: the matrix nearest J (Frobenius norm) that maps the last move
    dx to the change it made, dg (J' dx = dg).  J itself when dx = 0."""
    dd = float(dx @ dx)
    return J if dd == 0.0 else J + np.outer(dg - J @ dx, dx) / dd


def count_steady(count: np.ndarray, ratio: np.ndarray, eligible: np.ndarray, margin: float = 0.02) -> np.ndarray:
    """Consecutive-step counter of a steady geometric move: +1 where ratio > 1 + margin,
    reset where ratio < 1 - margin or not eligible, unchanged in between."""
    return np.where(eligible & (ratio > 1.0 + margin), count + 1,
                    np.where(eligible & (ratio >= 1.0 - margin), count, 0))


class SteadyMoves:
    """Counters of steady geometric moves, per component: a small overlap growing (a layer
    just above its threshold leaving Q ~ 0: plain iteration needs tens of steps), and 1 - q
    growing or shrinking near q = 1 (leaving or approaching Q_0).  Counted on the ratios q'/q
    and (1 - q')/(1 - q): a step that barely moves (an extrapolation's overshoot, a
    neighbour's pull) neither counts nor resets; 1 - q below 1e-8 is at the precision of the
    map, no trustworthy ratio there.  An approach counts at any steady rate (at alpha_PR
    itself it is algebraic, v' = v (1 - c v))."""

    def __init__(self, size: int):
        self.growing = np.zeros(size, dtype=int)
        self.leaving_one = np.zeros(size, dtype=int)
        self.approaching_one = np.zeros(size, dtype=int)
        self.down_ratio = np.ones(size)  # (1 - q') / (1 - q) at the last observation

    def observe(self, x: np.ndarray, mapped: np.ndarray, mask: np.ndarray) -> None:
        with np.errstate(divide="ignore", invalid="ignore"):
            up_ratio = np.where(x > 0, mapped / x, 1.0)
            self.down_ratio = (1.0 - mapped) / (1.0 - x)
            self.growing = count_steady(self.growing, up_ratio, mask & (x < LEAVING_ZERO))
            near_ray = mask & (1.0 - x < LEAVING_ZERO) & (1.0 - x > 1e-8)
            self.leaving_one = count_steady(self.leaving_one, self.down_ratio, near_ray)
            self.approaching_one = count_steady(self.approaching_one, 1.0 / self.down_ratio,
                                                near_ray & (1.0 - x > NEAR_ONE), 1e-3)

    def growing_steadily(self) -> np.ndarray:
        return self.growing >= STEADY_STEPS

    def reset_growing(self) -> None:
        self.growing[:] = 0

    def reset_near_one(self) -> None:
        self.leaving_one[:] = 0
        self.approaching_one[:] = 0


class RayJumps:
    """Jumps along v = 1 - q near Q_0 (sign-symmetric channels), where the map of v is linear,
    v' = A v, and the iterates move along A's Perron vector, whose components move together
    (coordinate-wise jumps stall on the coupling).  A jump goes along the current v, many
    steps of that steady move at once: leaving perfect recovery (just below alpha_PR) to the
    end of the linear regime (largest v = LEAVING_ZERO); approaching it to below NEAR_ONE,
    where the contraction of v decides (if Q_0 repels after all, the iterates leave again).
    At most ``jumps`` of each kind: a fixed point v* inside the linear regime is then reached
    by plain iteration, from whichever side the last jump left it."""

    def __init__(self, jumps: int = 2):
        self.leaves_left = jumps
        self.approaches_left = jumps

    def jump(self, x: np.ndarray, mapped: np.ndarray, mask: np.ndarray, moves: SteadyMoves) -> np.ndarray | None:
        """The point after a jump, or None.  Only with every active component in the linear
        regime; approaching only while no component moves away from 1 (even one whose 1 - q
        is too small for a trustworthy ratio: the iterates are not yet on the ray)."""
        linear = not np.any(mask & (1.0 - x >= LEAVING_ZERO))
        leave = linear and np.any(moves.leaving_one >= STEADY_STEPS) and self.leaves_left > 0
        approach = (linear and np.any(moves.approaching_one >= STEADY_STEPS) and self.approaches_left > 0
                    and not np.any(mask & (moves.down_ratio > 1.0)))
        if not (leave or approach):
            return None
        ray = mask & (1.0 - mapped < LEAVING_ZERO) & (1.0 - mapped > 1e-8)
        if not np.any(ray):  # every component already within 1e-8 of 1: no ray to jump along
            return None
        v = 1.0 - mapped
        if leave:
            end = LEAVING_ZERO
            self.leaves_left -= 1
        else:
            end = 0.5 * NEAR_ONE
            self.approaches_left -= 1
        return np.where(ray, 1.0 - v * (end / np.max(v[ray])), mapped)


def coordinate_root(se_map: SEMap, l: int, x: np.ndarray, direction: int = 1) -> float:
    """The root of G_l(q, x_-l) = q next to x_l, upward (direction 1) or downward (-1), the
    other components held: a scan in logit(q), then brentq.  For a monotone map started below
    its least fixed point x*, G_l(x*_l, x_-l) <= x*_l, so the upward root cannot pass x*_l (and
    symmetrically from above): the jump is safe."""
    memo = {}

    def phi(q):
        if q not in memo:
            y = x.copy()
            y[l] = q
            memo[q] = direction * (se_map(y)[l] - q)
        return memo[q]

    near = min(max(x[l], SMALL_OVERLAP * 1e-3), 1.0 - SMALL_OVERLAP * 1e-3)
    t = math.log(near / (1.0 - near))
    while True:
        t += 1.5 * direction
        far = min(1.0 / (1.0 + math.exp(-t)), Q_MAX)
        if phi(far) <= 0.0:
            break
        if far >= Q_MAX or far <= 1e-12:
            return far
        near = far
    if phi(near) <= 0.0:  # the seed itself is (numerically) at the root
        return near
    lo, hi = min(near, far), max(near, far)
    return optimize.brentq(phi, lo, hi, xtol=1e-4 * min(lo, 1.0 - hi))


# ---------------------------------------------------------------------------------------
# The driver
# ---------------------------------------------------------------------------------------
def iterate_fixed_point(channel: Channel, alpha: float, Q_start: np.ndarray, normals: np.ndarray,
                        resolution: int = 1, tol: float = 1e-6, max_iterations: int = 400,
                        frozen: np.ndarray | None = None,
                        statistical_tolerance: float | None = None,
                        decision_normals: np.ndarray | None = None, seed: int | None = None) -> FixedPointIteration:
    """Iterate the SE map to a fixed point, accelerated without being pulled onto unstable ones.

    Each step evaluates the map once and then takes the first that applies of: a Broyden
    step (after a Newton step, :class:`NewtonAccelerator`); a Newton step where the
    contraction is slow and the map contracts; a jump along 1 - q near Q_0
    (:class:`RayJumps`); a jump of a steadily growing small component to the least root of
    its own map (:func:`coordinate_root`; by monotonicity of the map this cannot pass the
    fixed point); the plain step, with an Aitken jump every third evaluation
    (:class:`AitkenExtrapolation`).  ``iterations`` counts every evaluation of the map, the
    accelerators' included.

    Convergence (:class:`StoppingRule`, ``tol`` and ``statistical_tolerance``) is tested on
    the components above SMALL_OVERLAP and not within NEAR_ONE of 1.  The last step is
    returned, so that the caller can add it to the uncertainty.  For sign-symmetric channels,
    then:
    - the components within NEAR_ONE of 1 are settled by :func:`perfect_recovery_verdict`
      (marginal when their step is within the statistical error); otherwise the iteration
      goes on;
    - a component at or below SMALL_OVERLAP (the uninformed start included) is set to exactly
      0 if its linear rate there, alpha E||Cov[z_l | y, omega] - I||^2, is below 1, and grown
      to its least positive root otherwise (iterating on from there; just above a threshold
      that root may be below SMALL_OVERLAP, so a grown layer counts as small only below
      GROWN_SMALL_OVERLAP); one that falls back after being grown is held at 0 (its rate exceeded 1 only within the
      Monte-Carlo error).  So a layer near its staircase threshold, which first decays while
      the others are learned and grows only afterwards, is never reported as converged at a
      tiny value, nor left at its start when the map's step there is below the statistical error.
    ``frozen``: mask of order parameters held at their start value (the staircase keeps
    not-yet-learned layers at exactly 0).  ``decision_normals``: more outer points (the same
    scrambles), on which a small layer's linear rate is estimated again when it is within its
    95% half-width of 1 (a sequential test: SE's own points cannot tell 0.95 from 1.05); if
    only they see it grow, the iteration goes on on them (``normals`` of the result says which).
    ``seed``: the outer seed of both sets of normals, which picks each scramble's inner bank
    (:func:`~solvers.statistics.output_statistics`; None: one bank for all scrambles)."""
    x = order_vector(channel, channel.known_overlaps(Q_start))
    mask = np.ones_like(x, dtype=bool) if frozen is None else ~frozen
    mask &= ~order_vector(channel, known_mask(channel))  # known rows stay at Q_0, never learned
    capped = mask & diagonal_entries(channel)  # where resolved_overlaps applies (start and every move)
    grown = np.zeros(x.shape, dtype=bool)  # grown from 0 to the least root of their own map
    fallen = np.zeros(x.shape, dtype=bool)  # grown and fallen back to 0: settled there
    symmetric = channel.sign_symmetric
    se_map = SEMap(channel, alpha, normals, resolution, mask, seed)
    stopping = StoppingRule(tol, statistical_tolerance, relative_near_one=symmetric)
    aitken = AitkenExtrapolation(clip_to_overlaps=symmetric)
    newton = NewtonAccelerator(logit=symmetric)
    moves = SteadyMoves(x.size)
    rays = RayJumps()
    none = np.zeros(x.shape, dtype=bool)
    res = np.inf
    converged = False
    contraction = np.nan
    visited: dict = {}  # iterate (and the iteration's state) -> index in steps: finds a cycle
    steps: list = []
    history: list = []  # (iterate, step) since the iteration's state last changed: finds a stall
    state = None
    while se_map.evaluations < max_iterations:
        x = np.where(capped, resolved_overlaps(channel, x), x)
        gx = se_map(x)
        f = gx - x
        key = (np.round(x, CYCLE_DECIMALS).tobytes(), grown.tobytes(), fallen.tobytes(), id(se_map))
        cycle = deterministic_cycle(visited, steps, key, f)
        xu, gu = newton.coordinates(x), newton.coordinates(gx)
        fu = gu - xu
        # sign-symmetric channels: q_l = 0 is an exact fixed point of each layer, whose
        # stability is decided at the end by its linear rate, not by a residual near 0;
        # likewise Q_0 (perfect recovery, noiseless channels) near q = 1
        # the uninformed start included; a layer grown to its own map's root (which just above a
        # threshold may sit below SMALL_OVERLAP) is small again only far below it
        small = mask & (x <= np.where(grown, GROWN_SMALL_OVERLAP, SMALL_OVERLAP)) if symmetric else none
        near_one = mask & (1.0 - x < NEAR_ONE) & (x < Q_MAX) if symmetric else none
        components = ~small & ~near_one  # where convergence is tested
        res, done = stopping.converged(x, f, se_map.standard_error, components)
        if cycle is not None and not done and np.all(cycle[components] <= se_map.standard_error[components]):
            # no step gets closer than the map's jumps, which are within its Monte-Carlo error:
            # converged, the fixed point within the cycle's amplitude, reported as the last step
            # (the caller adds it to the half-width).  A wider cycle iterates on as before.
            f, done = cycle, True
            res = stopping.converged(x, cycle, se_map.standard_error, components)[0]
        if state != key[1:]:
            history, state = [], key[1:]
        history.append((x.copy(), f.copy()))
        stalled = None if done else stalled_fixed_point(history, se_map.standard_error, components)
        if stalled is not None:
            x, f = stalled
            gx, done = x + f, True
            res = stopping.converged(x, f, se_map.standard_error, components)[0]
        if done and np.any(near_one):
            x, f, settled = perfect_recovery_verdict(
                x, gx, f, near_one, stopping.within_statistical_error(f, se_map.standard_error, near_one))
            if settled:
                near_one = none
        if done and not np.any(near_one):
            if not np.any(small):
                converged = True
                break
            x0 = np.where(small, 0.0, x)
            at_zero = se_map.output_statistics(x0)
            rate = alpha * at_zero.cov_deviation.mean(0)
            refined = none
            if decision_normals is not None:
                marginal = small & (np.abs(rate - 1.0) <= alpha * t_halfwidth(at_zero.cov_deviation))
                if np.any(marginal):
                    finer = output_statistics(channel, overlap_matrix(channel, x0), decision_normals, resolution,
                                              seed=seed)
                    rate = np.where(marginal, alpha * finer.cov_deviation.mean(0), rate)
                    refined = marginal
            unstable = small & (rate > 1.0) & ~fallen
            if np.any(unstable & refined):
                # only the finer points see this layer grow: iterate on them from here, or the
                # coarse map (whose own slope may be below 1) would take it straight back to 0
                se_map, decision_normals = se_map.on(decision_normals), None
            if not np.any(unstable):
                x, f = x0, np.where(small, 0.0, f)
                se_map.remember(x0, at_zero)
                converged = True
                break
            # the fastest-growing layer leaves 0: to the least root of its own map
            l = int(np.argmax(np.where(unstable, rate, -np.inf)))
            x = np.where(small & ~unstable, 0.0, x)
            if grown[l] and decision_normals is not None:
                # fallen back on SE's own points, whose map's slope at 0 is below its rate's
                # estimate (c = 50, layer 2 at 1.05x: rate 1.09, slope 0.96): grow it once more
                # on the finer points, and iterate on them from here
                se_map, decision_normals = se_map.on(decision_normals), None
                grown[l] = False
                x[l] = 0.0
                continue
            if grown[l]:
                # grown once already and fallen back: its rate at 0 is above 1 only within the
                # Monte-Carlo error (its map has no fixed point above 0), so it stays at 0
                fallen[l] = True
                x[l] = 0.0
                continue
            grown[l] = True
            x[l] = 0.0  # its rate at 0 is above 1: the least root lies above 0, maybe below the start
            x[l] = coordinate_root(se_map, l, x)
            moves.reset_growing()
            newton.forget_step()
            aitken.reset()
            continue
        moves.observe(x, gx, mask)
        # slow contraction, measured in Newton's coordinates (not near q = 1, where the map
        # of 1 - q is linear: Aitken's bounded jumps, or the ray jumps, do better there)
        slow = newton.slow_components(fu, mask & ~small & (1.0 - x > LEAVING_ZERO))
        active = np.flatnonzero(mask & ~small)
        x_next = newton.broyden_step(x, xu, gu, fu, active)
        if x_next is None and np.any(slow) and not np.any(moves.growing_steadily()) and not np.any(
                moves.leaving_one >= STEADY_STEPS):
            x_next = newton.newton_step(se_map, x, xu, gu, fu, active)
            if x_next is not None:
                aitken.reset()
        if x_next is not None:
            x = x_next
            continue
        x_next = rays.jump(x, gx, mask, moves) if symmetric else None
        if x_next is not None:
            x = x_next
            moves.reset_near_one()
            newton.forget_step()
            aitken.reset()
            continue
        if symmetric and np.any(moves.growing_steadily()):
            # a slowly growing small component: jump to the least root of its own map
            with np.errstate(divide="ignore"):
                l = int(np.argmax(np.where(moves.growing_steadily(), f / x, -np.inf)))
            x = gx.copy()
            x[l] = coordinate_root(se_map, l, gx, 1)
            moves.reset_growing()
            newton.forget_step()
            aitken.reset()
            continue
        x, ratio = aitken.next_point(gx, f, mask, se_map.evaluations)
        if ratio is not None:
            contraction = ratio
    return FixedPointIteration(overlap_matrix(channel, x), converged, se_map.evaluations, res, contraction, f,
                               se_map.statistics_at(x), se_map.normals)
