"""Bayes-optimal state evolution of AMP for sequence multi-index models (THEORY.md section 3).

One SE step, for the overlap Q (P x P), Q_0 = I (Gaussian prior):
    omega_m = Q^{1/2} xi_m,  Z = omega + V^{1/2} U,  V = Q_0 - Q,  y ~ P_out(. | Z)
    g_m = V^{-1} (E[z_m | y, omega, V] - omega_m)
    Qhat = alpha H(Q),  H(Q) = E sum_m g_m g_m^T  (tokens summed: the weights are tied)
    Q <- Qhat (I + Qhat)^{-1}.
Outer expectations use randomised QMC (common random numbers across Q, so the map is
smooth in Q).  H is estimated by the direct form combined with its Nishimori form
E sum_m V^{-1} (V - Cov_mm) V^{-1} as a control variate (see
:func:`solvers.statistics.control_variate_combination`).
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass

import numpy as np
from scipy import optimize

from .channels.base import Channel
from .errors import SpecError
from .precision import SCRAMBLES, SE_POINTS, check_precision
from .quadrature import t_halfwidth
from .results import FixedPoint, Settings, StateEvolutionPoint, StateEvolutionResult
from .statistics import (OutputStatistics, bayes_prediction_error, free_entropy, outer_normals, output_statistics,
                         overlap_update)
from .version import __version__

Q_MAX = 1.0 - 1e-10  # overlaps are capped here: beyond, recovery is perfect to machine precision
UNINFORMED_START = 1e-3
LEAVING_ZERO = 1e-2  # a slowly growing layer below this jumps to the least root of its own map
NEAR_ONE = 1e-6  # 1 - q below this: perfect recovery decided by the contraction of 1 - q
SMALL_OVERLAP = 1e-3  # below, a layer's fate (0 or growth) is decided by its linear rate at q = 0
INFORMED_START = 1.0 - 1e-4


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


def _to_vector(channel, Q):
    if channel.sign_symmetric:
        return np.diag(Q).copy()
    return Q[np.triu_indices(Q.shape[0])].copy()


def _to_matrix_unclipped(P, x):
    Q = np.zeros((P, P))
    Q[np.triu_indices(P)] = x
    return Q + Q.T - np.diag(np.diag(Q))


def _to_matrix(channel, x):
    P = channel.n_indices
    if channel.sign_symmetric:
        return np.diag(np.clip(x, 0.0, Q_MAX))
    w, U = np.linalg.eigh(_to_matrix_unclipped(P, x))
    return (U * np.clip(w, 0.0, Q_MAX)) @ U.T


def _scaled_residual(x, f, channel):
    """max |map(Q) - Q|, relative to 1 - q near q = 1 (where overlaps converge to Q_0 geometrically)."""
    if channel.sign_symmetric:
        return float(np.max(np.abs(f) / np.clip(1.0 - x, 1e-12, 1.0)))
    return float(np.max(np.abs(f)))


def _difference_step(q: float) -> float:
    """Finite-difference step for the SE map in an overlap q: relative to 1 - q (and inwards)
    near q = 1, where a fixed step would leave [0, Q_MAX] and 1 - q contracts by a finite ratio."""
    return -1e-2 * (1.0 - q) if q > 0.5 else 1e-4


NEWTON_LOGIT_STEP = 3.0  # largest Newton move in logit q: a factor e^3 ~ 20 in q or in 1 - q


def _to_newton_coordinates(q: np.ndarray, logit: bool) -> np.ndarray:
    """Coordinates of the Newton steps: logit q = log q - log(1 - q) for the diagonal overlaps
    of sign-symmetric channels, q itself otherwise.  Near Q = 0 and Q = Q_0 the SE map of
    such channels is linear in q (in 1 - q), so in logit coordinates a steady geometric move
    is a constant step, and Newton's step estimates where it ends (from the curvature) instead
    of being pulled onto the (possibly unstable) end point 0 or Q_0 itself."""
    if not logit:
        return np.asarray(q, dtype=float).copy()
    q = np.clip(q, 1e-300, Q_MAX)
    return np.log(q) - np.log1p(-q)


def _bounded_newton_target(q: np.ndarray, target: np.ndarray, logit: bool) -> np.ndarray:
    """The overlaps at a Newton target, the move bounded: at most NEWTON_LOGIT_STEP in logit
    q; in plain coordinates never more than halving q or 1 - q."""
    if logit:
        u = _to_newton_coordinates(q, True)
        u = np.clip(target, u - NEWTON_LOGIT_STEP, u + NEWTON_LOGIT_STEP)
        return np.minimum(1.0 / (1.0 + np.exp(-u)), Q_MAX)
    return np.clip(target, 0.5 * q, np.minimum(1.0 - 0.5 * (1.0 - q), Q_MAX))


def _count_steady(count: np.ndarray, ratio: np.ndarray, eligible: np.ndarray, margin: float = 0.02) -> np.ndarray:
    """Consecutive-step counter of a steady geometric move: +1 where ratio > 1 + margin,
    reset where ratio < 1 - margin or not eligible, unchanged in between."""
    return np.where(eligible & (ratio > 1.0 + margin), count + 1,
                    np.where(eligible & (ratio >= 1.0 - margin), count, 0))


def _contracting(J: np.ndarray) -> bool:
    """Spectral radius of the map's Jacobian below 1: the nearby fixed point attracts."""
    return bool(np.max(np.abs(np.linalg.eigvals(J))) < 0.999)


