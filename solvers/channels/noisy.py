"""Generic noisy channel y = g(Z) + sqrt(Delta) * N(0, I) by importance sampling.

Usage (any family, e.g. deep attention)::

    from numba import njit
    from solvers.channels.noisy import NoisyChannel

    @njit(cache=True)
    def g(Z):                         # one sample, Z of shape (P, M) -> flat float64 vector
        out = np.empty(1)
        out[0] = Z[0, 0] * Z[1, 0]
        return out

    ch = NoisyChannel(g, n_indices=2, n_tokens=1, output_size=1, noise=0.1,
                      bank_size=4096, seed=0)
    post = ch.posterior_moments(y, omega, V, resolution=1)   # y (n, output_size)
    ch.last_effective_sample_size                              # (n,) Kish ESS per sample

The posterior of Z given (y, omega, V) is estimated by self-normalised importance
sampling with the prior as proposal: a bank of K = bank_size * resolution scrambled-Sobol
normal vectors U_k in R^{P M} (antithetic: K/2 points and their negatives) (the same bank for every sample and every call: common
random numbers, so state evolution is a smooth function of Q), Z_k = omega + V^{1/2} U_k
token by token, log-weights -|y - g(Z_k)|^2 / (2 Delta) with a max-shift.  Then

    mean = sum_k w_k Z_k / sum_k w_k,  cov = centred weighted second moment,
    log Z_out = log(mean_k exp(log w_k)) - (output_size / 2) log(2 pi Delta).

Adaptive (default): a second pass draws, for every bank vector, one prior sample and one
sample of N(m0, 2 C0 + ridge V) fitted to the first pass, weighted by the balance heuristic
(prior x likelihood over the equal mixture of the two proposals).  This keeps the prior's
coverage and reaches the tails of the prior that a plain prior bank never visits (large
observations); it costs two link evaluations per bank vector and observation (the prior
samples are pass 0's), one when every observation has the same prior (Q = 0: pass 0's link
outputs are one table for all observations).  Before solver 0.5.4 three, with the same numbers.  ``adaptive=False`` gives
the plain one-pass prior sampler.

Accuracy: the estimator is consistent as K -> infinity (bias and error O(1/sqrt(ESS)) per
sample), but it degrades as Delta -> 0 or as the observation becomes very informative
(V large relative to Delta): the weights concentrate on few bank points.  The Kish effective
sample size (sum w)^2 / sum w^2 of the last call is kept in ``last_effective_sample_size``;
check it (or compare two resolutions) before trusting a result.  For Delta = 0 use an
exact noiseless channel instead.

The link function must be numba-compiled (``@njit``) and take one float64 array of shape
(P, M), returning a 1-D float64 array of length ``output_size``.  The kernel is compiled
once per link function and process (about 3 s; numba cannot cache kernels that take
function arguments); batches run in threads (the kernel releases the GIL).
"""
from __future__ import annotations

import copy
import math
from typing import Callable, Sequence

import numpy as np
from concurrent.futures import ThreadPoolExecutor

import numba
from numba import njit

from ..quadrature import sobol_normals
from .base import Channel, PosteriorMoments

DEFAULT_BANK_SIZE = 1024


# Steps shared by the two kernels below.  Those run once per bank vector are inlined
# (inline='always', numba IR): as separate compiled calls they made the kernels up to ~60%
# slower (likewise the link is called by the kernels, not inside _log_likelihood).  Those run
# once per observation are cached, so that compiling a kernel for a new link is quicker.
@njit(nogil=True, inline='always')
def _prior_sample(Z, omega_i, S, u):
    """Z = omega_i + S u token by token (S = V^{1/2}): the prior sample of bank vector u (P, M)."""
    P, M = Z.shape
    for m in range(M):
        for p in range(P):
            acc = omega_i[p, m]
            for q in range(P):
                acc += S[p, q] * u[q, m]
            Z[p, m] = acc


