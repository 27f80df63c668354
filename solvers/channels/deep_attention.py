"""The deep tied low-rank attention channel (THEORY.md section 2)."""
from __future__ import annotations

import copy

import numpy as np
from numba import njit

from ..quadrature import sobol_normals
from . import attention_kernels as K
from .attention_kernels import inner_product_matrix, softmax_rows
from .base import Channel, PosteriorMoments, register_channel
from .noisy import DEFAULT_BANK_SIZE, NoisyChannel

# The zooming z_1 grid (L = 2, M = 2): points per dimension (times resolution), passes, and the
# per-sample convergence (divided by 10 per resolution doubling).  Its error is far below the
# outer one: 24 points and 1e-3 (32 and 1e-4 before solver 0.5.8, 1.27x slower) move H and
# E||Cov - I||^2 by at most 1e-6 relative where their standard error is 1e-2, and a 30-alpha
# SE curve's overlaps by at most 1e-4 of their half-widths.
GRID_POINTS = 24
GRID_PASSES = 5
GRID_TOLERANCE = 1e-3
BANK_POINTS = 2048  # quasi-random prior points of the importance sampler, times resolution
INNER_BANK_SEED = 20250201  # the channel's own bank; the engines' scrambles reseed it (with_seed)
V_FLOOR = 1e-12
# L = 2, M = 2: where v_2 (1 + c)^2 < THIN_LAST_LAYER v_1 the posterior is integrated over z_2
# (posterior_thin_last_layer) instead of on the z_1 grid, which misses the sharp modes +-z_1*
# there.  z_2's uncertainty enters a = (c I + S(z_1)) z_2 times c + O(1), so the modes' width in
# z_1 scales as sqrt(v_2) (1 + c) (the masking that puts layer 1's root at 1 - q_2 ~ 0.05 / c^2);
# 4e-6 is v_2 < 1e-6 v_1 at the paper's c = 1, where both were measured (README, "Weight priors
# and possible vs efficient")
THIN_LAST_LAYER = 4e-6
THIN_NODES = (16, 32, 64)  # Gauss-Hermite nodes per axis over z_2, times resolution, until converged


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
        self.bank_seed = INNER_BANK_SEED  # the inner prior bank's (L >= 3 or M >= 3, noiseless)
        self._inverses: dict = {}  # inner bank shape -> (B^{-1}, log det B) at its points

    def noisy_channel(self, bank_size: int = DEFAULT_BANK_SIZE, seed: int = 0) -> NoisyChannel:
        """The noisy channel y = S_L(a_L) + sqrt(noise) N(0, I_{M x M}) by importance sampling
        over all of Z (the generic noisy path; ``output`` delegates to this channel's)."""
        L, M = int(self.n_indices), int(self.n_tokens)
        params = np.concatenate([np.asarray(self.skips, dtype=float), np.asarray(self.betas, dtype=float)])
        return NoisyChannel(deep_attention_link, L, M, M * M, self.noise, bank_size=bank_size, seed=seed,
                            index_names=self.index_names, sign_symmetric=self.sign_symmetric,
                            output_shape=(M, M), vectorized_output=self.output, link_params=params)

    @property
    def uses_inner_bank(self) -> bool:
        """Noiseless L >= 3, or L = 2 with M >= 3: the posterior integrates z_1..z_{L-1} on a
        quasi-random prior bank (L = 1 is closed form, L = 2, M = 2 a deterministic grid)."""
        return self.noiseless and not (self.n_indices == 1 or (self.n_indices == 2 and self.n_tokens == 2))

    @property
    def reseeded_per_scramble(self) -> bool:
        """Every channel with an inner Monte-Carlo bank: the noisy one and the noiseless inner
        prior bank.  Sharing one bank across the outer scrambles made its error one offset in all
        of them (L = 3, M = 2, layer 3 at Q = 0: eight other bank seeds scatter by sd 0.00035,
        as much as the outer standard error the spread sees)."""
        return not self.noiseless or self.uses_inner_bank

    def with_seed(self, seed: int) -> "DeepAttentionChannel":
        """A copy whose inner bank is drawn from ``seed`` (the engines' bank per scramble): the
        noisy channel's importance-sampling bank, or the noiseless inner prior bank."""
        other = copy.copy(self)
        other._noisy = None if self.noiseless else self._noisy.with_seed(seed)
        other.bank_seed = int(seed)
        other._inverses = {}  # tables at the other bank's points
        return other

    def rates_at_zero(self, relative_target: float):
        """L = 2, M = 2 noiseless: nested trapezoid grids over a = B z_2 and z_1 (deterministic),
        refined (n x 1.5) until two grids agree to 0.2 x the target (or n >= 256)."""
        if not (self.noiseless and self.n_indices == 2 and self.n_tokens == 2) or self.known:
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
        if L - 1 in self.known:  # the spec allows this for L = 2, M = 2 only
            return posterior_last_layer_known(obs, omega, V, float(self.skips[0]), float(self.betas[0]))
        a = np.ascontiguousarray(obs, dtype=float).reshape(-1, M)
        om = np.ascontiguousarray(omega, dtype=float).reshape(-1, L, M)
        v = np.maximum(np.diag(np.atleast_2d(V)).astype(float), V_FLOOR)
        if L == 1:
            mean, cov, logz = K.posterior_single_layer(a, om, v)
        elif L == 2 and M == 2 and v[1] * (1.0 + self.skips[0]) ** 2 < THIN_LAST_LAYER * v[0]:
            return posterior_thin_adaptive(a, om, v, float(self.skips[0]), float(self.betas[0]),
                                           resolution, self._grid_L2)
        elif L == 2 and M == 2:
            return PosteriorMoments(*self._grid_L2(a, om, v, resolution))
        else:
            bank = inner_bank((L - 1) * M, BANK_POINTS * resolution, self.bank_seed)
            if np.all(v[:-1] == 1.0):  # inner layers at their prior for every sample: shared tables
                inv, logdet = self._bank_inverses(bank)
                mean, cov, logz = K.posterior_prior_bank(a, om, v, self.skips, self.betas, bank, inv, logdet, True)
            else:
                mean, cov, logz = K.posterior_importance(a, om, v, self.skips, self.betas, bank, True)
        n = a.shape[0]
        return PosteriorMoments(mean.reshape(n, L, M), cov.reshape(n, L, M, L, M), logz)

    def _grid_L2(self, a, om, v, resolution):
        """The z_1 grid posterior (L = 2, M = 2) as (mean (n, 2, 2), cov (n, 2, 2, 2, 2), logz)."""
        mean, cov, logz = K.posterior_grid_L2(np.ascontiguousarray(a), np.ascontiguousarray(om), v,
                                              float(self.skips[0]), float(self.betas[0]),
                                              GRID_POINTS * resolution, GRID_PASSES,
                                              GRID_TOLERANCE / 10 ** (resolution - 1))
        n = a.shape[0]
        return mean.reshape(n, 2, 2), cov.reshape(n, 2, 2, 2, 2), logz


