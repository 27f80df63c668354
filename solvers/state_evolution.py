"""Bayes-optimal state evolution of AMP for sequence multi-index models (THEORY.md section 3).

One SE step, for the overlap Q (P x P), Q_0 = I (Gaussian prior):
    omega_m = Q^{1/2} xi_m,  Z = omega + V^{1/2} U,  V = Q_0 - Q,  y ~ P_out(. | Z)
    g_m = V^{-1} (E[z_m | y, omega, V] - omega_m)
    Qhat = alpha H(Q),  H(Q) = E sum_m g_m g_m^T  (tokens summed: the weights are tied)
    Q <- Qhat (I + Qhat)^{-1}.
Outer expectations use randomised QMC (common random numbers across Q, so the map is
smooth in Q); H is taken in its Nishimori form  E sum_m V^{-1} (V - Cov_mm) V^{-1}  on
directions with q >= 1/2, where the direct form is heavy-tailed.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .channels.base import Channel
from .quadrature import scrambled_normals, t_halfwidth

Q_MAX = 1.0 - 1e-10  # overlaps are capped here: beyond, recovery is perfect to machine precision
UNINFORMED_START = 1e-3
INFORMED_START = 1.0 - 1e-4


@dataclass(frozen=True)
class OutputStatistics:
    """Per-scramble outer averages at one Q (arrays with a leading scramble axis R).

    H: (R, P, P) E sum_m g g^T (direct/Nishimori blend); H_direct, H_nishimori likewise;
    cov_deviation: (R, P) E ||Cov[z_p | y, omega, V] - I_M||_F^2 (the linearised rate of an
    inactive sign-symmetric index p); log_partition: (R,) E log Z_out;
    plugin_error: (R,) E ||g(Z) - g(omega)||_F^2."""

    H: np.ndarray
    H_direct: np.ndarray
    H_nishimori: np.ndarray
    cov_deviation: np.ndarray
    log_partition: np.ndarray
    plugin_error: np.ndarray


@lru_cache(maxsize=16)
def _outer_normals(dim: int, points: int, scrambles: int, seed: int) -> np.ndarray:
    return scrambled_normals(points, dim, scrambles, seed)


def outer_normals(channel: Channel, points: int, scrambles: int, seed: int) -> np.ndarray:
    """(R, n, 2 P M + noise) standard normals for the outer expectation."""
    P, M = channel.n_indices, channel.n_tokens
    dim = 2 * P * M + int(np.prod(channel.noise_shape, dtype=int))
    return _outer_normals(dim, points, scrambles, seed)


def _sqrtm_psd(A: np.ndarray) -> np.ndarray:
    w, U = np.linalg.eigh((A + A.T) / 2)
    return (U * np.sqrt(np.clip(w, 0.0, None))) @ U.T


def sample_outer(channel: Channel, Q: np.ndarray, normals: np.ndarray):
    """Build (omega, Z, observation) for flat normals (n, dim)."""
    P, M = channel.n_indices, channel.n_tokens
    n = normals.shape[0]
    xi = normals[:, : P * M].reshape(n, P, M)
    u = normals[:, P * M: 2 * P * M].reshape(n, P, M)
    V = np.eye(P) - Q
    omega = np.einsum("pq,nqm->npm", _sqrtm_psd(Q), xi)
    Z = omega + np.einsum("pq,nqm->npm", _sqrtm_psd(V), u)
    noise = normals[:, 2 * P * M:].reshape((n,) + tuple(channel.noise_shape)) if channel.noise_shape else None
    return omega, Z, channel.observation(Z, noise), V


def output_statistics(channel: Channel, Q: np.ndarray, normals: np.ndarray,
                      resolution: int = 1, plugin: bool = False) -> OutputStatistics:
    """Outer averages of the output channel at overlap Q, one row per scramble."""
    R, n, _ = normals.shape
    P, M = channel.n_indices, channel.n_tokens
    omega, Z, obs, V = sample_outer(channel, Q, normals.reshape(R * n, -1))
    post = channel.posterior_moments(obs, omega, V, resolution)
    Vinv = np.linalg.inv(V)
    g = np.einsum("pq,nqm->npm", Vinv, post.mean - omega)
    H_direct = np.einsum("npm,nqm->npq", g, g)
    cov_tok = np.einsum("npmqm->npq", post.cov)  # sum over tokens of the diagonal token blocks
    H_nish = M * Vinv[None] - np.einsum("pa,nab,bq->npq", Vinv, cov_tok, Vinv)
    q = np.diag(Q)
    use_nish = (q[:, None] >= 0.5) & (q[None, :] >= 0.5)
    H = np.where(use_nish[None], H_nish, H_direct)
    eye = np.eye(M)
    dev = np.einsum("npmpk->npmk", post.cov) - eye[None, None]
    cov_dev = (dev ** 2).sum(axis=(2, 3))
    if plugin:
        diff = channel.output(Z) - channel.output(omega)
        perr = (diff.reshape(R * n, -1) ** 2).sum(1)
    else:
        perr = np.zeros(R * n)

    def per_scramble(x):
        return x.reshape((R, n) + x.shape[1:]).mean(axis=1)

    return OutputStatistics(per_scramble(H), per_scramble(H_direct), per_scramble(H_nish),
                            per_scramble(cov_dev), per_scramble(post.log_partition), per_scramble(perr))


def overlap_update(alpha: float, H: np.ndarray) -> np.ndarray:
    """Gaussian-prior input update Q = Qhat (I + Qhat)^{-1}, Qhat = alpha H."""
    Qhat = alpha * (H + H.T) / 2
    P = Qhat.shape[0]
    return Qhat @ np.linalg.inv(np.eye(P) + Qhat)


def free_entropy(alpha: float, Q: np.ndarray, H: np.ndarray, log_partition: float) -> float:
    """Phi = -1/2 Tr(Q Qhat) + 1/2 Tr Qhat - 1/2 log det(I + Qhat) + alpha E log Z_out."""
    Qhat = alpha * (H + H.T) / 2
    sign, logdet = np.linalg.slogdet(np.eye(Q.shape[0]) + Qhat)
    return float(-0.5 * np.trace(Q @ Qhat) + 0.5 * np.trace(Qhat) - 0.5 * logdet + alpha * log_partition)


@dataclass(frozen=True)
class FixedPointIteration:
    """Raw result of :func:`iterate_fixed_point` (see :class:`solvers.results.FixedPoint`)."""

    Q: np.ndarray
    converged: bool
    iterations: int
    residual: float
    contraction: float


def _to_vector(channel, Q):
    if channel.sign_symmetric:
        return np.diag(Q).copy()
    return Q[np.triu_indices(Q.shape[0])].copy()


def _to_matrix(channel, x):
    P = channel.n_indices
    if channel.sign_symmetric:
        return np.diag(np.clip(x, 0.0, Q_MAX))
    Q = np.zeros((P, P))
    Q[np.triu_indices(P)] = x
    Q = Q + Q.T - np.diag(np.diag(Q))
    w, U = np.linalg.eigh(Q)
    return (U * np.clip(w, 0.0, Q_MAX)) @ U.T


def iterate_fixed_point(channel: Channel, alpha: float, Q_start: np.ndarray, normals: np.ndarray,
                        resolution: int = 1, tol: float = 1e-7, max_iterations: int = 300,
                        damping: float = 1.0, frozen: np.ndarray | None = None,
                        history: int = 4) -> FixedPointIteration:
    """Iterate the SE map to a fixed point with Anderson acceleration.

    ``frozen``: boolean mask over the vector of order parameters held at their start value
    (used by the staircase, which keeps not-yet-learned layers at exactly 0).
    Converged means max |map(Q) - Q| < tol; otherwise the last iterate is returned with
    converged=False."""
    x = _to_vector(channel, Q_start)
    mask = np.ones_like(x, dtype=bool) if frozen is None else ~frozen

    def G(xv):
        Qm = _to_matrix(channel, xv)
        st = output_statistics(channel, Qm, normals, resolution)
        out = _to_vector(channel, overlap_update(alpha, st.H.mean(0)))
        out = np.where(mask, out, xv)
        return np.clip(out, 0.0, Q_MAX) if channel.sign_symmetric else out

    X_hist, F_hist = [], []
    gx = G(x)
    f = gx - x
    res = float(np.max(np.abs(f)))
    prev_res = res
    contraction = np.nan
    it = 1
    while res > tol and it < max_iterations:
        x_new = x + damping * f
        if len(X_hist) >= 1:
            dX = np.array(X_hist).T
            dF = np.array(F_hist).T
            gamma, *_ = np.linalg.lstsq(dF, f, rcond=None)
            x_new = x + damping * f - (dX + damping * dF) @ gamma
        x_new = np.where(mask, x_new, x)
        if channel.sign_symmetric:
            x_new = np.clip(x_new, 0.0, Q_MAX)
        g_new = G(x_new)
        f_new = g_new - x_new
        new_res = float(np.max(np.abs(f_new)))
        if not np.all(np.isfinite(f_new)):
            X_hist, F_hist = [], []
            x_new = np.where(mask, gx, x)
            g_new = G(x_new)
            f_new = g_new - x_new
            new_res = float(np.max(np.abs(f_new)))
        X_hist.append(x_new - x)
        F_hist.append(f_new - f)
        if len(X_hist) > history:
            X_hist.pop(0)
            F_hist.pop(0)
        if new_res > 10 * res:  # Anderson went astray: restart from the plain step
            X_hist, F_hist = [], []
        contraction = new_res / res if res > 0 else 0.0
        x, gx, f, prev_res, res = x_new, g_new, f_new, res, new_res
        it += 1
    # one last plain step keeps the reported point on the map's image
    return FixedPointIteration(_to_matrix(channel, gx if res <= tol else x), res <= tol, it, res,
                               float(contraction))


def fixed_point_statistics(channel, alpha, Q, normals, resolution):
    """Statistics at a fixed point: free entropy, plug-in error, per-scramble map spread."""
    st = output_statistics(channel, Q, normals, resolution, plugin=True)
    H = st.H.mean(0)
    phi = free_entropy(alpha, Q, H, float(st.log_partition.mean()))
    per_scramble_q = np.array([np.diag(overlap_update(alpha, st.H[r])) for r in range(st.H.shape[0])])
    return st, phi, per_scramble_q


def bayes_prediction_error(channel: Channel, Q: np.ndarray, normals: np.ndarray, inner_points: int = 256,
                           seed: int = 7) -> np.ndarray:
    """Per-scramble E ||y - E[y | omega, V]||_F^2, the inner mean over a shared QMC bank."""
    from .quadrature import sobol_normals

    R, n, _ = normals.shape
    P, M = channel.n_indices, channel.n_tokens
    omega, Z, _, V = sample_outer(channel, Q, normals.reshape(R * n, -1))
    rng = np.random.default_rng(seed)
    y = channel.sample_output(Z, rng)
    bank = sobol_normals(inner_points, P * M, seed).reshape(inner_points, P, M)
    Vh = _sqrtm_psd(V)
    yhat = np.zeros_like(y)
    for k in range(inner_points):
        yhat += channel.output(omega + np.einsum("pq,qm->pm", Vh, bank[k])[None])
    yhat /= inner_points
    err = ((y - yhat).reshape(R * n, -1) ** 2).sum(1)
    return err.reshape(R, n).mean(1)


def timed(fn):
    def wrapper(*args, **kwargs):
        t0 = time.perf_counter()
        out = fn(*args, **kwargs)
        return out, time.perf_counter() - t0
    return wrapper
