"""Numba kernels for Gaussian tails, truncated normals and orthant-truncated Gaussians.

All functions are stable in the tails (log space, scaled complementary error function,
asymptotic series where the direct formulas cancel) and return finite numbers for
finite inputs.

The key routine :func:`orthant_moments` gives the exact normaliser, mean and covariance
of N(omega, V) restricted to one orthant {sign(z_k) = s_k} for P <= 3 and a general
positive definite V, by nested conditioning: z_1 is integrated by an adaptive
Gauss-Legendre rule, the rest is the same problem one dimension lower for the
conditional Gaussian, and the last coordinate is a closed-form truncated normal.  Every
level integrates a log-concave function (Prekopa), whose mode and level set are found
by safeguarded Newton steps with exact derivatives obtained from the inner moments.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

SQRT2 = math.sqrt(2.0)
SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
LOG_2PI = math.log(2.0 * math.pi)
# Relative level (in log units) below the maximum beyond which integrands are dropped.
LOG_CUTOFF = 38.0
# Outer-level quadrature: Gauss-Legendre panels PANEL_WIDTH local widths wide, doubled
# until two successive rules agree to REL_TOL (at most MAX_REFINE doublings).
PANEL_WIDTH = 3.0
REL_TOL = 1e-9
MAX_REFINE = 4
BISECT = 6


@njit(cache=True)
def erfcx(x):
    """exp(x^2) erfc(x), finite for x > -26 (overflows to inf below, as it should)."""
    if x < 25.0:
        return math.exp(x * x) * math.erfc(x)
    # asymptotic series, relative error < 1e-13 for x >= 25
    ix2 = 1.0 / (x * x)
    s = 1.0 - 0.5 * ix2 * (1.0 - 1.5 * ix2 * (1.0 - 2.5 * ix2 * (1.0 - 3.5 * ix2 * (1.0 - 4.5 * ix2))))
    return s / (x * math.sqrt(math.pi))


@njit(cache=True)
def log_ndtr(t):
    """log Phi(t), the standard normal CDF, accurate in both tails."""
    if t > 0.0:
        return math.log1p(-0.5 * math.erfc(t / SQRT2))
    if t > -5.0:
        return math.log(0.5 * math.erfc(-t / SQRT2))
    x = -t / SQRT2
    return math.log(0.5 * erfcx(x)) - x * x


@njit(cache=True)
def trunc_std(a):
    """Mean and variance of X ~ N(0, 1) conditioned on X > a."""
    if a > 25.0:
        x = 1.0 / a
        x2 = x * x
        # delta = lambda - a and var, asymptotic series (relative error < 1e-10)
        delta = x * (1.0 + x2 * (-2.0 + x2 * (10.0 + x2 * (-74.0 + x2 * (706.0 + x2 * (-8162.0 + x2 * 110410.0))))))
        var = x2 * (1.0 + x2 * (-6.0 + x2 * (50.0 + x2 * (-518.0 + x2 * (6354.0 + x2 * (-89782.0 + x2 * 1435330.0))))))
        return a + delta, var
    ex = erfcx(a / SQRT2)
    lam = SQRT_2_OVER_PI / ex  # 0 when ex overflows (a very negative)
    var = 1.0 - lam * (lam - a)
    if var < 0.0:
        var = 0.0
    return lam, var


@njit(cache=True)
def trunc_1d(m, s2, sign):
    """N(m, s2) restricted to sign * z > 0: (log mass, mean, variance)."""
    s = math.sqrt(s2)
    a = -sign * m / s
    lm = log_ndtr(-a)
    lam, v = trunc_std(a)
    return lm, m + sign * s * lam, s2 * v


@njit(cache=True)
def logsumexp_arr(x):
    m = -np.inf
    for i in range(x.shape[0]):
        if x[i] > m:
            m = x[i]
    if m == -np.inf:
        return -np.inf
    s = 0.0
    for i in range(x.shape[0]):
        s += math.exp(x[i] - m)
    return m + math.log(s)


# ---------------------------------------------------------------- nested orthant integrals
@njit(cache=True)
def _conditional(omega, V, z1):
    """Conditional law of z[1:] given z[0] = z1 under N(omega, V): (m, C, b)."""
    d = omega.shape[0]
    b = np.empty(d - 1)
    m = np.empty(d - 1)
    C = np.empty((d - 1, d - 1))
    for i in range(d - 1):
        b[i] = V[i + 1, 0] / V[0, 0]
        m[i] = omega[i + 1] + b[i] * (z1 - omega[0])
    for i in range(d - 1):
        for j in range(d - 1):
            C[i, j] = V[i + 1, j + 1] - V[i + 1, 0] * V[0, j + 1] / V[0, 0]
    # keep C symmetric and positive
    for i in range(d - 1):
        for j in range(i):
            c = 0.5 * (C[i, j] + C[j, i])
            C[i, j] = c
            C[j, i] = c
    return m, C, b


@njit(cache=True)
def _inv_small(C):
    """Inverse of a 1 x 1 or 2 x 2 symmetric matrix (explicit: cheap to compile)."""
    d = C.shape[0]
    out = np.empty((d, d))
    if d == 1:
        out[0, 0] = 1.0 / C[0, 0]
        return out
    det = C[0, 0] * C[1, 1] - C[0, 1] * C[1, 0]
    out[0, 0] = C[1, 1] / det
    out[1, 1] = C[0, 0] / det
    out[0, 1] = -C[0, 1] / det
    out[1, 0] = -C[1, 0] / det
    return out


@njit(cache=True)
def _finish_eval(omega, V, signs, tau, sd, z1, m, C, b, lm, mean, cv):
    d = omega.shape[0]
    Ci = _inv_small(C)
    # d log M / d z1 = b^T C^-1 (mu - m); d2 = b^T C^-1 Cov C^-1 b - b^T C^-1 b
    r = d - 1
    Cib = np.zeros(r)
    for i in range(r):
        for j in range(r):
            Cib[i] += Ci[i, j] * b[j]
    g1 = 0.0
    q = 0.0
    bCb = 0.0
    for i in range(r):
        g1 += Cib[i] * (mean[i] - m[i])
        bCb += b[i] * Cib[i]
        for j in range(r):
            q += Cib[i] * cv[i, j] * Cib[j]
    g2 = q - bCb
    h = -0.5 * tau * tau + lm
    h1 = -tau + signs[0] * sd * g1
    h2 = -1.0 + sd * sd * g2
    return h, h1, h2, z1, mean, cv


@njit(cache=True)
def _eval2(omega, V, signs, tau, sd, x, w):
    """Outer level for d = 2: h(tau) = -tau^2/2 + log M(z1) with its derivatives.

    z1 = omega_0 + s0 * sd * tau.  Returns (h, h', h'', z1, mean_rest, cov_rest).
    """
    z1 = omega[0] + signs[0] * sd * tau
    m, C, b = _conditional(omega, V, z1)
    lm, mu, var = trunc_1d(m[0], C[0, 0], signs[1])
    mean = np.empty(1)
    mean[0] = mu
    cv = np.empty((1, 1))
    cv[0, 0] = var
    return _finish_eval(omega, V, signs, tau, sd, z1, m, C, b, lm, mean, cv)


@njit(cache=True)
def _eval3(omega, V, signs, tau, sd, x, w):
    """Outer level for d = 3 (the inner integral is the d = 2 problem)."""
    z1 = omega[0] + signs[0] * sd * tau
    m, C, b = _conditional(omega, V, z1)
    lm, mean, cv = _outer2(m, C, signs[1:].copy(), x, w)
    return _finish_eval(omega, V, signs, tau, sd, z1, m, C, b, lm, mean, cv)


@njit(cache=True)
def _combine(hs, z1s, mus, cvs):
    """Weighted nodes (log weights hs) -> (log normaliser, mean, cov) with inner covs."""
    N = hs.shape[0]
    d = mus.shape[1] + 1
    hmax = hs.max()
    p = np.exp(hs - hmax)
    tot = p.sum()
    p /= tot
    logz = hmax + math.log(tot) - 0.5 * LOG_2PI
    mean = np.zeros(d)
    for j in range(N):
        mean[0] += p[j] * z1s[j]
        for i in range(d - 1):
            mean[i + 1] += p[j] * mus[j, i]
    cov = np.zeros((d, d))
    xj = np.empty(d)
    for j in range(N):
        xj[0] = z1s[j] - mean[0]
        for i in range(d - 1):
            xj[i + 1] = mus[j, i] - mean[i + 1]
        for a in range(d):
            for bb in range(d):
                cov[a, bb] += p[j] * xj[a] * xj[bb]
        for a in range(d - 1):
            for bb in range(d - 1):
                cov[a + 1, bb + 1] += p[j] * cvs[j, a, bb]
    return logz, mean, cov


@njit(cache=True)
def _close(lz0, m0, c0, lz1, m1, c1):
    """Refinement check: two quadratures agree to REL_TOL (relative to the posterior scale)."""
    if abs(lz1 - lz0) > REL_TOL:
        return False
    d = m0.shape[0]
    var = 0.0
    for i in range(d):
        var += c1[i, i]
    var = var / d + 1e-300
    for i in range(d):
        if abs(m1[i] - m0[i]) > REL_TOL * math.sqrt(var):
            return False
        for j in range(d):
            if abs(c1[i, j] - c0[i, j]) > REL_TOL * var:
                return False
    return True


@njit(inline='always')
def _panels(evaluate, omega, V, signs, sd, left, right, npan, x, w):
    """Composite Gauss-Legendre (npan panels) of the outer level on [left, right]."""
    d = omega.shape[0]
    n = x.shape[0]
    N = n * npan
    hs = np.empty(N)
    z1s = np.empty(N)
    mus = np.empty((N, d - 1))
    cvs = np.empty((N, d - 1, d - 1))
    ph = (right - left) / npan
    for q in range(npan):
        mid = left + (q + 0.5) * ph
        for j in range(n):
            t = mid + 0.5 * ph * x[j]
            h, h1, h2, z1, mu, cv = evaluate(omega, V, signs, t, sd, x, w)
            k = q * n + j
            hs[k] = h + math.log(0.5 * ph * w[j])
            z1s[k] = z1
            mus[k] = mu
            cvs[k] = cv
    return _combine(hs, z1s, mus, cvs)


@njit(inline='always')
def _outer(evaluate, omega, V, signs, x, w):
    """Orthant moments in dimension d: adaptive composite Gauss-Legendre over z_1.

    ``evaluate`` is the outer level for that dimension (:func:`_eval2` or :func:`_eval3`).
    The one implementation for every d; :func:`_outer2` and :func:`_outer3` are its cached
    specialisations.  It (and :func:`_panels`) is inlined into them (``inline='always'``,
    at the numba IR level): a compiled call that passes a function on to another compiled
    function keeps the function object's address in the caller's code, which numba then
    refuses to cache ("uses dynamic globals").
    """
    sd = math.sqrt(V[0, 0])
    s0 = signs[0]
    c = -s0 * omega[0] / sd  # domain tau >= c
    # ---- mode of the concave h on [c, inf)
    h, h1, h2, _, _, _ = evaluate(omega, V, signs, c, sd, x, w)
    if h1 <= 0.0:
        tstar = c
        hstar = h
        curv = h2
        slope = h1
    else:
        lo = c
        step = 1.0
        hi = c + step
        for _ in range(200):
            h, h1, h2, _, _, _ = evaluate(omega, V, signs, hi, sd, x, w)
            if h1 <= 0.0:
                break
            lo = hi
            step *= 2.0
            hi = lo + step
        t = 0.5 * (lo + hi)
        for _ in range(100):
            h, h1, h2, _, _, _ = evaluate(omega, V, signs, t, sd, x, w)
            if h1 > 0.0:
                lo = t
            else:
                hi = t
            tn = t - h1 / h2 if h2 < 0.0 else 0.5 * (lo + hi)
            if not (lo < tn < hi):
                tn = 0.5 * (lo + hi)
            if abs(tn - t) < 1e-12 * (1.0 + abs(t)) or hi - lo < 1e-12 * (1.0 + abs(t)):
                t = tn
                break
            t = tn
        h, h1, h2, _, _, _ = evaluate(omega, V, signs, t, sd, x, w)
        tstar = t
        hstar = h
        curv = h2
        slope = 0.0
    # ---- level set {h > hstar - LOG_CUTOFF}: bracket by doubling, then bisection
    width = 1.0 / math.sqrt(-curv) if curv < 0.0 else 1.0
    if slope < 0.0:
        width = min(width, 1.0 / -slope)
    level = hstar - LOG_CUTOFF
    inner = tstar
    right = tstar + width
    for _ in range(200):
        h, h1, h2, _, _, _ = evaluate(omega, V, signs, right, sd, x, w)
        if h < level:
            break
        inner = right
        right = tstar + 2.0 * (right - tstar)
    for _ in range(BISECT):
        mid = 0.5 * (inner + right)
        h, h1, h2, _, _, _ = evaluate(omega, V, signs, mid, sd, x, w)
        if h < level:
            right = mid
        else:
            inner = mid
    if tstar <= c:
        left = c
    else:
        inner = tstar
        left = tstar - width
        for _ in range(200):
            if left <= c:
                left = c
                break
            h, h1, h2, _, _, _ = evaluate(omega, V, signs, left, sd, x, w)
            if h < level:
                break
            inner = left
            left = tstar - 2.0 * (tstar - left)
        if left > c:
            for _ in range(BISECT):
                mid = 0.5 * (inner + left)
                h, h1, h2, _, _, _ = evaluate(omega, V, signs, mid, sd, x, w)
                if h < level:
                    left = mid
                else:
                    inner = mid
    # ---- composite Gauss-Legendre with a refinement check
    npan = int(math.ceil((right - left) / (PANEL_WIDTH * width)))
    if npan < 1:
        npan = 1
    lz0, m0, c0 = _panels(evaluate, omega, V, signs, sd, left, right, npan, x, w)
    for _ in range(MAX_REFINE):
        npan *= 2
        lz1, m1, c1 = _panels(evaluate, omega, V, signs, sd, left, right, npan, x, w)
        if _close(lz0, m0, c0, lz1, m1, c1):
            return lz1, m1, c1
        lz0, m0, c0 = lz1, m1, c1
    return lz0, m0, c0


@njit(cache=True)
def _outer2(omega, V, signs, x, w):
    """Orthant moments in dimension 2 (:func:`_outer` with the d = 2 outer level)."""
    return _outer(_eval2, omega, V, signs, x, w)


@njit(cache=True)
def _outer3(omega, V, signs, x, w):
    """Orthant moments in dimension 3 (:func:`_outer` with the d = 3 outer level)."""
    return _outer(_eval3, omega, V, signs, x, w)


@njit(cache=True)
def orthant_moments(omega, V, signs, x, w):
    """N(omega, V) restricted to {sign(z_k) = signs_k}: (log mass, mean, cov), P <= 3.

    V must be positive definite; (x, w) are Gauss-Legendre nodes and weights on [-1, 1].
    Diagonal V is handled in closed form.
    """
    d = omega.shape[0]
    diag = True
    for i in range(d):
        for j in range(d):
            if i != j and V[i, j] != 0.0:
                diag = False
    if diag or d == 1:
        lz = 0.0
        mean = np.empty(d)
        cov = np.zeros((d, d))
        for i in range(d):
            lm, mu, var = trunc_1d(omega[i], V[i, i], signs[i])
            lz += lm
            mean[i] = mu
            cov[i, i] = var
        return lz, mean, cov
    if d == 2:
        return _outer2(omega, V, signs, x, w)
    return _outer3(omega, V, signs, x, w)


# ---------------------------------------------------------------- mixtures of orthants
@njit(cache=True)
def _mix(logw, means, covs):
    """Combine K weighted Gaussian-like pieces: (log total, mean, cov)."""
    K = logw.shape[0]
    P = means.shape[1]
    lz = logsumexp_arr(logw)
    mean = np.zeros(P)
    cov = np.zeros((P, P))
    if lz == -np.inf:
        return lz, mean, cov
    p = np.exp(logw - lz)
    for k in range(K):
        if p[k] > 0.0:
            for a in range(P):
                mean[a] += p[k] * means[k, a]
    for k in range(K):
        if p[k] > 0.0:
            for a in range(P):
                da = means[k, a] - mean[a]
                for b in range(P):
                    cov[a, b] += p[k] * (covs[k, a, b] + da * (means[k, b] - mean[b]))
    return lz, mean, cov


@njit(cache=True, nogil=True)
def orthant_mixture(y, omega, V, patterns, outputs, noise, x, w):
    """Posterior of z ~ N(omega_i, V) given y_i for channels constant on orthants.

    patterns (K, P): sign patterns of the orthants; outputs (K,): g on each orthant.
    noise = 0: y = g(z) exactly (log partition = log probability of y);
    noise > 0: y = g(z) + sqrt(noise) N(0, 1) (log partition = log density of y).
    """
    n = y.shape[0]
    K, P = patterns.shape
    mean = np.zeros((n, P))
    cov = np.zeros((n, P, P))
    logz = np.zeros(n)
    for i in range(n):
        logw = np.full(K, -np.inf)
        means = np.zeros((K, P))
        covs = np.zeros((K, P, P))
        for k in range(K):
            if noise == 0.0:
                yk = 1.0 if y[i] > 0.0 else -1.0
                if yk != outputs[k]:
                    continue
                ll = 0.0
            else:
                r = y[i] - outputs[k]
                ll = -0.5 * r * r / noise - 0.5 * math.log(2.0 * math.pi * noise)
            lz, mu, cv = orthant_moments(omega[i], V, patterns[k], x, w)
            logw[k] = lz + ll
            means[k] = mu
            covs[k] = cv
        lz, mu, cv = _mix(logw, means, covs)
        logz[i] = lz
        mean[i] = mu
        cov[i] = cv
    return mean, cov, logz
