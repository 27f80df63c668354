"""The output-channel interface shared by state evolution and GAMP.

A sequence multi-index model observes y ~ P_out(y | Z), Z in R^{P x M} (P index rows,
M tokens).  Everything the theory needs from a model is the posterior of Z under a
Gaussian "side information" prior, column by column z_m ~ N(omega_m, V):

    Z_out(y, omega, V) = int dZ P_out(y | Z) prod_m N(z_m; omega_m, V)
    mean = E[Z | y, omega, V],  cov = Cov[Z | y, omega, V]

(THEORY.md section 3; the same functions drive GAMP, section 6, as in TRAMP).
A model is a :class:`Channel` subclass registered by name with :func:`register_channel`.
"""
from __future__ import annotations

import os
from abc import ABC, abstractmethod
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..errors import SpecError
from ..priors import GAUSSIAN, Prior


@dataclass(frozen=True)
class PosteriorMoments:
    """Posterior moments of Z given (y, omega, V) for a batch of n samples.

    mean: (n, P, M) posterior means E[Z | y, omega, V].
    cov: (n, P, M, P, M) posterior covariances Cov[z_{pm}, z_{p'm'} | y, omega, V].
    log_partition: (n,) log Z_out(y, omega, V) (a density in the channel's observation).
    """

    mean: np.ndarray
    cov: np.ndarray
    log_partition: np.ndarray


