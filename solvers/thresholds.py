"""Weak-recovery thresholds and the grand staircase (THEORY.md section 4).

* Q = 0 is a fixed point when no direction is trivial; it is unstable iff
  alpha * rho(F) > 1 with F(Q) = sum_{m,m'} E_y[G_mm' Q G_mm'^T], G = Cov[z|y] - I.  For a
  sign-symmetric channel (deep attention) F is block diagonal and
  alpha_c(layer l) = 1 / E_y ||Cov[z_l | y] - I_M||_F^2.
* Staircase: with the learned layers S at their fixed point Q*_S(alpha) and the others at
  0, the next threshold solves alpha * F_l(Q*_S(alpha)) = 1.  With one learned layer k,
  the fixed point is parametrised by q = q_k: alpha(q) = q / ((1 - q) H_k(q)) (from
  q = alpha H / (1 + alpha H)), so the threshold is a root in q of alpha(q) F_l(q) = 1,
  with no fixed-point iteration at all.
* Perfect recovery: near Q = Q_0 the map contracts v_l = 1 - q_l by 1 / (alpha t_l) with
  t_l = M - E Tr Cov[z_l | y, omega, V] / v_l, taken in the limit V -> 0 from the Jacobian
  of the revealed statistic (Laplace); at the stationary ratio of the v_l the rates agree
  and alpha_PR = 1 / t.  (Counting: sum_l t_l = M, the dimension revealed per sample, so
  alpha_PR = L / M for deep attention; every result checks this.)

Uncertainty: each scramble of the outer QMC gives its own threshold; the 95% half-width is
the Student-t interval over scrambles plus the change under doubling the inner
resolution (quadrature error).
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass

import numpy as np
from scipy import optimize

from . import checks
from .channels.base import Channel
from .fixed_point_iteration import Q_MAX, SMALL_OVERLAP, broyden_update, iterate_fixed_point
from .linear_stability import (linear_stability, staircase_after_trivial, y_quadrature_applies,
                               y_quadrature_block_values)
from .models import ModelSpec
from .precision import (CLOSED_FORM_MAX_POINTS, MAX_STAIRCASE_POINTS, PILOT_POINTS, PRECISION_TARGETS, ROOT_TOLERANCE,
                        SCRAMBLES, THRESHOLD_MAX_POINTS, THRESHOLD_POINTS, THRESHOLD_SETTLED_POINTS,
                        Y_QUADRATURE_MAX_POINTS, Y_QUADRATURE_POINTS, check_precision, inner_bias_bound, points_for)
from .quadrature import t_halfwidth
from .results import Settings, Threshold, ThresholdsResult
from .staircase_curve import StaircaseCurve, refine_root
from .state_evolution import STATISTICAL_TOLERANCE, UNINFORMED_START, fixed_point
from .statistics import outer_normals, output_statistics
from .transitions import layered_perfect_recovery_transitions, perfect_recovery_transitions
from .version import __version__


# ---------------------------------------------------------------------------------------
# Q = 0
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RateAtZero:
    """alpha_c per index from the linearisation at Q = 0, with 95% half-widths.  The least
    alpha_c of the unknown indices (the first threshold, the only one the staircase reports
    from here) meets the precision's target; the others only as far as needed to order them."""

    alpha: np.ndarray
    ci95: np.ndarray
    method: str
    points: int


def unsettled_relative_ci(alpha: np.ndarray, ci: np.ndarray, target: float, indices) -> float:
    """The largest relative half-width ci_l / alpha_l among ``indices`` that still need more
    points, 0 when none does: the least alpha must meet the relative half-width ``target``, and
    every other one must meet it too or lie clearly above (alpha_l - ci_l > alpha_min + ci_min).
    At 0 the order is resolved at 95% and the threshold reported from Q = 0 meets the target.
    Before solver 0.5.3 every index had to meet the target, so a later layer's heavy-tailed
    rate at Q = 0 (whose value the staircase replaces) could drive the points."""
    idx = np.asarray(indices, dtype=int)
    with np.errstate(invalid="ignore", divide="ignore"):
        first = idx[int(np.argmin(alpha[idx]))]
        relative = ci[idx] / alpha[idx]
        met = relative <= target
        above = (alpha[idx] - ci[idx] > alpha[first] + ci[first]) | (alpha[idx] == np.inf)  # never at Q = 0
        blocking = ~met & ((idx == first) | ~above)
    if not np.any(blocking):
        return 0.0
    worst = float(np.max(relative[blocking]))
    return worst if math.isfinite(worst) else math.inf


def _threshold_of_deviation(mean: np.ndarray) -> np.ndarray:
    """alpha_c = 1 / E||Cov[z_p|y] - I||^2 per index, inf where the mean is not positive."""
    return np.where(mean > 0, 1.0 / np.where(mean > 0, mean, 1), np.inf)


def _alpha_at_zero(channel: Channel, normals: np.ndarray, resolution: int, seed: int) -> np.ndarray:
    """Per index alpha_c at Q = 0, pooled over the scrambles of ``normals`` (of outer seed ``seed``)."""
    P = channel.n_indices
    return _threshold_of_deviation(
        output_statistics(channel, np.zeros((P, P)), normals, resolution, seed=seed).cov_deviation.mean(0))


