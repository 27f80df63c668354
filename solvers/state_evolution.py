"""Bayes-optimal state evolution of AMP for sequence multi-index models (THEORY.md section 3).

One SE step, for the overlap Q (P x P), Q_0 = I (Gaussian prior):
    omega_m = Q^{1/2} xi_m,  Z = omega + V^{1/2} U,  V = Q_0 - Q,  y ~ P_out(. | Z)
    g_m = V^{-1} (E[z_m | y, omega, V] - omega_m)
    Qhat = alpha H(Q),  H(Q) = E sum_m g_m g_m^T  (tokens summed: the weights are tied)
    Q <- Qhat (I + Qhat)^{-1}  (other priors: their input update, :mod:`solvers.priors`).
Outer expectations use randomised QMC (common random numbers across Q, so the map is
smooth in Q).  H is estimated by the direct form combined with its Nishimori form
E sum_m V^{-1} (V - Cov_mm) V^{-1} as a control variate (see
:func:`solvers.statistics.control_variate_combination`).
"""
from __future__ import annotations

import dataclasses
import time

import numpy as np

from . import checks
from .errors import SpecError
from .limits import MAX_ALPHA
from .fixed_point_iteration import (Q_MAX, FixedPointIteration, difference_step, iterate_fixed_point, order_diagonal,
                                   order_vector, overlap_matrix, unresolved_deficit)
from .precision import SCRAMBLES, SE_DECISION_POINTS, SE_POINTS, check_precision, inner_bias_bound
from .quadrature import t_halfwidth
from .results import FixedPoint, Settings, StateEvolutionPoint, StateEvolutionResult
from .statistics import (OutputStatistics, bayes_prediction_error, free_entropy, outer_normals, output_statistics,
                         overlap_update)
from .version import __version__

UNINFORMED_START = 1e-3
INFORMED_START = 1.0 - 1e-4


def fixed_point_statistics(channel, alpha, Q, normals, resolution, statistics: OutputStatistics | None = None,
                           seed: int | None = None):
    """Statistics at a fixed point: free entropy, plug-in error, per-scramble map spread
    (``statistics``: the output statistics at Q, with the plug-in error, if already computed;
    ``seed``: the outer seed of ``normals``, for each scramble's inner bank)."""
    st = statistics if statistics is not None else output_statistics(channel, Q, normals, resolution, plugin=True,
                                                                     seed=seed)
    H = st.H.mean(0)
    phi = free_entropy(alpha, Q, H, float(st.log_partition.mean()), channel.prior)
    per_scramble_q = np.array([np.diag(overlap_update(alpha, st.H[r], channel.prior)) for r in range(st.H.shape[0])])
    return st, phi, per_scramble_q


# SE fixed points stop when the map's step is below this fraction of its Monte-Carlo
# standard error; the step is then added to the reported half-width (a few % of it)
STATISTICAL_TOLERANCE = 0.1


def grown_overlap(Q: np.ndarray, j: int, step: float) -> np.ndarray:
    """Q with Q_jj grown by ``step`` and index j's correlations Q_jk grown with it, by the factor
    s = sqrt(1 + step / Q_jj) (the congruence D Q D, D = I + (s - 1) e_j e_j^T): Q keeps its rank.
    Adding ``step`` to Q_jj alone turns a rank-deficient Q (committee_sign learning its mean
    direction only, Q = q 11^T) into one of higher rank, whose square root (and with it the map
    on fixed outer points) moves as sqrt(step): at alpha = 6, fast, seed 1, J came out
    asymmetric (entries from -1.1 to 1.0) where by symmetry its entries are equal (-1.73 at this
    step), and the half-widths 0.008, 0.012, 0.002 where the seeds spread by sd 0.00014 (now
    0.0006 each).  For a diagonal Q the same as adding ``step`` to Q_jj."""
    grown = Q.copy()
    grown[j, j] += step
    if Q[j, j] > 0.0:
        s = np.sqrt(grown[j, j] / Q[j, j])
        others = np.arange(len(Q)) != j
        grown[j, others] *= s
        grown[others, j] *= s
    return grown


