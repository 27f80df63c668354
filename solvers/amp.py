"""GAMP on finite instances of sequence multi-index models (THEORY.md section 6).

The algorithm whose large-D behaviour state evolution (SE, section 3) describes.  It uses
the same channel functions as SE: the posterior moments of Z = W x / sqrt(D) in R^{P x M}
given the observation y and the Gaussian side information z_m ~ N(omega_m, V).

Notation (weights tied across the M tokens, Gaussian prior N(0, I_P) on each column
w_i in R^P of W, i = 1..D; x_{mu,m} in R^D is token m of sample mu):

Output side, for every sample mu and token m
    omega_{mu,m} = W_hat x_{mu,m} / sqrt(D) - V g_{mu,m}^{prev}          (Onsager term)
    g_{mu,m}     = V^{-1} (E[z_m | y_mu, omega_mu, V] - omega_{mu,m})
    dg_{mu,m}    = d g_{mu,m} / d omega_{mu,m} = V^{-1} Cov[z_m, z_m | ...] V^{-1} - V^{-1}
The off-diagonal token blocks d g_{mu,m} / d omega_{mu,m'} (m != m') enter the input side
multiplied by sum_i x_{mu,m,i} x_{mu,m',i} / D = O(D^{-1/2}), so they drop out, and
sum_i x_{mu,m,i}^2 / D -> 1, so the input-side precision is shared by all i.

Input side (Gaussian vector channel for each w_i in R^P)
    A   = -(1/D) sum_{mu,m} dg_{mu,m}                                     (P x P, -> Qhat)
    b_i = (1/sqrt(D)) sum_{mu,m} x_{mu,m,i} g_{mu,m} + A w_hat_i
    w_hat_i = (I + A)^{-1} b_i,  C = (I + A)^{-1},  V = (1/D) sum_i C_i = C.
On the Nishimori line A concentrates on Qhat = alpha E[sum_m g g^T] and W_hat W_hat^T / D
on Q = Qhat (I + Qhat)^{-1}: exactly the SE map of section 3 (checked in tests/test_amp.py
against a Gaussian channel whose SE is closed form).  Signs follow the committee-machine
GAMP of Aubin et al. (NeurIPS 2018), vector form as in TRAMP (Baker et al. 2020).

Overlaps are reported as the P x P matrix W_hat W*^T / D; the per-index overlap is
|w_hat_l . w*_l| / |w*_l|^2 (the same up to the teacher norm |w*_l|^2 / D = 1 + O(D^{-1/2}),
which it removes), with the absolute value since for sign-symmetric channels (phase
retrieval, deep attention) each row is learned up to sign.

Damping d is applied to the messages w_{i -> mu}: W_hat <- d W_hat + (1 - d) W_new, and the
Onsager term is the matching mixture S <- d S + (1 - d) C g of the self-contributions, so that
omega stays the cavity field (omega = W_hat x / sqrt(D) - S; undamped S = V g_prev).  Mixing
W_hat while keeping the plain -V g_prev term breaks the cancellation and locks GAMP onto
spurious directions (tested).  V is mixed alike: V <- d V + (1 - d) C.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Optional, Sequence

import numpy as np

from .errors import SpecError
from .limits import (AMP_MAX_ALPHA, AMP_MAX_DAMPING, AMP_MAX_DIMENSION, AMP_MAX_INPUT_ENTRIES, AMP_MAX_ITERATIONS,
                     AMP_MAX_SEEDS, AMP_MIN_DIMENSION)
from .priors import GAUSSIAN
from .results import Settings, _plain
from .statistics import inverse_on_unknown

SOLVER_VERSION = "amp-0.1.2"
# A row far below its fixed point but growing (a layer leaving W_hat = 0 after another one is
# learned: the paper's model with +-1 weights learns layer 2 first while layer 1's row decays to
# ~1e-10, then grows from there by a constant factor per iteration) changes by less than any
# absolute ``tol``; GAMP does not stop while a row's norm grows by more than this per iteration.
ROW_GROWTH = 1e-3
# A row can also collapse onto W_hat = 0 itself (self-overlap ~1e-24, or exactly 0 where the
# channel's posterior mean is exactly symmetric), a fixed point of GAMP whether or not it is
# stable: the paper's model with +-1 weights at alpha = 0.4 stopped there at (0, 1) after 24
# iterations, while without the stopping rule layer 1 regrows from rounding noise and reaches 0.94
# by iteration 85 (SE: Q_0).  So before stopping with a row below COLLAPSED_ROW (self-overlap
# ||w||^2 / D), GAMP asks whether that zero is stable, as SE's linear stability does: the row is
# set to PROBE_SCALE * N(0, 1) entries (seeded) and GAMP runs PROBE_ITERATIONS more before it may
# stop; an unstable zero then shows as a growing row (ROW_GROWTH), a stable one decays again.
COLLAPSED_ROW = 1e-8
PROBE_SCALE = 1e-5
PROBE_ITERATIONS = 5


def _validate(dimension, alpha, m: int, iterations=None, damping=None, seeds=None):
    """Raise :class:`SpecError` (parameter, value, allowed range) for bad run parameters
    (the ranges of :mod:`solvers.limits`)."""
    if isinstance(dimension, bool) or not isinstance(dimension, (int, np.integer)) \
            or not AMP_MIN_DIMENSION <= int(dimension) <= AMP_MAX_DIMENSION:
        raise SpecError("dimension", dimension, f"an integer in [{AMP_MIN_DIMENSION}, {AMP_MAX_DIMENSION}]")
    try:
        a = float(alpha)
    except (TypeError, ValueError):
        raise SpecError("alpha", alpha, f"a number in (0, {AMP_MAX_ALPHA:g}]") from None
    if not (np.isfinite(a) and 0 < a <= AMP_MAX_ALPHA):
        raise SpecError("alpha", alpha, f"a number in (0, {AMP_MAX_ALPHA:g}]")
    n = max(1, int(round(a * int(dimension))))
    if n * m * int(dimension) > AMP_MAX_INPUT_ENTRIES:
        raise SpecError("dimension", dimension,
                        f"alpha * dimension^2 * tokens <= {AMP_MAX_INPUT_ENTRIES:.0e} (memory)")
    if iterations is not None and (isinstance(iterations, bool)
                                   or not isinstance(iterations, (int, np.integer))
                                   or not 1 <= int(iterations) <= AMP_MAX_ITERATIONS):
        raise SpecError("iterations", iterations, f"an integer in [1, {AMP_MAX_ITERATIONS}]")
    if damping is not None and not (isinstance(damping, (int, float)) and 0.0 <= damping <= AMP_MAX_DAMPING):
        raise SpecError("damping", damping, f"a number in [0, {AMP_MAX_DAMPING:g}]")
    if seeds is not None and not 1 <= len(seeds) <= AMP_MAX_SEEDS:
        raise SpecError("seeds", list(seeds), f"between 1 and {AMP_MAX_SEEDS} seeds")


# --------------------------------------------------------------------------------------
# helpers: spec or channel
# --------------------------------------------------------------------------------------

def _resolve(model) -> tuple[Any, dict]:
    """Return (channel, model dict) for a spec (with ``.channel()``) or a channel object."""
    if hasattr(model, "posterior_moments"):
        spec = getattr(model, "spec", None)
        desc = spec.to_dict() if hasattr(spec, "to_dict") else {"channel": type(model).__name__}
        return model, desc
    if hasattr(model, "channel"):
        return model.channel(), model.to_dict()
    raise TypeError("expected a model spec (DeepAttentionSpec, MultiIndexSpec) or a Channel")


def _sq_norm_per_sample(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=float)
    return (a.reshape(a.shape[0], -1) ** 2).sum(axis=1)


# --------------------------------------------------------------------------------------
# instances
# --------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class Instance:
    """A synthetic teacher-student instance.

    teacher: W* (P, D), iid N(0, 1).  inputs: X (N, D, M), iid N(0, 1) (a transposed view
    of a contiguous (N, M, D) array, see :attr:`tokens_flat`).  preactivations: Z (N, P, M)
    = W* x / sqrt(D).  outputs: y ~ P_out(. | Z) as the user sees it (channel.sample_output).
    test_*: the same for fresh inputs, used for the prediction error.
    """

    model: dict
    dimension: int
    alpha: float
    seed: int
    teacher: np.ndarray
    inputs: np.ndarray
    preactivations: np.ndarray
    outputs: np.ndarray
    test_inputs: np.ndarray
    test_preactivations: np.ndarray
    test_outputs: np.ndarray

    @property
    def n_samples(self) -> int:
        return self.inputs.shape[0]

    @property
    def n_tokens(self) -> int:
        return self.inputs.shape[2]

    @property
    def n_indices(self) -> int:
        return self.teacher.shape[0]

    @property
    def tokens_flat(self) -> np.ndarray:
        """Inputs as a (N * M, D) matrix, row mu * M + m = x_{mu, m} (no copy)."""
        return _flat_tokens(self.inputs)

    @property
    def test_tokens_flat(self) -> np.ndarray:
        return _flat_tokens(self.test_inputs)


def _flat_tokens(X: np.ndarray) -> np.ndarray:
    n, d, m = X.shape
    base = np.transpose(X, (0, 2, 1))  # (N, M, D), contiguous when built by _gaussian_inputs
    return base.reshape(n * m, d)


def _gaussian_inputs(rng: np.random.Generator, n: int, d: int, m: int) -> np.ndarray:
    return np.transpose(rng.standard_normal((n, m, d)), (0, 2, 1))


def _preactivations(W: np.ndarray, X: np.ndarray) -> np.ndarray:
    n, d, m = X.shape
    Z = _flat_tokens(X) @ W.T / np.sqrt(d)  # (N*M, P)
    return np.ascontiguousarray(Z.reshape(n, m, -1).transpose(0, 2, 1))


def generate_instance(spec, dimension: int, alpha: float, seed: int,
                      n_test: Optional[int] = None) -> Instance:
    """Teacher W* ~ N(0,1)^{P x D}, N = round(alpha D) samples, and a fresh test set.

    ``spec`` is a model spec or a channel.  The test set has ``n_test`` samples
    (default max(N, 1000)).  Everything is a deterministic function of ``seed``.
    """
    channel, desc = _resolve(spec)
    p, m = int(channel.n_indices), int(channel.n_tokens)
    _validate(dimension, alpha, m)
    d = int(dimension)
    n = max(1, int(round(alpha * d)))
    n_test = max(n, 1000) if n_test is None else int(n_test)
    ss = np.random.SeedSequence([int(seed), 0x5A17])
    r_teacher, r_x, r_y, r_xt, r_yt = (np.random.default_rng(s) for s in ss.spawn(5))
    W = channel.prior.sample(r_teacher, (p, d))
    X = _gaussian_inputs(r_x, n, d, m)
    Z = _preactivations(W, X)
    y = np.asarray(channel.sample_output(Z, r_y))
    Xt = _gaussian_inputs(r_xt, n_test, d, m)
    Zt = _preactivations(W, Xt)
    yt = np.asarray(channel.sample_output(Zt, r_yt))
    return Instance(model=desc, dimension=d, alpha=float(alpha), seed=int(seed), teacher=W,
                    inputs=X, preactivations=Z, outputs=y, test_inputs=Xt,
                    test_preactivations=Zt, test_outputs=yt)


# --------------------------------------------------------------------------------------
# GAMP
# --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class GampResult:
    """One GAMP run.  Trajectories have ``iterations + 1`` entries: index 0 is the start.

    overlaps: (T+1, P, P) matrices W_hat W*^T / D.
    self_overlaps: (T+1, P, P) matrices W_hat W_hat^T / D (equal to the overlaps on the
      Nishimori line, up to finite-size error).
    layer_overlaps: (T+1, P) per-index / per-layer overlap q_l = |w_hat_l . w*_l| / |w*_l|^2,
      the diagonal of the overlap matrix divided by the teacher's ||w*_l||^2 / D (which is
      1 + O(D^{-1/2}) and otherwise dominates the seed-to-seed spread; perfect recovery
      gives exactly 1).  Absolute value: the sign of each row is not identifiable for
      sign-symmetric channels.  SE's Q_ll is its D -> infinity limit.
    mse: (T+1,) sum_l min_s ||w_hat_l - s w*_l||^2 / D (sign-aligned row by row; SE value
      Tr(I - Q)).
    test_error: (T+1,) E || y - g(omega_hat) ||^2 on the fresh test set (omega_hat =
      W_hat x / sqrt(D)); test_error_noiseless the same against g(Z) (THEORY's plug-in error).
    prediction_error / prediction_error_noiseless: final values of these two.
    residual: (T,) rms change of the entries of W_hat per iteration.
    converged: the rms change fell below ``tol``, or Tr V / P below ``v_stop`` (perfect
      recovery), after at least ``min_iterations``.
    n_bad: samples whose channel moments were not finite (dropped from that update).
    seconds: wall time; cpu_seconds: CPU time of the process (all threads) over the run.
    """

    model: dict
    dimension: int
    alpha: float
    n_samples: int
    index_names: tuple[str, ...]
    overlaps: np.ndarray
    self_overlaps: np.ndarray
    layer_overlaps: np.ndarray
    mse: np.ndarray
    test_error: np.ndarray
    test_error_noiseless: np.ndarray
    prediction_error: float
    prediction_error_noiseless: float
    residual: np.ndarray
    iterations: int
    converged: bool
    n_bad: int
    seconds: float
    settings: Settings
    cpu_seconds: float = 0.0
    solver_version: str = SOLVER_VERSION

    @property
    def final_layer_overlaps(self) -> np.ndarray:
        return self.layer_overlaps[-1]

    def to_dict(self) -> dict:
        return _plain(asdict(self))


def _sym(a: np.ndarray) -> np.ndarray:
    return 0.5 * (a + a.T)


def _eig_clip(a: np.ndarray, lo: float) -> np.ndarray:
    w, u = np.linalg.eigh(_sym(a))
    return (u * np.maximum(w, lo)) @ u.T


def _inv_sym(a: np.ndarray) -> np.ndarray:
    w, u = np.linalg.eigh(_sym(a))
    return (u / w) @ u.T


def _test_errors(channel, W: np.ndarray, inst: Instance) -> tuple[float, float]:
    omega = _preactivations(W, inst.test_inputs)
    pred = np.asarray(channel.output(omega), dtype=float)
    y = np.asarray(inst.test_outputs, dtype=float)
    g = np.asarray(channel.output(inst.test_preactivations), dtype=float)
    return (float(np.mean(_sq_norm_per_sample(y - pred))),
            float(np.mean(_sq_norm_per_sample(g - pred))))


def _sign_aligned_mse(W: np.ndarray, Wstar: np.ndarray) -> float:
    d = W.shape[1]
    plus = ((W - Wstar) ** 2).sum(axis=1)
    minus = ((W + Wstar) ** 2).sum(axis=1)
    return float(np.minimum(plus, minus).sum() / d)


def gamp(model, instance: Instance, iterations: int = 100, damping: float = 0.0,
         tol: float = 1e-5, seed: Optional[int] = None, init_scale: float = 0.01,
         min_iterations: int = 5, resolution: int = 1, v_floor: float = 1e-8,
         a_floor: float = -0.5, v_stop: float = 1e-7, batch_size: int = 0,
         progress: Optional[Callable[[int, int], None]] = None,
         init: Optional[np.ndarray] = None) -> GampResult:
    """Bayes-optimal GAMP with tied weights across tokens and prior N(0, I_P) per column.

    model: a spec or a channel (the one that generated ``instance``).
    iterations: maximum number of updates.  damping d in [0, 1): W_hat and V are updated
      as d * old + (1 - d) * new.  tol: stop when the rms change of the entries of W_hat is
      below tol and no row's norm grew by more than :data:`ROW_GROWTH` (not before
      ``min_iterations``); a row collapsed onto W_hat = 0 is first probed for stability
      (:data:`COLLAPSED_ROW`: PROBE_ITERATIONS more iterations from a tiny random row).  seed: for the random start (default: the
      instance seed).  init_scale: the start is W_hat = init_scale * N(0,1) entries and
      V = I - W_hat W_hat^T / D (uninformed, spectral-free).  ``init`` (P x D) overrides it.
    resolution: passed to channel.posterior_moments.  v_floor: eigenvalue floor of V (V -> 0
      at perfect recovery).  a_floor: eigenvalue floor of A (finite-size fluctuations around
      A = 0 can be slightly negative; the floor keeps I + A positive definite).
    v_stop: also stop (converged, perfect recovery) once Tr V / P < v_stop: beyond that the
      iterations only amplify the quadrature error of the channel moments by V^{-1}.
    batch_size: samples per channel call (0 = all at once).
    progress: optional callable(done, total) after each iteration.
    """
    t0 = time.perf_counter()
    c0 = time.process_time()
    channel, desc = _resolve(model)
    if not 0.0 <= damping < 1.0:
        raise ValueError("damping must be in [0, 1)")
    iterations = int(iterations)
    if iterations < 0:
        raise ValueError("iterations must be >= 0")
    Wstar = instance.teacher
    p, d = Wstar.shape
    n, m = instance.n_samples, instance.n_tokens
    if p != channel.n_indices or m != channel.n_tokens:
        raise ValueError("instance does not match the channel (P or M differ)")
    seed = instance.seed if seed is None else int(seed)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xA3F]))

    Xf = instance.tokens_flat  # (N*M, D)
    sqd = np.sqrt(d)
    obs = channel.observation_from_output(instance.outputs)
    eye = np.eye(p)

    if init is not None:
        W = np.array(init, dtype=float).reshape(p, d)
    else:
        W = init_scale * rng.standard_normal((p, d))
    known, unknown = list(channel.known), channel.unknown

    def pin_known(W, V):
        """Known rows (THEORY.md section 7): the teacher's, with V_kk = 0; never updated."""
        W[known] = Wstar[known]
        V[known, :] = 0.0
        V[:, known] = 0.0
        return W, V

    W, V = pin_known(W, _eig_clip(eye - W @ W.T / d, v_floor))
    # Onsager term: S = the part of W_hat x_mu / sqrt(D) that sample mu itself put there
    S = np.zeros((n, p, m))

    teacher_norms = (Wstar ** 2).sum(axis=1) / d

    def record(W):
        ov = W @ Wstar.T / d
        so = W @ W.T / d
        te, ten = _test_errors(channel, W, instance)
        return ov, so, np.abs(np.diag(ov)) / teacher_norms, _sign_aligned_mse(W, Wstar), te, ten

    hist = [record(W)]
    residuals = []
    converged = False
    n_bad = 0
    done = 0
    probed: set[int] = set()  # rows whose collapse onto 0 was probed (COLLAPSED_ROW)
    probe_until = 0
    bs = n if batch_size <= 0 else int(batch_size)
    for t in range(iterations):
        Vinv = inverse_on_unknown(V, unknown)  # 0 on the known rows: their g, A and C vanish
        # output side
        proj = (Xf @ W.T / sqd).reshape(n, m, p).transpose(0, 2, 1)  # (N, P, M)
        omega = proj - S
        g = np.empty((n, p, m))
        cov_sum = np.zeros((p, p))
        n_good = 0
        for s in range(0, n, bs):
            sl = slice(s, min(n, s + bs))
            mom = channel.posterior_moments(obs[sl], omega[sl], V, resolution)
            mean = np.asarray(mom.mean, dtype=float).reshape(-1, p, m)
            cov = np.asarray(mom.cov, dtype=float).reshape(-1, p, m, p, m)
            diag_blocks = np.einsum("npmqm->nmpq", cov)  # (n, M, P, P) token-diagonal blocks
            ok = np.isfinite(mean).all(axis=(1, 2)) & np.isfinite(diag_blocks).all(axis=(1, 2, 3))
            gb = np.einsum("pq,nqm->npm", Vinv, mean - omega[sl])
            gb[~ok] = 0.0
            g[sl] = gb
            cov_sum += diag_blocks[ok].sum(axis=(0, 1))
            n_good += int(ok.sum())
            n_bad += int((~ok).sum())
        # sum over samples and tokens of dg = Vinv Cov Vinv - Vinv
        dg_sum = Vinv @ cov_sum @ Vinv - n_good * m * Vinv
        A = _eig_clip(-dg_sum / d, a_floor)
        # input side
        gf = g.transpose(0, 2, 1).reshape(n * m, p)  # (N*M, P)
        B = (gf.T @ Xf) / sqd + A @ W  # (P, D)
        if channel.prior == GAUSSIAN:
            C = _inv_sym(eye + A)
            W_new = C @ B
        else:
            # the prior's denoiser on each coordinate's field B_i (precision A), the same function
            # SE averages; C is the coordinates' mean posterior covariance.  A precision is never
            # negative there (a Gauss-Bernoulli slab needs A + rho I > 0): A's floor is 0
            post = channel.prior.denoiser(B.T, _eig_clip(A, 0.0))
            W_new = post.mean.T
            C = _sym(post.cov.mean(0))
        # self-contribution of sample mu to W_new x_mu / sqrt(D) is C g_mu (||x_mu||^2 / D -> 1)
        S_new = np.einsum("pq,nqm->npm", C, g)
        if damping > 0:
            # damping at the level of the messages w_{i -> mu}: the cavity estimates and the
            # full estimates are mixed alike, so their difference S is mixed too
            W_new = damping * W + (1.0 - damping) * W_new
            S_new = damping * S + (1.0 - damping) * S_new
            C = damping * V + (1.0 - damping) * C
        W_new[known] = Wstar[known]
        res = float(np.sqrt(np.mean((W_new - W) ** 2)))
        growing = bool(np.any(np.linalg.norm(W_new[list(unknown)], axis=1)
                              > (1.0 + ROW_GROWTH) * np.linalg.norm(W[list(unknown)], axis=1)))
        W, V = pin_known(W_new, _eig_clip(C, v_floor))
        S = S_new
        residuals.append(res)
        hist.append(record(W))
        done = t + 1
        if progress is not None:
            progress(done, iterations)
        if not np.isfinite(W).all():
            break
        if done < min_iterations or done < probe_until:
            continue
        if np.trace(V) < v_stop * p:
            converged = True
            break
        if res < tol and not growing:
            collapsed = [r for r in unknown if r not in probed and W[r] @ W[r] / d < COLLAPSED_ROW]
            if not collapsed:
                converged = True
                break
            for r in collapsed:  # is W_hat_r = 0 a stable fixed point? (see COLLAPSED_ROW)
                W[r] = PROBE_SCALE * rng.standard_normal(d)
                probed.add(r)
            probe_until = done + PROBE_ITERATIONS

    ov, so, lo, mse, te, ten = (np.array(x) for x in zip(*hist))
    names = tuple(getattr(channel, "index_names", tuple(f"z{i + 1}" for i in range(p))))
    settings = Settings(precision="n/a", seed=seed, method="gamp", inner_resolution=resolution,
                        extra=dict(max_iterations=iterations, damping=damping, tol=tol,
                                   init_scale=init_scale, min_iterations=min_iterations,
                                   v_floor=v_floor, a_floor=a_floor, v_stop=v_stop,
                                   instance_seed=instance.seed,
                                   n_test=int(instance.test_inputs.shape[0])))
    return GampResult(model=desc, dimension=d, alpha=instance.alpha, n_samples=n,
                      index_names=names, overlaps=ov, self_overlaps=so, layer_overlaps=lo,
                      mse=mse, test_error=te, test_error_noiseless=ten,
                      prediction_error=float(te[-1]), prediction_error_noiseless=float(ten[-1]),
                      residual=np.array(residuals), iterations=done, converged=converged,
                      n_bad=n_bad, seconds=time.perf_counter() - t0, settings=settings,
                      cpu_seconds=time.process_time() - c0)