@njit(nogil=True, inline='always')
def _log_likelihood(out, y_i, noise):
    """-|y_i - out|^2 / (2 noise) for out = g(Z): the log-likelihood of one sample, without
    its constant."""
    r2 = 0.0
    for o in range(y_i.shape[0]):
        d = y_i[o] - out[o]
        r2 += d * d
    return -0.5 * r2 / noise


@njit(nogil=True, inline='always')
def _store(X, k, Z):
    """Row k of X (K, P M) = Z (P, M) flattened."""
    P, M = Z.shape
    for p in range(P):
        for m in range(M):
            X[k, p * M + m] = Z[p, m]


@njit(nogil=True, cache=True)
def _exp_weights(logw):
    """Log-weights -> weights exp(logw - max), in place; returns (max, sum, sum of squares)."""
    mx = logw.max()
    s0 = 0.0
    s2 = 0.0
    for k in range(logw.shape[0]):
        e = math.exp(logw[k] - mx)
        logw[k] = e
        s0 += e
        s2 += e * e
    return mx, s0, s2


@njit(nogil=True, cache=True)
def _weighted_moments(X, e, s0):
    """Mean and centred covariance of the rows of X (K, d) under the weights e / s0."""
    K, d = X.shape
    mu = np.zeros(d)
    for k in range(K):
        for a in range(d):
            mu[a] += e[k] * X[k, a]
    mu /= s0
    c = np.zeros((d, d))
    for k in range(K):
        ek = e[k] / s0
        if ek == 0.0:
            continue
        for a in range(d):
            da = X[k, a] - mu[a]
            for b in range(d):
                c[a, b] += ek * da * (X[k, b] - mu[b])
    return mu, c


@njit(nogil=True)
def _is_kernel(link, params, y, omega, S, U, noise):
    """Self-normalised IS.  y (n, O), omega (n, P, M), S = V^{1/2} (P, P), U (K, P, M).

    ``link(Z, params)`` gives the flat output of one sample."""
    n = y.shape[0]
    O = y.shape[1]
    K, P, M = U.shape
    mean = np.zeros((n, P, M))
    cov = np.zeros((n, P, M, P, M))
    logz = np.zeros(n)
    ess = np.zeros(n)
    const = -0.5 * O * math.log(2.0 * math.pi * noise)
    Uflat = U.reshape(K, P * M)  # the bank is C-contiguous
    for i in range(n):
        logw = np.empty(K)
        Z = np.empty((P, M))
        for k in range(K):
            _prior_sample(Z, omega[i], S, U[k])
            logw[k] = _log_likelihood(link(Z, params), y[i], noise)
        mx, s0, s2 = _exp_weights(logw)
        # weighted moments of U, then back to Z
        mu_flat, c_flat = _weighted_moments(Uflat, logw, s0)
        mu = mu_flat.reshape(P, M)
        c = c_flat.reshape(P, M, P, M)
        # back to Z: Z - omega = S U (per token)
        for p in range(P):
            for m in range(M):
                acc = omega[i, p, m]
                for q in range(P):
                    acc += S[p, q] * mu[q, m]
                mean[i, p, m] = acc
        # cov_Z[p m, p' m'] = sum_{q q'} S[p q] c[q m, q' m'] S[p' q']
        tmp = np.zeros((P, M, P, M))
        for p in range(P):
            for m in range(M):
                for q2 in range(P):
                    for l in range(M):
                        acc = 0.0
                        for q in range(P):
                            acc += S[p, q] * c[q, m, q2, l]
                        tmp[p, m, q2, l] = acc
        for p in range(P):
            for m in range(M):
                for p2 in range(P):
                    for l in range(M):
                        acc = 0.0
                        for q2 in range(P):
                            acc += tmp[p, m, q2, l] * S[p2, q2]
                        cov[i, p, m, p2, l] = acc
        logz[i] = mx + math.log(s0 / K) + const
        ess[i] = s0 * s0 / s2
    return mean, cov, logz, ess