def posterior_thin_adaptive(a, om, v, c: float, beta: float, resolution: int, grid) -> PosteriorMoments:
    """:func:`posterior_thin_last_layer` with THIN_NODES x resolution nodes per axis, each sample
    refined until its z_1 moments and g_2 = (E[z_2] - omega_2) / v_2 change by less than
    GRID_TOLERANCE / 10^(resolution - 1) (relative to 1 + |g_2| for g_2) or the last level is
    reached; samples with no preimage at any node go to ``grid``."""
    v1, v2 = float(v[0]), float(v[1])
    tol = GRID_TOLERANCE / 10 ** (resolution - 1)
    levels = [k * resolution for k in THIN_NODES]
    mean, cov, logz, found = posterior_thin_last_layer(a, om, v1, v2, c, beta, levels[0])
    todo = np.flatnonzero(found)
    for nodes in levels[1:]:
        if todo.size == 0:
            break
        m2, c2, l2, f2 = posterior_thin_last_layer(a[todo], om[todo], v1, v2, c, beta, nodes)
        change = np.maximum(np.abs(m2[:, 0] - mean[todo, 0]).max(1),
                            np.abs(c2[:, 0, :, 0, :] - cov[todo, 0, :, 0, :]).max((1, 2)))
        g_new = (m2[:, 1] - om[todo, 1]) / v2
        g_old = (mean[todo, 1] - om[todo, 1]) / v2
        change = np.maximum(change, (np.abs(g_new - g_old) / (1.0 + np.abs(g_new))).max(1))
        mean[todo], cov[todo], logz[todo] = m2, c2, l2
        todo = todo[(change >= tol) & f2]
    lost = np.flatnonzero(~found)
    if lost.size:
        mean[lost], cov[lost], logz[lost] = grid(a[lost], om[lost], v, resolution)
    return PosteriorMoments(mean, cov, logz)


