"""Quasi-Monte-Carlo points and confidence intervals.

Outer expectations over Gaussian variables use randomised QMC: scrambled Sobol points
mapped through the inverse normal CDF (Owen scrambling, scipy.stats.qmc.Sobol).  Each
independent scramble gives an unbiased estimate; the spread over R >= 16 scrambles gives
an honest confidence interval (Student t).  The same seed gives the same points, bit for bit.
"""
from __future__ import annotations

import numpy as np
from scipy import stats
from scipy.special import ndtri

MIN_SCRAMBLES = 16


def sobol_normals(n_points: int, dim: int, seed: int) -> np.ndarray:
    """n_points standard normal vectors in R^dim from one scrambled Sobol sequence.

    n_points should be a power of two (the balance property of Sobol nets).
    """
    sampler = stats.qmc.Sobol(d=dim, scramble=True, seed=np.random.default_rng(seed))
    u = sampler.random(n_points)
    # Scrambled points lie strictly inside (0, 1); the clip only guards ndtri against 0 and 1.
    return ndtri(np.clip(u, 1e-16, 1 - 1e-16))


def scrambled_normals(n_points: int, dim: int, scrambles: int, seed: int) -> np.ndarray:
    """(scrambles, n_points, dim) normals: independent scrambles of one Sobol sequence."""
    seeds = np.random.SeedSequence(seed).spawn(scrambles)
    return np.stack([sobol_normals(n_points, dim, int(s.generate_state(1)[0])) for s in seeds])


def t_halfwidth(estimates: np.ndarray, axis: int = 0) -> np.ndarray:
    """95% half-width of the mean of independent estimates (Student t)."""
    estimates = np.asarray(estimates, dtype=float)
    r = estimates.shape[axis]
    if r < 2:
        return np.full(np.delete(estimates.shape, axis), np.inf)
    sd = estimates.std(axis=axis, ddof=1)
    return stats.t.ppf(0.975, r - 1) * sd / np.sqrt(r)
