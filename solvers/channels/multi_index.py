"""Multi-index (M = 1 token) output channels y = g(z) (+ Gaussian noise), z in R^P.

One :class:`MultiIndexChannel` subclass per link carries all of the link's facts: its name,
number of indices P, formula, whether the noiseless observation is well posed, sign
symmetry, vectorised output and numba link function (used by the importance sampler).
:func:`register_link` registers it by name (in :data:`LINKS` and the channel registry, so
that ``make_channel(link, noise=...)`` builds it).  Adding a link is one class here plus
its tests.

Conventions: observations are arrays of shape (n,) (one scalar per sample; (n, 1) is
accepted too); ``output`` returns shape (n,).  ``log_partition`` is the log density of y
(for noiseless discrete outputs, sign-type links, the log probability of y; for relu the
log probability of y = 0 and the log density of y > 0).

Noiseless posteriors are exact:

* square, abs: two atoms at +-sqrt(y) (+-|y|) with logistic weights;
* sign: truncated Gaussian in closed form;
* relu: an atom at y for y > 0, a truncated Gaussian for y = 0;
* product: a 1-D integral along the hyperbola z1 z2 = y (adaptive Gauss-Legendre,
  :mod:`._hyperbola`), for any positive definite V;
* sign_product, committee_sign: mixtures of orthant-truncated Gaussians; closed forms
  (products of 1-D truncated normals) for diagonal V, nested adaptive quadrature
  (:func:`._gauss.orthant_moments`) for general V.

Formula links (:class:`FormulaChannel`) noiseless: finitely many values, the Gaussian restricted
to a region; continuous, in z1 alone and invertible, a discrete posterior on the roots of
g(z1) = y.

With noise > 0 the sign-type links (outputs +-1) stay exact: the posterior is a mixture of
the orthant pieces weighted by N(y; +-1, Delta).  The continuous links (square, abs, relu,
product) use the importance sampler :class:`.noisy.NoisyChannel`.

A singular (PSD) V is regularised to V + 1e-12 on its zero eigenvalues before exact
computations (the posterior is then a narrow Gaussian around the degenerate one).
"""
from __future__ import annotations

import copy
import math
from functools import lru_cache
from typing import Callable

import numpy as np
from numba import njit
from scipy.special import log_ndtr

from ..errors import SpecError
from ..quadrature import sobol_normals
from ._gauss import gauss_legendre, orthant_mixture, trunc_std
from ._hyperbola import hyperbola_batch
from .base import Channel, PosteriorMoments, in_threads, register_channel
from .formula import FIELD as FORMULA_FIELD, compile_formula, formula_facts, inversion_problem, parse_formula
from .noisy import DEFAULT_BANK_SIZE, NoisyChannel, _threaded, psd_sqrt

GL_ORDER = 10  # Gauss-Legendre nodes per panel (times resolution) for general-V orthants
PANEL_ORDER = 16  # Gauss-Legendre nodes per panel on the hyperbola
V_FLOOR = 1e-12


def _regularise(V: np.ndarray, P: int) -> np.ndarray:
    V = np.asarray(V, dtype=float).reshape(P, P)
    V = 0.5 * (V + V.T)
    w, Q = np.linalg.eigh(V)
    if w.min() >= V_FLOOR:
        return np.ascontiguousarray(V)
    w = np.maximum(w, V_FLOOR)
    out = (Q * w) @ Q.T
    # keep exact zeros off the diagonal when V was diagonal (closed-form fast path)
    if np.count_nonzero(V - np.diag(np.diag(V))) == 0:
        out = np.diag(np.maximum(np.diag(V), V_FLOOR))
    return np.ascontiguousarray(0.5 * (out + out.T))


def _sgn(x):
    return np.where(x > 0, 1.0, -1.0)


