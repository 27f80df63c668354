"""Possible vs efficient: the information-theoretic and algorithmic perfect-recovery thresholds
(THEORY.md sections 3 and 7).

For one index (P = 1) every SE fixed point lies on the curve parametrised by its overlap q:
    qhat(q) = the inverse of the prior's scalar input update,  alpha(q) = qhat(q) / H(q),
    Phi(q) = -1/2 q qhat + Psi_w(qhat) + alpha(q) E log Z_out(q),
(the learned-layer staircase's parametrisation, with no fixed-point iteration).  The
uninformed branch starts at q -> 0 and follows the curve while alpha(q) increases:
* no first-order transition: alpha(q) increases all the way to q -> 1 and the uninformed branch
  reaches Q_0 continuously; the two thresholds coincide (alpha_Q0 below);
* a first-order one: alpha(q) has a local maximum alpha_s at q_s (the spinodal) and decreases
  beyond (the unstable branch, down to Q_0): the uninformed branch, and AMP, jumps to Q_0 at
  alpha_alg = alpha_s.  The information-theoretic threshold is where the free entropy of Q_0
  crosses the uninformed branch's:
  - continuous outputs revealing a statistic (phase retrieval): Phi(Q_0) = +inf wherever Q_0 is
    a fixed point, alpha > alpha_Q0 = (prior's contraction factor) x the Laplace perfect
    recovery alpha (1 for Gaussian phase retrieval, rho for Gauss-Bernoulli, 0 for +-1 weights);
  - finitely many noiseless outputs and a discrete prior (the binary perceptron): Phi(Q_0) = -P
    times the prior's entropy (log 2 per index for +-1 weights), so alpha_IT = alpha(q_IT) at the
    root q_IT of Phi(q) = Phi(Q_0) on the uninformed branch; when Q = 0 is a fixed point (the
    curve starts at alpha(0+) > 0) and Phi there is already below Phi(Q_0), the crossing is on the
    branch Q = 0 below it: alpha_IT = Phi(Q_0) / E log Z_out(Q = 0) (P log 2 / the entropy of y
    for +-1 weights: the count of bits).

Several indices (P >= 2): for a link symmetric under every permutation of the indices (up to
sign flips; the prior is the same for each) whose row flips map y to +-y, SE maps the line
Q = q I_P to itself (:func:`symmetric_line_problem`), so the fixed points reached from the
symmetric uninformed start lie on the same kind of curve with Q = q I_P:
    alpha(q) = qhat(q) / H(q),  H(q) = the mean of diag H(q I) (equal entries by symmetry),
    Phi(q) = P (-1/2 q qhat + Psi_w(qhat)) + alpha(q) E log Z_out(q I),
and everything above applies (P = 1 is the special case, the same numbers).  That branch may
still leave the line (the indices specialise, as in committee machines): AMP's threshold is
checked by uninformed SE at 0.95x and 1.05x of it when asked (``se_bracket``), and reported
undetermined when SE does not confirm it.  Other multi-index links get no transitions, with the
reason.

Half-widths: each scramble of the outer QMC gives its own curve, hence its own spinodal maximum
and free-entropy root; the Student-t interval over scrambles plus twice the change at double inner
resolution (quadrature, :func:`~solvers.precision.inner_bias_bound`), and the grid refinement, which is far below both.

For noiseless deep attention with several layers (:func:`layered_perfect_recovery_transitions`)
no one-dimensional curve holds the fixed points; both kinds come from what the staircase and
the contraction rates at Q_0 already computed, checked by SE where it is asked for:
* Gaussian weights: Q_0 attracts iff alpha > alpha_PR = L / M (the contraction rates, which
  equal the counting bound), and there its free entropy is +inf (the output reveals the
  weights), so the information-theoretic threshold is alpha_PR; AMP's branch cannot reach a
  repelling Q_0, so its threshold is >= alpha_PR, and equal iff the uninformed branch reaches
  Q_0 right above it (no first-order jump): checked by uninformed SE at 0.95x (short of Q_0)
  and 1.05x (at Q_0) of alpha_PR.
* +-1 weights: Q_0 is a fixed point for every alpha > 0 with free entropy +inf, so the
  information-theoretic threshold is 0; the algorithmic one is the staircase's first-order jump
  (the spinodal of the last learned layer's curve), where the uninformed branch jumps to Q_0:
  checked by uninformed SE at 0.95x and 1.05x of it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .channels.base import Channel
from .checks import SE_BRACKET  # the uninformed SE branch is short of Q_0 / at it there
from .precision import SCRAMBLES, THRESHOLD_POINTS, inner_bias_bound
from .fixed_point_iteration import ON_CAP, capped_near_one
from .quadrature import t_halfwidth
from .results import Threshold, Transition
from .statistics import outer_normals, output_statistics

# the curve's grid in logit q: from q = 1e-3 to 1 - 1e-5
GRID_LOGIT = np.linspace(-7.0, 11.5, 75)
UNRESOLVED = 0.1  # relative spread of alpha(q) over the scrambles beyond which the curve is cut
REFINE_POINTS = 17  # per bracket, around the spinodal and the free-entropy root


@dataclass(frozen=True)
class BranchCurve:
    """alpha(q), Phi(q) and H(q) per scramble on a set of overlaps (arrays (R, G); q (G,))."""

    q: np.ndarray
    alpha: np.ndarray
    phi: np.ndarray
    H: np.ndarray


def branch_curve(channel: Channel, q: np.ndarray, normals: np.ndarray, resolution: int = 1,
                 seed: int | None = None) -> BranchCurve:
    """The fixed-point curve at the overlaps Q = q I_P (module docstring; P = 1, or the
    symmetric line of :func:`symmetric_line_problem`): H(q) = the mean of diag H(q I) (equal
    entries by symmetry, their mean the more accurate), alpha(q) = qhat(q) / H(q) and
    Phi(q) = prior term at (q I, qhat I) (P times the scalar one) + alpha(q) E log Z_out(q I).
    ``seed``: the outer seed of ``normals`` (each scramble's inner bank)."""
    prior = channel.prior
    eye = np.eye(channel.n_indices)
    R = normals.shape[0]
    alpha = np.empty((R, len(q)))
    phi = np.empty((R, len(q)))
    H = np.empty((R, len(q)))
    for j, qj in enumerate(q):
        st = output_statistics(channel, qj * eye, normals, resolution, seed=seed)
        qhat = float(prior.inverse_update(qj))
        H[:, j] = np.einsum("rpp->r", st.H) / len(eye)
        alpha[:, j] = qhat / H[:, j]
        phi[:, j] = prior.free_entropy(qj * eye, qhat * eye) + alpha[:, j] * st.log_partition
    return BranchCurve(np.asarray(q, float), alpha, phi, H)


def _logistic(u):
    return 1.0 / (1.0 + np.exp(-np.asarray(u, float)))


def _spinodal(curve: BranchCurve) -> int | None:
    """Index of the interior maximum of the pooled alpha(q), where the uninformed branch makes
    its last jump (past every local maximum it can only go to Q_0), when the curve clearly
    (by more than the scrambles' spread) decreases after it; None when alpha(q) keeps increasing."""
    pooled = curve.alpha.mean(0)
    spread = t_halfwidth(curve.alpha)
    # near q = 1 a channel with finitely many outputs whose y is sampled (formulas; the orthant
    # links sum y since solver 0.5.14) informs H only through rare samples (y against the sign
    # of omega): where the scrambles disagree by more than 10% the curve is not resolved and is
    # cut (its true continuation falls to alpha_Q0)
    bad = np.flatnonzero((curve.q > 0.5) & ~(spread <= UNRESOLVED * np.abs(pooled)))
    end = int(bad[0]) if len(bad) else len(pooled)
    if end < 3:
        return None
    i = int(np.argmax(pooled[: end - 1]))
    if 0 < i and np.min(pooled[i + 1: end]) < pooled[i] - 2 * spread[i]:
        return i
    return None


def _max_per_scramble(channel, u_lo, u_hi, normals, seed, resolution=1):
    """Each scramble's maximum of alpha on [u_lo, u_hi] (logit q): a fine grid plus a parabola
    through the best point and its neighbours; and the pooled maximiser."""
    u = np.linspace(u_lo, u_hi, REFINE_POINTS)
    c = branch_curve(channel, _logistic(u), normals, resolution, seed)
    out = []
    for a in np.vstack([c.alpha, c.alpha.mean(0)]):
        k = int(np.clip(np.argmax(a), 1, len(u) - 2))
        y0, y1, y2 = a[k - 1], a[k], a[k + 1]
        den = y0 - 2 * y1 + y2
        shift = 0.5 * (y0 - y2) / den if den < 0 else 0.0
        out.append(y1 - 0.25 * (y0 - y2) * shift)
    return np.array(out[:-1]), out[-1]


def _root_per_scramble(channel, u_lo, u_hi, level, normals, seed, resolution=1):
    """alpha at each scramble's root of Phi(q) = level on [u_lo, u_hi] (linear interpolation on
    a fine grid), or NaN where a scramble has no root there; and the pooled one."""
    u = np.linspace(u_lo, u_hi, REFINE_POINTS)
    c = branch_curve(channel, _logistic(u), normals, resolution, seed)
    out = []
    for a, p in zip(np.vstack([c.alpha, c.alpha.mean(0)]), np.vstack([c.phi, c.phi.mean(0)])):
        d = p - level
        k = np.flatnonzero(np.sign(d[:-1]) != np.sign(d[1:]))
        if not len(k):
            out.append(math.nan)
            continue
        k = k[0]
        t = d[k] / (d[k] - d[k + 1])
        out.append(a[k] + t * (a[k + 1] - a[k]))
    return np.array(out[:-1]), out[-1]


def _estimate(per_scramble, pooled, resolution_shift):
    """(alpha, 95% half-width): Student t over scrambles plus twice the change at double
    resolution (:func:`~solvers.precision.inner_bias_bound`)."""
    ok = np.isfinite(per_scramble)
    hw = float(t_halfwidth(per_scramble[ok])) if ok.sum() >= 2 else math.inf
    if len(per_scramble) and not np.all(ok):
        hw = math.inf  # a scramble without the root: the estimate cannot be trusted to its spread
    return float(pooled), hw + float(inner_bias_bound(resolution_shift))


# 1 - q where the limit alpha_Q0 is extrapolated from (decades: the curve approaches it like a power)
END_GAPS = (1e-3, 1e-4, 1e-5, 1e-6)


def _attracting_from(channel, normals, seed) -> tuple[float, float]:
    """alpha_Q0 (Q_0 attracting above it) of a channel with continuous outputs, with its 95%
    half-width.  Near Q_0, 1 - q = factor / qhat to leading order and H(q) does not depend on the
    prior, so alpha_Q0 = factor x lim_{q -> 1} q / ((1 - q) H(q)) (the Gaussian prior's alpha(q):
    its corrections are a power of 1 - q, a sparse prior's only of log qhat / qhat).  The limit is
    Aitken's extrapolation a3 - d2 / (d1 / d2 - 1) from three decades of 1 - q (the pooled ratio,
    applied to each scramble); the half-width is the Student-t interval over scrambles plus the
    change from the decade-earlier triple."""
    q = 1.0 - np.array(END_GAPS)
    H = branch_curve(channel, q, normals, seed=seed).H
    gaussian = q / ((1.0 - q) * H)  # (R, 4)

    def aitken(a):  # a: (R, 3)
        m = a.mean(0)
        d1, d2 = m[0] - m[1], m[1] - m[2]
        ratio = d1 / d2 if d2 != 0 else math.inf
        if not (math.isfinite(ratio) and ratio > 1.5):
            return a[:, 2]  # no clean geometric approach: the last point
        return a[:, 2] - (a[:, 1] - a[:, 2]) / (ratio - 1.0)

    late, early = aitken(gaussian[:, 1:]), aitken(gaussian[:, :3])
    factor = channel.prior.perfect_recovery_factor
    return factor * float(late.mean()), factor * (float(t_halfwidth(late)) + abs(float(late.mean() - early.mean())))


def symmetric_line_problem(channel: Channel) -> str | None:
    """Why SE's fixed points from a symmetric start need not lie on the line Q = q I_P, or
    None when they do: one index, or a link symmetric under every permutation of the indices
    (``Channel.index_permutation_symmetric``; the prior is the same for every index) whose SE
    keeps Q diagonal (``Channel.keeps_overlaps_diagonal``), with no known rows.  SE then maps
    q I to q' I, and the uninformed start (1e-3 I) stays on the line."""
    P = channel.n_indices
    if P == 1:
        return None
    if channel.known:
        return "known rows break the symmetry between the indices: no one-dimensional curve holds the fixed points"
    if not channel.index_permutation_symmetric:
        return (f"the link is not symmetric under every permutation of its P = {P} indices (up to sign flips), "
                "so no one-dimensional curve Q = q I holds the fixed points")
    if not channel.keeps_overlaps_diagonal:
        return (f"the link is symmetric under permutations of its P = {P} indices, but a row flip z_p -> -z_p "
                "maps y to neither y nor -y, so nothing keeps the off-diagonal overlaps of a diagonal Q at 0 "
                "(for a committee of signs they grow: E[z | y] at Q = 0 lies along (1, ..., 1)) and SE may "
                "leave the line Q = q I")
    return None


def perfect_recovery_transitions(channel: Channel, precision: str, seed: int,
                                 laplace: tuple[float, float] | None,
                                 uninformed_overlaps=None) -> tuple[tuple[Transition, ...], str]:
    """The information-theoretic and algorithmic perfect-recovery thresholds of a noiseless
    channel with one index or on the symmetric line (:func:`symmetric_line_problem`; module
    docstring), or () with the reason.  ``laplace``: the Laplace perfect-recovery alpha of the
    Gaussian-prior contraction and its half-width, for channels that reveal a smooth statistic
    (else None); ``uninformed_overlaps``: SE's uninformed fixed point at an alpha (diagonal
    overlaps, half-widths), to check that AMP's branch reaches Q_0 at the algorithmic threshold
    when P >= 2 (None: not checked)."""
    if not channel.noiseless:
        return (), "no perfect recovery with output noise"
    problem = symmetric_line_problem(channel)
    if problem is not None:
        return (), problem
    transitions, note = _transitions_on_the_curve(channel, precision, seed, laplace)
    if channel.n_indices == 1 or not transitions:
        return transitions, note
    return _checked_off_the_line(transitions, channel, uninformed_overlaps)


def _transitions_on_the_curve(channel: Channel, precision: str, seed: int,
                              laplace: tuple[float, float] | None) -> tuple[tuple[Transition, ...], str]:
    """:func:`perfect_recovery_transitions` from the curve Q = q I_P alone."""
    prior = channel.prior
    discrete_outputs = channel.finite_outputs is not None
    if discrete_outputs and prior.entropy is None:
        return (), ("Q_0 is never an attracting fixed point: perfect recovery needs a discrete prior "
                    "for a link with finitely many outputs")
    normals = outer_normals(channel, THRESHOLD_POINTS[precision], SCRAMBLES, seed)
    fine = normals[:4, : max(16, normals.shape[1] // 4)]
    curve = branch_curve(channel, _logistic(GRID_LOGIT), normals, seed=seed)
    if discrete_outputs:
        alpha_q0, alpha_q0_ci, phi_q0 = 0.0, 0.0, -channel.n_indices * prior.entropy
    else:
        phi_q0 = None  # +inf above alpha_q0
        if prior.perfect_recovery_factor == 0.0:
            alpha_q0, alpha_q0_ci = 0.0, 0.0  # a discrete prior: Q_0 attracts for every alpha
        elif laplace is not None:
            alpha_q0 = prior.perfect_recovery_factor * laplace[0]
            alpha_q0_ci = prior.perfect_recovery_factor * laplace[1]
        else:
            alpha_q0, alpha_q0_ci = _attracting_from(channel, normals, seed)
    i = _spinodal(curve)
    if i is None or curve.alpha.mean(0)[i] <= alpha_q0:
        note = ("no first-order transition: the uninformed branch reaches Q_0 continuously, so the "
                "information-theoretic and algorithmic thresholds coincide")
        return tuple(Transition("perfect_recovery", kind, alpha_q0, alpha_q0_ci, True, note)
                     for kind in ("information_theoretic", "algorithmic")), note
    u_lo, u_hi = GRID_LOGIT[i - 1], GRID_LOGIT[i + 1]
    s_r, s = _max_per_scramble(channel, u_lo, u_hi, normals, seed)
    s_fine_r, s_fine = _max_per_scramble(channel, u_lo, u_hi, fine, seed, 2)
    s_pooled_1 = _max_per_scramble(channel, u_lo, u_hi, fine, seed, 1)[1]
    alg, alg_ci = _estimate(s_r, s, s_fine - s_pooled_1)
    note = "first-order transition: AMP (the uninformed branch) jumps to Q_0 at the algorithmic threshold"
    if phi_q0 is None:
        it, it_ci = alpha_q0, alpha_q0_ci
        note += ("; the free entropy of Q_0 is +inf wherever it is a fixed point (a continuous output "
                 "reveals the weights), so the information-theoretic threshold is where it becomes one")
    else:
        # the lower branch, up to its first local maximum of alpha(q)
        pooled = curve.alpha.mean(0)
        first = next((j for j in range(1, i + 1) if pooled[j] > pooled[j + 1]), i)
        pooled_phi = curve.phi.mean(0)
        d = pooled_phi[: first + 1] - phi_q0
        k = np.flatnonzero((d[:-1] > 0) & (d[1:] <= 0))
        if d[0] <= 0:
            # Q_0's free entropy is above the curve's from its start (alpha > 0: Q = 0 is a fixed
            # point, the uninformed branch below the start): the crossing is on Q = 0
            it, it_ci = _crossing_at_zero_overlap(channel, phi_q0, normals, fine, seed)
            note += (f"; Q_0's free entropy is -P x the prior's entropy ({phi_q0:.6g}), crossed at the "
                     "information-theoretic one by the uninformed branch's at Q = 0, alpha E log Z_out(Q = 0) "
                     "(before the curve of nonzero overlaps starts)")
        elif not len(k):
            it, it_ci = alg, alg_ci
            note += "; the uninformed branch has the larger free entropy up to its jump: the thresholds coincide"
        else:
            # the cells either side too: each scramble's root lies near the pooled one
            a_lo, a_hi = GRID_LOGIT[max(k[0] - 1, 0)], GRID_LOGIT[min(k[0] + 2, first)]
            r_r, r = _root_per_scramble(channel, a_lo, a_hi, phi_q0, normals, seed)
            r_fine = _root_per_scramble(channel, a_lo, a_hi, phi_q0, fine, seed, 2)[1]
            r_pooled_1 = _root_per_scramble(channel, a_lo, a_hi, phi_q0, fine, seed, 1)[1]
            it, it_ci = _estimate(r_r, r, r_fine - r_pooled_1)
            note += f"; Q_0's free entropy is -P x the prior's entropy ({phi_q0:.6g}), crossed at the information-theoretic one"
    coincide = abs(it - alg) <= it_ci + alg_ci
    return (Transition("perfect_recovery", "information_theoretic", it, it_ci, coincide, note),
            Transition("perfect_recovery", "algorithmic", alg, alg_ci, coincide, note)), note


def _crossing_at_zero_overlap(channel: Channel, phi_q0: float, normals: np.ndarray, fine: np.ndarray,
                              seed: int) -> tuple[float, float]:
    """(alpha, 95% half-width) where the free entropy of the fixed point Q = 0,
    alpha E log Z_out(Q = 0) (the prior's term vanishes at qhat = 0), equals Q_0's, phi_q0 < 0:
    alpha = phi_q0 / E log Z_out(0), per scramble (for finitely many outputs and +-1 weights,
    P log 2 over the entropy of y at Q = 0: the count of bits)."""
    zero = np.zeros((channel.n_indices, channel.n_indices))

    def log_partition(points, resolution):
        return output_statistics(channel, zero, points, resolution, seed=seed).log_partition

    log_z = log_partition(normals, 1)
    shift = phi_q0 / log_partition(fine, 2).mean() - phi_q0 / log_partition(fine, 1).mean()
    return _estimate(phi_q0 / log_z, phi_q0 / log_z.mean(), shift)


def _checked_off_the_line(transitions: tuple[Transition, ...], channel: Channel,
                          uninformed_overlaps) -> tuple[tuple[Transition, ...], str]:
    """P >= 2: the curve's transitions with what SE says of the symmetric-line assumption.  The
    line is invariant, but the uninformed branch may leave it (the indices specialise, as in
    committee machines), so AMP's threshold is confirmed by uninformed SE short of Q_0 at 0.95x
    and at Q_0 at 1.05x of it (:func:`q0_bracket`; above :data:`AT_Q0_STOPPED` for a link that is
    not sign symmetric), else reported undetermined (NaN, coincide False); without
    ``uninformed_overlaps`` the note says it was not checked."""
    it, alg = transitions
    note = (f"{it.note}; P = {channel.n_indices}: the fixed points followed on the symmetric line Q = q I (SE maps "
            "it to itself), which the uninformed branch may leave (the indices specialise)")
    coincide, alpha, ci = alg.coincide, alg.alpha, alg.ci95
    if uninformed_overlaps is None:
        note += ("; that AMP's branch reaches Q_0 at the algorithmic threshold was not checked by SE on this "
                 "request: ask with se_bracket = true to have SE verify it")
    elif not alpha > 0:
        note += "; an algorithmic threshold at alpha = 0 has no SE bracket to check"
    else:
        b = q0_bracket(alpha, channel.unknown, uninformed_overlaps, at_q0_level(channel))
        if b.below and b.above:
            note += f"; SE confirms that the uninformed branch reaches Q_0 there ({b.detail})"
        else:
            coincide, alpha, ci = False, math.nan, math.inf
            note += (f"; SE did not confirm that the uninformed branch reaches Q_0 there ({b.detail}): AMP's "
                     "threshold is not determined")
    return (Transition("perfect_recovery", "information_theoretic", it.alpha, it.ci95, coincide, note),
            Transition("perfect_recovery", "algorithmic", alpha, ci, coincide, note)), note


AT_Q0 = 1.0 - 1e-6  # an SE overlap above this is at Q_0 (SE caps at 1 - 1e-10 there)
# SE of a link that is not sign symmetric has no relative stopping rule near Q_0: it stops once
# its absolute steps are within the map's statistical error (product at 1.05x its alpha_Q0, fast:
# 1 - q = 6e-6 to 7e-6), so its overlaps count as at Q_0 above this (the branch 5% below a
# continuous approach sits far lower: product at 0.95x, 0.92)
AT_Q0_STOPPED = 1.0 - 1e-4


def at_q0_level(channel: Channel) -> float:
    """The SE overlap above which ``channel``'s uninformed branch counts as at Q_0: on SE's cap
    (``fixed_point_iteration.ON_CAP``) for a finite-valued link, whose outer points cannot
    resolve 1 - q below 1 - RESOLVED_DEFICIT (sign_product with +-1 weights at 1.05x its
    alpha_alg, fast: (0.999, 0.999) +- 0.001), AT_Q0 for another sign-symmetric one,
    AT_Q0_STOPPED else."""
    if capped_near_one(channel):
        return ON_CAP
    if channel.sign_symmetric:
        return AT_Q0
    return AT_Q0_STOPPED


@dataclass(frozen=True)
class Q0Bracket:
    """Uninformed SE at 0.95x and 1.05x of a candidate algorithmic threshold: whether the branch
    is short of Q_0 below (some unknown layer's overlap + its half-width < 1) and at Q_0 above
    (every unknown layer's overlap above :data:`AT_Q0`, or :data:`AT_Q0_STOPPED` for a channel
    that is not sign symmetric), and what it saw."""

    below: bool
    above: bool
    detail: str


def q0_bracket(alpha: float, unknown, uninformed_overlaps, at_q0: float = AT_Q0) -> Q0Bracket:
    """:class:`Q0Bracket` at ``alpha`` (``uninformed_overlaps(alpha)``: the diagonal overlaps of
    the uninformed SE fixed point and their 95% half-widths, as for the SE bracket check;
    ``at_q0``: the overlap above which SE is at Q_0)."""
    unknown = list(unknown)
    seen, verdict = [], []
    for factor in SE_BRACKET:
        q, ci = (np.asarray(x, dtype=float)[unknown] for x in uninformed_overlaps(factor * alpha))
        verdict.append(bool(np.any(q + ci < 1.0)) if factor < 1 else bool(np.all(q > at_q0)))
        # 6 significant digits: an overlap at Q_0 within 1e-5 shows, where 4 decimals read 1.0 +- 0.0
        seen.append(f"{factor:g}x: overlaps {[float(f'{x:.6g}') for x in q]} +- {[float(f'{x:.2g}') for x in ci]}")
    return Q0Bracket(verdict[0], verdict[1], "uninformed SE at " + "; ".join(seen))


def layered_perfect_recovery_transitions(channel: Channel, thresholds: list[Threshold], alpha_pr: float,
                                         ci_pr: float, uninformed_overlaps=None
                                         ) -> tuple[tuple[Transition, ...], str]:
    """The information-theoretic and algorithmic perfect-recovery thresholds of noiseless deep
    attention with several layers (module docstring), or () with the reason.  ``thresholds``:
    the staircase's; ``alpha_pr``, ``ci_pr``: Q_0's stability threshold (factor x the contraction
    rates' alpha_PR); ``uninformed_overlaps``: SE's uninformed fixed point at an alpha (diagonal
    overlaps, half-widths), to check the algorithmic threshold (None: not checked)."""
    if not channel.noiseless:
        return (), "no perfect recovery with output noise"
    factor = channel.prior.perfect_recovery_factor
    unknown = channel.unknown
    if factor == 1.0:
        # Gaussian weights: Q_0 repels below alpha_PR (its contraction rate), so AMP's threshold is
        # at least alpha_PR; SE says whether the branch is at Q_0 right above it
        it, it_ci = alpha_pr, ci_pr
        note = (f"Gaussian weights: the information-theoretic threshold is where Q_0 becomes a fixed point "
                f"attracting the contraction of 1 - q (alpha_PR, the counting bound: below it there are more "
                f"unknowns than revealed numbers, above it Q_0's free entropy is +inf); Q_0 repels below it, so "
                f"AMP's threshold is at least alpha_PR")
        if uninformed_overlaps is None:
            note += ("; that the uninformed branch reaches Q_0 right above it (no first-order jump, the two "
                     "coinciding) was not checked by this request: ask with se_bracket = true to have SE "
                     "verify it (tests do for L = 2, M = 2)")
            alg, alg_ci, coincide = it, it_ci, True
        else:
            b = q0_bracket(it, unknown, uninformed_overlaps)
            high = SE_BRACKET[1] * it
            coincide = b.below and b.above
            if coincide:
                # between alpha_PR (Q_0 repels below) and 1.05 alpha_PR (SE at Q_0): the interval
                # centred on alpha_PR covering that bracket
                alg, alg_ci = it, high - it + it_ci
                note += (f"; SE checked that the uninformed branch reaches Q_0 within 5% above it ({b.detail}): "
                         f"no first-order jump, the two coincide")
            else:
                alg, alg_ci = math.nan, math.inf
                note += (f"; SE did not confirm that the uninformed branch reaches Q_0 right above it "
                         f"({b.detail}): AMP's threshold is not determined")
        return (Transition("perfect_recovery", "information_theoretic", it, it_ci, coincide, note),
                Transition("perfect_recovery", "algorithmic", alg, alg_ci, coincide, note)), note
    if factor == 0.0:
        # a discrete prior: Q_0 attracts for every alpha > 0; AMP reaches it through a jump
        jumps = [t for t in thresholds if math.isfinite(t.alpha) and t.kind == "staircase" and t.reason]
        if not jumps or max(thresholds, key=lambda t: t.alpha) not in jumps:
            return (), ("the last layer is not learned through a first-order jump: where the uninformed "
                        "branch reaches Q_0 is not located")
        jump = jumps[-1]
        note = ("discrete weights: Q_0 is a fixed point for every alpha > 0 and its free entropy is +inf (the "
                "continuous output reveals the weights), so perfect recovery is information-theoretically "
                "possible for any alpha > 0; AMP's uninformed branch reaches Q_0 only through "
                f"the first-order jump of the staircase (the spinodal; layer {jump.layer} learned there)")
        if uninformed_overlaps is not None:
            b = q0_bracket(jump.alpha, unknown, uninformed_overlaps)
            note += (f"; SE {'confirms' if b.below and b.above else 'does NOT confirm'} the jump to Q_0 "
                     f"({b.detail})")
        it, it_ci, alg, alg_ci = 0.0, 0.0, jump.alpha, jump.ci95
        coincide = abs(it - alg) <= it_ci + alg_ci
        return (Transition("perfect_recovery", "information_theoretic", it, it_ci, coincide, note),
                Transition("perfect_recovery", "algorithmic", alg, alg_ci, coincide, note)), note
    return (), ("information-theoretic vs algorithmic thresholds of deep attention are computed for Gaussian "
                "and +-1 weights")
