"""Linear stability of the uninformed fixed point Q = 0 for any channel (THEORY.md section 4).

At Q = 0 (omega = 0, V = I) with y drawn from the model:

(a) trivial subspace: T = E_y[ sum_m E[z_m|y] E[z_m|y]^T ] (P x P).  Directions (eigenvectors
    of T) whose eigenvalue is significantly positive, beyond its 95% half-width over the
    scrambles, are learned for every alpha > 0 (threshold 0, kind "trivial").
(b) on the complement (an orthonormal basis U of the other eigen-directions), with
    G_{mm'}(y) = Cov[z_m, z_m' | y] - delta_{mm'} I projected on U,
        F(Q) = sum_{m,m'} E_y[ G_{mm'} Q G_{mm'}^T ],
    a positive, self-adjoint linear map on symmetric matrices.  Its Perron eigenvalue rho
    (the largest eigenvalue, with a PSD eigenmatrix) gives alpha_c = 1 / rho; the top
    eigenvector of the eigenmatrix is the direction learned first.  When rho is not
    significantly positive Q = 0 is stable on the complement for every alpha (alpha_c = inf).
(c) for sign-symmetric channels (block-diagonal G) the per-index values
    alpha_p = 1 / E || Cov[z_p | y] - I_M ||_F^2 are also returned.

The outer expectation is randomised QMC: R independent scrambles of a Sobol sequence in the
P M Gaussian coordinates of Z (plus the channel's noise coordinates), mapped through the
inverse normal CDF; every estimate comes with a Student-t 95% half-width over the scrambles.
The same seed reproduces every number bit for bit.  Channels with a seeded inner bank
(``reseeded_per_scramble``: the importance-sampling ones, formula links) get an independent
inner bank per scramble (``Channel.scramble_channels``, the banks every engine draws), so that
the CI also covers the inner Monte-Carlo error; the remaining O(1/K) bias of self-normalised
importance sampling enters the half-width as twice the change at double inner resolution
(since solver 0.5.6; before, it was not in the half-width).  For a scalar noisy observation
whose posterior is a prior-bank importance sampler (no known rows) the expectation over y is
a quadrature instead (:mod:`solvers.output_quadrature`; see :func:`linear_stability`): at
Q = 0 the posterior depends on y alone.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Optional

import numpy as np
from scipy import optimize

from .precision import (LINEAR_STABILITY_MAX_POINTS, LINEAR_STABILITY_POINTS, PRECISION_TARGETS, SCRAMBLES,
                        TRIVIAL_STAIRCASE_MAX_POINTS, TRIVIAL_STAIRCASE_MAX_POINTS_INNER_BANK,
                        TRIVIAL_STAIRCASE_PILOT_POINTS, Y_QUADRATURE_MAX_POINTS,
                        Y_QUADRATURE_POINTS, INNER_BIAS_FACTOR, check_precision)
from .channels.base import in_threads
from .output_quadrature import CUTOFF, NODES_PER_SD, scalar_output_moments
from .quadrature import MIN_SCRAMBLES, scrambled_normals, t_halfwidth
from .results import Settings, Threshold
from .staircase_curve import StaircaseCurve, refine_root
from .statistics import (control_variate_combination, inverse_on_unknown, observation_cases, outer_normals,
                         sample_outer)
# the y path's bank is the channel's widened by this factor and weighted back to N(0, I): the
# tails of y, where the bank is sparse, carry most of F's error (z1 z2 z3, noise 0.1: 8 banks of
# 49,152 points scatter 7.7x less than unwidened; at 1.3 the weights' effective size is K / 1.31
# for P M = 3)
Y_BANK_SCALE = 1.3
TRIVIAL_ABS_TOL = 1e-10  # eigenvalues of T below this are zero whatever their half-width
RHO_ABS_TOL = 1e-10


def _plain(obj):
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if hasattr(obj, "tolist"):
        return _plain(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None  # NaN and inf are not JSON
    return obj


@dataclass(frozen=True)
class LinearStabilityResult:
    """Linear stability of Q = 0 (see the module docstring).

    trivial_matrix: T (P x P); trivial_eigenvalues / trivial_ci95: its eigenvalues (ascending)
    with 95% half-widths; trivial_directions: unit vectors of the trivial subspace.
    complement_basis: orthonormal columns (P x r) spanning the non-trivial directions.
    rho, rho_ci95: Perron eigenvalue of F on the complement and its 95% half-width;
    alpha_c, alpha_ci95: 1 / rho and its half-width (inf when rho is not significantly > 0);
    eigenmatrix (P x P, trace 1, PSD) and direction (its top eigenvector, in R^P);
    second_eigenvalue of F and ``degenerate`` (True when the gap rho - second eigenvalue is
    not larger than its 95% half-width over the scrambles: the direction is then not unique,
    any PSD combination of the top eigenmatrices is learned at the same alpha).
    block_alpha / block_ci95: per-index 1 / E||Cov[z_p|y] - I||_F^2 (sign-symmetric channels).
    thresholds: the :class:`~solvers.results.Threshold` list (trivial ones first, then the
    linear-stability ones, per index for sign-symmetric channels with P > 1).
    """

    n_indices: int
    n_tokens: int
    index_names: tuple[str, ...]
    trivial_matrix: tuple[tuple[float, ...], ...]
    trivial_eigenvalues: tuple[float, ...]
    trivial_ci95: tuple[float, ...]
    trivial_directions: tuple[tuple[float, ...], ...]
    complement_basis: tuple[tuple[float, ...], ...]
    rho: float
    rho_ci95: float
    alpha_c: float
    alpha_ci95: float
    eigenmatrix: Optional[tuple[tuple[float, ...], ...]]
    direction: Optional[tuple[float, ...]]
    second_eigenvalue: float
    degenerate: bool
    block_alpha: Optional[tuple[float, ...]]
    block_ci95: Optional[tuple[float, ...]]
    thresholds: tuple[Threshold, ...]
    settings: Settings
    seconds: float
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return _plain(asdict(self))


def _sym_basis(r: int) -> np.ndarray:
    """Orthonormal basis (r*r, r(r+1)/2) of symmetric r x r matrices (row-major vec)."""
    cols = []
    for i in range(r):
        for j in range(i, r):
            E = np.zeros((r, r))
            if i == j:
                E[i, i] = 1.0
            else:
                E[i, j] = E[j, i] = 1.0 / math.sqrt(2.0)
            cols.append(E.ravel())
    return np.array(cols).T


def _scramble_statistics(channel, Zs: np.ndarray, xis: Optional[np.ndarray], resolution: int):
    """Per-scramble T (P, P), F (P, P, P, P) as F[a, c, b, d] and block values (P,), over the
    unknown rows only (P of them): the known ones enter as side information omega_k = z_k, V_kk = 0."""
    P, M = channel.n_indices, channel.n_tokens
    n = Zs.shape[0]
    Z = Zs.reshape(n, P, M)
    obs = channel.observation(Z, xis) if xis is not None else channel.observation(Z)
    known, unknown = list(channel.known), list(channel.unknown)
    omega = np.zeros((n, P, M))
    omega[:, known] = Z[:, known]
    V = np.eye(P) - channel.known_overlaps(np.zeros((P, P)))  # Q = 0 on the unknown rows
    pm = channel.posterior_moments(obs, omega, V, resolution)
    mean = np.asarray(pm.mean, dtype=float).reshape(n, P, M)[:, unknown]
    cov = np.asarray(pm.cov, dtype=float).reshape(n, P, M, P, M)[:, unknown][:, :, :, unknown]
    P = len(unknown)
    T = np.einsum("npm,nqm->pq", mean, mean) / n
    G = np.transpose(cov, (0, 2, 4, 1, 3)).copy()  # (n, m, m', P, P)
    idx = np.arange(M)
    G[:, idx, idx] -= np.eye(P)
    F = np.einsum("nklab,nklcd->acbd", G, G, optimize=True) / n
    blocks = np.empty(P)
    for p in range(P):
        D = cov[:, p, :, p, :] - np.eye(M)
        blocks[p] = np.mean(np.sum(D * D, axis=(1, 2)))
    return T, F, blocks


def _evaluate(channel, n_points: int, scrambles: int, seed: int, resolution: int):
    P, M = channel.n_indices, channel.n_tokens
    noise_dim = int(np.prod(channel.noise_shape)) if len(channel.noise_shape) else 0
    pts = scrambled_normals(n_points, P * M + noise_dim, scrambles, seed)
    banks = channel.scramble_channels(seed, scrambles)
    Ts, Fs, Bs = [], [], []
    for r, ch in enumerate(banks):
        Zs = pts[r, :, :P * M]
        xis = pts[r, :, P * M:].reshape((n_points,) + tuple(channel.noise_shape)) if noise_dim else None
        T, F, B = _scramble_statistics(ch, Zs, xis, resolution)
        Ts.append(T)
        Fs.append(F)
        Bs.append(B)
    return np.array(Ts), np.array(Fs), np.array(Bs)


def y_quadrature_applies(channel) -> bool:
    """True when the Q = 0 posterior depends on a scalar y alone and comes from a prior bank
    (no known rows, :meth:`~solvers.channels.base.Channel.inner_prior_bank`): the y path of
    :func:`linear_stability` and :func:`y_quadrature_block_values` apply."""
    return not channel.known and channel.inner_prior_bank(1) is not None


def _y_scramble_statistics(channel, points: int):
    """(T, F, blocks) of one scramble's bank by quadrature in y, on the fine and on the coarse
    lattice (:func:`~solvers.output_quadrature.scalar_output_moments`), in the layout of
    :func:`_scramble_statistics`.  The bank U of about ``points`` vectors is widened to
    Z = Y_BANK_SCALE U and weighted back to N(0, I) (w_k proportional to
    exp(-(s^2 - 1) |U_k|^2 / 2), normalised; the channel's symmetries keep them exact)."""
    P, M = channel.n_indices, channel.n_tokens
    U = np.asarray(channel.inner_prior_bank(points), dtype=float)
    sq = np.sum(U.reshape(len(U), -1) ** 2, axis=1)
    w = np.exp(-0.5 * (Y_BANK_SCALE ** 2 - 1.0) * (sq - sq.min()))
    Z = Y_BANK_SCALE * U
    g = np.asarray(channel.output(Z), dtype=float).reshape(len(U))
    T2, E2 = scalar_output_moments(Z, g, w / w.sum(), channel.noise)
    levels = []
    for T, E4 in zip(T2, E2):
        T = T.reshape(P, M, P, M)
        E4 = E4.reshape((P, M) * 4)
        levels.append((np.einsum("pmqm->pq", T), np.einsum("akblckdl->acbd", E4),
                       np.einsum("pkplpkpl->p", E4)))
    return levels, len(U)


def _evaluate_y(channel, points: int, scrambles: int, seed: int):
    """Per-scramble statistics by quadrature in y (each scramble its own bank, as
    :meth:`~solvers.channels.base.Channel.scramble_channels` draws it): ((Ts, Fs, Bs) fine, (Ts, Fs, Bs) coarse, bank rows)."""
    banks = channel.scramble_channels(seed, scrambles)
    per = in_threads(lambda ch: _y_scramble_statistics(ch, points), banks)  # the kernel releases the GIL
    fine, coarse = ([np.array(x) for x in zip(*(levels[i] for levels, _ in per))] for i in range(2))
    return fine, coarse, per[0][1]


def y_quadrature_block_values(channel, points: int, scrambles: int, seed: int, half=None):
    """Per-index E||Cov[z_p | y] - I_M||_F^2 at Q = 0 by quadrature in y on banks of ``points``
    vectors per scramble (as :func:`linear_stability`'s y path): (per-scramble values (R, P),
    their resolution terms (P,): twice the change from the bank half as large (``half``: its
    per-scramble values when already computed) plus the change on the coarse lattice, the
    bank rows)."""
    fine, coarse, rows = _evaluate_y(channel, points, scrambles, seed)
    if half is None:
        half = _evaluate_y(channel, points // 2, scrambles, seed)[0][2]
    values = fine[2]
    terms = (INNER_BIAS_FACTOR * np.abs(values.mean(0) - half.mean(0))
             + np.abs(values.mean(0) - coarse[2].mean(0)))
    return values, terms, rows


def _change(a: dict, b: dict, factor: float = 1.0) -> tuple[float, np.ndarray, np.ndarray]:
    """factor x (a - b) of the pooled rho, block values and eigenvalues of T of two analyses."""
    return (factor * (a["rho"] - b["rho"]), factor * (np.asarray(a["blocks"]) - np.asarray(b["blocks"])),
            factor * (np.asarray(a["lam"]) - np.asarray(b["lam"])))


def _analysed_with_terms(channel, Ts, Fs, Bs, *changes) -> dict:
    """:func:`_analyse` with resolution error terms (:func:`_change`) in the half-widths: the
    |changes| of T's eigenvalues in theirs (before the trivial subspace is decided), of rho as
    the eigenvalues' slack (the gap, the top eigenspace) and in rho's, of the block values in
    theirs."""
    a = dict(_analyse(channel, Ts, Fs, Bs, slack=sum(abs(c[0]) for c in changes),
                      trivial_slack=sum(np.abs(c[2]) for c in changes)))
    for rho, blocks, _ in changes:
        a["rho_hw"] = a["rho_hw"] + abs(rho)
        a["blocks_hw"] = a["blocks_hw"] + np.abs(blocks)
    return a


def _analyse(channel, Ts, Fs, Bs, slack: float = 0.0, trivial_slack=0.0):
    """The trivial subspace and the Perron eigenproblem on the unknown rows' statistics, with
    matrices and directions embedded back in R^P (zero on the known rows).  ``slack``: a
    resolution error of F's eigenvalues beyond their spread over scrambles, added to the
    half-width of their differences (the gap and the top eigenspace; rho's own half-width
    gets the resolution terms from :func:`_analysed_with_terms`); ``trivial_slack``: the same
    for T's eigenvalues (ascending), added to their half-widths."""
    out = _analyse_unknown(Ts, Fs, Bs, slack, trivial_slack)
    E = np.eye(channel.n_indices)[:, list(channel.unknown)]
    for key in ("trivial_dirs", "Uc", "direction", "blocks", "blocks_hw"):
        if out.get(key) is not None:
            out[key] = E @ out[key]
    for key in ("T", "Q"):
        if out.get(key) is not None:
            out[key] = E @ out[key] @ E.T
    return out


def _analyse_unknown(Ts, Fs, Bs, slack=0.0, trivial_slack=0.0):
    P = Ts.shape[1]
    T = Ts.mean(0)
    T = 0.5 * (T + T.T)
    lam, U = np.linalg.eigh(T)
    proj = np.einsum("pi,rpq,qi->ri", U, Ts, U)  # per-scramble u_i^T T_r u_i
    lam_hw = t_halfwidth(proj) + trivial_slack
    trivial = (lam > lam_hw) & (lam > TRIVIAL_ABS_TOL)
    Ut = U[:, trivial]
    Uc = U[:, ~trivial]
    r = Uc.shape[1]
    out = dict(T=T, lam=lam, lam_hw=lam_hw, trivial_dirs=Ut, Uc=Uc)
    if r == 0:
        out.update(rho=0.0, rho_hw=0.0, rho2=0.0, Q=None, direction=None, rho_r=np.zeros(len(Ts)))
    else:
        K = np.kron(Uc, Uc)  # (P*P, r*r), row-major vec
        Bsym = _sym_basis(r)
        W = K @ Bsym  # symmetric r x r basis embedded in P x P
        Fmat = Fs.reshape(len(Fs), P * P, P * P)
        Fsym = np.einsum("ia,rij,jb->rab", W, Fmat, W)
        Fsym = 0.5 * (Fsym + np.transpose(Fsym, (0, 2, 1)))
        rho_r = np.array([np.linalg.eigvalsh(f)[-1] for f in Fsym])
        ev, evec = np.linalg.eigh(Fsym.mean(0))
        rho = float(ev[-1])
        rho2 = float(ev[-2]) if len(ev) > 1 else -np.inf
        if len(ev) > 1:
            # per-scramble difference of the Rayleigh quotients on the two top eigenmatrices:
            # the gap is resolved only if it exceeds its own 95% half-width
            v1, v2 = evec[:, -1], evec[:, -2]
            dr = np.einsum("a,rab,b->r", v1, Fsym, v1) - np.einsum("a,rab,b->r", v2, Fsym, v2)
            gap_hw = float(t_halfwidth(dr)) + slack
        else:
            gap_hw = 0.0
        top = [len(ev) - 1]
        for i in range(len(ev) - 1):
            vi = evec[:, i]
            di = np.einsum("a,rab,b->r", evec[:, -1], Fsym, evec[:, -1]) - np.einsum("a,rab,b->r", vi, Fsym, vi)
            if di.mean() <= float(t_halfwidth(di)) + slack + 1e-12 * abs(rho):
                top.append(i)
        out["top_eigenspace"] = evec[:, top]  # its directions are found only when reported
        Qr = (Bsym @ evec[:, -1]).reshape(r, r)
        Q = Uc @ Qr @ Uc.T
        if np.trace(Q) < 0:
            Q = -Q
        Q = 0.5 * (Q + Q.T)
        Q /= np.trace(Q) if abs(np.trace(Q)) > 0 else 1.0
        w, V = np.linalg.eigh(Q)
        d = V[:, -1]
        k = int(np.argmax(np.abs(d)))
        d = d * (1.0 if d[k] >= 0 else -1.0)
        out.update(rho=rho, rho_hw=float(t_halfwidth(rho_r)), rho2=rho2, Q=Q, direction=d, rho_r=rho_r,
                   gap_hw=gap_hw)
    out["blocks"] = Bs.mean(0)
    out["blocks_hw"] = t_halfwidth(Bs)
    return out


RANK_ONE_TOL = 0.02  # 1 - (share of u u^T inside the top eigenspace) below which u is learned
ISOTROPIC_NOTE = ("every direction in the span of the directions listed with this alpha is learned at this "
                  "alpha (F's top eigenspace holds every symmetric matrix on that span); they are one basis of it")


def _holds_every_symmetric_matrix(E: np.ndarray, W: np.ndarray) -> bool:
    """Whether span(E) (orthonormal columns on the symmetric basis of r x r matrices) contains
    every symmetric matrix on span(W) (orthonormal columns in R^r), to RANK_ONE_TOL."""
    r, k = W.shape
    to_r, on_w = _sym_basis(r), _sym_basis(k)
    S = np.array([to_r.T @ (W @ on_w[:, i].reshape(k, k) @ W.T).ravel() for i in range(on_w.shape[1])])
    return bool(np.all(1.0 - np.sum((S @ E) ** 2, axis=1) <= RANK_ONE_TOL))


def top_eigenspace_directions(E: np.ndarray, r: int) -> tuple[list[np.ndarray], bool]:
    """The directions learned at the Perron eigenvalue of F when its top eigenspace (columns
    E, on the symmetric basis of r x r matrices) may be degenerate, and whether they are a
    basis of a subspace learned as a whole.

    * every unit u in R^r with u u^T in that eigenspace (a Q = q u u^T perturbation grows at
      the threshold rate), found by minimising 1 - |E^T s(u)|^2 (s(u) = u u^T on the basis)
      from a fixed set of starts; for a one-dimensional eigenspace, its eigenmatrix's top
      eigenvector.  E.g. y = z1 z2: both (1, 1)/sqrt 2 and (1, -1)/sqrt 2 (the model is
      symmetric under z1 z2 = ((z1 + z2)^2 - (z1 - z2)^2) / 2 up to a sign of y);
    * when the eigenspace holds every symmetric matrix on a subspace W (F is isotropic there:
      every unit u in W is learned, a continuum), an orthonormal basis of W and True: the
      unit vectors of R^r when W is all of it (y = z1 z2 z3 with noise: by its sign-flip and
      permutation symmetries Cov[z | y] is a multiple of I, so F is the identity times rho on
      symmetric matrices), else the span of the directions found;
    * when the eigenspace holds no rank-one matrix (the committee's: the identity on the
      complement) the eigenvectors spanning the projection of the identity on it (and False:
      that subspace is learned together, not each of its directions alone).

    Directions are unit vectors with their largest-|.| entry positive."""
    Bsym = _sym_basis(r)
    if E.shape[1] == 1:
        w, V = np.linalg.eigh((Bsym @ E[:, 0]).reshape(r, r))
        return [_canonical(V[:, int(np.argmax(np.abs(w)))])], False
    if _holds_every_symmetric_matrix(E, np.eye(r)):
        return list(np.eye(r)), True

    def leak(u):
        u = u / np.linalg.norm(u)
        s = Bsym.T @ np.outer(u, u).ravel()
        return 1.0 - float(np.sum((E.T @ s) ** 2))

    starts = np.random.default_rng(0).normal(size=(16 * r, r))
    found: list[np.ndarray] = []
    for u0 in np.concatenate([np.eye(r), starts]):
        res = optimize.minimize(leak, u0, method="BFGS", options={"gtol": 1e-10})
        if res.fun > RANK_ONE_TOL:
            continue
        u = _canonical(res.x)
        if all(abs(float(u @ f)) < 0.99 for f in found):
            found.append(u)
    if found:
        _, sv, Vt = np.linalg.svd(np.array(found), full_matrices=False)
        rank = int(np.sum(sv > 0.1 * sv[0]))
        W = Vt[:rank].T
        if len(found) > rank and _holds_every_symmetric_matrix(E, W):  # a continuum: its span
            return [_canonical(W[:, i]) for i in range(rank)], True
        return sorted(found, key=lambda u: tuple(-abs(x) for x in u)), False
    M = (Bsym @ (E @ (E.T @ (Bsym.T @ np.eye(r).ravel())))).reshape(r, r)
    w, V = np.linalg.eigh(0.5 * (M + M.T))
    return [_canonical(V[:, i]) for i in range(r) if w[i] > 1e-6 * max(w.max(), 1e-300)][::-1], False


def _resolution_change(channel, n: int, scrambles: int, seed: int, resolution: int):
    """The inner sampler's error term of the outer-QMC path (:func:`_change`): twice the change
    of rho and of the block values at double inner resolution (a self-normalised importance
    sampler's bias falls like 1 / K), paired on a subset: the first 4 scrambles and n / 4
    points (at least 64) at 2 x and 1 x ``resolution`` on the same points and banks, so the
    outer noise cancels (as :func:`solvers.thresholds.resolution_change_at_zero`)."""
    sub_n, sub = max(64, n // 4), min(4, scrambles)
    fine, coarse = (_analyse(channel, *_evaluate(channel, sub_n, sub, seed, r)) for r in (2 * resolution, resolution))
    return _change(fine, coarse, INNER_BIAS_FACTOR)


def _relative_ci(a) -> float:
    """Relative half-width of rho (0 when rho is not significantly positive: nothing to refine)."""
    if a["Q"] is None or not (a["rho"] > a["rho_hw"] and a["rho"] > RHO_ABS_TOL):
        return 0.0
    return a["rho_hw"] / a["rho"]


def linear_stability(channel, n_points: int | None = None, scrambles: int = MIN_SCRAMBLES,
                     seed: int = 0, resolution: int = 1, precision: str = "standard",
                     max_points: int | None = None, y_quadrature: bool | None = None) -> LinearStabilityResult:
    """Linear stability of Q = 0 for ``channel`` (any :class:`~solvers.channels.Channel`).

    Two paths (``y_quadrature``: None picks the first where it applies, True / False force one):

    * quadrature in y (:mod:`solvers.output_quadrature`), for a scalar noisy observation whose
      posterior is a prior-bank importance sampler and no known rows: per scramble one bank
      of n_points vectors (the channel's own bank for the scramble's seed, widened by
      Y_BANK_SCALE and weighted back), its link outputs once, and T, F, block values as
      integrals over y of the bank's posterior moments.  Half-width: Student t over the
      scrambles, plus twice the change of the pooled value from n_points / 2 (the same
      seeds: the bias of a ratio of bank sums falls like 1 / K, so it is at most twice its
      change; both levels on every scramble), plus the change on a lattice twice as coarse;
    * randomised QMC over (Z, noise) with one posterior per outer point (any channel); for a
      noisy channel with an inner sampler the half-width adds twice the change at double
      inner resolution on a paired subset (4 scrambles, a quarter of the points).

    n_points: outer QMC points (bank vectors on the y path) per scramble, a power of two.
    When None, it starts at the precision's default and doubles until the relative 95%
    half-width of rho is below the precision target
    (:data:`solvers.results.PRECISION_TARGETS`) or ``max_points`` is reached.
    scrambles: independent Sobol scrambles (>= 2; 16 for an honest CI).
    resolution: passed to ``channel.posterior_moments`` (inner quadrature / bank size); on
    the y path it multiplies the bank.
    """
    check_precision(precision)
    if scrambles < 2:
        raise ValueError("need at least 2 scrambles for a confidence interval")
    t0 = time.perf_counter()
    target = PRECISION_TARGETS[precision][0]
    adaptive = n_points is None
    applies = y_quadrature_applies(channel)
    if y_quadrature and not applies:
        raise ValueError("quadrature in y needs a scalar noisy observation, a prior-bank posterior "
                         "and no known rows")
    y_path = applies if y_quadrature is None else bool(y_quadrature)
    extra = {}
    if y_path:
        n = int(n_points) if n_points is not None else Y_QUADRATURE_POINTS[precision]
        cap = int(max_points) if max_points is not None else Y_QUADRATURE_MAX_POINTS[precision]
        half = _evaluate_y(channel, n // 2 * resolution, scrambles, seed)
        while True:
            fine, coarse, rows = _evaluate_y(channel, n * resolution, scrambles, seed)
            a0 = _analyse(channel, *fine)
            terms = (_change(a0, _analyse(channel, *half[0]), INNER_BIAS_FACTOR),
                     _change(a0, _analyse(channel, *coarse)))
            a = _analysed_with_terms(channel, *fine, *terms)
            if not adaptive or _relative_ci(a) <= target or 2 * n > cap:
                break
            half, n = (fine, coarse, rows), 2 * n
        method = ("quadrature in y at Q = 0 (bank posterior on a y lattice; trivial subspace, Perron "
                  "eigenvalue of F on the complement)")
        extra = {"bank_points": rows, "bank_scale": Y_BANK_SCALE,
                 "nodes_per_sd": NODES_PER_SD, "cutoff_sd": CUTOFF, "statistical_rho_ci95": float(a0["rho_hw"]),
                 "bank_term": float(abs(terms[0][0])), "lattice_term": float(abs(terms[1][0]))}
    else:
        n = int(n_points) if n_points is not None else LINEAR_STABILITY_POINTS[precision]
        cap = int(max_points) if max_points is not None else LINEAR_STABILITY_MAX_POINTS[precision]
        while True:
            Ts, Fs, Bs = _evaluate(channel, n, scrambles, seed, resolution)
            a = _analyse(channel, Ts, Fs, Bs)
            if not adaptive or _relative_ci(a) <= target or 2 * n > cap:
                break
            n *= 2
        method = "randomised QMC at Q = 0 (trivial subspace, Perron eigenvalue of F on the complement)"
        if not channel.noiseless and channel.reseeded_per_scramble:
            term = _resolution_change(channel, n, scrambles, seed, resolution)
            a = _analysed_with_terms(channel, Ts, Fs, Bs, term)
            extra = {"inner_term": float(abs(term[0]))}
    P = channel.n_indices
    rho, rho_hw = a["rho"], a["rho_hw"]
    significant = rho > rho_hw and rho > RHO_ABS_TOL and a["Q"] is not None
    alpha = 1.0 / rho if significant else math.inf
    alpha_hw = rho_hw / rho ** 2 if significant else math.inf
    degenerate = bool(significant and rho - a["rho2"] <= a["gap_hw"] + 1e-12 * abs(rho))

    thresholds = [Threshold(alpha=0.0, ci95=0.0, kind="trivial",
                            direction=tuple(float(x) for x in _canonical(u)))
                  for u in a["trivial_dirs"].T[::-1]]
    block_alpha = block_ci = None
    if channel.sign_symmetric:
        b, bhw = a["blocks"], a["blocks_hw"]
        block_alpha = tuple(float(1.0 / v) if v > bh and v > RHO_ABS_TOL else math.inf
                            for v, bh in zip(b, bhw))
        block_ci = tuple(float(bh / v ** 2) if v > bh and v > RHO_ABS_TOL else math.inf
                         for v, bh in zip(b, bhw))
    if channel.sign_symmetric and P > 1:
        triv = {int(np.argmax(np.abs(u))) for u in a["trivial_dirs"].T}
        for p in range(P):
            if p in triv or not math.isfinite(block_alpha[p]):
                continue
            e = tuple(float(p == q) for q in range(P))
            thresholds.append(Threshold(alpha=block_alpha[p], ci95=block_ci[p],
                                        kind="linear_stability", layer=p + 1, direction=e))
    elif significant:
        # every direction of a degenerate top eigenspace is learned at this alpha
        directions, isotropic = (top_eigenspace_directions(a["top_eigenspace"], a["Uc"].shape[1])
                                 if degenerate else ([None], False))
        if isotropic and len(directions) == P:  # the whole of R^P: its coordinate directions
            directions = list(np.eye(P))
        else:
            directions = [a["direction"] if u is None else _canonical(a["Uc"] @ u) for u in directions]
        for d in directions:
            thresholds.append(Threshold(alpha=float(alpha), ci95=float(alpha_hw), kind="linear_stability",
                                        direction=tuple(float(x) for x in d),
                                        reason=ISOTROPIC_NOTE if isotropic else None))
    settings = Settings(precision=precision, seed=seed, method=method,
                        outer_points=n, scrambles=scrambles, inner_resolution=resolution,
                        extra={"adaptive": adaptive, "target_relative_ci95": target,
                               "max_points": cap, **extra})
    tup = lambda M: tuple(tuple(float(x) for x in row) for row in np.atleast_2d(M))  # noqa: E731
    return LinearStabilityResult(
        n_indices=P, n_tokens=channel.n_tokens, index_names=tuple(channel.index_names),
        trivial_matrix=tup(a["T"]), trivial_eigenvalues=tuple(float(x) for x in a["lam"]),
        trivial_ci95=tuple(float(x) for x in a["lam_hw"]),
        trivial_directions=tuple(tuple(float(x) for x in _canonical(u)) for u in a["trivial_dirs"].T),
        complement_basis=tup(a["Uc"]) if a["Uc"].size else (),
        rho=float(rho), rho_ci95=float(rho_hw), alpha_c=float(alpha), alpha_ci95=float(alpha_hw),
        eigenmatrix=tup(a["Q"]) if significant else None,
        direction=tuple(float(x) for x in a["direction"]) if significant else None,
        second_eigenvalue=float(a["rho2"]), degenerate=degenerate,
        block_alpha=block_alpha, block_ci95=block_ci, thresholds=tuple(thresholds),
        settings=settings, seconds=time.perf_counter() - t0,
        extra={"rho_per_scramble": tuple(float(x) for x in a["rho_r"]),
               "block_values": tuple(float(x) for x in a["blocks"])})


def _canonical(u: np.ndarray) -> np.ndarray:
    """Unit vector with its largest-|.| entry positive (the first of entries tied to 1e-6)."""
    u = np.asarray(u, dtype=float)
    u = u / np.linalg.norm(u)
    k = int(np.flatnonzero(np.abs(u) >= np.abs(u).max() - 1e-6)[0])
    return u if u[k] >= 0 else -u


# ---------------------------------------------------------------------------------------
# Staircase after a one-dimensional trivial subspace
# ---------------------------------------------------------------------------------------
LEAK_TOL = 1e-6  # |complement blocks of H| at Q* above this: Q* = q s s^T is not a fixed point


class _TrivialDirectionCurve(StaircaseCurve):
    """The staircase curve (:class:`~solvers.staircase_curve.StaircaseCurve`) of the SE
    around Q*(q) = q s s^T (s the learned trivial direction, q its overlap).

    With Qhat = alpha H, Q = Qhat (I + Qhat)^-1 and H(Q*) = h(q) s s^T (checked: ``leak``),
    q is the fixed point at alpha(q) = q / ((1 - q) h(q)).  Perturbing Q* by eps X on the
    complement (basis Uc, r columns), omega_c = (eps X)^{1/2} xi_c and the posterior is the
    Q* posterior tilted by exp(w^T omega_c - eps/2 w^T X w), so
        g_c = (Cov_c[z | y, omega, V*] - I) omega_c + O(eps),  H_c = eps F(X) + o(eps),
        F(X) = E[ sum_{m,m'} G_mm' X G_mm'^T ],  G_mm' = Uc^T Cov[z_m, z_m' | y, omega, V*] Uc - delta I,
    (V* = I - q s s^T is the identity on the complement), the Q = 0 formula of THEORY 4 with the
    side information omega = sqrt(q) s (s . xi).  The complement leaves 0 when alpha rho(F) > 1:
    the threshold is the root in q of alpha(q) rho(F(q)) = 1: h = h(q), rate = rho(F(q))."""

    GRID = (0.2, 0.5, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.998, 0.999, 0.9999)
    ROOT_STEPS = 6  # each step costs two Perron eigenproblems on the general-V posterior

    def __init__(self, channel, s, Uc, normals, seed: int = 0):
        super().__init__(channel, normals, seed=int(seed))
        self.s, self.Uc = np.asarray(s, float), Uc

    def on_points(self, normals):
        return _TrivialDirectionCurve(self.channel, self.s, self.Uc, normals, self.seed)

    def compute_statistics(self, q, resolution):
        """Per-scramble h (R,), F on the symmetric complement (R, k, k) and leak (R,).

        Channels with an inner Monte-Carlo bank (``reseeded_per_scramble``: the formula
        links' region posterior) get an independent bank per scramble
        (``channel.scramble_channels``, the same banks as every engine's): one bank
        shared by all points makes its error a bias that
        more outer points cannot reduce.  With V*_ss = 1 - q small, g_s = (E[z.s | y] -
        omega.s) / (1 - q) amplifies the bank's error in E[z.s | y]: committee as a formula at
        q* = 0.94915 on one 4096-point bank gave h = 0.930 where the exact orthant posterior
        gives 0.972 on the same outer points (the independent reduction: 0.9705)."""
        ch = self.channel
        R, n, _ = self.normals.shape
        if ch.reseeded_per_scramble:
            h, F, Hc = (np.array(x) for x in zip(*(
                tuple(x.mean(axis=0) for x in self._point_statistics(bank, q, self.normals[r], resolution))
                for r, bank in enumerate(ch.scramble_channels(self.seed, R)))))
        else:
            h, F, Hc = (x.reshape((R, n) + x.shape[1:]).mean(axis=1) for x in
                        self._point_statistics(ch, q, self.normals.reshape(R * n, -1), resolution))
        return h, F, np.abs(Hc).max(axis=1)

    def _point_statistics(self, ch, q, normals, resolution):
        """Per outer point (normals (n, dim)): h (n,), F on the symmetric complement
        (n, k, k) and the complement blocks of H (n, r + r r), signed (the leak is the
        largest |entry| of their mean)."""
        s, Uc = self.s, self.Uc
        P, M = ch.n_indices, ch.n_tokens
        N = normals.shape[0]
        Q = q * np.outer(s, s)
        omega, Z, obs, V = sample_outer(ch, Q, normals)
        # noiseless channels with finitely many outputs (sign-type links): the sum over y is
        # done exactly, weighted by P(y | omega) = exp(log Z_out) (Rao-Blackwellised: the
        # integrand is then a smooth function of omega, where QMC converges fast)
        summed = ch.finite_outputs is not None
        Vinv = inverse_on_unknown(V, ch.unknown)
        r = Uc.shape[1]
        Bsym = _sym_basis(r)
        h = np.zeros(N)
        Fs = np.zeros((N, Bsym.shape[1], Bsym.shape[1]))
        Hc = np.zeros((N, r + r * r))
        for posterior_channel, y, weight_of in observation_cases(ch, obs, summed):
            pm = posterior_channel.posterior_moments(y, omega, V, resolution)
            wgt = weight_of(np.asarray(pm.log_partition, float))
            mean = np.asarray(pm.mean, float).reshape(N, P, M)
            cov = np.asarray(pm.cov, float).reshape(N, P, M, P, M)
            g = np.einsum("pq,nqm->npm", Vinv, mean - omega)
            H_direct = np.einsum("npm,nqm->npq", g, g)
            cov_tok = np.einsum("npmqm->npq", cov)
            H_nish = M * Vinv[None] - np.einsum("pa,nab,bq->npq", Vinv, cov_tok, Vinv)
            H = H_direct if summed else control_variate_combination(H_direct, H_nish)
            G = np.einsum("pi,npmqk,qj->nmkij", Uc, cov, Uc)
            idx = np.arange(M)
            G[:, idx, idx] -= np.eye(r)
            # F as a map on r x r matrices (row-major vec: F[a, c, b, d]) -> symmetric basis
            F = np.einsum("nklab,nklcd->nacbd", G, G, optimize=True).reshape(N, r * r, r * r)
            Fs += wgt[:, None, None] * np.einsum("ia,nij,jb->nab", Bsym, F, Bsym)
            h += wgt * np.einsum("p,npq,q->n", s, H, s)
            # complement part of H (direct form: the Nishimori form vanishes only on average):
            # must vanish for Q* = q s s^T to be a fixed point
            Hc += wgt[:, None] * np.concatenate(
                [np.einsum("p,npq,qj->nj", s, H_direct, Uc),
                 np.einsum("pi,npq,qj->nij", Uc, H_direct, Uc).reshape(N, -1)], axis=1)
        return h, 0.5 * (Fs + np.transpose(Fs, (0, 2, 1))), Hc

    def perron(self, q, resolution=1):
        """Pooled eigenvalues of F (ascending) and the Perron eigenmatrix as a unit vector on
        the symmetric basis.  When the top eigenvalue is degenerate (the per-scramble
        difference of the Rayleigh quotients on two eigenmatrices is within its 95%
        half-width; for the committee F is a multiple of the identity, since by the
        permutation symmetry every posterior covariance is isotropic on the complement) the
        eigenmatrix is the projection of the identity on the top eigenspace: the
        complement's directions of that eigenspace are learned together."""
        _, Fs, _ = self.statistics(q, resolution)
        ev, evec = np.linalg.eigh(Fs.mean(0))
        top = [evec.shape[1] - 1]
        v1 = evec[:, -1]
        for i in range(evec.shape[1] - 1):
            vi = evec[:, i]
            d = np.einsum("a,rab,b->r", v1, Fs, v1) - np.einsum("a,rab,b->r", vi, Fs, vi)
            if d.mean() <= float(t_halfwidth(d)) + 1e-12 * abs(ev[-1]):
                top.append(i)
        r = self.Uc.shape[1]
        eye = _sym_basis(r).T @ np.eye(r).ravel()
        E = evec[:, top]
        v = E @ (E.T @ eye) if len(top) > 1 else v1
        if np.linalg.norm(v) < 1e-12:
            v = v1
        v = v / np.linalg.norm(v)
        return ev, v, len(top)

    def rates(self, q, resolution):
        """(h, rho_r) per scramble, rho_r the Rayleigh quotient of each scramble's F on the
        pooled Perron eigenmatrix (no max-of-noise bias)."""
        h, Fs, _ = self.statistics(q, resolution)
        _, v, _ = self.perron(q, resolution)
        return h, np.einsum("a,rab,b->r", v, Fs, v)

    def pooled_rates(self, q, resolution):
        h, Fs, _ = self.statistics(q, resolution)
        _, v, _ = self.perron(q, resolution)
        return h.mean(), float(v @ Fs.mean(0) @ v)

    def root_between(self, q1, q2, a1, l1, a2, l2):
        """alpha at the root of alpha(q) rho(q) = 1, interpolated between q1 and q2 in u =
        -log(1 - q), where log alpha and log(alpha rho) are nearly linear (alpha ~ 1 / (1 - q)),
        so scrambles whose root is far from q are not distorted."""
        u1, u2 = -math.log1p(-q1), -math.log1p(-q2)
        l1, l2 = np.log(l1), np.log(l2)
        ur = u1 - l1 * (u2 - u1) / (l2 - l1)
        return np.exp(np.log(a1) + (np.log(a2) - np.log(a1)) * (ur - u1) / (u2 - u1))


@dataclass(frozen=True)
class StaircaseAfterTrivial:
    """The next threshold once a one-dimensional trivial direction ``learned`` is learned.

    thresholds: one Threshold (kind "staircase") per Perron direction of the complement: for
    a degenerate (isotropic) Perron eigenmatrix one per eigenvector of its top eigenvalue,
    i.e. an orthonormal basis of the subspace learned together; ``learned_overlap``: q* of
    the learned direction at the threshold; ``eigenmatrix``: the Perron eigenmatrix (P x P,
    trace 1); ``leak``: max over scrambles of |complement blocks of H| at Q* (0 up to the
    quadrature accuracy when Q* = q s s^T is an exact fixed point)."""

    learned: tuple[float, ...]
    alpha: float
    ci95: float
    learned_overlap: float
    eigenmatrix: tuple[tuple[float, ...], ...]
    second_eigenvalue_ratio: float
    leak: float
    thresholds: tuple[Threshold, ...]
    outer_points: int
    seconds: float


def staircase_after_trivial(channel, precision: str = "standard", seed: int = 0, ls=None,
                            pilot_points: int = TRIVIAL_STAIRCASE_PILOT_POINTS,
                            max_points: int | None = None) -> Optional[StaircaseAfterTrivial]:
    """Staircase step after the trivial subspace (THEORY 4), for a one-dimensional one.

    ``ls``: the :func:`linear_stability` result at Q = 0 (computed when None).  Returns None
    when there is not exactly one trivial direction or no complement.  The threshold is the
    root in q of alpha(q) rho(F_{q s s^T}) = 1 (see :class:`_TrivialDirectionCurve`), found
    on a pilot run (``pilot_points`` per scramble), refined by secant steps on the final
    run (points sized from the pilot spread for the precision target, at most
    ``max_points``); reported as the pooled curve's root with the Student-t 95% half-width of
    the 16 per-scramble roots plus twice the root's change at double inner resolution on a
    subset (a paired difference).  alpha = inf when no root exists for q < 0.9999."""
    t0 = time.perf_counter()
    if ls is None:
        ls = linear_stability(channel, scrambles=SCRAMBLES, seed=seed, precision=precision)
    if len(ls.trivial_directions) != 1 or not ls.complement_basis:
        return None
    s = np.asarray(ls.trivial_directions[0], float)
    Uc = np.atleast_2d(np.asarray(ls.complement_basis, float))
    if Uc.shape[0] != channel.n_indices:
        Uc = Uc.reshape(channel.n_indices, -1)
    target = PRECISION_TARGETS[precision][1]
    caps = TRIVIAL_STAIRCASE_MAX_POINTS_INNER_BANK if channel.reseeded_per_scramble else TRIVIAL_STAIRCASE_MAX_POINTS
    cap = int(max_points) if max_points is not None else caps[precision]
    pilot = _TrivialDirectionCurve(channel, s, Uc, outer_normals(channel, pilot_points, SCRAMBLES, seed), seed)
    root = pilot.pilot_root()
    r = Uc.shape[1]
    if root is None:
        return StaircaseAfterTrivial(tuple(s), math.inf, math.inf, float("nan"), (), float("nan"),
                                     float(pilot.statistics(pilot.GRID[-1])[2].max()),
                                     tuple(Threshold(alpha=math.inf, ci95=math.inf, kind="staircase",
                                                     direction=tuple(float(x) for x in _canonical(Uc[:, i])),
                                                     reason="no staircase root: alpha(q) rho(F_q) stays below 1 "
                                                            f"for every overlap q < {pilot.GRID[-1]} of the "
                                                            "trivial direction")
                                           for i in range(r)), pilot_points, time.perf_counter() - t0)
    # the pilot's rough root is refined only on new points (unlike the learned-layer staircase)
    root = refine_root(root, seed, target, cap, 8, refine_on_pilot_points=False)
    curve, q, alpha_c, ci, n = root.curve, root.q, root.alpha, root.ci95, root.curve.points
    ev, v, n_top = curve.perron(q)
    X = (_sym_basis(r) @ v).reshape(r, r)
    X = X if np.trace(X) >= 0 else -X
    X = 0.5 * (X + X.T) / np.trace(X)
    E = Uc @ X @ Uc.T
    # directions: the top eigenvector of the eigenmatrix, or, when the eigenmatrix is (close
    # to) isotropic on a subspace (degenerate top eigenvalue of F), an orthonormal basis of
    # that subspace: its directions are learned at the same alpha
    w, Vx = np.linalg.eigh(X)
    top = w >= (0.5 * w[-1] if n_top > 1 else w[-1])
    dirs = [_canonical(Uc @ Vx[:, i]) for i in np.flatnonzero(top)[::-1]]
    ths = tuple(Threshold(alpha=alpha_c, ci95=ci, kind="staircase", direction=tuple(float(x) for x in d))
                for d in dirs)
    leak = float(max(curve.statistics(x)[2].max() for x in curve.pair(q)))
    ratio = float(ev[-2] / ev[-1]) if len(ev) > 1 else float("nan")  # 1: degenerate
    return StaircaseAfterTrivial(tuple(float(x) for x in s), alpha_c, ci, float(q),
                                 tuple(tuple(float(x) for x in row) for row in E), ratio, leak, ths, n,
                                 time.perf_counter() - t0)