@njit(nogil=True)
def _log_prior(Z, omega_i, Vinv, logdetV):
    """log N(Z; omega_i, V) token by token (Z, omega_i of shape (P, M), V^-1 and log det V given)."""
    P, M = Z.shape
    lp = -0.5 * M * logdetV - 0.5 * P * M * math.log(2.0 * math.pi)
    for m in range(M):
        for p in range(P):
            dp = Z[p, m] - omega_i[p, m]
            for q in range(P):
                lp -= 0.5 * dp * Vinv[p, q] * (Z[q, m] - omega_i[q, m])
    return lp


@njit(nogil=True)
def _prior_bank_table(link, params, omega_i, S, Vinv, logdetV, U, O):
    """For one prior N(omega_i, V) (S = V^{1/2}): its bank samples Z_k = omega_i + S U_k (K, d),
    their link outputs g(Z_k) (K, O) and log prior densities (K,)."""
    K, P, M = U.shape
    Zt = np.empty((K, P * M))
    G = np.empty((K, O))
    lp = np.empty(K)
    Z = np.empty((P, M))
    for k in range(K):
        _prior_sample(Z, omega_i, S, U[k])
        G[k] = link(Z, params)
        lp[k] = _log_prior(Z, omega_i, Vinv, logdetV)
        _store(Zt, k, Z)
    return Zt, G, lp


