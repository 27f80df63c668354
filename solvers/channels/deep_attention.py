"""The deep tied low-rank attention channel (THEORY.md section 2)."""
from __future__ import annotations

import numpy as np

from ..quadrature import sobol_normals
from . import attention_kernels as K
from .base import Channel, PosteriorMoments, register_channel

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

    def __init__(self, spec):
        self.spec = spec
        self.n_indices = spec.layers
        self.n_tokens = spec.tokens
        self.index_names = tuple(f"layer {l + 1}" for l in range(spec.layers))
        self.skips = np.asarray(spec.skip, dtype=float)
        self.betas = np.asarray(spec.beta, dtype=float)
        self.noise = float(spec.noise)
        self.noiseless = self.noise == 0.0
        self._noisy = None
        if not self.noiseless:
            from .noisy import NoisyChannel  # the generic noisy path

            self._noisy = NoisyChannel.for_deep_attention(self)

    # -- forward model -------------------------------------------------------------
    def last_preactivation(self, Z: np.ndarray, canonical_sign: bool = True) -> np.ndarray:
        a, _ = K.forward_outputs(np.ascontiguousarray(Z, dtype=float), self.skips, self.betas,
                                 canonical_sign)
        return a

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