# --------------------------------------------------------------------------------------
# several seeds
# --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class AmpSimulationResult:
    """GAMP over several seeds (one fresh instance per seed).

    Trajectories are padded with their last value up to the longest run (a converged run
    stays at its fixed point), so every array has ``iterations + 1`` rows.
    layer_overlaps: (S, T+1, P) per seed; mean / std / min / max over seeds: (T+1, P).
    mse_*: (T+1,); final_*: over seeds at the end of each run.
    first_learned: (S, P) first iteration where the layer overlap exceeds ``learned_level``
      (-1 if never): which layer is learned first in iterations.
    """

    model: dict
    dimension: int
    alpha: float
    seeds: tuple[int, ...]
    index_names: tuple[str, ...]
    layer_overlaps: np.ndarray
    layer_overlaps_mean: np.ndarray
    layer_overlaps_std: np.ndarray
    layer_overlaps_min: np.ndarray
    layer_overlaps_max: np.ndarray
    mse_mean: np.ndarray
    mse_std: np.ndarray
    test_error_mean: np.ndarray
    test_error_std: np.ndarray
    final_layer_overlaps_mean: np.ndarray
    final_layer_overlaps_std: np.ndarray
    prediction_error_mean: float
    prediction_error_std: float
    learned_level: float
    first_learned: np.ndarray
    iterations: tuple[int, ...]
    converged: tuple[bool, ...]
    seconds: tuple[float, ...]
    runs: tuple[GampResult, ...] = field(repr=False)
    solver_version: str = SOLVER_VERSION

    def to_dict(self, include_runs: bool = False) -> dict:
        d = asdict(self)
        if not include_runs:
            d.pop("runs")
        return _plain(d)