def iterate_fixed_point(channel: Channel, alpha: float, Q_start: np.ndarray, normals: np.ndarray,
                        resolution: int = 1, tol: float = 1e-6, max_iterations: int = 400,
                        frozen: np.ndarray | None = None,
                        statistical_tolerance: float | None = None) -> FixedPointIteration:
    """Iterate the SE map to a fixed point, accelerated without being pulled onto unstable ones.

    Accelerations (``iterations`` counts every evaluation of the map, theirs included):
    - Aitken: every third step, each component whose last two steps shrink with a stable
      ratio s in (0, 0.98) jumps to x + s f / (1 - s), bounded so that no jump lands on 0 or
      1.  Components moving away from a fixed point are never extrapolated, so the
      iteration is not pulled onto an unstable one (as plain Anderson or Newton would be,
      e.g. Q = 0 above threshold).
    - Newton, then Broyden-updated steps, when the contraction is slow (critical slowing
      down), in logit q for sign-symmetric channels (see _to_newton_coordinates), but only
      while the map's Jacobian has spectral radius below 1: towards the attracting fixed
      point the iteration was heading for.  Not in the linear regime near Q_0.
    - Near Q_0 (sign-symmetric channels, every 1 - q < LEAVING_ZERO) the map of v = 1 - q is
      linear and the iterates move along its Perron vector: a steady departure (just below
      alpha_PR) or approach jumps along the current v (see the loop).
    - A small component that keeps growing (a layer just above its threshold leaving
      Q ~ 0) jumps to the least root of its own map with the other components held; by
      monotonicity of the map this cannot pass the fixed point.

    Convergence: the scaled residual max |map(Q) - Q| / max(1 - q, 1e-12) < tol over the
    components above SMALL_OVERLAP (and not within NEAR_ONE of 1).  ``statistical_tolerance``:
    converged also when every such |map(Q) - Q| is below this fraction of the map's Monte-Carlo
    standard error (its spread over the scrambles / sqrt R): iterating further would refine Q
    far below its statistical uncertainty (and near q = 1 the relative residual cannot fall
    below the inner quadrature's noise).  The last step is returned, so that the caller can
    add it to the uncertainty.  For sign-symmetric channels, then:
    - a component within NEAR_ONE of 1 goes to Q_0 if 1 - q contracts there (Collatz-
      Wielandt), and is kept if its step is within the statistical tolerance (marginal, at
      alpha_PR itself); otherwise the iteration goes on;
    - a component below SMALL_OVERLAP is set to exactly 0 if its linear rate there,
      alpha E||Cov[z_l | y, omega] - I||^2, is below 1, and grown to its least positive root
      otherwise (iterating on from there).  So a layer just above its staircase threshold,
      which first decays while the others are learned and grows only afterwards, is never
      reported as converged at a tiny value.
    ``frozen``: mask of order parameters held at their start value (the staircase keeps
    not-yet-learned layers at exactly 0)."""
    x = _to_vector(channel, Q_start)
    mask = np.ones_like(x, dtype=bool) if frozen is None else ~frozen

    latest = {}  # the last evaluation: its point, statistics and the map's standard error

    def G(xv):
        Qm = _to_matrix(channel, xv)
        st = output_statistics(channel, Qm, normals, resolution, plugin=True)
        out = _to_vector(channel, overlap_update(alpha, st.H.mean(0)))
        out = np.where(mask, out, xv)
        per_scramble = np.array([_to_vector(channel, overlap_update(alpha, H)) for H in st.H])
        latest.update(x=xv.copy(), statistics=st, se=per_scramble.std(0, ddof=1) / math.sqrt(len(st.H)))
        return np.clip(out, 0.0, Q_MAX) if channel.sign_symmetric else out

    def within_statistical_error(step, components):
        """Every step on these components below statistical_tolerance x the map's standard error."""
        return statistical_tolerance is not None and bool(
            np.all(np.abs(step[components]) <= statistical_tolerance * latest["se"][components]))

    evaluations = [0]

    def G_counted(xv):
        evaluations[0] += 1
        return G(xv)

    def coordinate_root(l, xv, direction=1):
        """The root of G_l(q, x_-l) = q next to x_l, upward (direction 1) or downward (-1),
        the other components held: a scan in logit(q), then brentq.  For a monotone map
        started below its least fixed point x*, G_l(x*_l, x_-l) <= x*_l, so the upward root
        cannot pass x*_l (and symmetrically from above): the jump is safe."""
        memo = {}

        def phi(q):
            if q not in memo:
                y = xv.copy()
                y[l] = q
                memo[q] = direction * (G_counted(y)[l] - q)
            return memo[q]

        near = min(max(xv[l], SMALL_OVERLAP * 1e-3), 1.0 - SMALL_OVERLAP * 1e-3)
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

    logit = channel.sign_symmetric  # Newton's coordinates, see _to_newton_coordinates

    def newton_step(xv, fu, J, active):
        """u + (I - J)^{-1} (Phi(u) - u) on the active components, in Newton's coordinates
        u (logit q for sign-symmetric channels), the step bounded (see _bounded_newton_target)."""
        u = _to_newton_coordinates(xv[active], logit)
        target = u + np.linalg.solve(np.eye(active.size) - J, fu[active])
        out = xv.copy()
        out[active] = _bounded_newton_target(xv[active], target, logit)
        return out

    newton = None  # (Jacobian, its active components, residual norm, x and G(x) when it was used)
    f_prev = None
    fu_last = np.zeros_like(x)
    growing = np.zeros(x.shape, dtype=int)
    leaving_one = np.zeros(x.shape, dtype=int)
    approaching_one = np.zeros(x.shape, dtype=int)
    ray_jumps = [2, 2]  # jumps along v = 1 - q left: leaving Q_0, approaching it
    res = np.inf
    converged = False
    contraction = np.nan
    while evaluations[0] < max_iterations:
        gx = G_counted(x)
        f = gx - x
        xu, gu = _to_newton_coordinates(x, logit), _to_newton_coordinates(gx, logit)
        fu = gu - xu
        # sign-symmetric channels: q_l = 0 is an exact fixed point of each layer, whose
        # stability is decided at the end by its linear rate, not by a residual near 0
        none = np.zeros(x.shape, dtype=bool)
        small = mask & (x < SMALL_OVERLAP) if channel.sign_symmetric else none
        # likewise Q_0 (perfect recovery, noiseless channels) near q = 1
        near_one = mask & (1.0 - x < NEAR_ONE) & (x < Q_MAX) if channel.sign_symmetric else none
        settled = ~small & ~near_one
        res = _scaled_residual(x[settled], f[settled], channel) if np.any(settled) else 0.0
        done = res <= tol or within_statistical_error(f, settled)
        if done and np.any(near_one):
            if np.max((1.0 - gx[near_one]) / (1.0 - x[near_one])) < 1.0:
                # Collatz-Wielandt: the map of v = 1 - q near Q_0 (monotone, 1-homogeneous)
                # has spectral radius <= max_l v'_l / v_l < 1, so Q_0 attracts: go there
                x = np.where(near_one, Q_MAX, x)
                near_one = none
            elif within_statistical_error(f, near_one):
                # marginal (alpha_PR itself): still within the statistical error; the fixed
                # point lies between here and Q_0, so the step reported is the distance left
                f = np.where(near_one, 1.0 - x, f)
                near_one = none
        if done and not np.any(near_one):
            if not np.any(small):
                converged = True
                break
            x0 = np.where(small, 0.0, x)
            evaluations[0] += 1
            at_zero = output_statistics(channel, _to_matrix(channel, x0), normals, resolution, plugin=True)
            rate = alpha * at_zero.cov_deviation.mean(0)
            unstable = small & (rate > 1.0)
            if not np.any(unstable):
                x, f = x0, np.where(small, 0.0, f)
                latest.update(x=x0, statistics=at_zero)
                converged = True
                break
            l = int(np.argmax(np.where(unstable, rate, -np.inf)))
            x = np.where(small & ~unstable, 0.0, x)
            x[l] = coordinate_root(l, x)
            growing[:] = 0
            fu_last = np.zeros_like(x)
            f_prev = None
            continue
        # Steady geometric moves near q = 0 (a small component growing: near a threshold
        # plain iteration needs tens of steps to leave Q ~ 0) and near q = 1 (leaving or
        # approaching Q_0), counted on the ratios q'/q and (1 - q')/(1 - q): a step that
        # barely moves (an extrapolation's overshoot, a neighbour's pull) neither counts nor
        # resets.  1 - q below 1e-8 is at the precision of the map: no trustworthy ratio there.
        with np.errstate(divide="ignore", invalid="ignore"):
            up_ratio = np.where(x > 0, gx / x, 1.0)
            down_ratio = (1.0 - gx) / (1.0 - x)
            growing = _count_steady(growing, up_ratio, mask & (x < LEAVING_ZERO))
            near_ray = mask & (1.0 - x < LEAVING_ZERO) & (1.0 - x > 1e-8)
            leaving_one = _count_steady(leaving_one, down_ratio, near_ray)
            # (any steady approach: at alpha_PR itself it is algebraic, v' = v (1 - c v))
            approaching_one = _count_steady(approaching_one, 1.0 / down_ratio, near_ray & (1.0 - x > NEAR_ONE), 1e-3)
        # slow contraction, measured in Newton's coordinates (not near q = 1, where the map
        # of 1 - q is linear: Aitken's bounded jumps, or the jump below, do better there)
        slow = ((np.abs(fu) >= 0.5 * np.abs(fu_last)) & (fu * fu_last > 0) & mask & ~small
                & (1.0 - x > LEAVING_ZERO))
        fu_last = fu
        active = np.flatnonzero(mask & ~small)
        if newton is not None:
            J, was_active, last, x_last, g_last = newton
            if np.array_equal(active, was_active) and np.linalg.norm(fu[active]) < 0.5 * last:
                # quasi-Newton: Broyden's update of the Jacobian from the last step
                dx, dg = xu[active] - x_last, gu[active] - g_last
                if dx @ dx > 0:
                    J = J + np.outer(dg - J @ dx, dx) / (dx @ dx)
                if _contracting(J):
                    newton = (J, active, np.linalg.norm(fu[active]), xu[active], gu[active])
                    x = newton_step(x, fu, J, active)
                    continue
            newton = None
        if np.any(slow) and not np.any(growing >= 3) and not np.any(leaving_one >= 3):
            # slow contraction (near a transition: critical slowing down): a Newton step, but
            # only where the map is locally contracting (spectral radius of its Jacobian below
            # 1), so that it converges to the stable fixed point the iteration was heading for
            J = np.empty((active.size, active.size))
            for k, j in enumerate(active):
                y = x.copy()
                y[j] += _difference_step(x[j])
                yu = _to_newton_coordinates(y, logit)
                J[:, k] = (_to_newton_coordinates(G_counted(y), logit)[active] - gu[active]) / (yu[j] - xu[j])
            if _contracting(J):
                newton = (J, active, np.linalg.norm(fu[active]), xu[active], gu[active])
                x = newton_step(x, fu, J, active)
                f_prev = None
                fu_last = np.zeros_like(x)
                continue
        # Jumps along 1 - q only with every active component near Q_0, where the map of 1 - q
        # is linear; approaching only while no component moves away from 1 (even one whose
        # 1 - q is too small for a trustworthy ratio: the iterates are not yet on the ray).
        linear = not np.any(mask & (1.0 - x >= LEAVING_ZERO))
        leave = linear and np.any(leaving_one >= 3) and ray_jumps[0] > 0
        approach = (linear and np.any(approaching_one >= 3) and ray_jumps[1] > 0
                    and not np.any(mask & (down_ratio > 1.0)))
        if channel.sign_symmetric and (leave or approach):
            # near Q_0 the map of v = 1 - q is linear, v' = A v, and the iterates move along
            # A's Perron vector, whose components move together (coordinate-wise jumps stall
            # on the coupling).  Jump along the current v, many steps of that steady move at
            # once: leaving perfect recovery (just below alpha_PR) to the end of the linear
            # regime (largest v = LEAVING_ZERO); approaching it to below NEAR_ONE, where the
            # contraction of v decides (and, if Q_0 repels after all, the iterates leave again).
            # Two jumps of each kind at most: a fixed point v* inside the linear regime is then
            # reached by plain iteration, from whichever side the last jump left it.
            ray = mask & (1.0 - gx < LEAVING_ZERO) & (1.0 - gx > 1e-8)
            v = 1.0 - gx
            end = LEAVING_ZERO if leave else 0.5 * NEAR_ONE
            ray_jumps[0 if leave else 1] -= 1
            x = np.where(ray, 1.0 - v * (end / np.max(v[ray])), gx)
            leaving_one[:] = 0
            approaching_one[:] = 0
            fu_last = np.zeros_like(x)
            f_prev = None
            continue
        if channel.sign_symmetric and np.any(growing >= 3):
            # a slowly growing small component: jump to the least root of its own map
            with np.errstate(divide="ignore"):
                l = int(np.argmax(np.where(growing >= 3, f / x, -np.inf)))
            x = gx.copy()
            x[l] = coordinate_root(l, gx, 1)
            growing[:] = 0
            fu_last = np.zeros_like(x)
            f_prev = None
            continue
        x_new = gx
        if f_prev is not None and evaluations[0] % 3 == 0:
            with np.errstate(divide="ignore", invalid="ignore"):
                s = np.where(np.abs(f_prev) > 0, f / f_prev, 0.0)
            ok = (s > 0) & (s < 0.98) & mask
            # bounded jump: at most 20 plain steps, and never onto 0 or Q_0 in one go, where
            # exact (possibly unstable) fixed points would capture the iteration for good
            jump = np.clip(s * f / (1.0 - s), -20 * np.abs(f), 20 * np.abs(f))
            target = np.clip(gx + jump, 1e-3 * gx, 1.0 - 1e-3 * (1.0 - gx))
            x_new = np.where(ok, target, gx)
            if channel.sign_symmetric:
                x_new = np.clip(x_new, 0.0, Q_MAX)
            contraction = float(np.max(np.where(ok, s, 0.0)))
            f_prev = None
        else:
            f_prev = f
        x = x_new
    at_end = latest["statistics"] if np.array_equal(latest["x"], x) else None
    return FixedPointIteration(_to_matrix(channel, x), converged, evaluations[0], res, contraction, f, at_end)


