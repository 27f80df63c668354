"""Outer statistics of the output channel at an overlap Q (THEORY.md section 3).

Every engine (state evolution, thresholds, linear stability) averages over the same outer
draws: omega_m = Q^{1/2} xi_m, Z = omega + V^{1/2} u, V = Q_0 - Q, y ~ P_out(. | Z), with
(xi, u, noise) randomised-QMC standard normals (common random numbers across Q, so every
statistic is smooth in Q).  Per scramble:
    H(Q) = E sum_m g_m g_m^T,  g_m = V^{-1} (E[z_m | y, omega, V] - omega_m),
estimated by the direct form blended with its Nishimori form (control_variate_combination);
the input update Q(Qhat), Qhat = alpha H, of the channel's weight prior (:mod:`solvers.priors`;
Gaussian: Q = Qhat (I + Qhat)^{-1}); the free entropy.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .channels.base import Channel
from .priors import GAUSSIAN, Prior
from .quadrature import scrambled_normals, sobol_normals


@dataclass(frozen=True)
class OutputStatistics:
    """Per-scramble outer averages at one Q (arrays with a leading scramble axis R).

    H: (R, P, P) E sum_m g g^T (control-variate blend); H_direct, H_nishimori likewise;
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
    Q = channel.known_overlaps(Q)  # known rows: omega_l = z_l, V_ll = 0
    V = np.eye(P) - Q
    omega = np.einsum("pq,nqm->npm", _sqrtm_psd(Q), xi)
    Z = omega + np.einsum("pq,nqm->npm", _sqrtm_psd(V), u)
    noise = normals[:, 2 * P * M:].reshape((n,) + tuple(channel.noise_shape)) if channel.noise_shape else None
    return omega, Z, channel.observation(Z, noise), V


def observation_cases(channel: Channel, obs: np.ndarray, outputs_summed: bool):
    """The observations an outer average runs over, each as (the channel whose posterior to
    use, y, its weight per point as a function of the posterior's log partition): the sampled
    ``obs`` (weight 1), or, when ``outputs_summed`` and the channel is noiseless with finitely
    many outputs, every value of y (weight P(y | omega, V) = Z_out: the sum over y done
    exactly), with :meth:`~solvers.channels.base.Channel.summed_over_outputs`."""
    values = channel.finite_outputs if outputs_summed else None
    if values is None:
        return [(channel, obs, lambda log_z: np.ones(len(log_z)))]
    summed = channel.summed_over_outputs()
    return [(summed, np.full(obs.shape, v), np.exp) for v in values]


def sums_outputs(channel: Channel) -> bool:
    """Whether the outer averages (SE's map, its fixed points, the branch curves of the
    transitions) sum y over its finitely many values, each weighted by P(y | omega, V), by
    default instead of sampling it: noiseless channels with finitely many outputs and an exact
    posterior (the orthant links; a formula's region posterior has its own inner bank, whose
    estimate for an improbable y is poor).  The same expectation without the sampled y's noise
    (solver 0.5.14): committee_sign at alpha = 2, fast, converged in 5 map evaluations at each
    of seeds 0-19 (up to 85 with y sampled, where the map jumps by O(1 / points) whenever a
    sample's sign flips), its mean over the seeds 0.190585 (sampled 0.19086; precise 0.190604);
    the binary perceptron's transitions at standard 1.244743 +- 0.000072 and 1.492482 +-
    0.000297 (sampled 1.236 +- 0.021 and 1.4926 +- 0.0043; 1-D quadrature 1.24468, 1.49263)."""
    return channel.finite_outputs is not None and not channel.reseeded_per_scramble