def posterior_last_layer_known(obs, omega, V, c: float, beta: float) -> PosteriorMoments:
    """Posterior of z_1 for L = 2, M = 2 noiseless with z_2 = omega_2 known (V_22 = 0), z_1 ~ N(omega_1, v_1 I).

    Derivation (THEORY.md section 7).  Write z_1 = (u_1, u_2), z_2 = (b_1, b_2) and
    s_i = S(z_1)_ii = sigmoid(beta t_i), t_1 = u_1 (u_1 - u_2), t_2 = u_2 (u_2 - u_1) (row i of
    the softmax of beta z_1 z_1^T has the two entries s_i, 1 - s_i).  Then
        a = (c I + S(z_1)) z_2:  a_1 = c b_1 + b_2 + s_1 (b_1 - b_2),  a_2 = c b_2 + b_1 + s_2 (b_2 - b_1),
    so for each sign sigma of the revealed sigma a (y gives {a, -a}) the pair (s_1, s_2) is read off
    linearly, and t_1 + t_2 = (u_1 - u_2)^2 =: d^2, t_1 - t_2 = (u_1 - u_2)(u_1 + u_2) give
        d = sqrt(t_1 + t_2),  u_1 = t_1 / d,  u_2 = -t_2 / d,   up to z_1 -> -z_1 (S is even in z_1).
    A sign branch exists iff s_1, s_2 in (0, 1) and t_1 + t_2 > 0 (s_1 + s_2 > 1).  So y and z_2
    reveal z_1 up to its sign, plus a second pair +-z_1' when -a is also reachable.  For -a,
    s'_1 + s'_2 = 2 (1 - c) - (s_1 + s_2) < 2 (1 - c) - 1, so for c >= 1/2 that never happens and
    the posterior is exactly the pair +-z_1; for c < 1/2 it may (not seen in 2e5 draws at
    c = 0, 0.2).  In double precision a carries s_i only to rounding: where beta |t_i| > ~37 the
    softmax saturates and the point is read at the clipped t_i (3e-5 of the draws at beta = 1,
    7% at beta = 5, where the estimated threshold is then 0.186 instead of 1/6).  In general the posterior
    is the prior N(omega_1, v_1 I) on these <= 4 points times 1 / |det da/dz_1|,
        |det da/dz_1| = 2 beta^2 (b_1 - b_2)^2 s_1 (1 - s_1) s_2 (1 - s_2) d^2.
    At Q = 0 with one branch, Cov[z_1 | y, z_2] = z_1 z_1^T and E||Cov - I||_F^2 = E|z|^4 - 2 E|z|^2 + M
    = M^2 + M: for c >= 1/2 layer 1's threshold is exactly the closed form 1 / (M^2 + M) = 1/6 of
    observing +-z (THEORY.md section 4), for any beta; for c < 1/2 the second branch raises it
    (mixing lowers E||Cov - I||^2).  tests/test_known_layers.py checks the posterior against a
    brute-force root search.  With b_1 = b_2,
    a does not depend on z_1: the posterior is the prior.  log_partition: log p(a | z_2, omega_1, v_1)."""
    a = np.asarray(obs, dtype=float).reshape(-1, 2)
    om = np.asarray(omega, dtype=float).reshape(-1, 2, 2)
    n = a.shape[0]
    v1 = max(float(np.atleast_2d(V)[0, 0]), V_FLOOR)
    w1, b = om[:, 0], om[:, 1]
    pts, logw = _known_z2_preimages(a, w1, b, v1, c, beta)
    top = logw.max(1)
    found = np.isfinite(top)
    wts = np.exp(logw - np.where(found, top, 0.0)[:, None])
    total = wts.sum(1)
    wts /= np.where(found, total, 1.0)[:, None]
    mean1 = np.einsum("nk,nki->ni", wts, pts)
    second = np.einsum("nk,nki,nkj->nij", wts, pts, pts)
    cov1 = second - np.einsum("ni,nj->nij", mean1, mean1)
    mean1 = np.where(found[:, None], mean1, w1)  # b_1 = b_2: a carries nothing on z_1
    cov1 = np.where(found[:, None, None], cov1, v1 * np.eye(2))
    mean = np.stack([mean1, b], axis=1)
    cov = np.zeros((n, 2, 2, 2, 2))
    cov[:, 0, :, 0, :] = cov1
    logz = np.where(found, top + np.log(np.where(found, total, 1.0)), 0.0)
    return PosteriorMoments(mean, cov, logz)