@njit(nogil=True)
def _adaptive_kernel(link, params, y, omega, S, Vinv, logdetV, U, noise, ridge, shared_prior):
    """Defensive adaptive IS (two passes over the bank).

    Pass 0: prior proposal (as :func:`_is_kernel`) -> posterior mean m0 and covariance C0 of
    the flattened Z (d = P M).  Pass 1: each bank vector gives one prior sample
    omega + V^{1/2} U_k and one sample m0 + L U_k from N(m0, Sigma), Sigma = 2 C0 + ridge (V x I);
    weights use the balance heuristic prior(Z) lik(Z) / (q_prior(Z) / 2 + q_prop(Z) / 2),
    which is unbiased for Z_out and keeps the prior's coverage (defensive mixture).

    The prior samples of pass 1 are pass 0's (their link outputs and prior densities are
    reused); with ``shared_prior`` (every sample's omega equals omega[0], as at Q = 0) they are
    one table for all samples, so only the adapted samples evaluate the link per observation.
    Both give the numbers of solver 0.5.3's kernel (three link evaluations per bank vector
    and observation) bit for bit.
    """
    n = y.shape[0]
    O = y.shape[1]
    K, P, M = U.shape
    d = P * M
    mean = np.zeros((n, P, M))
    cov = np.zeros((n, P, M, P, M))
    logz = np.zeros(n)
    ess = np.zeros(n)
    const = -0.5 * O * math.log(2.0 * math.pi * noise)
    if shared_prior and n > 0:
        Z0, G0, lp0 = _prior_bank_table(link, params, omega[0], S, Vinv, logdetV, U, O)
    for i in range(n):
        Z = np.empty((P, M))
        # ---------------- pass 0: prior proposal
        if not shared_prior:
            Z0, G0, lp0 = _prior_bank_table(link, params, omega[i], S, Vinv, logdetV, U, O)
        ll0 = np.empty(K)
        for k in range(K):
            ll0[k] = _log_likelihood(G0[k], y[i], noise)
        logw = ll0.copy()
        _, s0, _ = _exp_weights(logw)
        m0, C0 = _weighted_moments(Z0, logw, s0)
        # proposal covariance: 2 C0 + ridge * (V kron I_M)
        Sig = 2.0 * C0
        Vkron = np.zeros((d, d))
        for p in range(P):
            for q in range(P):
                vpq = 0.0
                for r in range(P):
                    vpq += S[p, r] * S[r, q]
                for m in range(M):
                    Vkron[p * M + m, q * M + m] = vpq
        for a in range(d):
            for b in range(d):
                Sig[a, b] += ridge * Vkron[a, b]
            Sig[a, a] += 1e-14
        L = np.linalg.cholesky(Sig)
        logdetSig = 0.0
        for a in range(d):
            logdetSig += 2.0 * math.log(L[a, a])
        # ---------------- pass 1: balanced mixture of prior and adapted Gaussian
        lw1 = np.empty(2 * K)
        Zs = np.empty((2 * K, d))
        x = np.empty(d)
        for k in range(K):
            for src in range(2):
                if src == 0:
                    for a in range(d):
                        Z[a // M, a % M] = Z0[k, a]
                    lp = lp0[k]
                    ll = ll0[k]
                else:
                    for a in range(d):
                        acc = m0[a]
                        for b in range(a + 1):
                            acc += L[a, b] * U[k, b // M, b % M]
                        Z[a // M, a % M] = acc
                    lp = _log_prior(Z, omega[i], Vinv, logdetV)
                    ll = _log_likelihood(link(Z, params), y[i], noise)
                # log proposal density: solve L x = Z - m0
                for a in range(d):
                    acc = Z[a // M, a % M] - m0[a]
                    for b in range(a):
                        acc -= L[a, b] * x[b]
                    x[a] = acc / L[a, a]
                lq = -0.5 * logdetSig - 0.5 * d * math.log(2.0 * math.pi)
                for a in range(d):
                    lq -= 0.5 * x[a] * x[a]
                # mixture density 1/2 prior + 1/2 proposal
                if lp > lq:
                    lmix = lp + math.log(0.5 + 0.5 * math.exp(lq - lp))
                else:
                    lmix = lq + math.log(0.5 + 0.5 * math.exp(lp - lq))
                j = 2 * k + src
                lw1[j] = lp - lmix + ll
                _store(Zs, j, Z)
        mx, s0, s2 = _exp_weights(lw1)
        mu, c = _weighted_moments(Zs, lw1, s0)
        for a in range(d):
            mean[i, a // M, a % M] = mu[a]
            for b in range(d):
                cov[i, a // M, a % M, b // M, b % M] = c[a, b]
        logz[i] = mx + math.log(s0 / (2 * K)) + const
        ess[i] = s0 * s0 / s2
    return mean, cov, logz, ess


@njit(nogil=True)
def _apply_link(link, params, Z, out_size):
    n = Z.shape[0]
    out = np.empty((n, out_size))
    for i in range(n):
        out[i] = link(np.ascontiguousarray(Z[i]), params)
    return out


_ADAPTED: dict = {}


def _with_params(link):
    """Wrap a one-argument numba link g(Z) as g(Z, params) (compiled once per link)."""
    if link not in _ADAPTED:
        @njit
        def adapted(Z, params):
            return link(Z)

        _ADAPTED[link] = adapted
    return _ADAPTED[link]


def _threaded(fn, n: int, *args):
    """Run fn(lo, hi) on chunks of range(n) in threads (the kernels release the GIL)."""
    workers = max(1, min(numba.get_num_threads(), n // 64))
    if workers == 1:
        return [fn(0, n)]
    bounds = np.linspace(0, n, workers + 1).astype(int)
    with ThreadPoolExecutor(workers) as ex:
        return list(ex.map(lambda k: fn(bounds[k], bounds[k + 1]), range(workers)))


def psd_sqrt(V: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric PSD matrix (negative eigenvalues clipped)."""
    V = 0.5 * (np.asarray(V, dtype=float) + np.asarray(V, dtype=float).T)
    w, Q = np.linalg.eigh(V)
    return (Q * np.sqrt(np.clip(w, 0.0, None))) @ Q.T


class NoisyChannel(Channel):
    """y = g(Z) + sqrt(noise) * N(0, I_O) for a numba link g: (P, M) -> R^O.

    Parameters
    ----------
    link_function : numba ``@njit`` function, Z (P, M) float64 -> 1-D float64 array (O,).
    n_indices, n_tokens : P and M.
    output_size : O, the length of g's flat output.
    noise : Delta > 0, the noise variance.
    bank_size : importance samples K at resolution 1 (rounded up to a power of two).
    seed : seed of the scrambled Sobol bank (the same seed gives the same numbers bit
        for bit).
    index_names, sign_symmetric : as in :class:`Channel`.
    output_shape : shape of one output as the user sees it (default ``(O,)``).
    vectorized_output : optional numpy function Z (n, P, M) -> (n, *output_shape) used by
        :meth:`output` instead of looping the numba link (same values).
    link_params : optional 1-D float64 array; when given the link is called as
        ``link_function(Z, link_params)`` (parameters without recompiling per value).
    adaptive : True (default): defensive adaptive importance sampling, two passes over the
        bank (see the module docstring); False: plain prior proposal (one pass).
    ridge : adaptive only; the adapted proposal is N(m0, 2 C0 + ridge (V x I_M)).

    Observations are arrays of shape (n, O) (or (n, *output_shape), flattened).
    ``posterior_moments`` uses K = bank_size * resolution prior samples; the Kish effective
    sample size of its last call is in ``last_effective_sample_size`` (n,).  Accuracy
    degrades as noise -> 0 (see the module docstring).
    """

    noiseless = False

    def __init__(self, link_function: Callable, n_indices: int, n_tokens: int, output_size: int,
                 noise: float, bank_size: int = DEFAULT_BANK_SIZE, seed: int = 0,
                 index_names: Sequence[str] | None = None, sign_symmetric: bool = False,
                 output_shape: tuple[int, ...] | None = None,
                 vectorized_output: Callable | None = None,
                 link_params: np.ndarray | None = None, adaptive: bool = True,
                 ridge: float = 0.01):
        if not noise > 0:
            raise ValueError("NoisyChannel needs noise > 0 (use an exact channel for noise = 0)")
        self.link_function = link_function
        if link_params is None:
            self._link = _with_params(link_function)
            self._params = np.zeros(0)
        else:
            self._link = link_function
            self._params = np.ascontiguousarray(link_params, dtype=float).ravel()
        self.n_indices = int(n_indices)
        self.n_tokens = int(n_tokens)
        self.output_size = int(output_size)
        self.noise = float(noise)
        self.bank_size = 1 << max(0, int(math.ceil(math.log2(max(int(bank_size), 1)))))
        self.seed = int(seed)
        self.index_names = tuple(index_names) if index_names is not None else tuple(
            f"z{p + 1}" for p in range(self.n_indices))
        self.sign_symmetric = bool(sign_symmetric)
        self.output_shape = tuple(output_shape) if output_shape is not None else (self.output_size,)
        if int(np.prod(self.output_shape)) != self.output_size:
            raise ValueError("output_shape does not match output_size")
        self._vectorized_output = vectorized_output
        self.adaptive = bool(adaptive)
        self.ridge = float(ridge)
        self._banks: dict[int, np.ndarray] = {}
        self.last_effective_sample_size: np.ndarray | None = None

    def with_seed(self, seed: int) -> "NoisyChannel":
        """A copy drawing its bank from another seed (independent inner Monte-Carlo error).

        Every engine uses one per outer scramble (``Channel.scramble_channels``) so that its CI
        covers the bank's error."""
        other = copy.copy(self)
        other.seed = int(seed)
        other._banks = {}
        other.last_effective_sample_size = None
        return other

    # ------------------------------------------------------------------ outputs
    def output(self, Z: np.ndarray) -> np.ndarray:
        Z = np.ascontiguousarray(Z, dtype=float)
        if self._vectorized_output is not None:
            return np.asarray(self._vectorized_output(Z), dtype=float)
        parts = _threaded(lambda lo, hi: _apply_link(self._link, self._params, Z[lo:hi],
                                                     self.output_size), Z.shape[0])
        out = np.concatenate(parts, axis=0)
        return out.reshape((Z.shape[0],) + self.output_shape)

    @property
    def noise_shape(self) -> tuple[int, ...]:
        return self.output_shape

    def sample_output(self, Z: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        g = self.output(Z)
        return g + math.sqrt(self.noise) * rng.standard_normal(g.shape)

    def observation(self, Z: np.ndarray, noise: np.ndarray | None = None) -> np.ndarray:
        g = self.output(Z)
        if noise is None:
            raise ValueError("a noisy channel needs standard normal draws of shape (n, *noise_shape)")
        return g + math.sqrt(self.noise) * np.asarray(noise, dtype=float).reshape(g.shape)

    # ------------------------------------------------------------------ posterior
    def bank(self, resolution: int = 1) -> np.ndarray:
        """The (K, P, M) standard normal bank used at this resolution.

        Antithetic: K / 2 scrambled Sobol points U_k followed by -U_k, so that a channel
        invariant under Z -> -Z (with omega = 0) gets an exactly zero posterior mean, and
        the importance-sampling noise cannot fake a "trivial" direction at Q = 0."""
        K = self.bank_size * int(resolution)
        if K not in self._banks:
            self._banks[K] = self._draw_bank(K)
        return self._banks[K]

    def _draw_bank(self, K: int, memoised: bool = True) -> np.ndarray:
        """The bank of :meth:`bank` for K vectors, drawn afresh (``memoised``: whether a
        subclass may keep it in a process-wide cache)."""
        half = max(K // 2, 1)
        u = sobol_normals(half, self.n_indices * self.n_tokens, self.seed)
        u = np.concatenate([u, -u], axis=0)[:max(K, 2)]
        return np.ascontiguousarray(u.reshape(-1, self.n_indices, self.n_tokens))

    def inner_prior_bank(self, points: int) -> np.ndarray | None:
        """:meth:`bank` of about ``points`` vectors (at least, for this antithetic bank) for a
        scalar output (the quadrature in y of linear stability at Q = 0), else None."""
        if self.output_size != 1:
            return None
        # drawn once per scramble and bank size: neither kept here nor in a process-wide cache
        return self._draw_bank(self.bank_size * max(1, -(-int(points) // self.bank_size)), memoised=False)

    def posterior_moments(self, obs, omega, V, resolution: int = 1) -> PosteriorMoments:
        omega = np.ascontiguousarray(omega, dtype=float)
        n = omega.shape[0]
        y = np.ascontiguousarray(np.asarray(obs, dtype=float).reshape(n, self.output_size))
        S = np.ascontiguousarray(psd_sqrt(np.asarray(V, dtype=float).reshape(self.n_indices,
                                                                             self.n_indices)))
        U = self.bank(resolution)
        if self.adaptive:
            Vm = 0.5 * (np.asarray(V, dtype=float) + np.asarray(V, dtype=float).T).reshape(
                self.n_indices, self.n_indices)
            w, Q = np.linalg.eigh(Vm)
            w = np.maximum(w, 1e-12 * max(1.0, float(w.max())))
            Vinv = np.ascontiguousarray((Q / w) @ Q.T)
            logdetV = float(np.sum(np.log(w)))
            shared_prior = bool(n > 1 and np.all(omega == omega[:1]))  # Q = 0: one prior table
            parts = _threaded(lambda lo, hi: _adaptive_kernel(
                self._link, self._params, y[lo:hi], omega[lo:hi], S, Vinv, logdetV, U, self.noise,
                self.ridge, shared_prior), n)
        else:
            parts = _threaded(lambda lo, hi: _is_kernel(self._link, self._params, y[lo:hi],
                                                        omega[lo:hi], S, U, self.noise), n)
        mean, cov, logz, ess = (np.concatenate([p[k] for p in parts], axis=0) for k in range(4))
        self.last_effective_sample_size = ess
        return PosteriorMoments(mean=mean, cov=cov, log_partition=logz)
