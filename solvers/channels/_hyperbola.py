"""Exact posterior of z ~ N(omega, V) in R^2 given y = z_1 z_2 (numba kernel).

The posterior lives on the hyperbola z_1 z_2 = y.  Each branch (sign of z_1) is
parametrised by u in R: z_1 = sigma r e^u, z_2 = sigma sign(y) r e^{-u}, r = sqrt|y|,
so that dz_1 / |z_1| = du and the density of y is

    p(y) = sum_sigma int du N(z(u); omega, V).

The log integrand f(u) is smooth but not concave (up to a few local maxima per
branch).  Per branch: a coarse grid over a range that provably contains the region
f > max f - LOG_CUTOFF (from a Mahalanobis bound through the balanced point
z_1^2 / V_11 = z_2^2 / V_22), Newton refinement of every local maximum, an interval around
each maximum grown until f drops below the cut-off, merged intervals, and composite
Gauss-Legendre panels a few local widths wide on each.  Moments are accumulated relative
to the global mode (no cancellation for narrow posteriors).
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from ._gauss import LOG_2PI, LOG_CUTOFF

COARSE = 64
MAX_PEAKS = 8
MAX_PANELS = 400
REL_TOL = 1e-11


@njit(cache=True)
def _f(u, sig, r, s, om0, om1, A00, A01, A11):
    z0 = sig * r * math.exp(u)
    z1 = sig * s * r * math.exp(-u)
    d0 = z0 - om0
    d1 = z1 - om1
    f = -0.5 * (A00 * d0 * d0 + 2.0 * A01 * d0 * d1 + A11 * d1 * d1)
    # z' = (z0, -z1), z'' = (z0, z1)
    Ad0 = A00 * d0 + A01 * d1
    Ad1 = A01 * d0 + A11 * d1
    f1 = -(Ad0 * z0 - Ad1 * z1)
    zAz = A00 * z0 * z0 - 2.0 * A01 * z0 * z1 + A11 * z1 * z1
    f2 = -(zAz + Ad0 * z0 + Ad1 * z1)
    return f, f1, f2, z0, z1


@njit(cache=True)
def _refine(lo, hi, u, sig, r, s, om0, om1, A00, A01, A11):
    """Safeguarded Newton for f'(u) = 0 inside [lo, hi] (a local maximum)."""
    for _ in range(80):
        f, f1, f2, _, _ = _f(u, sig, r, s, om0, om1, A00, A01, A11)
        if f1 > 0.0:
            lo = u
        else:
            hi = u
        if f2 < 0.0:
            un = u - f1 / f2
        else:
            un = 0.5 * (lo + hi)
        if not (lo <= un <= hi):
            un = 0.5 * (lo + hi)
        if abs(un - u) <= 1e-14 * (1.0 + abs(u)):
            u = un
            break
        u = un
    return u


@njit(cache=True)
def _panels(a, b, npan, sig, r, s, om0, om1, A00, A01, A11, F, zr0, zr1, x, w):
    """Composite Gauss-Legendre sums of exp(f - F) times 1, (z - zr), (z - zr)(z - zr)^T."""
    out = np.zeros(6)
    ph = (b - a) / npan
    for q in range(npan):
        mid = a + (q + 0.5) * ph
        for t in range(x.shape[0]):
            u = mid + 0.5 * ph * x[t]
            f, _, _, z0, z1 = _f(u, sig, r, s, om0, om1, A00, A01, A11)
            e = 0.5 * ph * w[t] * math.exp(f - F)
            d0 = z0 - zr0
            d1 = z1 - zr1
            out[0] += e
            out[1] += e * d0
            out[2] += e * d1
            out[3] += e * d0 * d0
            out[4] += e * d0 * d1
            out[5] += e * d1 * d1
    return out