def _known_z2_preimages(a, w1, b, v1: float, c: float, beta: float):
    """The <= 4 points z_1 with (c I + S(z_1)) b = +-a and their log weights
    log N(z_1; w1, v1 I) - log |det da/dz_1| (-inf where a branch does not exist), for
    a (n, 2), w1 (n, 2), b = z_2 (n, 2): see :func:`posterior_last_layer_known`.
    Returns points (n, 4, 2), log weights (n, 4)."""
    db = b[:, 0] - b[:, 1]
    safe = np.where(db == 0.0, 1.0, db)
    points, logw = [], []
    for sigma in (1.0, -1.0):
        s1 = (sigma * a[:, 0] - c * b[:, 0] - b[:, 1]) / safe
        s2 = (sigma * a[:, 1] - c * b[:, 1] - b[:, 0]) / -safe
        # a carries s_i to rounding only: a saturated softmax (beta t_i beyond ~37) reads as s_i = 1
        # up to that rounding, so a branch is accepted within it, at the clipped (largest
        # representable) t_i, instead of being lost
        tol = 1e-13 * (np.abs(a).sum(1) + (1 + c) * np.abs(b).sum(1)) / np.abs(safe)
        ok = ((db != 0.0) & (s1 > -tol) & (s1 < 1 + tol) & (s2 > -tol) & (s2 < 1 + tol)
              & (s1 + s2 > 1 - tol))
        s1c, s2c = np.clip(s1, 1e-300, 1 - 1e-16), np.clip(s2, 1e-300, 1 - 1e-16)
        t1 = (np.log(s1c) - np.log1p(-s1c)) / beta
        t2 = (np.log(s2c) - np.log1p(-s2c)) / beta
        d2 = np.where(ok, t1 + t2, 1.0)
        d = np.sqrt(np.maximum(d2, 1e-300))
        u = np.stack([t1 / d, -t2 / d], axis=1)
        log_jac = (np.log(2.0 * beta ** 2) + 2 * np.log(np.abs(safe)) + np.log(s1c) + np.log1p(-s1c)
                   + np.log(s2c) + np.log1p(-s2c) + np.log(np.maximum(d2, 1e-300)))
        for sign in (1.0, -1.0):
            z = sign * u
            lp = -((z - w1) ** 2).sum(1) / (2 * v1) - np.log(2 * np.pi * v1) - log_jac
            points.append(z)
            logw.append(np.where(ok, lp, -np.inf))
    return np.stack(points, axis=1), np.stack(logw, axis=1)


def posterior_thin_last_layer(obs, omega, v1: float, v2: float, c: float, beta: float, nodes: int = 16):
    """Posterior of (z_1, z_2) for L = 2, M = 2 noiseless when v_2 << v_1, integrating over z_2.

    With y revealing {a, -a}, the posterior in the coordinates z_2 is
        p(z_2 | a) ~ N(z_2; omega_2, v_2 I) f(z_2),  f(z_2) = p(a | z_2, omega_1, v_1),
    where f and the law of z_1 given (a, z_2) are the closed form of
    :func:`posterior_last_layer_known` (the <= 4 preimages z_1).  f varies on the scale of z_2
    (O(1) away from the folds where preimages appear), so a Gauss-Hermite product rule with
    ``nodes`` points per axis over z_2 ~ N(omega_2, v_2 I) is spectrally accurate when v_2 is
    small.  Not where the softmax saturates (|z_1| of 3 or more at beta = 1): there a preimage
    runs off to |z_1| -> infinity as s_i -> 1 within a sliver of z_2 far narrower than
    sqrt(v_2), and the second moment of z_1 (its prior tail, ~8) is resolved to about 0.5 only
    (README); every moment follows by the law of total covariance, the z_2 block from the node
    offsets sqrt(v_2) x_k (no cancellation: Cov[z_2] - v_2 I is resolved to O(v_2^2)).  This is
    the integral the z_1 grid (:func:`attention_kernels.posterior_grid_L2`) misses at
    v_2 << v_1: there the posterior in z_1 is two sharp modes +-z_1* of width ~sqrt(v_2) per
    sign branch, which a grid started on the prior box omega_1 +- 8 sqrt(v_1) does not resolve.
    Samples with no preimage at any node (found False) are left to the caller.
    Returns (mean (n, 2, 2), cov (n, 2, 2, 2, 2), log_partition (n,), found (n,))."""
    a = np.ascontiguousarray(obs, dtype=float).reshape(-1, 2)
    om = np.ascontiguousarray(omega, dtype=float).reshape(-1, 2, 2)
    n = a.shape[0]
    x, w = np.polynomial.hermite_e.hermegauss(nodes)
    x0, x1 = np.meshgrid(x, x, indexing="ij")
    W = np.outer(w, w).ravel() / w.sum() ** 2
    keep = W > 0.0  # the outermost weights underflow beyond ~100 nodes
    X = np.ascontiguousarray(np.stack([x0.ravel(), x1.ravel()], axis=1)[keep])  # standard-normal nodes
    mean, cov, logz, found = K.posterior_thin_last_layer_L2(a, om, float(v1), float(v2), float(c), float(beta),
                                                           X, np.log(W[keep]))
    return mean.reshape(n, 2, 2), cov.reshape(n, 2, 2, 2, 2), logz, found


_BANKS: dict = {}


def inner_bank(dim: int, points: int, seed: int = INNER_BANK_SEED) -> np.ndarray:
    """Quasi-random standard-normal bank of ``seed``, shared by every sample that uses it (common
    random numbers); the engines draw one per outer scramble (``reseeded_per_scramble``)."""
    key = (dim, points, int(seed))
    if key not in _BANKS:
        _BANKS[key] = np.ascontiguousarray(sobol_normals(points, dim, seed=int(seed)))
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