def output_statistics(channel: Channel, Q: np.ndarray, normals: np.ndarray,
                      resolution: int = 1, plugin: bool = False, seed: int | None = None,
                      outputs_summed: bool | None = None) -> OutputStatistics:
    """Outer averages of the output channel at overlap Q, one row per scramble.

    ``seed``: the outer seed of ``normals`` (scramble r of ``outer_normals(..., seed)`` is
    row r): a channel with an inner Monte-Carlo bank then computes scramble r's posteriors
    on bank r of that seed (:meth:`~solvers.channels.base.Channel.scramble_channels`), so the
    bank's error differs between scrambles and their spread, the half-width, covers it.
    With None every scramble shares the channel's own bank, whose error is then an offset
    the half-width cannot see (before solver 0.5.6, for every engine: the noisy sign(z1) as a
    formula at alpha = 8, fast, had q = 0.96885 +- 0.00189 against the exact 0.97138).

    ``outputs_summed``: for a noiseless channel with finitely many outputs
    (``finite_outputs``), y is summed over exactly, each value weighted by P(y | omega, V) =
    Z_out, instead of sampled from Z (Rao-Blackwellised: the same expectations, and on fixed
    outer points a smooth function of Q, where the sampled y jumps wherever a sample's sign
    flips; a finite difference of the map needs it).  Ignored for other channels.  None (the
    default): :func:`sums_outputs` decides."""
    if outputs_summed is None:
        outputs_summed = sums_outputs(channel)
    R, n, _ = normals.shape
    P, M = channel.n_indices, channel.n_tokens
    omega, Z, obs, V = sample_outer(channel, Q, normals.reshape(R * n, -1))
    Vinv = inverse_on_unknown(V, channel.unknown)
    eye = np.eye(M)
    H_direct = H_nish = cov_dev = log_partition = 0.0
    for posterior_channel, y, weight_of in observation_cases(channel, obs, outputs_summed):
        post = posterior_channel.posterior_moments_by_scramble(y, omega, V, resolution, seed, R)
        log_z = np.asarray(post.log_partition, float)
        weight = weight_of(log_z)
        g = np.einsum("pq,nqm->npm", Vinv, post.mean - omega)
        H_direct = H_direct + weight[:, None, None] * np.einsum("npm,nqm->npq", g, g)
        cov_tok = np.einsum("npmqm->npq", post.cov)  # sum over tokens of the diagonal token blocks
        H_nish = H_nish + weight[:, None, None] * (M * Vinv[None] - np.einsum("pa,nab,bq->npq", Vinv, cov_tok, Vinv))
        dev = np.einsum("npmpk->npmk", post.cov) - eye[None, None]
        cov_dev = cov_dev + weight[:, None] * (dev ** 2).sum(axis=(2, 3))
        # an output the region never reaches (log_z = -inf) has weight 0 and adds nothing
        log_partition = log_partition + np.where(weight > 0, weight * log_z, 0.0)
    H = control_variate_combination(H_direct, H_nish)
    if plugin:
        diff = channel.output(Z) - channel.output(omega)
        perr = (diff.reshape(R * n, -1) ** 2).sum(1)
    else:
        perr = np.zeros(R * n)

    def per_scramble(x):
        return x.reshape((R, n) + x.shape[1:]).mean(axis=1)

    kept = diagonal_kept(channel, Q)
    return OutputStatistics(per_scramble(H) * kept, per_scramble(H_direct) * kept, per_scramble(H_nish) * kept,
                            per_scramble(cov_dev), per_scramble(log_partition), per_scramble(perr))


def diagonal_kept(channel: Channel, Q: np.ndarray) -> np.ndarray | float:
    """The P x P mask of H's entries that can be nonzero at Q: the diagonal alone when Q is
    diagonal and the channel keeps overlaps diagonal (the flip of row p then changes the sign
    of g_p alone, so H_pq = 0 for q != p exactly), else 1.  The estimators' off-diagonal
    entries are then pure Monte-Carlo noise, and with a non-Gaussian prior a non-diagonal
    Qhat = alpha H costs the prior's P-dimensional QMC update (about 1 s, 17 times per SE
    map evaluation) instead of its scalar ones: sign_product with +-1 weights, fast, at
    alpha = 2.9 took 180 s."""
    P = Q.shape[0]
    if P == 1 or not channel.keeps_overlaps_diagonal or np.any(Q - np.diag(np.diag(Q))):
        return 1.0
    return np.eye(P)


