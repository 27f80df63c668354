"""Expectations over a scalar noisy observation at Q = 0 by quadrature in y.

For y = g(Z) + sqrt(Delta) xi with Z ~ N(0, I) (Q = 0, omega = 0, V = I) the posterior of Z
depends on y alone.  With a weighted bank (Z_k, w_k), sum_k w_k = 1, standing for the prior,
every posterior moment is a ratio of Gaussian-smoothed bank sums,

    s0(y) = sum_k w_k N(y; g_k, Delta),  E[Z | y] = sum_k w_k N(y; g_k, Delta) Z_k / s0(y), ...

and s0 is the density of y under the bank's prior, so

    T = int s0(y) E[Z|y] E[Z|y]^T dy,  E4 = int s0(y) G(y) (x) G(y) dy,  G = Cov[Z | y] - I,

are the exact values of these expectations for the discrete prior sum_k w_k delta_{Z_k}: no
sampling of y or of the noise, and no per-observation importance sampler.  Their error is
the bank's (a smooth functional of the empirical measure: an O(1/K) bias besides its
scatter, measured by doubling K) and the y rule's.  The integrand is smooth on the scale
sqrt(Delta) wherever bank points are dense; the rule is the trapezoid on a lattice of
spacing h = sqrt(Delta) / NODES_PER_SD over [min g - c, max g + c], c = CUTOFF sqrt(Delta)
(beyond, the density is below exp(-CUTOFF^2 / 2) of its nearest bank point's), and each node
sums only the bank points within c of it (the outputs sorted, two moving pointers; nodes
with no such point contribute nothing and are skipped).  The same sums on every other node
(spacing 2h) give the rule's error term.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

# lattice nodes per sqrt(Delta): the trapezoid's error on a Gaussian of width sd is about
# exp(-2 pi^2 NODES_PER_SD^2); z1 z2 z3 with noise 0.1: rho moves 3e-11 between 4 and 2 nodes
NODES_PER_SD = 2
CUTOFF = 8.0  # bank points farther than CUTOFF sqrt(Delta) from a node weigh < exp(-32) there


@njit(nogil=True, cache=True)
def _lattice_integrals(g, X, w, noise, origin, h, n_nodes, half_width):
    """Trapezoid sums over the lattice origin + h j (j < n_nodes) of s0 m m^T and s0 G (x) G,
    on every node (fine) and on the even nodes with weight 2h (coarse).  g (K,) ascending,
    X (K, d) the bank in the same order, w (K,) its weights."""
    K, d = X.shape
    T = np.zeros((2, d, d))
    E4 = np.zeros((2, d, d, d, d))
    norm = 1.0 / math.sqrt(2.0 * math.pi * noise)
    inv = 0.5 / noise
    s1 = np.empty(d)
    s2 = np.empty((d, d))
    G = np.empty((d, d))
    lo = 0
    hi = 0
    j = 0
    while j < n_nodes:
        y = origin + h * j
        while lo < K and g[lo] < y - half_width:
            lo += 1
        if lo == K:
            break
        if g[lo] > y + half_width:  # no bank point near: jump to the first node that has one
            j = max(j + 1, int(math.ceil((g[lo] - half_width - origin) / h)))
            continue
        if hi < lo:
            hi = lo
        while hi < K and g[hi] <= y + half_width:
            hi += 1
        s0 = 0.0
        s1[:] = 0.0
        s2[:, :] = 0.0
        for k in range(lo, hi):
            r = y - g[k]
            e = w[k] * math.exp(-inv * r * r)
            s0 += e
            for a in range(d):
                ea = e * X[k, a]
                s1[a] += ea
                for b in range(a + 1):
                    s2[a, b] += ea * X[k, b]
        if s0 > 0.0:
            for a in range(d):
                s1[a] /= s0
            for a in range(d):
                for b in range(a + 1):
                    G[a, b] = s2[a, b] / s0 - s1[a] * s1[b] - (1.0 if a == b else 0.0)
                    G[b, a] = G[a, b]
            for level in range(2):
                if level == 1 and j % 2 == 1:
                    continue
                c = (h if level == 0 else 2.0 * h) * s0 * norm
                for a in range(d):
                    for b in range(d):
                        T[level, a, b] += c * s1[a] * s1[b]
                        cg = c * G[a, b]
                        for a2 in range(d):
                            for b2 in range(d):
                                E4[level, a, b, a2, b2] += cg * G[a2, b2]
        j += 1
    return T, E4


def scalar_output_moments(Z: np.ndarray, g: np.ndarray, weights: np.ndarray, noise: float):
    """T = int s0 E[Z|y] E[Z|y]^T dy (d, d) and E4 = int s0 G (x) G dy (d, d, d, d), d = Z's
    size, for the prior sum_k w_k delta_{Z_k} (module docstring): each as (fine, coarse) on
    lattices of spacing sqrt(Delta) / NODES_PER_SD and twice that.

    Z (K, ...) the bank (flattened per point), g (K,) its outputs, weights (K,) summing to 1."""
    X = np.asarray(Z, dtype=float).reshape(len(g), -1)
    order = np.argsort(g, kind="stable")
    gs = np.ascontiguousarray(np.asarray(g, dtype=float)[order])
    sd = math.sqrt(noise)
    h, half_width = sd / NODES_PER_SD, CUTOFF * sd
    origin = gs[0] - half_width
    n_nodes = int(math.ceil((gs[-1] + half_width - origin) / h)) + 1
    return _lattice_integrals(gs, np.ascontiguousarray(X[order]), np.ascontiguousarray(weights[order]),
                              float(noise), origin, h, n_nodes, half_width)