class MultiIndexChannel(Channel):
    """Base class: y = g(z) + sqrt(noise) N(0, 1), z = Z[:, :, 0] in R^P.

    A link sets ``link`` (its name), ``n_indices`` (P), ``formula``, ``noiseless_well_posed``
    (the noiseless observation determines a well-posed inference problem), ``sign_symmetric``,
    ``vectorised_link`` (z of shape (n, P) -> (n,)) and ``numba_link`` (one sample, Z of
    shape (P, 1) -> array of shape (1,)), and implements ``_exact``."""

    link: str = ""
    formula: str = ""
    noiseless_well_posed = True
    n_tokens = 1
    sign_symmetric = False
    vectorised_link: Callable[[np.ndarray], np.ndarray]
    numba_link: Callable[[np.ndarray], np.ndarray]

    def __init__(self, noise: float = 0.0, bank_size: int = DEFAULT_BANK_SIZE, seed: int = 0):
        self.noise = float(noise)
        if not (self.noise >= 0.0 and math.isfinite(self.noise)):
            raise ValueError("noise must be a finite number >= 0")
        self.noiseless = self.noise == 0.0
        self.closed_form_posterior = self.noiseless  # noisy links use the importance sampler
        self.index_names = ("z",) if self.n_indices == 1 else tuple(
            f"z{p + 1}" for p in range(self.n_indices))
        self._noisy = None
        self.bank_size = bank_size
        self.seed = seed

    def __repr__(self):
        return f"{type(self).__name__}(noise={self.noise})"

    # ------------------------------------------------------------------ outputs
    def output(self, Z: np.ndarray) -> np.ndarray:
        Z = np.asarray(Z, dtype=float)
        return self.vectorised_link(Z.reshape(Z.shape[0], self.n_indices))

    def sample_output(self, Z: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        y = self.output(Z)
        if self.noiseless:
            return y
        return y + math.sqrt(self.noise) * rng.standard_normal(y.shape)

    @property
    def noise_shape(self) -> tuple[int, ...]:
        return () if self.noiseless else (1,)

    def observation(self, Z: np.ndarray, noise: np.ndarray | None = None) -> np.ndarray:
        y = self.output(Z)
        if self.noiseless:
            return y
        if noise is None:
            raise ValueError("a noisy channel needs standard normal draws of shape (n, 1)")
        return y + math.sqrt(self.noise) * np.asarray(noise, dtype=float).reshape(y.shape)

    # ------------------------------------------------------------------ posterior
    def _prepare(self, obs, omega, V):
        omega = np.asarray(omega, dtype=float)
        n = omega.shape[0]
        om = np.ascontiguousarray(omega.reshape(n, self.n_indices))
        y = np.ascontiguousarray(np.asarray(obs, dtype=float).reshape(n))
        return y, om, V

    @staticmethod
    def _pack(mean, cov, logz):
        n, P = mean.shape
        return PosteriorMoments(mean=mean.reshape(n, P, 1), cov=cov.reshape(n, P, 1, P, 1),
                                log_partition=np.asarray(logz, dtype=float))

    def noisy_channel(self) -> NoisyChannel:
        """The importance-sampling channel used for noise > 0 (continuous links)."""
        if self._noisy is None:
            self._noisy = NoisyChannel(self.numba_link, self.n_indices, 1, 1, self.noise,
                                       bank_size=self.bank_size, seed=self.seed,
                                       index_names=self.index_names,
                                       sign_symmetric=self.sign_symmetric,
                                       output_shape=(1,))
        return self._noisy

    def with_seed(self, seed: int) -> "MultiIndexChannel":
        """The same channel with another importance-sampling bank seed (noisy continuous links)."""
        return type(self)(noise=self.noise, bank_size=self.bank_size, seed=int(seed))

    @property
    def last_effective_sample_size(self):
        return None if self._noisy is None else self._noisy.last_effective_sample_size

    def inner_prior_bank(self, points: int):
        """The importance sampler's bank when noise > 0 makes it the posterior (else None)."""
        if self.noiseless or self._exact_with_noise:
            return None
        return self.noisy_channel().inner_prior_bank(points)

    def posterior_moments(self, obs, omega, V, resolution: int = 1) -> PosteriorMoments:
        y, om, V = self._prepare(obs, omega, V)
        if not self.noiseless and not self._exact_with_noise:
            return self.noisy_channel().posterior_moments(y.reshape(-1, 1),
                                                          om.reshape(-1, self.n_indices, 1),
                                                          V, resolution)
        Vr = _regularise(V, self.n_indices)
        mean, cov, logz = self._exact(y, om, Vr, int(resolution))
        return self._pack(mean, cov, logz)

    _exact_with_noise = False

    @property
    def reseeded_per_scramble(self) -> bool:
        """Only the importance-sampled noisy links have an inner bank (not the exact ones)."""
        return not self.noiseless and not self._exact_with_noise

    def _exact(self, y, om, V, resolution):  # pragma: no cover - abstract
        raise NotImplementedError


LINKS: dict[str, type[MultiIndexChannel]] = {}  # link name -> channel class, in registration order


def register_link(cls: type[MultiIndexChannel]) -> type[MultiIndexChannel]:
    """Class decorator: register a multi-index link under ``cls.link`` (in :data:`LINKS` and
    in the channel registry)."""
    register_channel(cls.link)(cls)
    LINKS[cls.link] = cls
    return cls


def _two_atoms(s, om, v, log_jacobian):
    """Posterior on the atoms +-s (s >= 0) under N(om, v)."""
    x = s * om / v
    mean = s * np.tanh(x)
    e = np.exp(-2.0 * np.abs(x))
    var = s * s * 4.0 * e / (1.0 + e) ** 2
    lp = -(s - om) ** 2 / (2 * v)
    lm = -(s + om) ** 2 / (2 * v)
    logz = np.logaddexp(lp, lm) - 0.5 * np.log(2 * np.pi * v) + log_jacobian
    return mean[:, None], var[:, None, None], logz


@njit(cache=True)
def _trunc_std_vec(a):
    """Vectorised mean and variance of N(0, 1) conditioned on X > a."""
    lam = np.empty_like(a)
    var = np.empty_like(a)
    for i in range(a.shape[0]):
        lam[i], var[i] = trunc_std(a[i])
    return lam, var


class _OrthantChannel(MultiIndexChannel):
    """Links constant on orthants with outputs +-1: exact with or without noise."""

    _exact_with_noise = True
    patterns: np.ndarray
    outputs: np.ndarray

    summed = False  # answering for a sum over y weighted by its probability (summed_over_outputs)

    @property
    def finite_outputs(self):
        return np.unique(self.outputs) if self.noiseless else None

    def summed_over_outputs(self) -> "_OrthantChannel":
        """A copy whose orthant posteriors keep the closed form for a y of negligible probability
        (``_gauss.SUMMED_NEGLIGIBLE_MASS``) instead of the nested quadrature's slow tail."""
        other = copy.copy(self)
        other.summed = True
        return other

    def _exact(self, y, om, V, resolution):
        x, w = gauss_legendre(GL_ORDER * resolution)
        parts = _threaded(lambda lo, hi: orthant_mixture(y[lo:hi], om[lo:hi], V, self.patterns,
                                                         self.outputs, self.noise, x, w, self.summed), len(y))
        return tuple(np.concatenate([p[k] for p in parts], axis=0) for k in range(3))


def _all_patterns(P):
    pats = np.array(np.meshgrid(*([[1.0, -1.0]] * P), indexing="ij")).reshape(P, -1).T
    return np.ascontiguousarray(pats)


# ------------------------------------------------------------------ the links
@njit(cache=True)
def g_square(Z):
    out = np.empty(1)
    out[0] = Z[0, 0] * Z[0, 0]
    return out


@register_link
class SquareChannel(MultiIndexChannel):
    """Phase retrieval y = z^2: posterior on the two atoms +-sqrt(y)."""

    link = "square"
    n_indices = 1
    formula = "y = z^2 (phase retrieval)"
    sign_symmetric = True
    vectorised_link = staticmethod(lambda z: z[:, 0] ** 2)
    numba_link = staticmethod(g_square)

    def _exact(self, y, om, V, resolution):
        s = np.sqrt(np.maximum(y, 0.0))
        return _two_atoms(s, om[:, 0], V[0, 0], -np.log(2.0 * np.maximum(s, 1e-300)))


@njit(cache=True)
def g_abs(Z):
    out = np.empty(1)
    out[0] = abs(Z[0, 0])
    return out


@register_link
class AbsChannel(MultiIndexChannel):
    """y = |z|: posterior on the two atoms +-|y|."""

    link = "abs"
    n_indices = 1
    formula = "y = |z|"
    sign_symmetric = True
    vectorised_link = staticmethod(lambda z: np.abs(z[:, 0]))
    numba_link = staticmethod(g_abs)

    def _exact(self, y, om, V, resolution):
        return _two_atoms(np.abs(y), om[:, 0], V[0, 0], 0.0)


@njit(cache=True)
def g_sign(Z):
    out = np.empty(1)
    out[0] = 1.0 if Z[0, 0] > 0.0 else -1.0
    return out


@register_link
class SignChannel(_OrthantChannel):
    """y = sign(z): truncated Gaussian in closed form (exact also with noise)."""

    link = "sign"
    n_indices = 1
    formula = "y = sign(z)"
    vectorised_link = staticmethod(lambda z: _sgn(z[:, 0]))
    numba_link = staticmethod(g_sign)
    patterns = _all_patterns(1)
    outputs = np.ascontiguousarray(patterns[:, 0].copy())


@njit(cache=True)
def g_relu(Z):
    out = np.empty(1)
    out[0] = max(Z[0, 0], 0.0)
    return out


@register_link
class ReluChannel(MultiIndexChannel):
    """y = max(z, 0): an atom at z = y for y > 0, z ~ N(omega, V) truncated to z < 0 for y = 0."""

    link = "relu"
    n_indices = 1
    formula = "y = max(z, 0)"
    vectorised_link = staticmethod(lambda z: np.maximum(z[:, 0], 0.0))
    numba_link = staticmethod(g_relu)

    def _exact(self, y, om, V, resolution):
        v = V[0, 0]
        sd = math.sqrt(v)
        w = om[:, 0]
        pos = y > 0
        # y = 0: truncated to z < 0: standardised bound a: x = -(z - w)/sd > w/sd
        a = w / sd
        lam, tv = _trunc_std_vec(np.ascontiguousarray(a))
        mean0 = w - sd * lam
        var0 = v * tv
        logz0 = log_ndtr(-a)
        logz1 = -(y - w) ** 2 / (2 * v) - 0.5 * np.log(2 * np.pi * v)
        mean = np.where(pos, y, mean0)
        var = np.where(pos, 0.0, var0)
        logz = np.where(pos, logz1, logz0)
        return mean[:, None], var[:, None, None], logz


@njit(cache=True)
def g_product(Z):
    out = np.empty(1)
    out[0] = Z[0, 0] * Z[1, 0]
    return out


@register_link
class ProductChannel(MultiIndexChannel):
    """y = z1 z2: 1-D adaptive quadrature along the hyperbola (any positive definite V)."""

    link = "product"
    n_indices = 2
    formula = "y = z_1 z_2"
    index_permutation_symmetric = True
    keeps_overlaps_diagonal = True  # z_p -> -z_p maps y to -y
    vectorised_link = staticmethod(lambda z: z[:, 0] * z[:, 1])
    numba_link = staticmethod(g_product)

    def _exact(self, y, om, V, resolution):
        x, w = gauss_legendre(PANEL_ORDER)
        parts = _threaded(lambda lo, hi: hyperbola_batch(y[lo:hi], om[lo:hi], V, x, w,
                                                         float(resolution)), len(y))
        return tuple(np.concatenate([p[k] for p in parts], axis=0) for k in range(3))


@njit(cache=True)
def g_sign_product(Z):
    out = np.empty(1)
    out[0] = 1.0 if Z[0, 0] * Z[1, 0] > 0.0 else -1.0
    return out


@register_link
class SignProductChannel(_OrthantChannel):
    """y = sign(z1 z2): two orthants (quadrants) per output value."""

    link = "sign_product"
    n_indices = 2
    formula = "y = sign(z_1 z_2)"
    index_permutation_symmetric = True
    keeps_overlaps_diagonal = True  # z_p -> -z_p maps y to -y
    vectorised_link = staticmethod(lambda z: _sgn(z[:, 0] * z[:, 1]))
    numba_link = staticmethod(g_sign_product)
    patterns = _all_patterns(2)
    outputs = np.ascontiguousarray(patterns[:, 0] * patterns[:, 1])


@njit(cache=True)
def g_committee_sign(Z):
    s = 0.0
    for k in range(Z.shape[0]):
        s += 1.0 if Z[k, 0] > 0.0 else -1.0
    out = np.empty(1)
    out[0] = 1.0 if s > 0.0 else -1.0
    return out


@register_link
class CommitteeSignChannel(_OrthantChannel):
    """y = sign(sum_k sign z_k), K = 3: the four orthants with the majority sign."""

    link = "committee_sign"
    n_indices = 3
    formula = "y = sign(sum_k sign(z_k)), K = 3"
    # no row flip maps y to +-y: at Q = 0 already E[z | y] lies along (1, 1, 1), so H and Q
    # leave the diagonal (keeps_overlaps_diagonal is False)
    index_permutation_symmetric = True
    vectorised_link = staticmethod(lambda z: _sgn(_sgn(z).sum(axis=1)))
    numba_link = staticmethod(g_committee_sign)
    patterns = _all_patterns(3)
    outputs = np.ascontiguousarray(np.sign(patterns.sum(axis=1)))


# ------------------------------------------------------------------ formula links
REGION_BANK_SIZE = 4096  # inner points (times resolution) for a noiseless finite-valued formula
REGION_TOLERANCE = 1e-9  # g(z) = y up to this relative tolerance
REGION_MIN_HITS = 64  # fewer prior bank points in the region: add the wider proposal
FEW_DISTINCT, FEW_DISTINCT_BANK_FACTOR = 256, 16  # at most this many distinct inputs: a larger bank


def check_formula_link(formula, noise: float):
    """The checked :class:`~.formula.Formula` of a formula link, refused (SpecError on
    ``link.formula``) when it is noiseless with a continuous output that cannot be inverted
    (:func:`.formula.inversion_problem`): without noise, a formula is solved when it takes
    finitely many values (the Gaussian restricted to a region) or is in z1 alone, continuous and
    nowhere flat (the posterior on the finitely many roots of g(z1) = y)."""
    parsed = parse_formula(formula)
    facts = formula_facts(parsed.text)
    if noise == 0.0 and facts.values is None:
        reason = inversion_problem(parsed.text)
        if reason is not None:
            raise SpecError(FORMULA_FIELD, parsed.text,
                            f"a noise level > 0 (model.noise): noiseless, this formula cannot be inverted: "
                            f"{reason} (noiseless formulas are solved when they take finitely many values, "
                            "built from numbers, sign and comparisons, or are in z1 alone, continuous and "
                            "nowhere flat)")
    return parsed


class FormulaChannel(MultiIndexChannel):
    """A multi-index link given by a checked formula (:mod:`.formula`), y = g(z) (+ noise).

    * noise > 0: the generic importance sampler (:class:`.noisy.NoisyChannel`) on the
      formula's numba link;
    * noiseless, finitely many values: the Gaussian N(omega, V) restricted to the region
      {z : g(z) = y}, by importance sampling over a fixed scrambled-Sobol bank of about
      K = 4096 x resolution points, closed under the formula's symmetries and moment-matched;
      the prior is the proposal, and where fewer than 64 bank points land in the region the
      wider N(omega, V + I) is added (balance heuristic), so small regions are still reached
      (16x more points when a batch holds at most 256 distinct (y, omega), as at Q = 0):
          log Z_out = log P(g(z) = y | omega, V),  mean, cov = moments on the region.
      Every engine draws a new bank per outer scramble (``Channel.scramble_channels``; its
      half-width covers the bank's error), the bank's size decided on all the scrambles'
      samples together (:meth:`posterior_moments_by_scramble`).  Samples that share (y, omega)
      (all of them at Q = 0) are computed once.
    * noiseless, continuous and invertible (in z1 alone, continuous, nowhere flat:
      :func:`.formula.inversion_problem`): the posterior of z1 is discrete on the roots z_k of
      g(z1) = y (the module's ``preimage_moments``: a grid of 64 x resolution cells over
      omega_1 +- 10 V_11^1/2, extrema inserted, Illinois steps to each sign change),
          P(z_k | y) = N(z_k; omega_1, V_11) / |g'(z_k)| / Z_out,
          Z_out = sum_k N(z_k; omega_1, V_11) / |g'(z_k)|  (the density of y, as the named
          square link's, whose log Jacobian is -log 2 sqrt(y) = -log |g'(+-sqrt y)|);
      g' by centred differences with step 6e-6 (1 + |z_k|) (about eps^1/3: truncation and
      rounding errors both near 1e-11 relative for a smooth g).  Further indices (``indices``
      > 1, not in g) are Gaussian given z1: E[z | y] = omega + V e_1 (E[z1 | y] - omega_1) / V_11,
      Cov = V - V e_1 e_1^T V / V_11 + (V e_1)(V e_1)^T Var[z1 | y] / V_11^2.

    ``sign_symmetric`` holds when every row z_p -> -z_p leaves g unchanged
    (``row_flip_symmetric`` per row, found on a probe sample); ``keeps_overlaps_diagonal`` when
    each leaves it unchanged or changes its sign; ``index_permutation_symmetric`` when every
    permutation of the rows, with some sign pattern, leaves it unchanged (an index not in g
    breaks it)."""

    link = "formula"

    def __init__(self, formula: str, noise: float = 0.0, indices: int | None = None,
                 bank_size: int = DEFAULT_BANK_SIZE, seed: int = 0,
                 region_bank_size: int = REGION_BANK_SIZE):
        parsed = check_formula_link(formula, float(noise))
        self.formula = parsed.text
        self.n_indices = int(indices) if indices is not None else parsed.n_indices
        facts = formula_facts(parsed.text)
        self.facts = facts
        self.values = facts.values
        self.row_flip_symmetric = facts.row_flip_symmetric + (True,) * (self.n_indices - parsed.n_indices)
        self.sign_symmetric = all(self.row_flip_symmetric)
        self.row_flip_odd = facts.row_flip_odd + (False,) * (self.n_indices - parsed.n_indices)
        self.index_permutation_symmetric = facts.permutation_symmetric and self.n_indices == parsed.n_indices
        module = compile_formula(parsed.text)
        self._module = module
        self.numba_link = module.link
        self.vectorised_link = lambda z: module.batch(np.ascontiguousarray(z, dtype=float))
        super().__init__(noise=noise, bank_size=bank_size, seed=seed)
        # noiseless and continuous: check_formula_link admitted it only if it can be inverted
        self.inverted = self.noiseless and self.values is None
        self.closed_form_posterior = self.inverted  # roots, no inner sampler
        self.region_bank_size = int(region_bank_size)
        self._region_banks: dict[int, np.ndarray] = {}
        self._region_ess = None

    def __repr__(self):
        return f"FormulaChannel({self.formula!r}, noise={self.noise})"

    def with_seed(self, seed: int) -> "FormulaChannel":
        return FormulaChannel(self.formula, self.noise, self.n_indices, self.bank_size, int(seed),
                              self.region_bank_size)

    @property
    def finite_outputs(self):
        return np.asarray(self.values) if self.noiseless and self.values is not None else None

    @property
    def keeps_overlaps_diagonal(self) -> bool:
        return all(even or odd for even, odd in zip(self.row_flip_symmetric, self.row_flip_odd))

    @property
    def reseeded_per_scramble(self) -> bool:
        return not self.inverted  # the roots are exact: no bank to draw again

    @property
    def last_effective_sample_size(self):
        if self.inverted:
            return None
        return self._region_ess if self.noiseless else super().last_effective_sample_size

    def region_bank(self, resolution: int = 1) -> np.ndarray:
        """(K, P) scrambled-Sobol normals closed under the formula's symmetries and z -> -z
        (:meth:`.formula.FormulaFacts.symmetric_bank`), about region_bank_size x resolution."""
        K = self.region_bank_size * int(resolution)
        if K not in self._region_banks:
            self._region_banks[K] = _symmetric_normals(self.formula, K, self.n_indices, self.seed)
        return self._region_banks[K]

    def noisy_channel(self) -> NoisyChannel:
        if self._noisy is None:
            self._noisy = _SymmetricBankNoisyChannel(
                self.formula, self.numba_link, self.n_indices, 1, 1, self.noise,
                bank_size=self.bank_size, seed=self.seed, index_names=self.index_names,
                sign_symmetric=self.sign_symmetric, output_shape=(1,))
        return self._noisy

    def _exact(self, y, om, V, resolution):
        if self.inverted:
            return self._on_preimage(y, om, V, resolution)
        return self._region_moments(y, om, V, resolution, _region_bank_factor(y, om))

    def posterior_moments_by_scramble(self, obs, omega, V, resolution, seed, scrambles):
        """As the channel's, with the region bank's size decided once for all the scrambles'
        samples together (:func:`_region_bank_factor`), as it was for one shared bank: 16
        blocks of 64 points (SE at fast, Q > 0) each hold few distinct (y, omega), and a 16x
        bank for each would cost 16x."""
        if seed is None or not (self.noiseless and self.reseeded_per_scramble):
            return super().posterior_moments_by_scramble(obs, omega, V, resolution, seed, scrambles)
        y, om, V = self._prepare(obs, omega, V)
        factor = _region_bank_factor(y, om)
        Vr = _regularise(V, self.n_indices)
        blocks = list(zip(self.scramble_channels(seed, scrambles), np.split(y, scrambles), np.split(om, scrambles)))
        parts = in_threads(lambda b: b[0]._region_moments(b[1], b[2], Vr, int(resolution), factor), blocks)
        return self._pack(*(np.concatenate([p[k] for p in parts]) for k in range(3)))

    def _region_moments(self, y, om, V, resolution, bank_factor):
        """Moments on the region {g(z) = y} (class docstring) on the region bank of
        ``bank_factor`` x resolution x region_bank_size points."""
        P = self.n_indices
        S = np.ascontiguousarray(psd_sqrt(V))
        W = V + np.eye(P)
        T = np.ascontiguousarray(psd_sqrt(W))
        logdet_ratio = float(np.linalg.slogdet(V)[1] - np.linalg.slogdet(W)[1])
        Vinv, Winv = np.ascontiguousarray(np.linalg.inv(V)), np.ascontiguousarray(np.linalg.inv(W))
        keys, inverse = np.unique(np.column_stack([y, om]), axis=0, return_inverse=True)
        inverse = inverse.reshape(-1)
        U = self.region_bank(resolution * bank_factor)
        yu, omu = np.ascontiguousarray(keys[:, 0]), np.ascontiguousarray(keys[:, 1:])
        kernel = self._module.region_moments
        parts = _threaded(lambda lo, hi: kernel(yu[lo:hi], omu[lo:hi], S, T, Vinv, Winv, logdet_ratio, U,
                                                REGION_TOLERANCE, REGION_MIN_HITS), len(yu))
        mean, cov, logz, ess = (np.concatenate([p[k] for p in parts], axis=0)[inverse] for k in range(4))
        self._region_ess = ess
        return mean, cov, logz


    def _on_preimage(self, y, om, V, resolution):
        """The posterior on the roots of g(z1) = y (class docstring), z2 .. zP Gaussian given z1."""
        v = float(V[0, 0])
        om1 = np.ascontiguousarray(om[:, 0])
        kernel = self._module.preimage_moments
        cells = PREIMAGE_CELLS * int(resolution)
        parts = _threaded(lambda lo, hi: kernel(y[lo:hi], om1[lo:hi], v, cells, PREIMAGE_SPAN,
                                                DERIVATIVE_STEP), len(y))
        m1, var1, logz, _ = (np.concatenate([p[k] for p in parts]) for k in range(4))
        b = V[:, 0] / v  # regression of z on z1 under N(omega, V)
        mean = om + b[None] * (m1 - om1)[:, None]
        cov = (V - np.outer(V[:, 0], V[0, :]) / v)[None] + var1[:, None, None] * np.outer(b, b)[None]
        return mean, cov, logz


def _region_bank_factor(y: np.ndarray, om: np.ndarray) -> int:
    """How many times the region bank a batch gets: FEW_DISTINCT_BANK_FACTOR when it holds at
    most FEW_DISTINCT distinct (y, omega) (Q = 0: one per output value), where a larger bank
    costs little, else 1."""
    few = len(np.unique(np.column_stack([y, om]), axis=0)) <= FEW_DISTINCT
    return FEW_DISTINCT_BANK_FACTOR if few else 1


PREIMAGE_CELLS = 64  # grid cells (times resolution) of the root search over omega +- PREIMAGE_SPAN sd
PREIMAGE_SPAN = 10.0  # standard deviations: N(omega, V) puts 2e-23 of its mass beyond
DERIVATIVE_STEP = 6e-6  # centred differences of g: about eps^1/3 (truncation ~ rounding error)
MIN_BASE_POINTS = 64  # Sobol points per symmetry image in a symmetrised bank


@lru_cache(maxsize=128)
def _symmetric_normals(formula: str, K: int, P: int, seed: int) -> np.ndarray:
    """About K normal vectors in R^P (at least MIN_BASE_POINTS per group element), closed under
    the formula's symmetries; extra indices beyond the formula's are plain Sobol coordinates.
    Memoised (a deterministic function of its arguments; read-only)."""
    facts = formula_facts(formula)
    Pf = len(facts.row_flip_symmetric)
    images = 2 * (1 + len(facts.symmetries))
    base_n = 1 << max(int(math.ceil(math.log2(max(K / images, MIN_BASE_POINTS)))), 0)
    u = sobol_normals(base_n, P, seed)
    bank = facts.symmetric_bank(u[:, :Pf])
    if P > Pf:  # the extra coordinates do not enter g: antithetic copies keep them centred
        rest = np.tile(u[:, Pf:], (bank.shape[0] // base_n, 1))
        sign = np.repeat(np.where(np.arange(bank.shape[0] // base_n) % 2 == 0, 1.0, -1.0), base_n)
        bank = np.concatenate([bank, rest * sign[:, None]], axis=1)
    # moment matching: the bank's second moment made exactly I (its mean is exactly 0).  The
    # second moment commutes with the symmetries, so the whitened bank keeps them; with it,
    # posterior covariances that the symmetries fix exactly (the committee's: I on the
    # complement of (1, 1, 1) at Q = 0) come out exact, and a squared bank error cannot fake a
    # linear instability there.
    C = bank.T @ bank / bank.shape[0]
    w, Q = np.linalg.eigh(C)
    out = np.ascontiguousarray(bank @ ((Q / np.sqrt(w)) @ Q.T))
    out.flags.writeable = False
    return out


class _SymmetricBankNoisyChannel(NoisyChannel):
    """The generic noisy channel on a bank closed under the formula's symmetries."""

    def __init__(self, formula: str, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.formula = formula

    def bank(self, resolution: int = 1) -> np.ndarray:
        """The symmetric bank of resolution x max(bank_size, MIN_BASE_POINTS per symmetry image)
        vectors.  Before solver 0.5.6 it was sized bank_size x resolution and then raised to the
        floor, so for z1 z2 z3 (48 images, 3,072 vectors) resolutions 1 and 2 drew the same bank
        and a check at double resolution saw no change."""
        images = 2 * (1 + len(formula_facts(self.formula).symmetries))
        K = max(self.bank_size, images * MIN_BASE_POINTS) * int(resolution)
        if K not in self._banks:
            self._banks[K] = self._draw_bank(K)
        return self._banks[K]

    def _draw_bank(self, K: int, memoised: bool = True) -> np.ndarray:
        draw = _symmetric_normals if memoised else _symmetric_normals.__wrapped__
        return draw(self.formula, K, self.n_indices, self.seed).reshape(-1, self.n_indices, 1)
