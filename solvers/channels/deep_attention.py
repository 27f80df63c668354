"""The deep tied low-rank attention channel (THEORY.md section 2)."""
from __future__ import annotations

import numpy as np
from numba import njit

from ..quadrature import sobol_normals
from . import attention_kernels as K
from .attention_kernels import inner_product_matrix, softmax_rows
from .base import Channel, PosteriorMoments, register_channel
from .noisy import DEFAULT_BANK_SIZE, NoisyChannel

GRID_POINTS = 32  # per dimension of the zooming z_1 grid (L = 2, M = 2), times resolution
GRID_PASSES = 5
GRID_TOLERANCE = 1e-4  # per-sample quadrature convergence, divided by 10 per resolution doubling
BANK_POINTS = 2048  # quasi-random prior points of the importance sampler, times resolution
V_FLOOR = 1e-12


@register_channel("deep_attention")
class DeepAttentionChannel(Channel):
    """Output = last attention matrix of L tied rank-1 attention layers on M tokens.

    Noiseless: the observation is a_L in canonical sign (equivalent to y, which reveals
    {a_L, -a_L}); the posterior is an integral over z_1..z_{L-1} only.  With noise > 0
    the output is y + sqrt(noise) N(0, I_{M x M}) and the posterior is computed by the
    generic importance sampler over all of Z.
    """

    sign_symmetric = True
    indices_are_layers = True

    def __init__(self, spec):
        self.spec = spec
        self.n_indices = spec.layers
        self.n_tokens = spec.tokens
        self.index_names = tuple(f"layer {l + 1}" for l in range(spec.layers))
        self.skips = np.asarray(spec.skip, dtype=float)
        self.betas = np.asarray(spec.beta, dtype=float)
        self.noise = float(spec.noise)
        self.noiseless = self.noise == 0.0
        self.reports_perfect_recovery = self.noiseless
        self.closed_form_posterior = self.noiseless and spec.layers == 1  # a_1 = z_1 up to sign
        self._noisy = None if self.noiseless else self.noisy_channel()
        self._inverses: dict = {}  # inner bank shape -> (B^{-1}, log det B) at its points

    def noisy_channel(self, bank_size: int = DEFAULT_BANK_SIZE, seed: int = 0) -> NoisyChannel:
        """The noisy channel y = S_L(a_L) + sqrt(noise) N(0, I_{M x M}) by importance sampling
        over all of Z (the generic noisy path; ``output`` delegates to this channel's)."""
        L, M = int(self.n_indices), int(self.n_tokens)
        params = np.concatenate([np.asarray(self.skips, dtype=float), np.asarray(self.betas, dtype=float)])
        return NoisyChannel(deep_attention_link, L, M, M * M, self.noise, bank_size=bank_size, seed=seed,
                            index_names=self.index_names, sign_symmetric=self.sign_symmetric,
                            output_shape=(M, M), vectorized_output=self.output, link_params=params)

    def rates_at_zero(self, relative_target: float):
        """L = 2, M = 2 noiseless: nested trapezoid grids over a = B z_2 and z_1 (deterministic),
        refined (n x 1.5) until two grids agree to 0.2 x the target (or n >= 256)."""
        if not (self.noiseless and self.n_indices == 2 and self.n_tokens == 2):
            return None
        c, b = self.spec.skip[0], self.spec.beta[0]
        half_a = 8.5 * (c + 1.0)
        n = 64 if c >= 0.5 else 96
        prev = None
        while True:
            mass, f1, f2 = K.layer_thresholds_L2_grid(c, b, self.spec.beta[1], half_a, n, 8.5, n)
            alpha = np.array([mass / f1 if f1 > 0 else np.inf, mass / f2 if f2 > 0 else np.inf])
            if prev is not None:
                err = np.abs(alpha - prev) + abs(mass - 1.0) * alpha
                if np.all(err <= 0.2 * relative_target * alpha) or n >= 256:
                    return alpha, err, "nested trapezoid grids (a, z_1)", n
            prev = alpha
            n = int(n * 1.5)

    # -- forward model -------------------------------------------------------------
    def last_preactivation(self, Z: np.ndarray, canonical_sign: bool = True) -> np.ndarray:
        a, _ = K.forward_outputs(np.ascontiguousarray(Z, dtype=float), self.skips, self.betas,
                                 canonical_sign)
        return a

    def revealed_statistic(self, Z: np.ndarray) -> np.ndarray:
        """a_L = B_{L-1} z_L (no sign convention, so it is smooth in Z)."""
        return self.last_preactivation(Z, canonical_sign=False)

    def output(self, Z: np.ndarray) -> np.ndarray:
        _, y = K.forward_outputs(np.ascontiguousarray(Z, dtype=float), self.skips, self.betas, False)
        return y

    def sample_output(self, Z, rng):
        y = self.output(Z)
        if self.noiseless:
            return y
        return y + np.sqrt(self.noise) * rng.standard_normal(y.shape)

    @property
    def noise_shape(self):
        return () if self.noiseless else (self.n_tokens, self.n_tokens)

    def observation(self, Z, noise=None):
        if self.noiseless:
            return self.last_preactivation(Z)
        return self.output(Z) + np.sqrt(self.noise) * noise

    def observation_from_output(self, y):
        """Invert y = softmax_rows(beta a a^T) to a canonical a (noiseless only).

        Row-centred logs R_ij = log y_ij - mean_j log y_ij = beta a_i (a_j - mean a) form a
        rank-1 matrix: its top singular pair gives a up to scale, fixed by the centred part."""
        if not self.noiseless:
            return np.asarray(y, dtype=float)
        y = np.asarray(y, dtype=float)
        logy = np.log(np.clip(y, 1e-300, None))
        R = logy - logy.mean(axis=-1, keepdims=True)
        u, s, vt = np.linalg.svd(R)
        p, q, sigma = u[..., :, 0], vt[..., 0, :], s[..., 0]
        pc = p - p.mean(axis=-1, keepdims=True)
        num = (q * pc).sum(-1)
        den = (pc * pc).sum(-1)
        lam2 = np.where(den > 0, sigma / self.betas[-1] * num / np.where(den > 0, den, 1.0), 0.0)
        a = np.sqrt(np.clip(lam2, 0.0, None))[..., None] * p
        k = np.argmax(np.abs(a), axis=-1)
        sgn = np.sign(np.take_along_axis(a, k[..., None], axis=-1))
        sgn[sgn == 0] = 1.0
        return a * sgn

    def _bank_inverses(self, bank: np.ndarray):
        """B^{-1} and log det B at the prior bank's inner points (K.prior_bank_inverses), once per bank."""
        key = bank.shape
        if key not in self._inverses:
            self._inverses[key] = K.prior_bank_inverses(bank, self.skips, self.betas, self.n_tokens)
        return self._inverses[key]

    # -- posterior -------------------------------------------------------------------
    def posterior_moments(self, obs, omega, V, resolution=1):
        if not self.noiseless:
            return self._noisy.posterior_moments(obs, omega, V, resolution)
        L, M = self.n_indices, self.n_tokens
        a = np.ascontiguousarray(obs, dtype=float).reshape(-1, M)
        om = np.ascontiguousarray(omega, dtype=float).reshape(-1, L, M)
        v = np.maximum(np.diag(np.atleast_2d(V)).astype(float), V_FLOOR)
        if L == 1:
            mean, cov, logz = K.posterior_single_layer(a, om, v)
        elif L == 2 and M == 2:
            mean, cov, logz = K.posterior_grid_L2(a, om, v, float(self.skips[0]), float(self.betas[0]),
                                                  GRID_POINTS * resolution, GRID_PASSES,
                                                  GRID_TOLERANCE / 10 ** (resolution - 1))
        else:
            bank = inner_bank((L - 1) * M, BANK_POINTS * resolution)
            if np.all(v[:-1] == 1.0):  # inner layers at their prior for every sample: shared tables
                inv, logdet = self._bank_inverses(bank)
                mean, cov, logz = K.posterior_prior_bank(a, om, v, self.skips, self.betas, bank, inv, logdet, True)
            else:
                mean, cov, logz = K.posterior_importance(a, om, v, self.skips, self.betas, bank, True)
        n = a.shape[0]
        return PosteriorMoments(mean.reshape(n, L, M), cov.reshape(n, L, M, L, M), logz)