@njit(cache=True)
def _converged(prev, cur):
    s0 = cur[0]
    if s0 <= 0.0:
        return True
    var = (cur[3] + cur[5]) / s0 + 1e-300
    sd = math.sqrt(var)
    if abs(cur[0] - prev[0]) > REL_TOL * s0:
        return False
    for k in (1, 2):
        if abs(cur[k] - prev[k]) > REL_TOL * s0 * sd:
            return False
    for k in (3, 4, 5):
        if abs(cur[k] - prev[k]) > REL_TOL * s0 * var:
            return False
    return True


@njit(cache=True)
def hyperbola_one(y, om0, om1, V00, V01, V11, x, w, panels_scale):
    det = V00 * V11 - V01 * V01
    A00 = V11 / det
    A01 = -V01 / det
    A11 = V00 / det
    logdet2pi = 2.0 * LOG_2PI + math.log(det)
    ay = abs(y)
    if ay < 1e-300:
        ay = 1e-300
    r = math.sqrt(ay)
    s = 1.0 if y >= 0.0 else -1.0
    # balanced point -> bound on the Mahalanobis radius of the relevant region
    ub = math.log(math.sqrt(ay * math.sqrt(V00 / V11)) / r)
    fb = -np.inf
    for sig in (-1.0, 1.0):
        f, _, _, _, _ = _f(ub, sig, r, s, om0, om1, A00, A01, A11)
        fb = max(fb, f)
    R = math.sqrt(-2.0 * fb + 2.0 * LOG_CUTOFF) + 1.0
    z0max = abs(om0) + R * math.sqrt(V00)
    z1max = abs(om1) + R * math.sqrt(V11)
    uhi = math.log(z0max / r)
    ulo = math.log(r / z1max)
    if ulo > ub - 1.0:
        ulo = ub - 1.0
    if uhi < ub + 1.0:
        uhi = ub + 1.0
    G = COARSE
    h = (uhi - ulo) / (G - 1)
    # peaks: branch, u, f, width
    pk_sig = np.zeros(2 * MAX_PEAKS)
    pk_u = np.zeros(2 * MAX_PEAKS)
    pk_f = np.zeros(2 * MAX_PEAKS)
    pk_w = np.zeros(2 * MAX_PEAKS)
    npk = 0
    fg = np.empty(G)
    for sig in (-1.0, 1.0):
        for j in range(G):
            fg[j], _, _, _, _ = _f(ulo + j * h, sig, r, s, om0, om1, A00, A01, A11)
        found = 0
        for j in range(G):
            left_ok = j == 0 or fg[j] >= fg[j - 1]
            right_ok = j == G - 1 or fg[j] >= fg[j + 1]
            if left_ok and right_ok and found < MAX_PEAKS:
                lo = ulo + max(j - 1, 0) * h
                hi = ulo + min(j + 1, G - 1) * h
                u = _refine(lo, hi, ulo + j * h, sig, r, s, om0, om1, A00, A01, A11)
                f, f1, f2, _, _ = _f(u, sig, r, s, om0, om1, A00, A01, A11)
                # a nearly flat peak (|y| -> 0: the hyperbola hugs the axes) has a huge
                # curvature width; no peak is wider than the range that holds the posterior
                width = min(1.0 / math.sqrt(-f2), uhi - ulo) if f2 < 0.0 else h
                pk_sig[npk] = sig
                pk_u[npk] = u
                pk_f[npk] = f
                pk_w[npk] = max(width, 1e-300)
                npk += 1
                found += 1
    F = -np.inf
    ibest = 0
    for k in range(npk):
        if pk_f[k] > F:
            F = pk_f[k]
            ibest = k
    level = F - LOG_CUTOFF
    # intervals around the significant peaks
    iv_lo = np.zeros(npk)
    iv_hi = np.zeros(npk)
    keep = np.zeros(npk, dtype=np.bool_)
    for k in range(npk):
        if pk_f[k] < level:
            continue
        keep[k] = True
        sig = pk_sig[k]
        u0 = pk_u[k]
        wd = pk_w[k]
        right = u0 + wd
        for _ in range(400):
            f, _, _, _, _ = _f(right, sig, r, s, om0, om1, A00, A01, A11)
            if not f >= level or right > uhi + 50.0:
                break
            right = u0 + 2.0 * (right - u0)
        left = u0 - wd
        for _ in range(400):
            f, _, _, _, _ = _f(left, sig, r, s, om0, om1, A00, A01, A11)
            if not f >= level or left < ulo - 50.0:
                break
            left = u0 - 2.0 * (u0 - left)
        iv_lo[k] = left
        iv_hi[k] = right
    # reference point: global mode
    _, _, _, zr0, zr1 = _f(pk_u[ibest], pk_sig[ibest], r, s, om0, om1, A00, A01, A11)
    S0 = 0.0
    S1a = 0.0
    S1b = 0.0
    Saa = 0.0
    Sab = 0.0
    Sbb = 0.0
    for sig in (-1.0, 1.0):
        # merge the intervals of this branch (sorted by left end)
        idx = np.empty(npk, dtype=np.int64)
        m = 0
        for k in range(npk):
            if keep[k] and pk_sig[k] == sig:
                idx[m] = k
                m += 1
        if m == 0:
            continue
        order = np.argsort(iv_lo[idx[:m]])
        j = 0
        while j < m:
            k = idx[order[j]]
            a = iv_lo[k]
            b = iv_hi[k]
            wmin = pk_w[k]
            j += 1
            while j < m and iv_lo[idx[order[j]]] <= b:
                k2 = idx[order[j]]
                b = max(b, iv_hi[k2])
                wmin = min(wmin, pk_w[k2])
                j += 1
            npan = int(math.ceil((b - a) / (3.0 * wmin) * panels_scale))
            if npan < 4:
                npan = 4
            cap = int(MAX_PANELS * panels_scale)
            if npan > cap:
                npan = cap
            # refinement check: double the panels until the sums agree to REL_TOL
            prev = _panels(a, b, npan, sig, r, s, om0, om1, A00, A01, A11, F, zr0, zr1, x, w)
            while True:
                cur = _panels(a, b, 2 * npan, sig, r, s, om0, om1, A00, A01, A11, F, zr0, zr1, x, w)
                npan *= 2
                if _converged(prev, cur) or npan >= 4 * cap:
                    break
                prev = cur
            S0 += cur[0]
            S1a += cur[1]
            S1b += cur[2]
            Saa += cur[3]
            Sab += cur[4]
            Sbb += cur[5]
    m0 = S1a / S0
    m1 = S1b / S0
    c00 = max(Saa / S0 - m0 * m0, 0.0)
    c11 = max(Sbb / S0 - m1 * m1, 0.0)
    c01 = Sab / S0 - m0 * m1
    logz = F + math.log(S0) - 0.5 * logdet2pi
    return logz, m0 + zr0, m1 + zr1, c00, c01, c11


@njit(cache=True, nogil=True)
def hyperbola_batch(y, omega, V, x, w, panels_scale):
    """Batch version: y (n,), omega (n, 2), V (2, 2) -> mean (n, 2), cov (n, 2, 2), logz (n,)."""
    n = y.shape[0]
    mean = np.empty((n, 2))
    cov = np.empty((n, 2, 2))
    logz = np.empty(n)
    for i in range(n):
        lz, m0, m1, c00, c01, c11 = hyperbola_one(y[i], omega[i, 0], omega[i, 1], V[0, 0], V[0, 1],
                                                 V[1, 1], x, w, panels_scale)
        logz[i] = lz
        mean[i, 0] = m0
        mean[i, 1] = m1
        cov[i, 0, 0] = c00
        cov[i, 0, 1] = c01
        cov[i, 1, 0] = c01
        cov[i, 1, 1] = c11
    return mean, cov, logz