def _pad(a: np.ndarray, length: int) -> np.ndarray:
    if a.shape[0] >= length:
        return a[:length]
    return np.concatenate([a, np.repeat(a[-1:], length - a.shape[0], axis=0)])


def first_crossing(traj: np.ndarray, level: float) -> np.ndarray:
    """First index t with traj[t, l] >= level for each column l (-1 if never)."""
    above = np.asarray(traj) >= level
    idx = np.argmax(above, axis=0)
    return np.where(above.any(axis=0), idx, -1)


def check_simulation(spec, dimension: int, alpha: float, seeds: Sequence[int] | int = 5,
                     iterations: int = 50, damping: float = 0.0) -> None:
    """Raise :class:`SpecError` exactly where :func:`amp_simulation` would refuse these
    arguments (cheap: no instance is generated).  For callers that validate up front."""
    if isinstance(seeds, (int, np.integer)):
        seeds = tuple(range(int(seeds)))
    channel, _ = _resolve(spec)
    _validate(dimension, alpha, int(channel.n_tokens), iterations, damping, tuple(seeds))


def amp_simulation(spec, dimension: int, alpha: float, seeds: Sequence[int] | int = 5,
                   iterations: int = 50, damping: float = 0.0, tol: float = 1e-5,
                   learned_level: float = 0.5,
                   progress: Optional[Callable[[int, int], None]] = None,
                   **gamp_kwargs) -> AmpSimulationResult:
    """Run GAMP on one fresh instance per seed; mean and spread of the trajectories.

    seeds: a list of seeds or a count S (seeds 0..S-1); at most 10.
    Bad parameters raise :class:`solvers.errors.SpecError` (parameter, value, allowed range).
    progress: optional callable(done, total) with total = len(seeds) * iterations, called
      after every GAMP iteration (a run that converges early jumps to its end).
    """
    if isinstance(seeds, (int, np.integer)):
        seeds = tuple(range(int(seeds)))
    seeds = tuple(int(s) for s in seeds)
    channel, desc = _resolve(spec)
    _validate(dimension, alpha, int(channel.n_tokens), iterations, damping, seeds)
    total = len(seeds) * int(iterations)
    runs = []
    for k, s in enumerate(seeds):
        inst = generate_instance(channel, dimension, alpha, s)
        cb = None
        if progress is not None:
            def cb(done, tot, _k=k):
                progress(_k * int(iterations) + done, total)
        r = gamp(channel, inst, iterations=iterations, damping=damping, tol=tol, seed=s,
                 progress=cb, **gamp_kwargs)
        runs.append(r)
        if progress is not None and r.iterations < iterations:
            progress((k + 1) * int(iterations), total)
    r0 = runs[0]
    length = int(iterations) + 1
    lo = np.stack([_pad(r.layer_overlaps, length) for r in runs])
    mse = np.stack([_pad(r.mse, length) for r in runs])
    te = np.stack([_pad(r.test_error, length) for r in runs])
    fin = np.stack([r.layer_overlaps[-1] for r in runs])
    pe = np.array([r.prediction_error for r in runs])
    ddof = 1 if len(runs) > 1 else 0
    return AmpSimulationResult(
        model=desc,
        dimension=int(dimension), alpha=float(alpha), seeds=seeds, index_names=r0.index_names,
        layer_overlaps=lo, layer_overlaps_mean=lo.mean(0), layer_overlaps_std=lo.std(0, ddof=ddof),
        layer_overlaps_min=lo.min(0), layer_overlaps_max=lo.max(0),
        mse_mean=mse.mean(0), mse_std=mse.std(0, ddof=ddof),
        test_error_mean=te.mean(0), test_error_std=te.std(0, ddof=ddof),
        final_layer_overlaps_mean=fin.mean(0), final_layer_overlaps_std=fin.std(0, ddof=ddof),
        prediction_error_mean=float(pe.mean()), prediction_error_std=float(pe.std(ddof=ddof)),
        learned_level=float(learned_level),
        first_learned=np.stack([first_crossing(r.layer_overlaps, learned_level) for r in runs]),
        iterations=tuple(r.iterations for r in runs), converged=tuple(r.converged for r in runs),
        seconds=tuple(r.seconds for r in runs), runs=tuple(runs))