def fixed_point_statistics(channel, alpha, Q, normals, resolution, statistics: OutputStatistics | None = None):
    """Statistics at a fixed point: free entropy, plug-in error, per-scramble map spread
    (``statistics``: the output statistics at Q, with the plug-in error, if already computed)."""
    st = statistics if statistics is not None else output_statistics(channel, Q, normals, resolution, plugin=True)
    H = st.H.mean(0)
    phi = free_entropy(alpha, Q, H, float(st.log_partition.mean()))
    per_scramble_q = np.array([np.diag(overlap_update(alpha, st.H[r])) for r in range(st.H.shape[0])])
    return st, phi, per_scramble_q


# SE fixed points stop when the map's step is below this fraction of its Monte-Carlo
# standard error; the step is then added to the reported half-width (a few % of it)
STATISTICAL_TOLERANCE = 0.1


def _fixed_point_result(channel, alpha, start, fp: FixedPointIteration, normals, resolution) -> FixedPoint:
    st, phi, q_r = fixed_point_statistics(channel, alpha, fp.Q, normals, resolution, fp.statistics)
    q = np.diag(fp.Q)
    # delta method: the per-scramble spread of the map at Q* (and its change at double
    # inner resolution) propagated to the fixed point through (I - J)^{-1}, J the map's
    # Jacobian in the diagonal overlaps, by finite differences on a subset of the points.
    # The full J matters near a transition, where the layers' slow mode is a coupled one.
    # The iteration's last step, propagated likewise, bounds the remaining iteration error.
    sub = normals[:4, : max(16, normals.shape[1] // 4)]

    def mapped(Q, res=resolution):
        return np.diag(overlap_update(alpha, output_statistics(channel, Q, sub, res).H.mean(0)))

    base = mapped(fp.Q)
    P = len(q)
    J = np.zeros((P, P))
    for j in range(P):
        step = _difference_step(q[j])
        Qd = fp.Q.copy()
        Qd[j, j] += step
        Qd = _to_matrix(channel, _to_vector(channel, Qd))
        moved = Qd[j, j] - q[j]
        if moved != 0:
            J[:, j] = (mapped(Qd) - base) / moved
    radius = np.max(np.abs(np.linalg.eigvals(J)))
    if radius > 0.95:  # at most a 20x amplification, as at a transition the linearisation fails
        J *= 0.95 / radius
    amplify = np.linalg.inv(np.eye(P) - J)
    quadrature = np.abs(amplify @ (mapped(fp.Q, 2 * resolution) - base))
    last_step = fp.step if channel.sign_symmetric else np.diag(_to_matrix_unclipped(P, fp.step))
    ci = t_halfwidth(q_r @ amplify.T) + quadrature + np.abs(amplify @ last_step)
    bayes = bayes_prediction_error(channel, fp.Q, normals[:, : max(8, normals.shape[1] // 4)])
    return FixedPoint(alpha=float(alpha), start=start, overlap=tuple(map(tuple, fp.Q.tolist())),
                      layer_overlaps=tuple(q.tolist()), overlap_ci95=tuple(np.minimum(ci, 1.0).tolist()),
                      mse=float(np.trace(np.eye(len(q)) - fp.Q)),
                      prediction_error_bayes=float(bayes.mean()),
                      prediction_error_plugin=float(st.plugin_error.mean()),
                      free_entropy=phi, converged=bool(fp.converged), iterations=int(fp.iterations),
                      residual=float(fp.residual))


def fixed_point(spec, alpha: float, start: str = "uninformed", precision: str = "standard", seed: int = 0,
                Q_start: np.ndarray | None = None) -> FixedPoint:
    """SE fixed point at one alpha from the uninformed (Q = 1e-3 I) or informed (Q = (1 - 1e-4) I) start."""
    check_precision(precision)
    _check_alpha(alpha)
    channel = spec.channel()
    P = channel.n_indices
    normals = outer_normals(channel, SE_POINTS[precision], SCRAMBLES, seed)
    if Q_start is None:
        Q_start = np.eye(P) * (UNINFORMED_START if start == "uninformed" else INFORMED_START)
    fp = iterate_fixed_point(channel, alpha, Q_start, normals, statistical_tolerance=STATISTICAL_TOLERANCE)
    return _fixed_point_result(channel, alpha, start, fp, normals, 1)


MAX_ALPHA = 1e4


def _check_alpha(alpha):
    if not (isinstance(alpha, (int, float)) and np.isfinite(alpha) and 0 < alpha <= MAX_ALPHA):
        raise SpecError("alpha", alpha, f"a number in (0, {MAX_ALPHA:g}]")


def _perfect_recovery(channel, fp: FixedPointIteration) -> bool:
    """A converged fixed point at Q_0 (every overlap at Q_MAX) of a noiseless channel."""
    return fp.converged and channel.sign_symmetric and bool(np.all(np.diag(fp.Q) >= Q_MAX))


def _warm_start(Q: np.ndarray, floor: float, cap: float) -> np.ndarray:
    """A neighbour's fixed point as the next start, its diagonal overlaps clipped to
    [floor, cap] (the branch's own start), the off-diagonal ones kept."""
    out = Q.copy()
    np.fill_diagonal(out, np.clip(np.diag(Q), floor, cap))
    return out


def state_evolution(spec, alphas, precision: str = "standard", seed: int = 0, progress=None):
    """SE fixed points from both starts at each alpha (THEORY.md section 3).

    The uninformed branch is followed upward in alpha and the informed branch downward,
    each warm-started from its neighbour (valid because the Bayes-optimal SE map is
    monotone in Q and alpha, so the warm start and the cold start reach the same fixed
    point).  The Bayes-optimal point is the one with the larger free entropy."""
    check_precision(precision)
    alphas = [float(a) for a in alphas]
    for a in alphas:
        _check_alpha(a)
    t0 = time.perf_counter()
    channel = spec.channel()
    P = channel.n_indices
    normals = outer_normals(channel, SE_POINTS[precision], SCRAMBLES, seed)
    order = np.argsort(alphas)
    total = 2 * len(alphas)
    done = 0
    uninformed, informed, at_q0 = {}, {}, {}
    Q = np.eye(P) * UNINFORMED_START
    fp = None
    for i in order:
        if fp is not None and _perfect_recovery(channel, fp):
            # the SE map is monotone in alpha: perfect recovery, once attracting, stays so
            fp = FixedPointIteration(fp.Q, True, 0, 0.0, np.nan, np.zeros_like(fp.step))
        else:
            fp = iterate_fixed_point(channel, alphas[i], _warm_start(Q, UNINFORMED_START, 1.0), normals,
                                     statistical_tolerance=STATISTICAL_TOLERANCE)
        Q = fp.Q
        at_q0[i] = _perfect_recovery(channel, fp)
        uninformed[i] = _fixed_point_result(channel, alphas[i], "uninformed", fp, normals, 1)
        done += 1
        if progress:
            progress(done, total)
    Q = np.eye(P) * INFORMED_START
    for i in order[::-1]:
        if at_q0[i]:
            # the informed fixed point lies above the uninformed one, here already Q_0
            informed[i] = dataclasses.replace(uninformed[i], start="informed", iterations=0)
        else:
            fp = iterate_fixed_point(channel, alphas[i], _warm_start(Q, 0.0, INFORMED_START), normals,
                                     statistical_tolerance=STATISTICAL_TOLERANCE)
            Q = fp.Q
            informed[i] = _fixed_point_result(channel, alphas[i], "informed", fp, normals, 1)
        done += 1
        if progress:
            progress(done, total)
    points = []
    for i in range(len(alphas)):
        u, f = uninformed[i], informed[i]
        differ = max(abs(a - b) for a, b in zip(u.layer_overlaps, f.layer_overlaps)) > 1e-3 + max(
            max(u.overlap_ci95), max(f.overlap_ci95))
        best = "informed" if differ and f.free_entropy > u.free_entropy else "uninformed"
        points.append(StateEvolutionPoint(alpha=alphas[i], uninformed=u, informed=f, bayes_optimal=best,
                                          gap=bool(differ)))
    settings = Settings(precision=precision, seed=seed, method="SE with randomised QMC outer expectations",
                        outer_points=SE_POINTS[precision], scrambles=SCRAMBLES, inner_resolution=1)
    return StateEvolutionResult(model=spec.to_dict(), points=tuple(points), settings=settings,
                                seconds=time.perf_counter() - t0, solver_version=__version__)
