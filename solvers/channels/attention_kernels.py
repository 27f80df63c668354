"""numba kernels of the deep tied attention channel (THEORY.md section 2).

Forward map, for z in R^{L x M} (row l = layer l's pre-activation over the M tokens):
    B_0 = I;  a_l = B_{l-1} z_l;  A_l = c_l I + softmax_rows(beta_l a_l a_l^T);  B_l = A_l B_{l-1}
    y = softmax_rows(beta_L a_L a_L^T).
A_l has eigenvalues >= c_l (softmax of a PSD Gram kernel), so det B > 0 for c > 0.

Noiseless posterior: y reveals {a_L, -a_L}; z_L = s B_{L-1}^{-1} a_L, s = +-1, and the
posterior over the inner variables u = z_{<L} has weight
    w(u, s) = prod_{l<L} N(z_l; omega_l, v_l I) N(s B^{-1} a; omega_L, v_L I) / det B.
Two inner integrators: a trapezoid grid per sign branch that zooms onto the posterior along
its principal axes (inner dimension 2: L = 2, M = 2) and self-normalised importance sampling over a shared bank
of quasi-random prior points with one adaptive step (any L, M).
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

LOG_2PI = math.log(2.0 * math.pi)


@njit(cache=True, inline="always")
def softmax_rows(a, beta, out):
    """Row-wise softmax of beta a a^T.  The largest entry of a row is exp(0) = 1 exactly, so
    its exponential is not computed: M - 1 instead of M per row (half of them at M = 2, where
    the exponentials were most of the importance sampler's forward map), bit for bit the same."""
    m = a.shape[0]
    for i in range(m):
        mx = -1e300
        jm = 0
        for j in range(m):
            t = beta * a[i] * a[j]
            out[i, j] = t
            if t > mx:
                mx = t
                jm = j
        s = 0.0
        for j in range(m):
            e = 1.0 if j == jm else math.exp(out[i, j] - mx)
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


@njit(cache=True, inline="always")
def _eliminate(B, X, k):
    """Solve B[:, :, k] x = X[:, k] in place by Gaussian elimination with partial pivoting (B's
    slice is overwritten, X[:, k] becomes x); returns det B[:, :, k], 0.0 (X left partly
    eliminated) where B is singular.  Shared by :func:`solve_small` and the block kernel
    :func:`last_layer_preimages`, so the two agree bit for bit."""
    m = X.shape[0]
    det = 1.0
    for c in range(m):
        p = c
        best = abs(B[c, c, k])
        for i in range(c + 1, m):
            if abs(B[i, c, k]) > best:
                best = abs(B[i, c, k])
                p = i
        if best == 0.0:
            return 0.0
        if p != c:
            det = -det
            for j in range(m):
                t = B[c, j, k]
                B[c, j, k] = B[p, j, k]
                B[p, j, k] = t
            t = X[c, k]
            X[c, k] = X[p, k]
            X[p, k] = t
        piv = B[c, c, k]
        det *= piv
        for i in range(c + 1, m):
            f = B[i, c, k] / piv
            if f != 0.0:
                for j in range(c, m):
                    B[i, j, k] -= f * B[c, j, k]
                X[i, k] -= f * X[c, k]
    for i in range(m - 1, -1, -1):
        t = X[i, k]
        for j in range(i + 1, m):
            t -= B[i, j, k] * X[j, k]
        X[i, k] = t / B[i, i, k]
    return det


@njit(cache=True)
def solve_small(B, a, x, work):
    """x = B^{-1} a by Gaussian elimination with partial pivoting (B is kept: ``work`` (M, M)
    takes the elimination); returns det B."""
    m = a.shape[0]
    for i in range(m):
        for j in range(m):
            work[i, j] = B[i, j]
        x[i] = a[i]
    return _eliminate(work.reshape((m, m, 1)), x.reshape((m, 1)), 0)


# points per block of the importance sampler's forward map (structure of arrays: every loop over
# a block's points is innermost, so the M x M loops are not paid per point)
POINT_BLOCK = 128


@njit(cache=True)
def last_layer_preimages(Zin, n, skips, betas, a, B, A, W, av, mx, jm, ssum, X, det):
    """For n inner points (columns of Zin, ((L-1) M, >= n)): B_{L-1} by the forward map and the
    last layer's preimage X[:, k] = B^{-1} a with det[k] = det B (0 where B is singular).

    The same arithmetic in the same order as :func:`inner_product_matrix` and
    :func:`solve_small` per point (bit for bit), laid out as structure of arrays: work arrays
    B, A, W (M, M, >= n), av, X (M, >= n), mx, ssum, det (>= n), jm (>= n, int).  At M = 2 the
    forward map and solve take 104 ns per point instead of 226 (L = 3), 147 instead of 318
    (L = 4); at M = 3 1.5x, at M = 4 (exponentials dominate) 1.2x."""
    m = a.shape[0]
    n_layers = Zin.shape[0] // m
    for i in range(m):
        for j in range(m):
            e0 = 1.0 if i == j else 0.0
            for k in range(n):
                B[i, j, k] = e0
    for l in range(n_layers):
        for i in range(m):  # a_l = B_{l-1} z_l
            for k in range(n):
                av[i, k] = 0.0
            for j in range(m):
                for k in range(n):
                    av[i, k] += B[i, j, k] * Zin[l * m + j, k]
        beta = betas[l]
        for i in range(m):  # A_l = softmax_rows(beta a_l a_l^T) + c_l I, as softmax_rows
            for k in range(n):
                mx[k] = -1e300
                jm[k] = 0
            for j in range(m):
                for k in range(n):
                    t = beta * av[i, k] * av[j, k]
                    A[i, j, k] = t
                    if t > mx[k]:
                        mx[k] = t
                        jm[k] = j
            for k in range(n):
                ssum[k] = 0.0
            for j in range(m):
                for k in range(n):
                    e = 1.0 if j == jm[k] else math.exp(A[i, j, k] - mx[k])
                    A[i, j, k] = e
                    ssum[k] += e
            for j in range(m):
                for k in range(n):
                    A[i, j, k] /= ssum[k]
            for k in range(n):
                A[i, i, k] += skips[l]
        for i in range(m):  # B_l = A_l B_{l-1}
            for j in range(m):
                for k in range(n):
                    W[i, j, k] = 0.0
                for q in range(m):
                    for k in range(n):
                        W[i, j, k] += A[i, q, k] * B[q, j, k]
        for i in range(m):
            for j in range(m):
                for k in range(n):
                    B[i, j, k] = W[i, j, k]
    for k in range(n):  # x = B^{-1} a per point, as solve_small (B is overwritten)
        for i in range(m):
            X[i, k] = a[i]
        det[k] = _eliminate(B, X, k)


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


# rows whose softmax exponents reach this size take exp per point: below it the products'
# factors stay finite (|e| <= 170 bounds the step exp(e(j + 1) - e(j)) by exp(340) and its
# ratio exp(2 e2) by exp(680))
EXP_DIRECT = 170.0


@njit(cache=True, inline="always")
def _parabola_max_abs(e0, e1, e2, m):
    """max |e0 + e1 j + e2 j^2| over j in [0, m]: at the ends or at the vertex."""
    big = max(abs(e0), abs(e0 + e1 * m + e2 * m * m))
    if e2 != 0.0:
        jv = -e1 / (2.0 * e2)
        if 0.0 < jv < m:
            big = max(big, abs(e0 + e1 * jv + e2 * jv * jv))
    return big


@njit(cache=True)
def grid_factors(c, U, h, n, skip1, beta1, F):
    """The parts of the L = 2, M = 2 branch weights that depend on the grid point alone.

    Grid points z_1 = c + U (t_0 h_0, t_1 h_1), t_k uniform on [-1, 1] (n per axis); row
    i n + j of F holds (z_1, B = skip1 I + S(beta1 z_1 z_1^T) as b00, b01, b10, b11, det B, log det B).

    The two-token softmax rows are S_i0 = 1 / (1 + exp(e_i)), e_i = beta z_i (z_1 - z_0),
    S_i1 = 1 - S_i0.  Along a grid row z_1 is affine in j, so e_i(j) = e0 + e1 j + e2 j^2 and
    exp(e_i(j + 1)) = exp(e_i(j)) r(j), r(j + 1) = r(j) exp(2 e2): two products per point
    instead of an exponential (the weights cost half as much; the rounding of exp(2 e2) grows
    like j^2 ulp along a row, at most about 1e-12 relative).  A row whose exponents reach
    EXP_DIRECT (large beta or a far box) takes the exponential per point, clipped at 700 as
    the products cannot be."""
    step = 2.0 / (n - 1)
    m = n - 1.0
    # z_r(i, j) = p_r + q_r i + s_r j
    p0 = c[0] - U[0, 0] * h[0] - U[0, 1] * h[1]
    p1 = c[1] - U[1, 0] * h[0] - U[1, 1] * h[1]
    q0 = U[0, 0] * h[0] * step
    q1 = U[1, 0] * h[0] * step
    s0 = U[0, 1] * h[1] * step
    s1 = U[1, 1] * h[1] * step
    dd = beta1 * (s1 - s0)
    for i in range(n):
        x0 = p0 + q0 * i
        y0 = p1 + q1 * i
        d0 = beta1 * (y0 - x0)  # beta (z_1 - z_0) = d0 + dd j along the row
        eA0 = x0 * d0
        eA1 = x0 * dd + s0 * d0
        eA2 = s0 * dd
        eB0 = y0 * d0
        eB1 = y0 * dd + s1 * d0
        eB2 = s1 * dd
        direct = max(_parabola_max_abs(eA0, eA1, eA2, m), _parabola_max_abs(eB0, eB1, eB2, m)) > EXP_DIRECT
        EA = 0.0
        EB = 0.0
        RA = 0.0
        RB = 0.0
        RRA = 0.0
        RRB = 0.0
        if not direct:
            EA = math.exp(eA0)
            RA = math.exp(eA1 + eA2)
            RRA = math.exp(2.0 * eA2)
            EB = math.exp(eB0)
            RB = math.exp(eB1 + eB2)
            RRB = math.exp(2.0 * eB2)
        for j in range(n):
            z0 = x0 + s0 * j
            z1 = y0 + s1 * j
            if direct:
                dz = beta1 * (z1 - z0)
                s00 = 1.0 / (1.0 + math.exp(min(z0 * dz, 700.0)))
                s10 = 1.0 / (1.0 + math.exp(min(z1 * dz, 700.0)))
            else:
                s00 = 1.0 / (1.0 + EA)
                s10 = 1.0 / (1.0 + EB)
                EA *= RA
                RA *= RRA
                EB *= RB
                RB *= RRB
            b00 = s00 + skip1
            b01 = 1.0 - s00
            b10 = s10
            b11 = 1.0 - s10 + skip1
            det = b00 * b11 - b01 * b10
            k = i * n + j
            F[k, 0] = z0
            F[k, 1] = z1
            F[k, 2] = b00
            F[k, 3] = b01
            F[k, 4] = b10
            F[k, 5] = b11
            F[k, 6] = det
            F[k, 7] = math.log(det) if det > 0.0 else 0.0


@njit(cache=True)
def _branch_log_weights(a, omega, v, sign, F, n, logw, pts):
    """Log posterior weights of one sign branch of the L = 2, M = 2 channel on a grid whose
    :func:`grid_factors` are F: log N(z_1; omega_1, v_1 I) + log N(z_2; omega_2, v_2 I) - log det B
    (up to constants), z_2 = sign B^{-1} a.  pts[i, j] holds (z_1, z_2).  Returns the max."""
    mx = -1e300
    inv_v0 = 1.0 / v[0]
    inv_v1 = 1.0 / v[1]
    for i in range(n):
        for j in range(n):
            k = i * n + j
            z0 = F[k, 0]
            z1 = F[k, 1]
            det = F[k, 6]
            pts[i, j, 0] = z0
            pts[i, j, 1] = z1
            if det <= 0.0:
                logw[i, j] = -1e300
                pts[i, j, 2] = 0.0
                pts[i, j, 3] = 0.0
                continue
            u0 = sign * (F[k, 5] * a[0] - F[k, 3] * a[1]) / det
            u1 = sign * (-F[k, 4] * a[0] + F[k, 2] * a[1]) / det
            pts[i, j, 2] = u0
            pts[i, j, 3] = u1
            lw = (-0.5 * ((z0 - omega[0, 0]) ** 2 + (z1 - omega[0, 1]) ** 2) * inv_v0
                  - 0.5 * ((u0 - omega[1, 0]) ** 2 + (u1 - omega[1, 1]) ** 2) * inv_v1 - F[k, 7])
            logw[i, j] = lw
            if lw > mx:
                mx = lw
    return mx


SUPPORT_LOG_RATIO = 30.0  # grid points within exp(-30) of the maximum count as support
GRID_TOL = 1e-3  # per-sample convergence of the branch mass (relative) and moments (absolute)
GRID_MAX = 243


@njit(cache=True)
def _factors(c, U, h, n, skip1, beta1, prior, work):
    """The grid's :func:`grid_factors`: rows of the prior box's table (``prior`` from
    :func:`prior_box_tables`) when the grid is that box at a tabulated size, else computed
    into ``work``."""
    tables, offsets, hp = prior
    if (offsets[n] >= 0 and h[0] == hp and h[1] == hp and c[0] == 0.0 and c[1] == 0.0 and U[0, 0] == 1.0
            and U[1, 1] == 1.0 and U[0, 1] == 0.0 and U[1, 0] == 0.0):
        return tables[offsets[n]: offsets[n] + n * n]
    grid_factors(c, U, h, n, skip1, beta1, work)
    return work[: n * n]


@njit(cache=True)
def _grid_moments(a, omega, v, skip1, beta1, sign, c, U, h, n, logw, pts, mom, prior, work):
    """Trapezoid moments of one branch on one grid.  mom[0:4] mean, mom[4:20] covariance.
    Returns (log mass, max log weight)."""
    d = 4
    S1 = np.zeros(d)
    S2 = np.zeros((d, d))
    ref = np.zeros(d)
    mean = np.empty(d)
    cov = np.empty((d, d))
    F = _factors(c, U, h, n, skip1, beta1, prior, work)
    mx = _branch_log_weights(a, omega, v, sign, F, n, logw, pts)
    if mx <= -1e299:
        return -1e300, mx
    found = False
    for i in range(n):
        for j in range(n):
            if not found and logw[i, j] == mx:
                for k in range(d):
                    ref[k] = pts[i, j, k]
                found = True
    S0 = 0.0
    for i in range(n):
        for j in range(n):
            lw = logw[i, j]
            if lw < mx - 60.0:
                continue
            w = math.exp(lw - mx)
            S0 += w
            _accumulate(w, pts[i, j], ref, S1, S2, d)
    _finish(S0, S1, S2, ref, d, mean, cov)
    for k in range(d):
        mom[k] = mean[k]
        for l in range(d):
            mom[4 + 4 * k + l] = cov[k, l]
    cell = (2.0 * h[0] / (n - 1)) * (2.0 * h[1] / (n - 1))
    return mx + math.log(S0 * cell), mx


@njit(cache=True)
def _prior_box(omega, v, c, U, h):
    """The first pass's box: the prior omega_1 +- 8 sqrt(v_1) along the coordinate axes."""
    c[0] = omega[0, 0]
    c[1] = omega[0, 1]
    U[0, 0] = 1.0
    U[0, 1] = 0.0
    U[1, 0] = 0.0
    U[1, 1] = 1.0
    h[0] = 8.0 * math.sqrt(v[0])
    h[1] = h[0]


@njit(cache=True)
def _zoom(n, v, mom, logw, pts, mx, c, U, h):
    """Move the box (c, U, h) onto the branch's posterior seen on the last grid: its principal
    axes, centred on its mean, spanning the support (points within exp(-30) of the max) plus
    two cells.  Returns False, leaving the box as it is, when the area would not shrink 2x."""
    theta = 0.5 * math.atan2(2.0 * mom[4 + 1], mom[4] - mom[4 + 5])
    nU = np.empty((2, 2))
    nU[0, 0] = math.cos(theta)
    nU[1, 0] = math.sin(theta)
    nU[0, 1] = -math.sin(theta)
    nU[1, 1] = math.cos(theta)
    ext0 = 0.0
    ext1 = 0.0
    for i in range(n):
        for j in range(n):
            if logw[i, j] >= mx - SUPPORT_LOG_RATIO:
                dx = pts[i, j, 0] - mom[0]
                dy = pts[i, j, 1] - mom[1]
                e0 = abs(nU[0, 0] * dx + nU[1, 0] * dy)
                e1 = abs(nU[0, 1] * dx + nU[1, 1] * dy)
                if e0 > ext0:
                    ext0 = e0
                if e1 > ext1:
                    ext1 = e1
    g = 2.0 * max(h[0], h[1]) / (n - 1)
    nh0 = min(ext0 + 2.0 * g, 12.0 * math.sqrt(v[0]))
    nh1 = min(ext1 + 2.0 * g, 12.0 * math.sqrt(v[0]))
    if nh0 * nh1 > 0.5 * h[0] * h[1]:
        return False
    c[0] = mom[0]
    c[1] = mom[1]
    U[:, :] = nU
    h[0] = nh0
    h[1] = nh1
    return True


@njit(cache=True)
def _zoomed_passes(a, omega, v, skip1, beta1, sign, c, U, h, n, passes, mom, logw, pts, prior, work):
    """Up to ``passes`` grids, each on the box the last one zoomed to (the first on (c, U, h)
    as given); stops when the box no longer shrinks.  Returns the last grid's log mass."""
    log_mass = -1e300
    for it in range(passes):
        log_mass, mx = _grid_moments(a, omega, v, skip1, beta1, sign, c, U, h, n, logw, pts, mom, prior, work)
        if log_mass <= -1e299 or it == passes - 1:
            break
        if not _zoom(n, v, mom, logw, pts, mx, c, U, h):
            break
    return log_mass


@njit(cache=True)
def _refined(a, omega, v, skip1, beta1, sign, c, U, h, n, tol, mom, logw, pts, prior, work, log_mass):
    """Refinement on the final box: compare with a coarser grid first, then go finer
    (n -> 1.5 n) until the mass and the moments change by less than tol.  A converged
    trapezoid rule is spectrally accurate, so the last change bounds the error."""
    prev = np.empty(20)
    prev_mass, _ = _grid_moments(a, omega, v, skip1, beta1, sign, c, U, h, max(8, (2 * n) // 3), logw,
                                 pts, prev, prior, work)
    while True:
        change = abs(math.exp(prev_mass - log_mass) - 1.0) if prev_mass > -1e299 else 1.0
        for k in range(20):
            change = max(change, abs(mom[k] - prev[k]))
        if change < tol or n >= GRID_MAX:
            break
        prev_mass = log_mass
        prev[:] = mom[:]
        n = min(GRID_MAX, (3 * n) // 2)
        log_mass, _ = _grid_moments(a, omega, v, skip1, beta1, sign, c, U, h, n, logw, pts, mom, prior, work)
    return log_mass


@njit(cache=True)
def _first_pass(a, omega, v, skip1, beta1, sign, n, max_passes, c, U, h, mom, logw, pts, prior, work):
    """A branch's first pass, on the prior box omega_1 +- 8 sqrt(v_1), and (when more passes
    are allowed) the box the next pass zooms to, left in (c, U, h).  Returns (log mass, zoomed)."""
    _prior_box(omega, v, c, U, h)
    log_mass, mx = _grid_moments(a, omega, v, skip1, beta1, sign, c, U, h, n, logw, pts, mom, prior, work)
    zoomed = log_mass > -1e299 and max_passes > 1 and _zoom(n, v, mom, logw, pts, mx, c, U, h)
    return log_mass, zoomed


@njit(cache=True)
def _after_first_pass(a, omega, v, skip1, beta1, sign, n, max_passes, tol, c, U, h, zoomed, log_mass, mom, logw,
                      pts, prior, work):
    """The rest of a branch's integral from :func:`_first_pass`: the zoomed passes, then the
    refinement on the final box.  Returns log of the branch's mass."""
    if zoomed:
        log_mass = _zoomed_passes(a, omega, v, skip1, beta1, sign, c, U, h, n, max_passes - 1, mom, logw, pts,
                                  prior, work)
    if log_mass <= -1e299:
        return log_mass
    return _refined(a, omega, v, skip1, beta1, sign, c, U, h, n, tol, mom, logw, pts, prior, work, log_mass)


@njit(cache=True)
def _branch_integral(a, omega, v, skip1, beta1, sign, n, max_passes, tol, mom, logw, pts, prior, work):
    """Adaptive quadrature of one sign branch.  Returns log of its mass; mom as in _grid_moments.

    Pass 1 covers the prior box omega_1 +- 8 sqrt(v_1); each next pass zooms onto the
    branch's posterior (:func:`_zoom`) until the box no longer shrinks 2x; then the grid on the
    final box is refined (:func:`_refined`)."""
    c = np.empty(2)
    U = np.empty((2, 2))
    h = np.empty(2)
    log_mass, zoomed = _first_pass(a, omega, v, skip1, beta1, sign, n, max_passes, c, U, h, mom, logw, pts, prior,
                                   work)
    return _after_first_pass(a, omega, v, skip1, beta1, sign, n, max_passes, tol, c, U, h, zoomed, log_mass, mom,
                             logw, pts, prior, work)


@njit(cache=True)
def _posterior_grid_L2_one(a, omega, v, skip1, beta1, n, max_passes, tol, mean_out, cov_out, logw, pts, prior,
                           work):
    """Posterior moments for one sample of the L = 2, M = 2 noiseless channel: the two sign
    branches z_2 = +-B^{-1} a integrated separately, then mixed by their masses.
    Returns log Z_out (the density of the observation {a, -a})."""
    d = 4
    mom = np.empty((2, 20))
    lm = np.empty(2)
    mirror = omega[1, 0] == 0.0 and omega[1, 1] == 0.0
    if mirror:
        # no side information on z_2: the branches are mirror images (z_2 -> -z_2), equal mass
        lm[0] = _branch_integral(a, omega, v, skip1, beta1, 1.0, n, max_passes, tol, mom[0], logw, pts, prior, work)
        lm[1] = lm[0]
        for k in range(20):
            mom[1, k] = mom[0, k]
        for k in range(2, 4):
            mom[1, k] = -mom[0, k]
        for k in range(4):
            for l in range(4):
                if (k >= 2) != (l >= 2):
                    mom[1, 4 + 4 * k + l] = -mom[0, 4 + 4 * k + l]
    else:
        # both branches' first pass on the prior box, a first look: a branch far below the
        # other is dropped (a coarse grid underestimates a narrow branch by at most ~exp(-12));
        # the others go on from that pass, with the box it zoomed to
        c = np.empty((2, 2))
        U = np.empty((2, 2, 2))
        h = np.empty((2, 2))
        zoomed = np.zeros(2, dtype=np.bool_)
        for b in range(2):
            lm[b], zoomed[b] = _first_pass(a, omega, v, skip1, beta1, 1.0 - 2.0 * b, n, max_passes, c[b], U[b],
                                           h[b], mom[b], logw, pts, prior, work)
        top = max(lm[0], lm[1])
        for b in range(2):
            if lm[b] > top - 50.0:
                lm[b] = _after_first_pass(a, omega, v, skip1, beta1, 1.0 - 2.0 * b, n, max_passes, tol, c[b], U[b],
                                          h[b], zoomed[b], lm[b], mom[b], logw, pts, prior, work)
            else:
                lm[b] = -1e300
    mx = max(lm[0], lm[1])
    w0 = math.exp(lm[0] - mx) if lm[0] > -1e299 else 0.0
    w1 = math.exp(lm[1] - mx) if lm[1] > -1e299 else 0.0
    tot = w0 + w1
    p0 = w0 / tot
    p1 = w1 / tot
    for k in range(d):
        mean_out[k] = p0 * mom[0, k] + p1 * mom[1, k]
    for k in range(d):
        for l in range(d):
            # law of total covariance over the two branches
            cov_out[k, l] = (p0 * (mom[0, 4 + 4 * k + l] + mom[0, k] * mom[0, l])
                             + p1 * (mom[1, 4 + 4 * k + l] + mom[1, k] * mom[1, l])
                             - mean_out[k] * mean_out[l])
    return mx + math.log(tot) - 2.0 * LOG_2PI - math.log(v[0]) - math.log(v[1])


PRIOR_TABLE_MAX = 81  # the prior box's factors are tabulated for grids up to this size (n^2 points)


@njit(cache=True)
def prior_box_tables(n, v, skip1, beta1, tabulate):
    """:func:`grid_factors` of the prior box (centre 0, axes I, half-width 8 sqrt(v_1)) at every
    size a branch integral starting at n can ask for, up to PRIOR_TABLE_MAX: n, the refinement's
    comparison size and the refinement's sizes.  When every sample of a batch has omega_1 = 0
    (layer 1 at q_1 = 0: its prior box is the same for all), every sample's first pass and, where
    it does not zoom, its refinement read these rows instead of evaluating the softmax.
    Returns (tables, offsets: rows of size k start at offsets[k], -1 if absent, the box's h)."""
    offsets = np.full(GRID_MAX + 1, -1, dtype=np.int64)
    sizes = [n, max(8, (2 * n) // 3)]
    k = n
    while k < GRID_MAX:
        k = min(GRID_MAX, (3 * k) // 2)
        sizes.append(k)
    total = 0
    for k in sizes:
        if tabulate and k <= PRIOR_TABLE_MAX and offsets[k] < 0:
            offsets[k] = total
            total += k * k
    tables = np.empty((total, 8))
    hp = 8.0 * math.sqrt(v[0])
    c = np.zeros(2)
    U = np.eye(2)
    h = np.full(2, hp)
    for k in range(GRID_MAX + 1):
        if offsets[k] >= 0:
            grid_factors(c, U, h, k, skip1, beta1, tables[offsets[k]: offsets[k] + k * k])
    return tables, offsets, hp


@njit(cache=True, parallel=True)
def posterior_grid_L2(a, omega, v, skip1, beta1, n, max_passes, tol=GRID_TOL):
    """Batch version: a (N, 2), omega (N, 2, 2), v (2,).  Returns mean (N, 4), cov (N, 4, 4), logz (N,)."""
    N = a.shape[0]
    n = min(n, GRID_MAX)  # the work arrays hold at most GRID_MAX^2 points
    mean = np.empty((N, 4))
    cov = np.empty((N, 4, 4))
    logz = np.empty(N)
    chunks = min(N, 64)
    shared_prior = N >= 8
    for t in range(N):
        if omega[t, 0, 0] != 0.0 or omega[t, 0, 1] != 0.0:
            shared_prior = False
    prior = prior_box_tables(n, v, skip1, beta1, shared_prior)
    for ch in prange(chunks):
        # work arrays once per chunk: the largest grid is 2 MB, too much to allocate per sample
        logw = np.empty((GRID_MAX, GRID_MAX))
        pts = np.empty((GRID_MAX, GRID_MAX, 4))
        work = np.empty((GRID_MAX * GRID_MAX, 8))
        for t in range(ch, N, chunks):
            logz[t] = _posterior_grid_L2_one(a[t], omega[t], v, skip1, beta1, n, max_passes, tol,
                                             mean[t], cov[t], logw, pts, prior, work)
    return mean, cov, logz


@njit(cache=True, inline="always")
def _known_z2_preimages_one(a0, a1, w10, w11, b0, b1, v1, c, beta, pts, lw):
    """The <= 4 points z_1 with (c I + S(z_1)) z_2 = +-a for z_2 = (b0, b1), and their log weights
    log N(z_1; w_1, v_1 I) - log |det da/dz_1| (-1e300 where a branch does not exist): the scalar
    form of deep_attention._known_z2_preimages (see posterior_last_layer_known there)."""
    db = b0 - b1
    for s in range(2):
        sigma = 1.0 - 2.0 * s
        for k in range(2):
            lw[2 * s + k] = -1e300
            pts[2 * s + k, 0] = 0.0
            pts[2 * s + k, 1] = 0.0
        if db == 0.0:
            continue
        s1 = (sigma * a0 - c * b0 - b1) / db
        s2 = (sigma * a1 - c * b1 - b0) / -db
        tol = 1e-13 * (abs(a0) + abs(a1) + (1.0 + c) * (abs(b0) + abs(b1))) / abs(db)
        if not (s1 > -tol and s1 < 1.0 + tol and s2 > -tol and s2 < 1.0 + tol and s1 + s2 > 1.0 - tol):
            continue
        s1c = min(max(s1, 1e-300), 1.0 - 1e-16)
        s2c = min(max(s2, 1e-300), 1.0 - 1e-16)
        t1 = (math.log(s1c) - math.log1p(-s1c)) / beta
        t2 = (math.log(s2c) - math.log1p(-s2c)) / beta
        d2 = max(t1 + t2, 1e-300)
        d = math.sqrt(d2)
        u0 = t1 / d
        u1 = -t2 / d
        log_jac = (math.log(2.0 * beta * beta) + 2.0 * math.log(abs(db)) + math.log(s1c) + math.log1p(-s1c)
                   + math.log(s2c) + math.log1p(-s2c) + math.log(d2))
        for k in range(2):
            sg = 1.0 - 2.0 * k
            z0 = sg * u0
            z1 = sg * u1
            pts[2 * s + k, 0] = z0
            pts[2 * s + k, 1] = z1
            lw[2 * s + k] = (-((z0 - w10) ** 2 + (z1 - w11) ** 2) / (2.0 * v1) - math.log(2.0 * math.pi * v1)
                             - log_jac)


@njit(cache=True, parallel=True)
def posterior_thin_last_layer_L2(a, omega, v1, v2, c, beta, X, logW):
    """Batch kernel of deep_attention.posterior_thin_last_layer: a (N, 2), omega (N, 2, 2),
    standard-normal nodes X (K, 2) with log weights logW (K,).  Returns mean (N, 4), cov (N, 4, 4),
    log Z_out (N,) and found (N,) (some node has a preimage)."""
    N = a.shape[0]
    K = X.shape[0]
    sd2 = math.sqrt(v2)
    mean = np.zeros((N, 4))
    cov = np.zeros((N, 4, 4))
    logz = np.zeros(N)
    found = np.zeros(N, dtype=np.bool_)
    for t in prange(N):
        lw = np.empty((K, 4))
        pts = np.empty((K, 4, 2))
        mx = -1e300
        for k in range(K):
            _known_z2_preimages_one(a[t, 0], a[t, 1], omega[t, 0, 0], omega[t, 0, 1],
                                    omega[t, 1, 0] + sd2 * X[k, 0], omega[t, 1, 1] + sd2 * X[k, 1],
                                    v1, c, beta, pts[k], lw[k])
            for j in range(4):
                if lw[k, j] > -1e299:
                    lw[k, j] += logW[k]
                    if lw[k, j] > mx:
                        mx = lw[k, j]
        if mx <= -1e299:
            continue
        found[t] = True
        # first moments, then centred second moments (z_2 as its offset sqrt(v_2) x from omega_2)
        S0 = 0.0
        m = np.zeros(4)
        for k in range(K):
            for j in range(4):
                if lw[k, j] < mx - 60.0:
                    continue
                w = math.exp(lw[k, j] - mx)
                S0 += w
                m[0] += w * pts[k, j, 0]
                m[1] += w * pts[k, j, 1]
                m[2] += w * X[k, 0]
                m[3] += w * X[k, 1]
        for i in range(4):
            m[i] /= S0
        C = np.zeros((4, 4))
        e = np.empty(4)
        for k in range(K):
            for j in range(4):
                if lw[k, j] < mx - 60.0:
                    continue
                w = math.exp(lw[k, j] - mx) / S0
                e[0] = pts[k, j, 0] - m[0]
                e[1] = pts[k, j, 1] - m[1]
                e[2] = sd2 * (X[k, 0] - m[2])
                e[3] = sd2 * (X[k, 1] - m[3])
                for i in range(4):
                    for l in range(i, 4):
                        C[i, l] += w * e[i] * e[l]
        mean[t, 0] = m[0]
        mean[t, 1] = m[1]
        mean[t, 2] = omega[t, 1, 0] + sd2 * m[2]
        mean[t, 3] = omega[t, 1, 1] + sd2 * m[3]
        for i in range(4):
            for l in range(i, 4):
                cov[t, i, l] = C[i, l]
                cov[t, l, i] = C[i, l]
        logz[t] = mx + math.log(S0)
    return mean, cov, logz, found


@njit(cache=True)
def _posterior_is_one(a, omega, v, skips, betas, bank, adapt, mean_out, cov_out, first_stage=0):
    """Importance-sampling posterior for one sample, any L >= 2, M.

    Stage 1 draws the inner variables from their prior N(omega_l, v_l) with the shared
    bank; if the effective sample size is below a quarter of the bank, stage 2 redraws
    from a diagonal Gaussian fitted to stage 1 (widened 1.5x) and reweights by
    prior / proposal.  With ``first_stage = 1`` stage 1's moments are already in mean_out and
    cov_out (:func:`_posterior_prior_bank_one`) and only stage 2 runs.  Returns log Z_out."""
    K = bank.shape[0]
    L = omega.shape[0]
    m = omega.shape[1]
    d = L * m
    n_in = (L - 1) * m
    nb = min(POINT_BLOCK, K)
    Zin = np.empty((n_in, nb))
    lqs = np.empty(nb)
    B = np.empty((m, m, nb))
    A = np.empty((m, m, nb))
    W = np.empty((m, m, nb))
    av = np.empty((m, nb))
    X = np.empty((m, nb))
    mxs = np.empty(nb)
    jm = np.empty(nb, np.int64)
    ssum = np.empty(nb)
    dets = np.empty(nb)
    logw = np.empty((K, 2))
    zs = np.empty((K, 2, d))
    S1 = np.zeros(d)
    S2 = np.zeros((d, d))
    ref = np.zeros(d)
    mu = np.empty(n_in)
    sdv = np.empty(n_in)
    log_sd = np.empty(n_in)
    half_log_v = np.empty(n_in)
    for i in range(n_in):
        mu[i] = omega[i // m, i % m]
        sdv[i] = math.sqrt(v[i // m])
    logz = 0.0
    if first_stage == 1:
        for i in range(n_in):
            mu[i] = mean_out[i]
            sdv[i] = 1.5 * math.sqrt(max(cov_out[i, i], 1e-24))
    for i in range(n_in):
        half_log_v[i] = 0.5 * math.log(v[i // m])
    for stage in range(first_stage, 2):
        for i in range(n_in):  # the proposal's log-density constant, once per stage
            log_sd[i] = math.log(sdv[i])
        mx = -1e300
        for k0 in range(0, K, nb):
            n = min(nb, K - k0)
            for k in range(n):
                lq = 0.0  # log prior - log proposal of the inner variables
                for i in range(n_in):
                    zi = mu[i] + sdv[i] * bank[k0 + k, i]
                    Zin[i, k] = zi
                    if stage == 1:
                        l = i // m
                        r = (zi - omega[l, i % m]) ** 2 / v[l]
                        lq += -0.5 * r + 0.5 * bank[k0 + k, i] ** 2 + log_sd[i] - half_log_v[i]
                lqs[k] = lq
            last_layer_preimages(Zin, n, skips, betas, a, B, A, W, av, mxs, jm, ssum, X, dets)
            for k in range(n):
                det = dets[k]
                kk = k0 + k
                for s in range(2):
                    sg = 1.0 if s == 0 else -1.0
                    if det <= 0.0:
                        logw[kk, s] = -1e300
                        continue
                    r = 0.0
                    for j in range(m):
                        r += (sg * X[j, k] - omega[L - 1, j]) ** 2
                    lw = lqs[k] - 0.5 * r / v[L - 1] - math.log(det)
                    logw[kk, s] = lw
                    for i in range(n_in):
                        zs[kk, s, i] = Zin[i, k]
                    for j in range(m):
                        zs[kk, s, n_in + j] = sg * X[j, k]
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


@njit(cache=True)
def prior_bank_inverses(bank, skips, betas, m):
    """For each inner point u_k of a prior bank (K, (L-1) M): B_{L-1}(u_k)^{-1} (K, M, M) and
    log det B_{L-1}(u_k) (K,), NaN where det B <= 0 (no such point has weight).  Shared by every
    sample whose inner layers are at their prior (omega_l = 0, v_l = 1 for l < L)."""
    K = bank.shape[0]
    L = bank.shape[1] // m + 1
    z = np.empty((L, m))
    B = np.empty((m, m))
    A = np.empty((m, m))
    work = np.empty((m, m))
    avec = np.empty(m)
    e = np.empty(m)
    x = np.empty(m)
    inv = np.empty((K, m, m))
    logdet = np.empty(K)
    for k in range(K):
        for i in range((L - 1) * m):
            z[i // m, i % m] = bank[k, i]
        inner_product_matrix(z, skips, betas, L - 1, B, A, work, avec)
        det = 0.0
        for j in range(m):
            for i in range(m):
                e[i] = 1.0 if i == j else 0.0
            det = solve_small(B, e, x, work)
            for i in range(m):
                inv[k, i, j] = x[i]
        logdet[k] = math.log(det) if det > 0.0 else np.nan
    return inv, logdet


@njit(cache=True)
def _posterior_prior_bank_one(a, omega, v, bank, inv, logdet, mean_out, cov_out, logw, xs):
    """Stage 1 of :func:`_posterior_is_one` (the inner variables drawn from their prior, here
    N(0, I)) with B^{-1} and log det B read from the shared tables instead of recomputed: the
    same estimate, without the forward map per point.  ``logw`` (K, 2) and ``xs`` (K, M, the
    point's B^{-1} a) are work space.  Returns (log Z_out, effective sample size)."""
    K = bank.shape[0]
    L = omega.shape[0]
    m = omega.shape[1]
    n_in = (L - 1) * m
    d = L * m
    vl = v[L - 1]
    mx = -1e300
    kbest = -1
    sbest = 0
    for k in range(K):
        if logdet[k] != logdet[k]:  # NaN: det B <= 0
            logw[k, 0] = -1e300
            logw[k, 1] = -1e300
            continue
        xx = 0.0
        xo = 0.0
        for i in range(m):
            s = 0.0
            for j in range(m):
                s += inv[k, i, j] * a[j]
            xs[k, i] = s
            xx += (s - omega[L - 1, i]) ** 2
            xo += (-s - omega[L - 1, i]) ** 2
        lp = -0.5 * xx / vl - logdet[k]
        lm = -0.5 * xo / vl - logdet[k]
        logw[k, 0] = lp
        logw[k, 1] = lm
        if lp > mx:
            mx, kbest, sbest = lp, k, 0
        if lm > mx:
            mx, kbest, sbest = lm, k, 1
    ref = np.empty(d)
    for i in range(n_in):
        ref[i] = bank[kbest, i]
    sg = 1.0 if sbest == 0 else -1.0
    for i in range(m):
        ref[n_in + i] = sg * xs[kbest, i]
    S0 = 0.0
    S0sq = 0.0
    S1 = np.zeros(d)
    S2 = np.zeros((d, d))
    du = np.empty(n_in)
    dp = np.empty(m)
    dm = np.empty(m)
    c = np.empty(m)
    for k in range(K):
        lp = logw[k, 0]
        lm = logw[k, 1]
        wp = math.exp(lp - mx) if lp >= mx - 60.0 else 0.0
        wm = math.exp(lm - mx) if lm >= mx - 60.0 else 0.0
        w = wp + wm
        if w == 0.0:
            continue
        S0 += w
        S0sq += wp * wp + wm * wm
        for i in range(m):
            dp[i] = xs[k, i] - ref[n_in + i]
            dm[i] = -xs[k, i] - ref[n_in + i]
            c[i] = wp * dp[i] + wm * dm[i]
        for i in range(n_in):
            du[i] = bank[k, i] - ref[i]
        for i in range(n_in):
            S1[i] += w * du[i]
            for j in range(i, n_in):
                S2[i, j] += w * du[i] * du[j]
            for j in range(m):
                S2[i, n_in + j] += du[i] * c[j]
        for i in range(m):
            S1[n_in + i] += c[i]
            for j in range(i, m):
                S2[n_in + i, n_in + j] += wp * dp[i] * dp[j] + wm * dm[i] * dm[j]
    _finish(S0, S1, S2, ref, d, mean_out, cov_out)
    logz = mx + math.log(S0 / K) - 0.5 * m * (LOG_2PI + math.log(vl))
    return logz, S0 * S0 / S0sq


@njit(cache=True, parallel=True)
def posterior_prior_bank(a, omega, v, skips, betas, bank, inv, logdet, adapt):
    """Batch posterior for samples whose inner layers are at their prior (omega_l = 0, v_l = 1
    for l < L; Q = 0 and the staircase while only the last layer is learned): stage 1 from the
    shared tables of :func:`prior_bank_inverses`; a sample whose effective sample size is below
    a quarter of the bank goes on to stage 2 of :func:`_posterior_is_one` (one whose inner omega is
    not 0 goes through it whole): the result is that of :func:`posterior_importance`."""
    N = a.shape[0]
    L = omega.shape[1]
    m = omega.shape[2]
    d = L * m
    K = bank.shape[0]
    mean = np.empty((N, d))
    cov = np.empty((N, d, d))
    logz = np.empty(N)
    for t in prange(N):
        inner_prior = True
        for l in range(L - 1):
            for j in range(m):
                if omega[t, l, j] != 0.0:
                    inner_prior = False
        if not inner_prior:
            logz[t] = _posterior_is_one(a[t], omega[t], v, skips, betas, bank, adapt, mean[t], cov[t], 0)
            continue
        logw = np.empty((K, 2))
        xs = np.empty((K, m))
        lz, ess = _posterior_prior_bank_one(a[t], omega[t], v, bank, inv, logdet, mean[t], cov[t], logw, xs)
        if not adapt or ess > 0.25 * K:
            logz[t] = lz
        else:  # stage 2 from stage 1's moments
            logz[t] = _posterior_is_one(a[t], omega[t], v, skips, betas, bank, adapt, mean[t], cov[t], 1)
    return mean, cov, logz


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
    # B(z_1) on the z_1 grid, once: the same for every outer point a
    T = np.empty((n_z * n_z, 8))
    grid_factors(np.zeros(2), np.eye(2), np.full(2, half_width_z), n_z, skip1, beta1, T)
    for i in prange(n_a):
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
            for r in range(n_z * n_z):
                det = T[r, 6]
                if det <= 0.0:
                    continue
                z0 = T[r, 0]
                zz1 = T[r, 1]
                x0 = (T[r, 5] * a0 - T[r, 3] * a1) / det
                x1 = (-T[r, 4] * a0 + T[r, 2] * a1) / det
                w = math.exp(-0.5 * (z0 ** 2 + zz1 ** 2 + x0 * x0 + x1 * x1)) / det
                s0 += w
                m11 += w * z0 * z0
                m12 += w * z0 * zz1
                m22 += w * zz1 * zz1
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