def resolution_change_at_zero(channel: Channel, normals: np.ndarray, seed: int) -> np.ndarray:
    """The inner posterior's error term of the half-width at Q = 0 per index,
        2 |alpha_c(resolution 2) - alpha_c(resolution 1)|
    (:func:`~solvers.precision.inner_bias_bound`), as a paired difference on a subset of ``normals`` (R, n, .): the first
    4 scrambles and max(PILOT_POINTS, n / 4) points, both resolutions on the same outer
    points, so the outer noise cancels (as in the staircase's :func:`refine_root`).
    Before solver 0.5.4 every point was rerun at double resolution (about 60% of the time at
    Q = 0 of L = 2, M = 3; this costs 3/16 of one pass at resolution 1 from n = 256) and the
    term was the change itself, which fell short of the bias: L = 2, M = 3, layer 2 on 16 x
    1024 points moved 1.8e-5 at double resolution and 2.6e-5 at resolution 4."""
    sub = normals[:4, : max(PILOT_POINTS, normals.shape[1] // 4)]
    return inner_bias_bound(_alpha_at_zero(channel, sub, 2, seed) - _alpha_at_zero(channel, sub, 1, seed))


def _rates_at_zero_by_y_quadrature(channel: Channel, precision: str, seed: int) -> RateAtZero:
    """:func:`rates_at_zero` for a scalar noisy observation with a prior-bank posterior:
    the block values by quadrature in y (:func:`~solvers.linear_stability.y_quadrature_block_values`),
    the bank doubled from the precision's start until the first threshold is settled
    (:func:`unsettled_relative_ci`) or the cap; half-width: Student t over the scrambles plus
    the bank's and the lattice's terms."""
    target = PRECISION_TARGETS[precision][0]
    n, cap = Y_QUADRATURE_POINTS[precision], Y_QUADRATURE_MAX_POINTS[precision]
    half = None
    while True:
        dev, terms, rows = y_quadrature_block_values(channel, n, SCRAMBLES, seed, half)
        mean = dev.mean(0)
        alpha = _threshold_of_deviation(mean)
        ci = alpha * (t_halfwidth(dev) + terms) / np.where(mean > 0, mean, 1)
        if unsettled_relative_ci(alpha, ci, target, channel.unknown) == 0.0 or 2 * n > cap:
            return RateAtZero(alpha, ci, f"quadrature in y at Q = 0 ({rows} bank vectors per scramble)", n)
        half, n = dev, 2 * n


def rates_at_zero(channel: Channel, precision: str, seed: int) -> RateAtZero:
    """Per-index alpha_c = 1 / E||Cov[z_p|y] - I||^2 at Q = 0 by QMC, the points grown until
    the first threshold is settled (:func:`unsettled_relative_ci`, the inner sampler's term
    included) on at least THRESHOLD_SETTLED_POINTS per scramble: doubled per step, each step
    computing only its new points (Sobol points are nested: a longer run starts with the
    shorter one's), so a re-measurement costs no point twice; a closed-form posterior, whose
    points are nearly free and whose estimator may be heavy-tailed (phase retrieval),
    quadruples them instead, with no floor (as before solver 0.5.15).  Before solver 0.5.15 the second run was sized by
    :func:`~solvers.precision.points_for` (n^-1/2, 20% margin, up to a power of two): L = 3,
    M = 2 at fast went 128 -> 4096 (layer 3 at 0.34%, target 2%; its errors fell like n^-0.95),
    now doubled to 2048 (9.5 s -> 4.7 s), L = 4, M = 2 4096 -> 2048, and L = 2, M = 3 1024 -> 2048:
    the floor of 2048 is calibration's (:data:`~solvers.precision.THRESHOLD_SETTLED_POINTS`).
    Before solver 0.5.3 they were always quadrupled: L = 2, M = 3 at fast went 128 -> 512 (layer
    2 at 2.3%) -> 2048, where 1024 suffice."""
    target = PRECISION_TARGETS[precision][0]
    own = channel.rates_at_zero(target)  # e.g. deep attention's deterministic grids at L = 2, M = 2
    if own is not None:
        return RateAtZero(*own)
    if y_quadrature_applies(channel):
        return _rates_at_zero_by_y_quadrature(channel, precision, seed)
    P = channel.n_indices
    n = THRESHOLD_POINTS[precision]
    Q0 = np.zeros((P, P))
    # the cap is a property of the channel, never of the clock: results stay reproducible
    cap = CLOSED_FORM_MAX_POINTS if channel.closed_form_posterior else THRESHOLD_MAX_POINTS
    # a closed-form posterior settles where it meets the target, as before solver 0.5.15 (phase
    # retrieval's heavy-tailed estimator: see THRESHOLD_SETTLED_POINTS)
    settled = 0 if channel.closed_form_posterior else THRESHOLD_SETTLED_POINTS
    done, sums = 0, 0.0  # points evaluated so far per scramble, and their sums of the deviation
    while True:
        normals = outer_normals(channel, n, SCRAMBLES, seed)
        # the points are nested (the first `done` are the last step's): only the new ones are computed
        sums = sums + (n - done) * output_statistics(channel, Q0, normals[:, done:], 1, seed=seed).cov_deviation
        done = n
        dev = sums / n  # (R, P)
        mean = dev.mean(0)
        alpha = _threshold_of_deviation(mean)
        ci = alpha * t_halfwidth(dev) / np.where(mean > 0, mean, 1)
        unsettled = unsettled_relative_ci(alpha, ci, target, channel.unknown)
        if (unsettled == 0.0 and n >= settled) or n >= cap:
            # the inner sampler's term once the outer one meets the target: more points help only
            # while the outer term is the larger
            quad = resolution_change_at_zero(channel, normals, seed)
            unsettled = unsettled_relative_ci(alpha, ci + quad, target, channel.unknown)
            if unsettled == 0.0 or n >= cap or not np.any(ci > quad):
                return RateAtZero(alpha, ci + quad, "randomised QMC outer, posterior quadrature inner", n)
        n = min((4 if channel.closed_form_posterior else 2) * n, cap)


# ---------------------------------------------------------------------------------------
# Staircase
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StaircaseStep:
    layer: int
    alpha: float
    ci95: float
    learned_overlap: float  # overlap of the learned layer(s) at the threshold


class _LearnedLayerCurve(StaircaseCurve):
    """The staircase curve of one inactive layer l while one layer k is learned
    (:class:`~solvers.staircase_curve.StaircaseCurve`): at Q = diag(base_q) with q_k = q,
    h = H_kk(q) and rate = F_l(q) = E ||Cov[z_l | y, omega_k] - I||^2, so the threshold of
    layer l is the root in q of alpha(q) F_l(q) = 1.  Curves of several layers on the same
    points may share one ``memo``: the statistics at q do not depend on l."""

    # dense towards q = 1: with a large skip c, z_1's information in a is masked by c times
    # z_2's remaining uncertainty, so layer 1's root sits where 1 - q_2 ~ 0.05 / c^2 (THEORY.md
    # section 7): 2e-5 at c = 50, 5e-8 at c = 1000 (the largest skip a spec allows)
    GRID = (0.05, 0.2, 0.4, 0.6, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.998, 0.999, 0.9995, 0.9999,
            1 - 1e-5, 1 - 1e-6, 1 - 1e-7, 1 - 1e-8, 1 - 1e-9)

    def __init__(self, channel, learned, base_q, normals, layer, memo=None, seed=None):
        super().__init__(channel, normals, memo, seed)
        self.learned, self.base_q, self.layer = learned, base_q, layer

    def on_points(self, normals):
        return _LearnedLayerCurve(self.channel, self.learned, self.base_q, normals, self.layer, seed=self.seed)

    def compute_statistics(self, q, resolution):
        Q = np.diag(self.base_q)
        Q[self.learned, self.learned] = q
        return output_statistics(self.channel, Q, self.normals, resolution, seed=self.seed)

    def rates(self, q, resolution):
        st = self.statistics(q, resolution)
        return st.H[:, self.learned, self.learned], st.cov_deviation[:, self.layer]

    def pooled_rates(self, q, resolution):
        st = self.statistics(q, resolution)
        return st.H[:, self.learned, self.learned].mean(), st.cov_deviation[:, self.layer].mean()

    def root_between(self, q1, q2, a1, r1, a2, r2):
        """alpha at the root of alpha(q) F_l(q) - 1, linearised in q between q1 and q2."""
        h1, h2 = r1 - 1.0, r2 - 1.0
        slope = (h2 - h1) / (q2 - q1)
        qr = q1 - h1 / slope
        return a1 + (a2 - a1) / (q2 - q1) * (qr - q1)


@dataclass(frozen=True)
class LearnedLayerJump:
    """A first-order jump of the one learned layer: its curve alpha(q) = qhat(q) / H(q) peaks at
    alpha (the spinodal, with its 95% half-width) and falls beyond, so SE's branch jumps there
    to q -> 1 (a discrete prior: the upper branch is Q_0-like), where every remaining layer's
    rate F_l is above 1 / alpha: all are learned at once."""

    alpha: float
    ci95: float
    learned_overlap: float


def _learned_layer_jump(channel: Channel, learned: int, remaining: list[int], base_q: np.ndarray,
                        precision: str, seed: int) -> LearnedLayerJump | None:
    """The jump of :class:`LearnedLayerJump` when the staircase finds no root, or None.  The
    spinodal per scramble: each scramble's maximum of alpha(q) on a fine logit grid around the
    pooled one (Student t over scrambles), plus the grid step's change."""
    normals = outer_normals(channel, THRESHOLD_POINTS[precision], SCRAMBLES, seed)
    grid = np.array(_LearnedLayerCurve.GRID[:12])  # up to 1 - q = 1e-3: the peak lies well below
    curves = {l: _LearnedLayerCurve(channel, learned, base_q, normals, l, seed=seed) for l in remaining}
    first = curves[remaining[0]]
    alphas = np.array([first.per_scramble(q)[0] for q in grid]).T  # (R, G)
    pooled = alphas.mean(0)
    i = int(np.argmax(pooled))
    if not (0 < i < len(grid) - 1) or np.min(pooled[i + 1:]) >= pooled[i] - 2 * t_halfwidth(alphas[:, i]):
        return None
    u = np.linspace(np.log(grid[i - 1] / (1 - grid[i - 1])), np.log(grid[i + 1] / (1 - grid[i + 1])), 17)
    fine_q = 1.0 / (1.0 + np.exp(-u))
    fine = np.array([first.per_scramble(q)[0] for q in fine_q]).T
    per_scramble = fine.max(axis=1)
    alpha = float(fine.mean(0).max())
    step_change = float(np.max(np.abs(np.diff(fine.mean(0)))))
    # beyond the jump the learned layer sits near q = 1: every remaining layer must be unstable there
    q_top = _LearnedLayerCurve.GRID[-1]
    if any(alpha * curves[l].pooled_rates(q_top, 1)[1] <= 1.0 for l in remaining):
        return None
    return LearnedLayerJump(alpha, float(t_halfwidth(per_scramble)) + step_change,
                            float(fine_q[int(np.argmax(fine.mean(0)))]))


def _single_learned_step(channel: Channel, learned: int, remaining: list[int], base_q: np.ndarray,
                         precision: str, seed: int) -> StaircaseStep:
    """Next threshold when exactly one layer (``learned``) is active: a root in q, found by
    the pilot -> size -> refine procedure of :mod:`solvers.staircase_curve`.  The pilot
    brackets the root of every remaining layer; in the order of their pilot thresholds, those
    not clearly above the least pilot nor above the least refined threshold (pilot interval
    beyond the refined one) are refined, and the least refined threshold is the step."""
    target = PRECISION_TARGETS[precision][1]
    normals = outer_normals(channel, PILOT_POINTS, SCRAMBLES, seed)
    shared = {}  # the pilot's statistics, common to every layer
    found = []
    for l in remaining:
        root = _LearnedLayerCurve(channel, learned, base_q, normals, l, shared, seed).pilot_root()
        if root is not None:
            found.append((root, l))
    if not found:
        return StaircaseStep(remaining[0], math.inf, math.inf, float("nan"))
    found.sort(key=lambda f: f[0].alpha)
    first = found[0][0].alpha
    best = None
    for pilot, l in found:
        if pilot.alpha - pilot.ci95 > first + pilot.ci95 and len(found) > 1:
            continue  # clearly not the next layer
        if best is not None and pilot.alpha - pilot.ci95 > best.alpha + best.ci95:
            # clearly above the refined least one: not this step's layer, and the next step
            # decides it afresh (refining it cost L = 3, M = 2 at fast 2048 points per scramble)
            continue
        root = refine_root(pilot, seed, target, MAX_STAIRCASE_POINTS, PILOT_POINTS, refine_on_pilot_points=True)
        step = StaircaseStep(l, root.alpha, root.ci95, float(root.q))
        if best is None or step.alpha < best.alpha:
            best = step
    return best


class _LearnedOverlapsRoot:
    """The staircase threshold of one inactive layer l while the layers S are learned, as a root
    in their overlaps (no fixed-point iteration): with u = logit(q_S) and the others at 0,
        G_i(u) = log alpha_i(Q) + log F_l(Q) = 0 for i in S,  alpha_i(Q) = q_i / ((1 - q_i) H_ii(Q)),
    i.e. every learned layer is at its SE fixed point for the same alpha (q_i = alpha H_ii /
    (1 + alpha H_ii)) and alpha F_l(Q) = 1, F_l = E||Cov[z_l | y, omega] - I||^2 (the one-layer
    staircase's alpha(q) F_l(q) = 1, with the other learned layers solved alongside).  Newton
    with a finite-difference Jacobian in u, from a point on the SE branch.

    Per-scramble roots linearise around the pooled root u*: du_s = -J^{-1} G^s(u*) and
    alpha_s = 1 / F^s_l(u*) exp(-grad log F_l . du_s), so the half-width covers the outer
    error of every learned overlap, not only of F_l; twice the root's shift at double inner
    resolution (on a subset of the points, linearised the same way; the change itself before
    solver 0.5.6) is added to it (:func:`~solvers.precision.inner_bias_bound`).

    Newton stops once its next step is small (at most LINEAR_MOVE in every logit q) and moves
    log alpha by at most ``tolerance`` (a tenth of the precision's target): that last step is
    taken on the linearisation instead of by another evaluation, and its size is added to the
    half-width.  Before solver 0.5.8 it iterated to |G| <= TOL, 1e-5, far below the statistical
    error: L = 3, M = 2 at fast spent 7 evaluations on 16 x 2048 points where 3 now suffice."""

    STEP = 2e-3  # finite-difference step in logit q (relative 2e-3 in q or in 1 - q)
    MAX_MOVE = 1.5  # largest Newton move in logit q
    TOL = 1e-5  # |G| at the root (relative change of alpha): far below any statistical error
    LINEAR_MOVE = 0.02  # a last step this small (logit q) is taken on the linearisation
    MAX_STEPS = 12

    def __init__(self, channel, learned, layer, seed):
        self.channel, self.learned, self.layer, self.seed = channel, list(learned), layer, seed

    def overlaps(self, u):
        Q = np.zeros((self.channel.n_indices,) * 2)
        q = np.clip(1.0 / (1.0 + np.exp(-u)), 1e-12, Q_MAX)
        Q[self.learned, self.learned] = q
        return Q, q

    def residuals(self, u, normals, resolution=1):
        """(pooled G, per-scramble G (R, |S|), pooled log F_l, per-scramble log F_l)."""
        Q, q = self.overlaps(u)
        st = output_statistics(self.channel, Q, normals, resolution, seed=self.seed)
        h = np.stack([st.H[:, i, i] for i in self.learned], axis=1)  # (R, |S|)
        F = st.cov_deviation[:, self.layer]
        with np.errstate(divide="ignore", invalid="ignore"):
            log_odds = np.log(self.channel.prior.inverse_update(q))
            logF, logF_pooled = np.log(F), np.log(F.mean())
            G_s = log_odds - np.log(h) + logF[:, None]
            G = log_odds - np.log(h.mean(0)) + logF_pooled
        return G, G_s, logF_pooled, logF

    def jacobian(self, u, G, logF, normals):
        """Finite-difference Jacobian of the pooled G and gradient of the pooled log F_l."""
        n = len(u)
        J, gradF = np.empty((n, n)), np.empty(n)
        for j in range(n):
            du = np.zeros(n)
            du[j] = self.STEP
            Gj, _, logFj, _ = self.residuals(u + du, normals)
            J[:, j] = (Gj - G) / self.STEP
            gradF[j] = (logFj - logF) / self.STEP
        return J, gradF

    def solve(self, u, normals, min_subset_points, jacobian=None, tolerance=0.0):
        """The root from the start u on these outer points: (alpha, ci95, u*, (J, grad log F_l)),
        or None when Newton does not converge.  With ``jacobian`` (the last root's, on other
        points: it hardly changes with them) the steps are chord steps, and a new Jacobian is
        taken only when a step does not halve |G|; between, each move updates it (Broyden), so
        the chord steps converge superlinearly: L = 3, M = 2 at fast, layer 2's final run on 16 x
        2048 points took 4 evaluations with the other points' Jacobian, 3 with its update.
        ``tolerance``: the largest change of log
        alpha a last step may make to be taken on the linearisation (class docstring)."""
        last = np.inf
        previous = None  # (u, G, log F_l) of the last evaluation on these points
        for _ in range(self.MAX_STEPS):
            G, G_s, logF, logF_s = self.residuals(u, normals)
            if not np.all(np.isfinite(G)):
                return None
            size = np.max(np.abs(G))
            if jacobian is None or size > 0.5 * last:
                jacobian = self.jacobian(u, G, logF, normals)
            elif previous is not None:  # a chord step moved us: correct J and grad log F along it
                du = u - previous[0]
                jacobian = (broyden_update(jacobian[0], du, G - previous[1]),
                            broyden_update(jacobian[1][None], du, np.atleast_1d(logF - previous[2]))[0])
            previous = (u, G, logF)
            J, gradF = jacobian
            if not (np.all(np.isfinite(J)) and np.all(np.isfinite(gradF))) or abs(np.linalg.det(J)) < 1e-300:
                return None
            step = -np.linalg.solve(J, G)
            alpha_move = float(gradF @ step)  # the step's change of log F_l, i.e. of -log alpha
            if size <= self.TOL or (np.max(np.abs(step)) <= self.LINEAR_MOVE and abs(alpha_move) <= tolerance):
                break
            last = size
            u = u + step * min(1.0, self.MAX_MOVE / np.max(np.abs(step)))
        else:
            return None

        def log_alpha_shift(dG, dlogF):  # change of the root's log alpha for changes of G, log F_l
            return -(dlogF + gradF @ -np.linalg.solve(J, dG))

        u = u + step  # the last step, on the linearisation
        alpha = float(np.exp(-logF - alpha_move))
        alpha_s = alpha * np.exp(log_alpha_shift(G_s.T - G[:, None], logF_s - logF))
        sub = normals[:4, : max(min_subset_points, normals.shape[1] // 4)]
        G1, _, logF1, _ = self.residuals(u, sub, 1)
        G2, _, logF2, _ = self.residuals(u, sub, 2)
        quadrature = alpha * float(inner_bias_bound(log_alpha_shift(G2 - G1, logF2 - logF1)))
        last_step = alpha * abs(alpha_move)
        return alpha, float(t_halfwidth(alpha_s)) + quadrature + last_step, u, jacobian


def _multi_learned_step(channel: Channel, learned: list[int], remaining: list[int], alpha_prev: float,
                        Q_prev: np.ndarray, precision: str, seed: int) -> tuple[StaircaseStep, np.ndarray]:
    """Next threshold with several learned layers: for each remaining layer a root in the learned
    overlaps (:class:`_LearnedOverlapsRoot`), started from the SE fixed point a little above the
    last threshold (where the newest layer has left 0), its outer points grown (``points_for``)
    until the precision's target or MAX_STAIRCASE_POINTS, each time from the last root.  When
    Newton does not converge, or finds a root behind the last threshold (not on SE's branch),
    every layer is decided by a root in alpha with SE iteration
    (:func:`_multi_learned_step_by_iteration`, slower)."""
    target = PRECISION_TARGETS[precision][1]
    tolerance = ROOT_TOLERANCE * target
    n = THRESHOLD_POINTS[precision]
    normals = outer_normals(channel, n, SCRAMBLES, seed)
    P = channel.n_indices
    frozen = np.ones(P, dtype=bool)
    frozen[learned] = False
    start = None
    alpha = alpha_prev
    # Newton's start only: on the pilot's points and to SE's statistical tolerance (near the last
    # threshold the new layer grows slowly; 1e-6 on Newton's points took 25 evaluations of 128)
    pilot = outer_normals(channel, PILOT_POINTS, SCRAMBLES, seed)
    for _ in range(10):
        alpha *= 1.1
        fp = iterate_fixed_point(channel, alpha, Q_prev, pilot, frozen=frozen, seed=seed,
                                 statistical_tolerance=STATISTICAL_TOLERANCE)
        q = np.diag(fp.Q)[learned]
        if np.all(q > SMALL_OVERLAP) and np.all(q < Q_MAX):
            start = np.log(q / (1.0 - q))
            break
    best = None
    for l in remaining if start is not None else []:
        root = _LearnedOverlapsRoot(channel, learned, l, seed)
        m = n
        found = root.solve(start, normals, PILOT_POINTS, tolerance=tolerance)
        while found is not None and found[1] > target * found[0] and m < MAX_STAIRCASE_POINTS:
            m = points_for(m, found[1] / found[0], target, MAX_STAIRCASE_POINTS)
            found = root.solve(found[2], outer_normals(channel, m, SCRAMBLES, seed), PILOT_POINTS, found[3],
                               tolerance)
        if found is None or found[0] <= alpha_prev:
            best = None
            break  # one layer not solved on SE's branch: decide every layer the slow, sure way
        alpha_l, ci_l, u_l, _ = found
        if best is None or alpha_l < best[0].alpha:
            Q, q = root.overlaps(u_l)
            best = (StaircaseStep(l, alpha_l, ci_l, float(np.mean(q))), Q)
    if best is not None:
        return best
    return _multi_learned_step_by_iteration(channel, learned, remaining, alpha_prev, Q_prev, normals, seed)


def _multi_learned_step_by_iteration(channel: Channel, learned: list[int], remaining: list[int], alpha_prev: float,
                                     Q_prev: np.ndarray, normals: np.ndarray,
                                     seed: int) -> tuple[StaircaseStep, np.ndarray]:
    """Next threshold with several learned layers: a root in alpha, Q*_S(alpha) by SE iteration
    (each evaluation a fixed point, so slow; the fallback of :func:`_multi_learned_step`)."""
    P = channel.n_indices
    frozen = np.ones(P, dtype=bool)
    frozen[learned] = False
    state = {"Q": Q_prev.copy()}

    def fixed(alpha):
        fp = iterate_fixed_point(channel, alpha, state["Q"], normals, frozen=frozen, seed=seed)
        state["Q"] = fp.Q
        return fp.Q

    def h_all(alpha):
        Q = fixed(alpha)
        st = output_statistics(channel, Q, normals, 1, seed=seed)
        return alpha * st.cov_deviation[:, remaining], Q, st

    best = None
    a_lo = alpha_prev * 1.0001
    a_hi = a_lo
    for _ in range(40):
        a_hi *= 1.25
        vals, Q, _ = h_all(a_hi)
        if np.any(vals.mean(0) > 1):
            break
    for j, l in enumerate(remaining):
        state["Q"] = Q_prev.copy()

        def f(alpha):
            return h_all(alpha)[0][:, j].mean() - 1.0

        if f(a_hi) <= 0:
            continue
        state["Q"] = Q_prev.copy()
        root = optimize.brentq(f, a_lo, a_hi, xtol=1e-6 * a_hi)
        vals, Q, st = h_all(root)
        d = 1e-3 * root
        vals2, _, _ = h_all(root + d)
        slope = (vals2[:, j].mean() - vals[:, j].mean()) / d
        ci = float(t_halfwidth(vals[:, j]) / max(slope, 1e-12))
        step = StaircaseStep(l, float(root), ci, float(np.mean(np.diag(Q)[learned])))
        if best is None or step.alpha < best.alpha:
            best, best_Q = step, Q
    if best is None:
        return StaircaseStep(remaining[0], math.inf, math.inf, float("nan")), Q_prev
    return best, best_Q


def staircase(channel: Channel, precision: str = "standard", seed: int = 0,
              progress=None) -> tuple[list[Threshold], RateAtZero]:
    """The grand staircase of a sign-symmetric (layer-wise) channel: thresholds in order."""
    zero = rates_at_zero(channel, precision, seed)
    P = channel.n_indices
    unknown = list(channel.unknown)  # known layers sit at Q_0 throughout and have no threshold
    first = unknown[int(np.argmin(zero.alpha[unknown]))]
    out = [Threshold(alpha=float(zero.alpha[first]), ci95=float(zero.ci95[first]), kind="linear_stability",
                     layer=first + 1)]
    learned = [first]
    remaining = [l for l in unknown if l != first]
    if progress:
        progress(1, len(unknown))
    Q_prev = np.zeros((P, P))
    alpha_prev = out[0].alpha
    while remaining:
        if len(learned) == 1:
            step = _single_learned_step(channel, learned[0], remaining, np.zeros(P), precision, seed)
            Q_prev = np.zeros((P, P))
            Q_prev[learned[0], learned[0]] = step.learned_overlap
        else:
            step, Q_prev = _multi_learned_step(channel, learned, remaining, alpha_prev, Q_prev, precision, seed)
        if not math.isfinite(step.alpha) and len(learned) == 1 and channel.prior.entropy is not None:
            # a discrete prior: past its spinodal the learned layer's upper branch is q -> 1
            jump = _learned_layer_jump(channel, learned[0], remaining, np.zeros(P), precision, seed)
            if jump is not None:
                reason = (f"reached through a first-order jump: layer {learned[0] + 1}'s fixed-point curve "
                          f"alpha(q) = qhat(q) / H(q) peaks at this alpha (q = {jump.learned_overlap:.3g}, the "
                          f"spinodal), where SE's branch jumps to q -> 1 and alpha E||Cov[z_l | y, omega] - I||^2 > 1 "
                          f"for every remaining layer")
                for l in remaining:
                    out.append(Threshold(alpha=jump.alpha, ci95=jump.ci95, kind="staircase", layer=l + 1,
                                         reason=reason))
                break
        if not math.isfinite(step.alpha):
            reason = (f"no staircase root: with layer(s) {sorted(k + 1 for k in learned)} learned, "
                      f"alpha * E||Cov[z_l | y, omega] - I||^2 stays below 1 along their fixed points "
                      f"(searched up to 1 - q = {1 - _LearnedLayerCurve.GRID[-1]:.0e})")
            if channel.reports_perfect_recovery:
                reason += ("; Q_0 (every layer recovered) is still a stable fixed point above "
                           "perfect_recovery_alpha, reached by SE from the informed start")
            for l in remaining:
                out.append(Threshold(alpha=math.inf, ci95=math.inf, kind="staircase", layer=l + 1, reason=reason))
            break
        out.append(Threshold(alpha=step.alpha, ci95=step.ci95, kind="staircase", layer=step.layer + 1))
        learned.append(step.layer)
        remaining.remove(step.layer)
        alpha_prev = step.alpha
        if progress:
            progress(len(learned), len(unknown))
    return out, zero


# ---------------------------------------------------------------------------------------
# Perfect recovery
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PerfectRecovery:
    """alpha_PR with its 95% half-width.

    rates: t_l at the stationary ratio of the v_l (all equal there); ratio: that ratio,
    v_l / max v_l (both over the unknown rows); counting_bound: P / K (unknowns per revealed
    number, L / M for deep attention; (P - k) / K with k known rows), which no estimator can beat."""

    alpha: float
    ci95: float
    rates: np.ndarray
    ratio: np.ndarray
    counting_bound: float


def revealed_jacobians(channel: Channel, Z: np.ndarray, step: float) -> np.ndarray:
    """J[n, k, p, m] = d a_k / d z_pm of the channel's revealed statistic, by central
    differences with ``step`` (the statistic is smooth where it is defined)."""
    n, P, M = Z.shape
    K = channel.revealed_statistic(Z[:1]).shape[-1]
    J = np.empty((n, K, P, M))
    for p in range(P):
        for m in range(M):
            dZ = np.zeros_like(Z)
            dZ[:, p, m] = step
            J[:, :, p, m] = (channel.revealed_statistic(Z + dZ) - channel.revealed_statistic(Z - dZ)) / (2 * step)
    return J


def contraction_rates(gram: np.ndarray, ratio: np.ndarray) -> np.ndarray:
    """Per-sample t_l = v_l tr(G_l S^{-1}), S = sum_k v_k G_k, for Gram matrices
    G_l = J_l J_l^T of shape (n, P, K, K) and v = ratio (P,).

    This is M - Tr Cov[z_l | a, omega, V] / v_l in the limit V = diag(v) -> 0, where the
    posterior is the prior N(omega, V) conditioned on the K linear constraints J (z - omega)
    = a - a(omega) (Laplace): Cov = V - V J^T (J V J^T)^{-1} J V."""
    S = np.einsum("p,npij->nij", ratio, gram)
    Sinv_G = np.linalg.solve(S[:, None], gram)  # (n, P, K, K)
    return ratio[None] * np.einsum("npii->np", Sinv_G)


def perfect_recovery(channel: Channel, seed: int = 0, points: int = 256, step: float = 1e-5,
                     tolerance: float = 1e-10, iterations: int = 200) -> PerfectRecovery:
    """alpha above which Q = Q_0 is a stable SE fixed point (noiseless channels revealing a
    smooth statistic a(Z) in R^K, THEORY.md section 2).

    Near Q_0 the SE map sends v_l = 1 - q_l to v_l / (alpha t_l) (Gaussian prior, Qhat_l =
    alpha t_l / v_l).  As V -> 0 the posterior of Z given the revealed a and the side
    information omega is Gaussian on the tangent space of {a(Z) = a}, so t_l depends only on
    the Jacobian J = da/dZ at the teacher's Z ~ N(0, I) and on the ratio of the v_l
    (:func:`contraction_rates`).  The map keeps the ratio where all t_l agree; there Q_0 is
    stable iff alpha t > 1, so alpha_PR = 1 / t.  The ratio is found by the multiplicative
    iteration r_l <- r_l (t / t_l)^(1/2) on the pooled rates.

    Counting check: sum_l t_l = tr(S S^{-1}) = K wherever J has full rank K, so
    alpha_PR = P / K = L / M for deep attention, (P - k) / K with k known rows (their J columns
    are dropped: only the unknown rows move).  The estimate does not assume it: each
    scramble's outer QMC average gives its own alpha, and the half-width is their Student-t
    interval plus the change when the difference step is doubled."""
    P, M = channel.n_indices, channel.n_tokens
    normals = outer_normals(channel, points, SCRAMBLES, seed)
    R, n, _ = normals.shape
    Z = np.ascontiguousarray(normals[:, :, : P * M].reshape(R * n, P, M))
    unknown = list(channel.unknown)  # known rows are no unknowns: only their z is fixed in J
    P = len(unknown)

    def gram_matrices(h):
        J = revealed_jacobians(channel, Z, h)[:, :, unknown]
        return np.einsum("nkpm,njpm->npkj", J, J)

    gram = gram_matrices(step)
    K = gram.shape[-1]
    ratio = np.ones(P)
    for _ in range(iterations):
        t = contraction_rates(gram, ratio).mean(0)
        if np.max(np.abs(t - t.mean())) <= tolerance * t.mean():
            break
        ratio = ratio * np.sqrt(t.mean() / np.maximum(t, 1e-300))
        ratio /= ratio.max()

    def per_scramble_alpha(g):
        t = contraction_rates(g, ratio).reshape(R, n, P).mean(1)  # (R, P)
        return P / t.sum(1), t.mean(0)

    alpha_r, rates = per_scramble_alpha(gram)
    alpha_coarse, _ = per_scramble_alpha(gram_matrices(2 * step))
    difference_error = abs(alpha_coarse.mean() - alpha_r.mean())
    return PerfectRecovery(float(alpha_r.mean()), float(t_halfwidth(alpha_r) + difference_error), rates, ratio,
                           P / K)


# ---------------------------------------------------------------------------------------
# Public entry point
# ---------------------------------------------------------------------------------------
def layer_thresholds(spec: ModelSpec, precision: str = "standard", seed: int = 0,
                     progress=None, se_bracket: bool = False) -> ThresholdsResult:
    """Thresholds of every layer (deep attention) or direction (multi-index), in the order learned.

    Returns a :class:`~solvers.results.ThresholdsResult` sorted by alpha, each threshold
    with its 95% half-width, plus the perfect-recovery alpha for noiseless channels, the
    information-theoretic and algorithmic perfect-recovery thresholds of noiseless one-index
    channels, of noiseless permutation-symmetric multi-index ones (on the line Q = q I) and of
    noiseless deep attention (:mod:`solvers.transitions`; with ``se_bracket`` the algorithmic one
    is checked by SE too, except for one index, where the curve holds every fixed point), and
    the :mod:`solvers.checks` it passed or failed: staircase order, precision target,
    counting bound (with perfect recovery), and with ``se_bracket`` the SE bracket (two SE
    fixed points per threshold, so slower)."""
    check_precision(precision)
    t0 = time.perf_counter()
    channel = spec.channel()
    if channel.sign_symmetric:
        thresholds, zero = staircase(channel, precision, seed, progress)
        method = zero.method + "; staircase roots in the learned overlap"
        points = zero.points
        if not channel.indices_are_layers:
            # multi-index models name directions; for a sign-symmetric link the overlap matrix
            # stays diagonal, so index l is learned along the unit vector e_l
            P = channel.n_indices
            thresholds = [dataclasses.replace(t, layer=None, direction=tuple(float(k == t.layer - 1) for k in range(P)))
                          for t in thresholds]
    else:
        ls = linear_stability(channel, scrambles=SCRAMBLES, seed=seed, precision=precision)
        thresholds = list(ls.thresholds)
        method = "linear stability: " + ls.settings.method  # names the path (outer QMC or quadrature in y)
        if ls.trivial_directions and ls.complement_basis:
            st = staircase_after_trivial(channel, precision, seed, ls=ls)
            if st is not None and math.isfinite(st.alpha) and not (ls.alpha_c < st.alpha):
                thresholds = [t for t in thresholds if t.kind == "trivial"] + list(st.thresholds)
                method += "; staircase after the trivial direction (root in its overlap)"
            elif st is not None and not any(t.kind != "trivial" for t in thresholds):
                thresholds += list(st.thresholds)  # not found: say so, with the reason
        points = ls.settings.outer_points if hasattr(ls, "settings") else 0
    result_checks = [checks.staircase_order(thresholds)]
    pr_alpha = pr_ci = None
    if channel.reports_perfect_recovery:
        pr = perfect_recovery(channel, seed)
        # near Q_0 a prior contracts 1 - q as factor / qhat (1 Gaussian, rho Gauss-Bernoulli, 0 +-1),
        # so Q_0 is stable above factor x the Gaussian-prior alpha_PR, and the count of unknowns
        # (factor P D nonzero weights) scales alike
        factor = channel.prior.perfect_recovery_factor
        pr_alpha, pr_ci = factor * pr.alpha, factor * pr.ci95
        result_checks.append(checks.counting_bound(pr_alpha, pr_ci, factor * pr.counting_bound))
    seen = {}  # the SE bracket and the transitions' check may ask for the same alpha

    def uninformed_overlaps(alpha):
        if alpha not in seen:
            fp = fixed_point(spec, alpha, "uninformed", precision, seed)
            seen[alpha] = fp.layer_overlaps, fp.overlap_ci95
        return seen[alpha]

    thresholds = sorted(thresholds, key=lambda t: t.alpha)
    if channel.indices_are_layers and channel.n_indices > 1:
        transitions = () if pr_alpha is None else layered_perfect_recovery_transitions(
            channel, thresholds, pr_alpha, pr_ci, uninformed_overlaps if se_bracket else None)[0]
    else:
        transitions, _ = perfect_recovery_transitions(channel, precision, seed,
                                                      None if pr_alpha is None else (pr.alpha, pr.ci95),
                                                      uninformed_overlaps if se_bracket else None)
    result_checks.append(checks.precision_target(thresholds, precision,
                                                 None if pr_alpha is None else (pr_alpha, pr_ci)))
    if se_bracket:
        result_checks.append(checks.se_bracket(thresholds, channel.n_indices, uninformed_overlaps, UNINFORMED_START))
    settings = Settings(precision=precision, seed=seed, method=method, outer_points=points,
                        scrambles=SCRAMBLES, inner_resolution=1)
    return ThresholdsResult(model=spec.to_dict(), thresholds=tuple(thresholds),
                            perfect_recovery_alpha=pr_alpha, perfect_recovery_ci95=pr_ci,
                            settings=settings, seconds=time.perf_counter() - t0,
                            solver_version=__version__, checks=tuple(result_checks), transitions=transitions)
