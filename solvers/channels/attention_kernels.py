"""numba kernels of the deep tied attention channel (THEORY.md section 2).

Forward map, for z in R^{L x M} (row l = layer l's pre-activation over the M tokens):
    B_0 = I;  a_l = B_{l-1} z_l;  A_l = c_l I + softmax_rows(beta_l a_l a_l^T);  B_l = A_l B_{l-1}
    y = softmax_rows(beta_L a_L a_L^T).
A_l has eigenvalues >= c_l (softmax of a PSD Gram kernel), so det B > 0 for c > 0.

Noiseless posterior: y reveals {a_L, -a_L}; z_L = s B_{L-1}^{-1} a_L, s = +-1, and the
posterior over the inner variables u = z_{<L} has weight
    w(u, s) = prod_{l<L} N(z_l; omega_l, v_l I) N(s B^{-1} a; omega_L, v_L I) / det B.
Two inner integrators: a tensor trapezoid grid that zooms onto the posterior (inner
dimension 2: L = 2, M = 2) and self-normalised importance sampling over a shared bank
of quasi-random prior points with one adaptive step (any L, M).
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

LOG_2PI = math.log(2.0 * math.pi)


@njit(cache=True, inline="always")
def softmax_rows(a, beta, out):
    m = a.shape[0]
    for i in range(m):
        mx = -1e300
        for j in range(m):
            t = beta * a[i] * a[j]
            if t > mx:
                mx = t
        s = 0.0
        for j in range(m):
            e = math.exp(beta * a[i] * a[j] - mx)
            out[i, j] = e
            s += e
        for j in range(m):
            out[i, j] /= s


@njit(cache=True)
def inner_product_matrix(z, skips, betas, n_inner, B, A, work, avec):
    """B = A_{n_inner} ... A_1 for the first n_inner rows of z (B = I when n_inner = 0)."""
    m = z.shape[1]
    for i in range(m):
        for j in range(m):
            B[i, j] = 1.0 if i == j else 0.0
    for l in range(n_inner):
        for i in range(m):
            s = 0.0
            for j in range(m):
                s += B[i, j] * z[l, j]
            avec[i] = s
        softmax_rows(avec, betas[l], A)
        for i in range(m):
            A[i, i] += skips[l]
        for i in range(m):
            for j in range(m):
                s = 0.0
                for k in range(m):
                    s += A[i, k] * B[k, j]
                work[i, j] = s
        for i in range(m):
            for j in range(m):
                B[i, j] = work[i, j]


@njit(cache=True)
def solve_small(B, a, x, work):
    """x = B^{-1} a by Gaussian elimination with partial pivoting; returns det B."""
    m = a.shape[0]
    for i in range(m):
        for j in range(m):
            work[i, j] = B[i, j]
        x[i] = a[i]
    det = 1.0
    for k in range(m):
        p = k
        best = abs(work[k, k])
        for i in range(k + 1, m):
            if abs(work[i, k]) > best:
                best = abs(work[i, k])
                p = i
        if best == 0.0:
            return 0.0
        if p != k:
            det = -det
            for j in range(m):
                t = work[k, j]
                work[k, j] = work[p, j]
                work[p, j] = t
            t = x[k]
            x[k] = x[p]
            x[p] = t
        piv = work[k, k]
        det *= piv
        for i in range(k + 1, m):
            f = work[i, k] / piv
            if f != 0.0:
                for j in range(k, m):
                    work[i, j] -= f * work[k, j]
                x[i] -= f * x[k]
    for i in range(m - 1, -1, -1):
        s = x[i]
        for j in range(i + 1, m):
            s -= work[i, j] * x[j]
        x[i] = s / work[i, i]
    return det


@njit(cache=True, parallel=True)
def forward_outputs(Z, skips, betas, canonical_sign):
    """Last pre-attention a_L (n, M) and output y (n, M, M) for Z (n, L, M).

    With canonical_sign, a_L is returned with its largest-|.| entry positive (the
    observation {a_L, -a_L} in a canonical form)."""
    n, L, m = Z.shape
    a_out = np.empty((n, m))
    y = np.empty((n, m, m))
    for t in prange(n):
        B = np.empty((m, m))
        A = np.empty((m, m))
        work = np.empty((m, m))
        avec = np.empty(m)
        S = np.empty((m, m))
        inner_product_matrix(Z[t], skips, betas, L - 1, B, A, work, avec)
        for i in range(m):
            s = 0.0
            for j in range(m):
                s += B[i, j] * Z[t, L - 1, j]
            a_out[t, i] = s
        if canonical_sign:
            k = 0
            for i in range(m):
                if abs(a_out[t, i]) > abs(a_out[t, k]):
                    k = i
            if a_out[t, k] < 0:
                for i in range(m):
                    a_out[t, i] = -a_out[t, i]
        softmax_rows(a_out[t], betas[L - 1], S)
        for i in range(m):
            for j in range(m):
                y[t, i, j] = S[i, j]
    return a_out, y


@njit(cache=True, inline="always")
def _accumulate(w, zflat, ref, S1, S2, d):
    for i in range(d):
        di = zflat[i] - ref[i]
        S1[i] += w * di
        for j in range(i, d):
            S2[i, j] += w * di * (zflat[j] - ref[j])


@njit(cache=True)
def _finish(S0, S1, S2, ref, d, mean_out, cov_out):
    for i in range(d):
        mean_out[i] = ref[i] + S1[i] / S0
    for i in range(d):
        for j in range(i, d):
            c = S2[i, j] / S0 - (S1[i] / S0) * (S1[j] / S0)
            cov_out[i, j] = c
            cov_out[j, i] = c


@njit(cache=True)
def _log_weights_grid_L2(a, omega, v, skip1, beta1, c0, c1, h0, h1, n, logw, zl):
    """Log posterior weights of the L = 2, M = 2 channel on an n x n grid of z_1 for both signs.

    logw: (n, n, 2); zl: (n, n, 2, 2) holds z_2 = s B^{-1} a.  Returns the max log weight."""
    S = np.empty((2, 2))
    z1 = np.empty(2)
    mx = -1e300
    inv_v0 = 1.0 / v[0]
    inv_v1 = 1.0 / v[1]
    for i in range(n):
        z1[0] = c0 - h0 + 2.0 * h0 * i / (n - 1)
        for j in range(n):
            z1[1] = c1 - h1 + 2.0 * h1 * j / (n - 1)
            softmax_rows(z1, beta1, S)
            b00 = S[0, 0] + skip1
            b01 = S[0, 1]
            b10 = S[1, 0]
            b11 = S[1, 1] + skip1
            det = b00 * b11 - b01 * b10
            lp1 = -0.5 * ((z1[0] - omega[0, 0]) ** 2 + (z1[1] - omega[0, 1]) ** 2) * inv_v0
            if det <= 0.0:
                logw[i, j, 0] = -1e300
                logw[i, j, 1] = -1e300
                zl[i, j, 0, 0] = 0.0
                zl[i, j, 0, 1] = 0.0
                zl[i, j, 1, 0] = 0.0
                zl[i, j, 1, 1] = 0.0
                continue
            x0 = (b11 * a[0] - b01 * a[1]) / det
            x1 = (-b10 * a[0] + b00 * a[1]) / det
            ld = math.log(det)
            for s in range(2):
                sg = 1.0 if s == 0 else -1.0
                u0 = sg * x0
                u1 = sg * x1
                lw = lp1 - 0.5 * ((u0 - omega[1, 0]) ** 2 + (u1 - omega[1, 1]) ** 2) * inv_v1 - ld
                logw[i, j, s] = lw
                zl[i, j, s, 0] = u0
                zl[i, j, s, 1] = u1
                if lw > mx:
                    mx = lw
    return mx


@njit(cache=True)
def _posterior_grid_L2_one(a, omega, v, skip1, beta1, n, max_passes, mean_out, cov_out):
    """Posterior moments for one sample of the L = 2, M = 2 noiseless channel.

    The z_1 grid starts on the prior box omega_1 +- 8 sqrt(v_1) and zooms onto the
    posterior (mean +- 8 sd, at least 3 cells of the previous grid) while the box shrinks
    by more than 2x.  Returns log Z_out (density of the observation {a, -a})."""
    d = 4
    logw = np.empty((n, n, 2))
    zl = np.empty((n, n, 2, 2))
    S1 = np.zeros(d)
    S2 = np.zeros((d, d))
    ref = np.zeros(d)
    zflat = np.empty(d)
    c0 = omega[0, 0]
    c1 = omega[0, 1]
    sd = math.sqrt(v[0])
    h0 = 8.0 * sd
    h1 = 8.0 * sd
    logz = 0.0
    for it in range(max_passes):
        mx = _log_weights_grid_L2(a, omega, v, skip1, beta1, c0, c1, h0, h1, n, logw, zl)
        # reference point: the best grid point (shifted moments avoid cancellation)
        bi = 0
        bj = 0
        bs = 0
        for i in range(n):
            for j in range(n):
                for s in range(2):
                    if logw[i, j, s] == mx:
                        bi = i
                        bj = j
                        bs = s
        ref[0] = c0 - h0 + 2.0 * h0 * bi / (n - 1)
        ref[1] = c1 - h1 + 2.0 * h1 * bj / (n - 1)
        ref[2] = zl[bi, bj, bs, 0]
        ref[3] = zl[bi, bj, bs, 1]
        S0 = 0.0
        S1[:] = 0.0
        S2[:, :] = 0.0
        for i in range(n):
            zflat[0] = c0 - h0 + 2.0 * h0 * i / (n - 1)
            for j in range(n):
                zflat[1] = c1 - h1 + 2.0 * h1 * j / (n - 1)
                for s in range(2):
                    lw = logw[i, j, s]
                    if lw < mx - 60.0:
                        continue
                    w = math.exp(lw - mx)
                    zflat[2] = zl[i, j, s, 0]
                    zflat[3] = zl[i, j, s, 1]
                    S0 += w
                    _accumulate(w, zflat, ref, S1, S2, d)
        _finish(S0, S1, S2, ref, d, mean_out, cov_out)
        cell = (2.0 * h0 / (n - 1)) * (2.0 * h1 / (n - 1))
        # log of int dz_1 sum_s w, with the Gaussian normalisations of both layers
        logz = mx + math.log(S0 * cell) - 2.0 * LOG_2PI - math.log(v[0]) - math.log(v[1])
        if it == max_passes - 1:
            break
        g0 = 2.0 * h0 / (n - 1)
        g1 = 2.0 * h1 / (n - 1)
        nh0 = max(8.0 * math.sqrt(max(cov_out[0, 0], 0.0)), 3.0 * g0)
        nh1 = max(8.0 * math.sqrt(max(cov_out[1, 1], 0.0)), 3.0 * g1)
        if nh0 > 0.5 * h0 and nh1 > 0.5 * h1:
            break
        c0 = mean_out[0]
        c1 = mean_out[1]
        h0 = min(nh0, h0)
        h1 = min(nh1, h1)
    return logz


@njit(cache=True, parallel=True)
def posterior_grid_L2(a, omega, v, skip1, beta1, n, max_passes):
    """Batch version: a (N, 2), omega (N, 2, 2), v (2,).  Returns mean (N, 4), cov (N, 4, 4), logz (N,)."""
    N = a.shape[0]
    mean = np.empty((N, 4))
    cov = np.empty((N, 4, 4))
    logz = np.empty(N)
    for t in prange(N):
        logz[t] = _posterior_grid_L2_one(a[t], omega[t], v, skip1, beta1, n, max_passes,
                                         mean[t], cov[t])
    return mean, cov, logz


@njit(cache=True)
def _posterior_is_one(a, omega, v, skips, betas, bank, adapt, mean_out, cov_out):
    """Importance-sampling posterior for one sample, any L >= 2, M.

    Stage 1 draws the inner variables from their prior N(omega_l, v_l) with the shared
    bank; if the effective sample size is below a quarter of the bank, stage 2 redraws
    from a diagonal Gaussian fitted to stage 1 (widened 1.5x) and reweights by
    prior / proposal.  Returns log Z_out."""
    K = bank.shape[0]
    L = omega.shape[0]
    m = omega.shape[1]
    d = L * m
    n_in = (L - 1) * m
    z = np.empty((L, m))
    B = np.empty((m, m))
    A = np.empty((m, m))
    work = np.empty((m, m))
    avec = np.empty(m)
    x = np.empty(m)
    logw = np.empty((K, 2))
    zs = np.empty((K, 2, d))
    S1 = np.zeros(d)
    S2 = np.zeros((d, d))
    ref = np.zeros(d)
    mu = np.empty(n_in)
    sdv = np.empty(n_in)
    for i in range(n_in):
        mu[i] = omega[i // m, i % m]
        sdv[i] = math.sqrt(v[i // m])
    logz = 0.0
    for stage in range(2):
        mx = -1e300
        for k in range(K):
            lq = 0.0  # log prior - log proposal of the inner variables
            for i in range(n_in):
                l = i // m
                zi = mu[i] + sdv[i] * bank[k, i]
                z[l, i % m] = zi
                if stage == 1:
                    r = (zi - omega[l, i % m]) ** 2 / v[l]
                    lq += -0.5 * r + 0.5 * bank[k, i] ** 2 + math.log(sdv[i]) - 0.5 * math.log(v[l])
            inner_product_matrix(z, skips, betas, L - 1, B, A, work, avec)
            det = solve_small(B, a, x, work)
            for s in range(2):
                sg = 1.0 if s == 0 else -1.0
                if det <= 0.0:
                    logw[k, s] = -1e300
                    continue
                r = 0.0
                for j in range(m):
                    r += (sg * x[j] - omega[L - 1, j]) ** 2
                lw = lq - 0.5 * r / v[L - 1] - math.log(det)
                logw[k, s] = lw
                for i in range(n_in):
                    zs[k, s, i] = z[i // m, i % m]
                for j in range(m):
                    zs[k, s, n_in + j] = sg * x[j]
                if lw > mx:
                    mx = lw
        S0 = 0.0
        S0sq = 0.0
        for i in range(d):
            S1[i] = 0.0
            for j in range(d):
                S2[i, j] = 0.0
        found = False
        for k in range(K):
            for s in range(2):
                if logw[k, s] == mx and not found:
                    for i in range(d):
                        ref[i] = zs[k, s, i]
                    found = True
        for k in range(K):
            for s in range(2):
                lw = logw[k, s]
                if lw < mx - 60.0:
                    continue
                w = math.exp(lw - mx)
                S0 += w
                S0sq += w * w
                _accumulate(w, zs[k, s], ref, S1, S2, d)
        _finish(S0, S1, S2, ref, d, mean_out, cov_out)
        logz = mx + math.log(S0 / K) - 0.5 * m * (LOG_2PI + math.log(v[L - 1]))
        ess = S0 * S0 / S0sq
        if not adapt or stage == 1 or ess > 0.25 * K:
            break
        for i in range(n_in):
            mu[i] = mean_out[i]
            sdv[i] = 1.5 * math.sqrt(max(cov_out[i, i], 1e-24))
    return logz


@njit(cache=True, parallel=True)
def posterior_importance(a, omega, v, skips, betas, bank, adapt):
    """Batch IS posterior: a (N, M), omega (N, L, M), v (L,), bank (K, (L-1) M)."""
    N = a.shape[0]
    L = omega.shape[1]
    m = omega.shape[2]
    d = L * m
    mean = np.empty((N, d))
    cov = np.empty((N, d, d))
    logz = np.empty(N)
    for t in prange(N):
        logz[t] = _posterior_is_one(a[t], omega[t], v, skips, betas, bank, adapt, mean[t], cov[t])
    return mean, cov, logz


@njit(cache=True, parallel=True)
def posterior_single_layer(a, omega, v):
    """L = 1: the posterior is two atoms z_1 = +-a with weights N(+-a; omega, v I)."""
    N, m = a.shape
    mean = np.empty((N, m))
    cov = np.empty((N, m, m))
    logz = np.empty(N)
    for t in prange(N):
        lp = 0.0
        lm = 0.0
        for j in range(m):
            lp += -0.5 * (a[t, j] - omega[t, 0, j]) ** 2 / v[0]
            lm += -0.5 * (-a[t, j] - omega[t, 0, j]) ** 2 / v[0]
        mx = max(lp, lm)
        wp = math.exp(lp - mx)
        wm = math.exp(lm - mx)
        pp = wp / (wp + wm)
        s = 2.0 * pp - 1.0  # E[sign]
        for i in range(m):
            mean[t, i] = s * a[t, i]
            for j in range(m):
                cov[t, i, j] = (1.0 - s * s) * a[t, i] * a[t, j]
        logz[t] = mx + math.log(wp + wm) - 0.5 * m * (LOG_2PI + math.log(v[0]))
    return mean, cov, logz


@njit(cache=True, parallel=True)
def layer_thresholds_L2_grid(skip1, beta1, beta2_unused, half_width_a, n_a, half_width_z, n_z):
    """Deterministic Q = 0 threshold integrals of the L = 2, M = 2 noiseless channel.

    Outer variable a = B z_2 (the statistic y reveals), density
        p(a) = int dz_1 phi(z_1) phi(B^{-1} a) / det B,
    inner posterior moments C_l(a) = E[z_l z_l^T | a]; returns
    (int p, int p ||C_1 - I||_F^2, int p ||C_2 - I||_F^2) by nested trapezoid rules
    (THEORY.md, "change the outer variable")."""
    ha = 2.0 * half_width_a / (n_a - 1)
    hz = 2.0 * half_width_z / (n_z - 1)
    mass = np.zeros(n_a)
    f1 = np.zeros(n_a)
    f2 = np.zeros(n_a)
    for i in prange(n_a):
        S = np.empty((2, 2))
        z1 = np.empty(2)
        a0 = -half_width_a + ha * i
        for j in range(n_a):
            a1 = -half_width_a + ha * j
            s0 = 0.0
            m11 = 0.0
            m12 = 0.0
            m22 = 0.0
            n11 = 0.0
            n12 = 0.0
            n22 = 0.0
            for k in range(n_z):
                z1[0] = -half_width_z + hz * k
                for l in range(n_z):
                    z1[1] = -half_width_z + hz * l
                    softmax_rows(z1, beta1, S)
                    b00 = S[0, 0] + skip1
                    b01 = S[0, 1]
                    b10 = S[1, 0]
                    b11 = S[1, 1] + skip1
                    det = b00 * b11 - b01 * b10
                    if det <= 0.0:
                        continue
                    x0 = (b11 * a0 - b01 * a1) / det
                    x1 = (-b10 * a0 + b00 * a1) / det
                    w = math.exp(-0.5 * (z1[0] ** 2 + z1[1] ** 2 + x0 * x0 + x1 * x1)) / det
                    s0 += w
                    m11 += w * z1[0] * z1[0]
                    m12 += w * z1[0] * z1[1]
                    m22 += w * z1[1] * z1[1]
                    n11 += w * x0 * x0
                    n12 += w * x0 * x1
                    n22 += w * x1 * x1
            if s0 <= 0.0:
                continue
            c11 = m11 / s0 - 1.0
            c12 = m12 / s0
            c22 = m22 / s0 - 1.0
            d11 = n11 / s0 - 1.0
            d12 = n12 / s0
            d22 = n22 / s0 - 1.0
            p = s0 * hz * hz / (4.0 * math.pi * math.pi)
            mass[i] += p * ha * ha
            f1[i] += p * ha * ha * (c11 * c11 + 2.0 * c12 * c12 + c22 * c22)
            f2[i] += p * ha * ha * (d11 * d11 + 2.0 * d12 * d12 + d22 * d22)
    return mass.sum(), f1.sum(), f2.sum()