class Channel(ABC):
    """An output channel P_out(y | Z) with Z in R^{P x M}.

    Subclasses set ``n_indices`` (P), ``n_tokens`` (M), ``index_names`` and
    ``sign_symmetric`` (True when P_out is invariant under z_p -> -z_p row by row, so
    that the overlap matrix stays diagonal and the linearised operator is block diagonal).
    Special paths of a model are hooks with a generic default (:meth:`rates_at_zero`,
    ``reports_perfect_recovery``, ``indices_are_layers``), so engines never ask which
    model they solve.

    ``index_permutation_symmetric``: P_out is invariant under every permutation of the index
    rows, each with some pattern of row flips z_p -> -z_p allowed (a signed permutation: every
    weight prior is sign symmetric and the same for each index, so a signed permutation is a
    symmetry of the whole model); SE then maps Q = q I to a matrix with equal diagonal entries.
    :attr:`keeps_overlaps_diagonal`: SE maps a diagonal Q to a diagonal one.  Both together:
    the line Q = q I is invariant under SE (:mod:`solvers.transitions`).
    """

    n_indices: int
    n_tokens: int
    index_names: tuple[str, ...]
    sign_symmetric: bool = False
    index_permutation_symmetric: bool = False
    noiseless: bool = True
    indices_are_layers: bool = False  # thresholds name a layer (else a direction in R^P)
    reports_perfect_recovery: bool = False  # thresholds include alpha_PR (Q = Q_0 stable)
    closed_form_posterior: bool = False  # posterior moments without an inner sampler: cheap per sample
    # the weights' prior (the input side of SE and GAMP); the spec sets it on its channel
    prior: Prior = GAUSSIAN
    known: tuple[int, ...] = ()  # indices given exactly (0-based): see :meth:`with_known`

    def with_known(self, known) -> "Channel":
        """This channel with the index rows ``known`` (0-based) given exactly (THEORY.md section 7).

        A known row sits at overlap Q_ll = 1 (V_ll = 0) from the start and is never learned:
        every engine's outer draws pass through :meth:`known_overlaps`, so omega_l = z_l, and the
        posterior conditions on z_l = omega_l (a channel whose posterior needs a special path for
        V_ll = 0 overrides :meth:`posterior_moments` for it).  Engines skip the known rows."""
        self.known = tuple(sorted(int(k) for k in known))
        self.__dict__.pop("_scramble_copies", None)  # they carry the known rows
        return self

    @property
    def unknown(self) -> tuple[int, ...]:
        """The index rows still to be learned (0-based)."""
        return tuple(p for p in range(self.n_indices) if p not in self.known)

    def known_overlaps(self, Q: np.ndarray) -> np.ndarray:
        """Q with the known rows and columns set to those of Q_0 = I (exactly Q_ll = 1)."""
        if not self.known:
            return Q
        Q = np.array(Q, dtype=float)
        k = list(self.known)
        Q[k, :] = 0.0
        Q[:, k] = 0.0
        Q[k, k] = 1.0
        return Q

    @property
    def keeps_overlaps_diagonal(self) -> bool:
        """True when every row flip z_p -> -z_p alone maps P_out to itself, with y unchanged
        (``sign_symmetric``) or y -> -y (an odd row): at a diagonal Q the flip of row p then
        changes the sign of g_p alone, so H_pq = E g_p g_q = 0 for q != p and SE keeps Q diagonal
        (the prior's input update of a diagonal Qhat is diagonal).  A link with such odd rows
        overrides this."""
        return self.sign_symmetric

    @property
    def finite_outputs(self) -> np.ndarray | None:
        """The sorted distinct values of y when the channel is noiseless with finitely many
        outputs (sign-type links), else None: the sum over y can then be done exactly."""
        return None

    def summed_over_outputs(self) -> "Channel":
        """The channel as an exact sum over y (``finite_outputs``) uses it: each y is weighted
        by its probability there, so a channel may answer a y of negligible probability
        cheaply and roughly (the orthant links do).  The channel itself by default."""
        return self

    @property
    def reseeded_per_scramble(self) -> bool:
        """True when the posterior moments come from a seeded inner sampler (``with_seed``):
        linear stability then draws an independent inner bank per scramble, so that its
        half-width covers the inner Monte-Carlo error."""
        return hasattr(self, "with_seed") and not self.noiseless

    def inner_prior_bank(self, points: int) -> np.ndarray | None:
        """A standard-normal bank (K, P, M) of about ``points`` vectors, drawn as the
        channel's prior-proposal importance sampler draws its own (same seed, symmetries and
        antithetic pairs), when its observation is a scalar y = g(Z) + sqrt(noise) xi; else
        None (the default).  At Q = 0 the posterior then depends on y alone, and linear
        stability integrates over y on a grid with this bank
        (:mod:`solvers.output_quadrature`) instead of sampling y."""
        return None

    def scramble_channels(self, seed: int, scrambles: int) -> list["Channel"]:
        """The channel of each outer scramble r < ``scrambles`` of the outer seed ``seed``: for a
        channel with an inner Monte-Carlo bank (``reseeded_per_scramble``) a copy with its own
        bank, drawn from (seed, r) alone (the same bank r on any subset of the points, at any
        number of scrambles, in every engine), the known rows and the prior kept; otherwise the
        channel itself.  One bank shared by all scrambles makes its error the same in each: an
        offset that their spread (the 95% half-width) cannot see.  Memoised per channel."""
        if not self.reseeded_per_scramble:
            return [self] * scrambles
        copies = self.__dict__.setdefault("_scramble_copies", {}).setdefault(int(seed), [])
        # the words of a SeedSequence's state do not depend on how many are asked for
        for bank_seed in np.random.SeedSequence([int(seed), 7919]).generate_state(scrambles)[len(copies):]:
            copy = self.with_seed(int(bank_seed))
            copy.known, copy.prior = self.known, self.prior
            copy.__dict__.pop("_scramble_copies", None)  # a shallow copy would share this cache
            copies.append(copy)
        return copies[:scrambles]

    def posterior_moments_by_scramble(self, obs: np.ndarray, omega: np.ndarray, V: np.ndarray, resolution: int,
                                      seed: int | None, scrambles: int) -> PosteriorMoments:
        """:meth:`posterior_moments` of ``scrambles`` equal consecutive blocks of samples (the
        outer scrambles, scramble-major), block r with the inner bank of scramble r
        (:meth:`scramble_channels` of ``seed``); the channel itself for every block when it has
        no inner bank or ``seed`` is None."""
        if seed is None or not self.reseeded_per_scramble:
            return self.posterior_moments(obs, omega, V, resolution)
        blocks = list(zip(self.scramble_channels(seed, scrambles), np.split(np.asarray(obs), scrambles),
                          np.split(np.asarray(omega), scrambles)))
        parts = in_threads(lambda block: block[0].posterior_moments(block[1], block[2], V, resolution), blocks)
        return PosteriorMoments(*(np.concatenate([getattr(p, f) for p in parts])
                                  for f in ("mean", "cov", "log_partition")))

    def revealed_statistic(self, Z: np.ndarray) -> np.ndarray:
        """The smooth statistic a(Z) in R^K a noiseless observation reveals exactly (up to a
        discrete symmetry), for Z of shape (n, P, M): needed by channels that set
        ``reports_perfect_recovery`` (the contraction near Q_0 is a projection onto its
        tangent space, :func:`solvers.thresholds.perfect_recovery`)."""
        raise NotImplementedError(f"{type(self).__name__} reveals no smooth statistic")

    def rates_at_zero(self, relative_target: float) -> tuple[np.ndarray, np.ndarray, str, int] | None:
        """The channel's own path to the per-index thresholds at Q = 0, or None (the default)
        for the generic randomised-QMC estimate of :func:`solvers.thresholds.rates_at_zero`.

        Returns (alpha_c per index, their 95% half-widths, method, points) for a relative
        half-width ``relative_target``."""
        return None

    @abstractmethod
    def output(self, Z: np.ndarray) -> np.ndarray:
        """Deterministic output g(Z) for Z of shape (n, P, M), as the user sees it."""

    def sample_output(self, Z: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Draw y ~ P_out(. | Z).  Noiseless channels return g(Z)."""
        return self.output(Z)

    def observation(self, Z: np.ndarray, noise: np.ndarray | None = None) -> np.ndarray:
        """The observation as :meth:`posterior_moments` consumes it, for Z of shape (n, P, M).

        ``noise`` holds standard normal draws of shape (n, *noise_shape) for noisy
        channels (so that state evolution can feed quasi-random numbers).  The default
        observation is the output itself.
        """
        return self.output(Z)

    def observation_from_output(self, y: np.ndarray) -> np.ndarray:
        """Map user-visible outputs y to observations (identity unless overridden)."""
        return y

    @property
    def noise_shape(self) -> tuple[int, ...]:
        """Shape of the standard-normal noise one observation needs (empty if noiseless)."""
        return ()

    @abstractmethod
    def posterior_moments(self, obs: np.ndarray, omega: np.ndarray, V: np.ndarray,
                          resolution: int = 1) -> PosteriorMoments:
        """Posterior moments of Z for a batch: obs (n, ...), omega (n, P, M), V (P, P).

        ``resolution`` (1, 2, 4, ...) scales the inner quadrature; results at two
        resolutions give the quadrature error.
        """


def in_threads(fn: Callable, items: list) -> list:
    """[fn(item) for item in items], in threads (one per CPU): the posterior kernels release
    the GIL, and a scramble's block (64 samples in SE at fast) is too small for their own
    threads."""
    with ThreadPoolExecutor(min(len(items), os.cpu_count() or 1)) as pool:
        return list(pool.map(fn, items))


_REGISTRY: dict[str, Callable[..., Channel]] = {}


def register_channel(name: str):
    """Class decorator registering a channel factory under ``name``."""

    def decorator(factory):
        if name in _REGISTRY:
            raise ValueError(f"channel {name!r} registered twice")
        _REGISTRY[name] = factory
        return factory

    return decorator


def make_channel(name: str, **params) -> Channel:
    if name not in _REGISTRY:
        raise SpecError("link", name, "one of " + ", ".join(sorted(_REGISTRY)))
    return _REGISTRY[name](**params)