def _fixed_point_result(channel, alpha, start, fp: FixedPointIteration, normals, resolution, seed) -> FixedPoint:
    if fp.normals is not None:
        normals = fp.normals  # the iteration moved to the finer decision points
    st, phi, q_r = fixed_point_statistics(channel, alpha, fp.Q, normals, resolution, fp.statistics, seed)
    q = np.diag(fp.Q)
    # delta method: the per-scramble spread of the map at Q* (and twice its change at double
    # inner resolution, inner_bias_bound) propagated to the fixed point through (I - J)^{-1}, J the map's
    # Jacobian in the diagonal overlaps, by finite differences on a subset of the points, with
    # finitely many outputs summed over (outputs_summed): with y sampled, a step of 1e-4 that
    # flips one sample's sign moved the map by O(1 / points), and committee_sign's J had
    # eigenvalues of +-10 where the summed map's are below 0.15 (alpha = 2, fast, seeds 2, 3, 5),
    # so half-widths came out 1-50x the seeds' spread.
    # The full J matters near a transition, where the layers' slow mode is a coupled one.
    # The iteration's last step, propagated likewise, bounds the remaining iteration error.
    sub = normals[:4, : max(16, normals.shape[1] // 4)]

    def mapped(Q, res=resolution):
        st = output_statistics(channel, Q, sub, res, seed=seed, outputs_summed=True)
        return np.diag(overlap_update(alpha, st.H.mean(0), channel.prior))

    base = mapped(fp.Q)
    P = len(q)
    J = np.zeros((P, P))
    for j in range(P):
        Qd = overlap_matrix(channel, order_vector(channel, grown_overlap(fp.Q, j, difference_step(q[j]))))
        moved = Qd[j, j] - q[j]
        if moved != 0:
            J[:, j] = (mapped(Qd) - base) / moved
    radius = np.max(np.abs(np.linalg.eigvals(J)))
    if radius > 0.95:  # at most a 20x amplification, as at a transition the linearisation fails
        J *= 0.95 / radius
    amplify = np.linalg.inv(np.eye(P) - J)
    quadrature = inner_bias_bound(amplify @ (mapped(fp.Q, 2 * resolution) - base))
    last_step = order_diagonal(channel, fp.step)
    ci = t_halfwidth(q_r @ amplify.T) + quadrature + np.abs(amplify @ last_step) + unresolved_deficit(channel, q)
    bayes = bayes_prediction_error(channel, fp.Q, normals[:, : max(8, normals.shape[1] // 4)])
    return FixedPoint(alpha=float(alpha), start=start, overlap=tuple(map(tuple, fp.Q.tolist())),
                      layer_overlaps=tuple(q.tolist()), overlap_ci95=tuple(np.minimum(ci, 1.0).tolist()),
                      mse=float(np.trace(np.eye(len(q)) - fp.Q)),
                      prediction_error_bayes=float(bayes.mean()),
                      prediction_error_plugin=float(st.plugin_error.mean()),
                      prediction_error_plugin_ci95=float(t_halfwidth(st.plugin_error)),
                      free_entropy=phi, converged=bool(fp.converged), iterations=int(fp.iterations),
                      residual=float(fp.residual))


def fixed_point(spec, alpha: float, start: str = "uninformed", precision: str = "standard", seed: int = 0,
                Q_start: np.ndarray | None = None) -> FixedPoint:
    """SE fixed point at one alpha from the uninformed (Q = 1e-3 I) or informed (Q = (1 - 1e-4) I) start
    (or ``Q_start``; for a channel whose SE keeps Q diagonal only its diagonal is used:
    :func:`~solvers.fixed_point_iteration.diagonal_order`)."""
    check_precision(precision)
    _check_alpha(alpha)
    channel = spec.channel()
    P = channel.n_indices
    normals = outer_normals(channel, SE_POINTS[precision], SCRAMBLES, seed)
    if Q_start is None:
        Q_start = np.eye(P) * (UNINFORMED_START if start == "uninformed" else INFORMED_START)
    decision = outer_normals(channel, SE_DECISION_POINTS[precision], SCRAMBLES, seed)
    fp = iterate_fixed_point(channel, alpha, Q_start, normals, statistical_tolerance=STATISTICAL_TOLERANCE,
                             decision_normals=decision, seed=seed)
    return _fixed_point_result(channel, alpha, start, fp, normals, 1, seed)


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
    decision = outer_normals(channel, SE_DECISION_POINTS[precision], SCRAMBLES, seed)  # decisions at 0
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
                                     statistical_tolerance=STATISTICAL_TOLERANCE, decision_normals=decision,
                                     seed=seed)
        Q = fp.Q
        at_q0[i] = _perfect_recovery(channel, fp)
        uninformed[i] = _fixed_point_result(channel, alphas[i], "uninformed", fp, normals, 1, seed)
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
                                     statistical_tolerance=STATISTICAL_TOLERANCE, decision_normals=decision,
                                     seed=seed)
            Q = fp.Q
            informed[i] = _fixed_point_result(channel, alphas[i], "informed", fp, normals, 1, seed)
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
                                seconds=time.perf_counter() - t0, solver_version=__version__,
                                checks=(checks.fixed_points_converged(points), checks.branch_order(points)))