def inverse_on_unknown(V: np.ndarray, unknown) -> np.ndarray:
    """V^{-1} on the unknown rows, 0 on the known ones (V_ll = 0 there): their g and H vanish."""
    Vinv = np.zeros_like(V)
    u = np.asarray(unknown, dtype=int)
    Vinv[np.ix_(u, u)] = np.linalg.inv(V[np.ix_(u, u)])
    return Vinv


def control_variate_combination(direct: np.ndarray, nishimori: np.ndarray) -> np.ndarray:
    """Per-sample H = direct + lambda (nishimori - direct), entry by entry.

    The Nishimori identity makes E[nishimori - direct] = 0, so the difference is a control
    variate: lambda = -Cov(direct, D) / Var(D) minimises the variance (the direct form is
    heavy-tailed at large q, the Nishimori form at small q; the blend beats both)."""
    D = nishimori - direct
    Dc = D - D.mean(0)
    var = (Dc ** 2).sum(0)
    cov = ((direct - direct.mean(0)) * Dc).sum(0)
    lam = np.where(var > 0, -cov / np.where(var > 0, var, 1.0), 0.0)
    return direct + np.clip(lam, -0.5, 1.5)[None] * D


def overlap_update(alpha: float, H: np.ndarray, prior: Prior = GAUSSIAN) -> np.ndarray:
    """The input update Q = E[f_in f_in^T] at Qhat = alpha H (:mod:`solvers.priors`); for the
    Gaussian prior Q = Qhat (I + Qhat)^{-1}."""
    Qhat = alpha * (H + H.T) / 2
    return prior.input_update(Qhat).Q


def free_entropy(alpha: float, Q: np.ndarray, H: np.ndarray, log_partition: float,
                 prior: Prior = GAUSSIAN) -> float:
    """Phi = -1/2 Tr(Q Qhat) + Psi_w(Qhat) + alpha E log Z_out, Qhat = alpha H; for the
    Gaussian prior Psi_w = 1/2 Tr Qhat - 1/2 log det(I + Qhat)."""
    Qhat = alpha * (H + H.T) / 2
    return float(prior.free_entropy(Q, Qhat) + alpha * log_partition)


BAYES_BATCH_SAMPLES = 1 << 16  # outer samples x bank points per call of channel.output


def bayes_prediction_error(channel: Channel, Q: np.ndarray, normals: np.ndarray, inner_points: int = 256,
                           seed: int = 7) -> np.ndarray:
    """Per-scramble E ||y - E[y | omega, V]||_F^2, the inner mean over a shared QMC bank."""
    R, n, _ = normals.shape
    P, M = channel.n_indices, channel.n_tokens
    omega, Z, _, V = sample_outer(channel, Q, normals.reshape(R * n, -1))
    rng = np.random.default_rng(seed)
    y = channel.sample_output(Z, rng)
    bank = sobol_normals(inner_points, P * M, seed).reshape(inner_points, P, M)
    Vh = _sqrtm_psd(V)
    shifts = np.einsum("pq,kqm->kpm", Vh, bank)
    yhat = np.zeros_like(y)
    # the bank's points in batches (one call of the channel's kernel each, not one per point:
    # per-call overhead was 12% of an SE curve), summed in the bank's order as before
    batch = max(1, BAYES_BATCH_SAMPLES // max(1, omega.shape[0]))
    for lo in range(0, inner_points, batch):
        part = shifts[lo: lo + batch]
        Zk = (omega[None] + part[:, None]).reshape((-1,) + omega.shape[1:])
        for yj in channel.output(Zk).reshape((len(part),) + y.shape):
            yhat += yj
    yhat /= inner_points
    err = ((y - yhat).reshape(R * n, -1) ** 2).sum(1)
    return err.reshape(R, n).mean(1)