_BANKS: dict = {}


def inner_bank(dim: int, points: int) -> np.ndarray:
    """Shared quasi-random standard-normal bank (common random numbers for every sample)."""
    key = (dim, points)
    if key not in _BANKS:
        _BANKS[key] = np.ascontiguousarray(sobol_normals(points, dim, seed=20250201))
    return _BANKS[key]


@njit(cache=True)
def deep_attention_link(Z, params):
    """Deep tied rank-1 attention, one sample: Z (L, M), params = (skips (L), betas (L)).

    y = S_L(a_L) flattened (M * M,), with a_L = B_{L-1} z_L and B_{L-1} = A_{L-1} ... A_1 from
    the same kernels as the noiseless channel (attention_kernels), so the two paths cannot drift.
    """
    L, M = Z.shape
    skips, betas = params[:L], params[L:]
    B = np.empty((M, M))
    A = np.empty((M, M))
    work = np.empty((M, M))
    avec = np.empty(M)
    inner_product_matrix(Z, skips, betas, L - 1, B, A, work, avec)
    a = np.zeros(M)
    for i in range(M):
        for j in range(M):
            a[i] += B[i, j] * Z[L - 1, j]
    S = np.empty((M, M))
    softmax_rows(a, betas[L - 1], S)
    return S.ravel().copy()
