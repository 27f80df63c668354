"""Numba kernels for Gaussian tails, truncated normals and orthant-truncated Gaussians.

All functions are stable in the tails (log space, scaled complementary error function,
asymptotic series where the direct formulas cancel) and return finite numbers for
finite inputs.

The key routine :func:`orthant_moments` gives the exact normaliser, mean and covariance
of N(omega, V) restricted to one orthant {sign(z_k) = s_k} for P <= 3 and a general
positive definite V.  Two methods:

* closed form (:func:`orthant_raw`, since solver 0.5.10): Tallis' (1961) moment formulas
  in the form of Manjunath & Wilhelm (2012), the mass and the conditional probabilities
  from Genz's bivariate (:func:`bvnu`, Drezner-Wesolowsky) and trivariate (:func:`tvnl`,
  Plackett's identity, adaptive 1-D rule) normal CDFs.  Accurate to about 1e-15 in
  absolute terms, i.e. relative to the mass only while it is not tiny; about 1-2 us per
  orthant for P = 2 and 5-15 us for P = 3.  Used where its error bound (FAST_ABS_ERR over
  the mass, with the cancellation of the covariance counted) promises FAST_TOL;
  :func:`orthant_mixture` applies the bound to the total mass of the observation's
  orthants, so a far-away orthant of a likely observation never needs the fallback.
* nested conditioning (:func:`orthant_moments_nested`, the fallback in the far tails):
  z_1 is integrated by an adaptive Gauss-Legendre rule, the rest is the same problem one
  dimension lower for the conditional Gaussian, and the last coordinate is a closed-form
  truncated normal.  Every level integrates a log-concave function (Prekopa), whose mode
  and level set are found by safeguarded Newton steps with exact derivatives obtained
  from the inner moments.  Stable however far in the tail, but slow (about 50-300 us per
  orthant for P = 2, 5-20 ms for P = 3), and in our checks off by up to 1e-2 when V is singular to
  rounding (eigenvalue 1e-12), where the closed form stays exact.
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


# ---------------------------------------------------------------- bivariate and trivariate normal
def gauss_legendre(n: int):
    """Gauss-Legendre nodes and weights on [-1, 1], contiguous (numba kernels take them)."""
    xs, ws = np.polynomial.legendre.leggauss(int(n))
    return np.ascontiguousarray(xs), np.ascontiguousarray(ws)


# Gauss-Legendre rules of Genz's BVNU (6, 12 and 20 points, by |r|) and of the adaptive
# rule on the TVN integrand (10 points per interval, an interval against its two halves)
_BVX6, _BVW6 = gauss_legendre(6)
_BVX12, _BVW12 = gauss_legendre(12)
_BVX20, _BVW20 = gauss_legendre(20)
_TVX, _TVW = gauss_legendre(10)
TWO_PI = 2.0 * math.pi
TVN_TOL = 1e-15  # absolute error aimed at by the adaptive TVN integral
TVN_MAX_INTERVALS = 64
# Fast (closed-form) orthant moments: their ingredients (bivariate and trivariate normal
# probabilities) are accurate to about FAST_ABS_ERR in absolute terms, so relative to a
# total mass M they are accurate to FAST_ABS_ERR / M.  The closed form is used when the
# error this bound predicts for the log mass, the mean and the covariance (the latter two
# relative to the posterior scale, including the cancellation of the second moment about
# omega against mean mean^T) stays below FAST_TOL; otherwise the nested quadrature runs.
FAST_ABS_ERR = 1e-14
FAST_TOL = 1e-9
# Summed over y (a caller weighting every output by its probability: statistics.observation_cases
# through Channel.summed_over_outputs, which sets orthant_mixture's ``summed``):
# the closed form is kept where its bound promises SUMMED_FAST_TOL, 1000x below the smallest
# Monte-Carlo error SE reports (16 x 512 points at precise), and a noiseless y whose probability
# given (omega, V) is below SUMMED_NEGLIGIBLE_MASS keeps its closed-form moments whatever the
# bound: its raw moments (mass, first, second) are exact to FAST_ABS_ERR in absolute terms,
# which is all a sum weighted by that probability needs; only the moments normalised by a tiny
# mass are poor, which a sampled y (or GAMP's data) would use alone, so they keep FAST_TOL and
# the nested fallback.  Before, one committee_sign evaluation summed over y at Q = 0.957 I +
# 0.001 off the diagonal took 15.7 s (59 s loaded) in the nested fallback, 0.23 s sampled: 360
# of its 2048 (point, y) pairs missed FAST_TOL, 112 missed 1e-6; with both rules none, 0.03 s.
SUMMED_FAST_TOL = 1e-6
SUMMED_NEGLIGIBLE_MASS = 1e-5


@njit(cache=True)
def ndtr(x):
    """Phi(x), the standard normal CDF (relative accuracy in the lower tail)."""
    return 0.5 * math.erfc(-x / SQRT2)


@njit(cache=True)
def bvnu(h, k, r):
    """P(X > h, Y > k) for a standard bivariate normal with correlation r.

    Genz's BVNU (Drezner & Wesolowsky 1990, with Genz's expansion for |r| > 0.925),
    absolute error about 1e-15.
    """
    if r == 0.0:
        return ndtr(-h) * ndtr(-k)
    ar = abs(r)
    if ar < 0.3:
        xs, ws = _BVX6, _BVW6
    elif ar < 0.75:
        xs, ws = _BVX12, _BVW12
    else:
        xs, ws = _BVX20, _BVW20
    hk = h * k
    if ar < 0.925:
        hs = 0.5 * (h * h + k * k)
        asr = 0.5 * math.asin(r)
        s = 0.0
        for j in range(xs.shape[0]):
            sn = math.sin(asr * (1.0 + xs[j]))
            s += ws[j] * math.exp((sn * hk - hs) / (1.0 - sn * sn))
        p = s * asr / TWO_PI + ndtr(-h) * ndtr(-k)
    else:
        if r < 0.0:
            k = -k
            hk = -hk
        bvn = 0.0
        if ar < 1.0:
            as_ = (1.0 - r) * (1.0 + r)
            a = math.sqrt(as_)
            bs = (h - k) * (h - k)
            c = (4.0 - hk) / 8.0
            d = (12.0 - hk) / 16.0
            asr = -0.5 * (bs / as_ + hk)
            if asr > -100.0:
                bvn = a * math.exp(asr) * (1.0 - c * (bs - as_) * (1.0 - d * bs / 5.0) / 3.0
                                           + c * d * as_ * as_ / 5.0)
            if hk > -160.0:
                b = math.sqrt(bs)
                bvn -= (math.exp(-0.5 * hk) * math.sqrt(TWO_PI) * ndtr(-b / a) * b
                        * (1.0 - c * bs * (1.0 - d * bs / 5.0) / 3.0))
            a *= 0.5
            for j in range(xs.shape[0]):
                xx = a * (1.0 + xs[j])
                xsq = xx * xx
                rs = math.sqrt(1.0 - xsq)
                asr = -0.5 * (bs / xsq + hk)
                if asr > -100.0:
                    bvn += a * ws[j] * math.exp(asr) * (
                        math.exp(-hk * xsq / (2.0 * (1.0 + rs) * (1.0 + rs))) / rs
                        - (1.0 + c * xsq * (1.0 + d * xsq)))
            bvn = -bvn / TWO_PI
        if r > 0.0:
            p = bvn + ndtr(-max(h, k))
        else:
            # P(X > h) - P(X > h, -Y > k) with k already negated
            p = -bvn + max(0.0, ndtr(k) - ndtr(h) if h < 0.0 else ndtr(-h) - ndtr(-k))
    return min(1.0, max(0.0, p))


@njit(cache=True)
def _pntgnd(ba, bb, bc, ra, rb, r, rr):
    dt = rr * (rr - (ra - rb) * (ra - rb) - 2.0 * ra * rb * (1.0 - r))
    if dt <= 0.0:
        return 0.0
    bt = (bc * rr + ba * (r * rb - ra) + bb * (r * ra - rb)) / math.sqrt(dt)
    ft = (ba - r * bb) * (ba - r * bb) / rr + bb * bb
    if bt > -10.0 and ft < 100.0:
        f = math.exp(-0.5 * ft)
        if bt < 10.0:
            f *= ndtr(bt)
        return f
    return 0.0


@njit(cache=True)
def _tvnf(t, h1, h2, h3, r23, a12, a13):
    """Integrand of Plackett's identity along r12 = sin(a12 t), r13 = sin(a13 t), t in [0, 1]."""
    s12 = math.sin(a12 * t)
    s13 = math.sin(a13 * t)
    f = 0.0
    if a12 != 0.0:
        c = math.cos(a12 * t)
        f += a12 * _pntgnd(h1, h2, h3, s13, r23, s12, c * c)
    if a13 != 0.0:
        c = math.cos(a13 * t)
        f += a13 * _pntgnd(h1, h3, h2, s12, r23, s13, c * c)
    return f


@njit(cache=True)
def _tvn_gl(lo, hi, h1, h2, h3, r23, a12, a13):
    half = 0.5 * (hi - lo)
    mid = 0.5 * (hi + lo)
    s = 0.0
    for j in range(_TVX.shape[0]):
        s += _TVW[j] * _tvnf(mid + half * _TVX[j], h1, h2, h3, r23, a12, a13)
    return s * half


@njit(cache=True)
def tvnl(h1, h2, h3, r12, r13, r23):
    """P(X1 < h1, X2 < h2, X3 < h3) for a standard trivariate normal, correlations r_ij.

    Genz's TVNL (Plackett's identity along r12, r13 from the case r12 = r13 = 0, after
    ordering so that |r23| is the largest), with an adaptive Gauss-Legendre rule (an
    interval against its two halves) to an absolute error of about 1e-15.
    """
    if abs(r12) > abs(r13):
        h2, h3 = h3, h2
        r12, r13 = r13, r12
    if abs(r13) > abs(r23):
        h1, h2 = h2, h1
        r13, r23 = r23, r13
    eps = 1e-15
    if abs(r12) + abs(r13) < eps:
        return ndtr(h1) * bvnu(-h2, -h3, r23)
    if 1.0 - r23 < eps:
        return bvnu(-h1, -min(h2, h3), r12)
    if r23 + 1.0 < eps:
        if h2 > -h3:
            return max(0.0, bvnu(-h1, -h2, r12) - bvnu(-h1, h3, r12))
        return 0.0
    a12 = math.asin(r12)
    a13 = math.asin(r13)
    # adaptive integral of _tvnf on [0, 1]: an interval's error is its rule against the
    # sum of the rules on its halves; split the interval with the largest error
    lo = np.empty(TVN_MAX_INTERVALS)
    hi = np.empty(TVN_MAX_INTERVALS)
    hl = np.empty(TVN_MAX_INTERVALS)
    hr = np.empty(TVN_MAX_INTERVALS)
    err = np.empty(TVN_MAX_INTERVALS)
    lo[0] = 0.0
    hi[0] = 1.0
    whole = _tvn_gl(0.0, 1.0, h1, h2, h3, r23, a12, a13)
    hl[0] = _tvn_gl(0.0, 0.5, h1, h2, h3, r23, a12, a13)
    hr[0] = _tvn_gl(0.5, 1.0, h1, h2, h3, r23, a12, a13)
    err[0] = abs(hl[0] + hr[0] - whole)
    n = 1
    while n < TVN_MAX_INTERVALS:
        tot = 0.0
        imax = 0
        for i in range(n):
            tot += err[i]
            if err[i] > err[imax]:
                imax = i
        if tot <= TVN_TOL * TWO_PI:
            break
        a = lo[imax]
        b = hi[imax]
        m = 0.5 * (a + b)
        cl = hl[imax]
        cr = hr[imax]
        am = 0.5 * (a + m)
        mb = 0.5 * (m + b)
        hi[imax] = m
        hl[imax] = _tvn_gl(a, am, h1, h2, h3, r23, a12, a13)
        hr[imax] = _tvn_gl(am, m, h1, h2, h3, r23, a12, a13)
        err[imax] = abs(hl[imax] + hr[imax] - cl)
        lo[n] = m
        hi[n] = b
        hl[n] = _tvn_gl(m, mb, h1, h2, h3, r23, a12, a13)
        hr[n] = _tvn_gl(mb, b, h1, h2, h3, r23, a12, a13)
        err[n] = abs(hl[n] + hr[n] - cr)
        n += 1
    s = 0.0
    for i in range(n):
        s += hl[i] + hr[i]
    p = s / TWO_PI + ndtr(h1) * bvnu(-h2, -h3, r23)
    return min(1.0, max(0.0, p))


# ---------------------------------------------------------------- closed-form orthant moments
@njit(cache=True)
def _is_diagonal(V):
    d = V.shape[0]
    for i in range(d):
        for j in range(d):
            if i != j and V[i, j] != 0.0:
                return False
    return True


@njit(cache=True)
def _cond_ndtr(mu, v, a):
    """P(X > a) for X ~ N(mu, v), v >= 0 (a step when v is zero to rounding)."""
    if v <= 0.0:
        return 1.0 if mu > a else 0.0
    return ndtr((mu - a) / math.sqrt(v))


@njit(cache=True)
def orthant_raw(omega, V, signs):
    """Unnormalised moments of N(omega, V) on {sign(z_k) = signs_k}, d = 2 or 3, closed form.

    Returns (m0, m1, m2): the mass, E[(z - omega) 1] and E[(z - omega)(z - omega)^T 1].
    Tallis (1961) in the form of Manjunath & Wilhelm (2012): with X = S (z - omega) ~
    N(0, Sigma), Sigma = S V S, S = diag(signs), the orthant is X >= a = -S omega, and
    E[X 1] = sum_k Sigma_ik F_k,
    E[X X^T 1] = Sigma m0 + sum_k Sigma_ik Sigma_jk a_k F_k / Sigma_kk
                 + sum_k Sigma_ik sum_{q != k} (Sigma_jq - Sigma_kq Sigma_jk / Sigma_kk) F_kq,
    F_k = density of X_k at a_k times P(rest >= a | X_k = a_k) (a bivariate normal
    probability when d = 3), F_kq the same for the pair (k, q).  The ingredients are
    accurate to about 1e-15 in absolute terms, not relative: see FAST_ABS_ERR.
    """
    d = omega.shape[0]
    S = np.empty((d, d))
    a = np.empty(d)
    sd = np.empty(d)
    for i in range(d):
        a[i] = -signs[i] * omega[i]
        for j in range(d):
            S[i, j] = signs[i] * signs[j] * V[i, j]
    for i in range(d):
        sd[i] = math.sqrt(S[i, i])
    if d == 2:
        m0 = bvnu(a[0] / sd[0], a[1] / sd[1], S[0, 1] / (sd[0] * sd[1]))
    else:
        m0 = tvnl(-a[0] / sd[0], -a[1] / sd[1], -a[2] / sd[2], S[0, 1] / (sd[0] * sd[1]),
                  S[0, 2] / (sd[0] * sd[2]), S[1, 2] / (sd[1] * sd[2]))
    F = np.zeros(d)
    for k in range(d):
        t = a[k] / sd[k]
        dens = math.exp(-0.5 * t * t) / (math.sqrt(TWO_PI) * sd[k])
        if dens == 0.0:
            continue
        if d == 2:
            j = 1 - k
            prob = _cond_ndtr(S[j, k] * a[k] / S[k, k], S[j, j] - S[j, k] * S[j, k] / S[k, k], a[j])
        else:
            i = 1 if k == 0 else 0
            j = 1 if k == 2 else 2
            mui = S[i, k] * a[k] / S[k, k]
            muj = S[j, k] * a[k] / S[k, k]
            cii = S[i, i] - S[i, k] * S[i, k] / S[k, k]
            cjj = S[j, j] - S[j, k] * S[j, k] / S[k, k]
            cij = S[i, j] - S[i, k] * S[j, k] / S[k, k]
            if cii <= 0.0 or cjj <= 0.0:
                prob = _cond_ndtr(mui, cii, a[i]) * _cond_ndtr(muj, cjj, a[j])
            else:
                rho = cij / math.sqrt(cii * cjj)
                rho = min(1.0, max(-1.0, rho))
                prob = bvnu((a[i] - mui) / math.sqrt(cii), (a[j] - muj) / math.sqrt(cjj), rho)
        F[k] = dens * prob
    Fkq = np.zeros((d, d))
    for k in range(d):
        for q in range(k + 1, d):
            det = S[k, k] * S[q, q] - S[k, q] * S[k, q]
            if det <= 0.0:
                continue
            quad = (S[q, q] * a[k] * a[k] - 2.0 * S[k, q] * a[k] * a[q] + S[k, k] * a[q] * a[q]) / det
            dens = math.exp(-0.5 * quad) / (TWO_PI * math.sqrt(det))
            if dens == 0.0:
                continue
            prob = 1.0
            if d == 3:
                r = 3 - k - q
                ck = (S[q, q] * S[k, r] - S[k, q] * S[q, r]) / det
                cq = (S[k, k] * S[q, r] - S[k, q] * S[k, r]) / det
                prob = _cond_ndtr(ck * a[k] + cq * a[q], S[r, r] - ck * S[k, r] - cq * S[q, r], a[r])
            Fkq[k, q] = dens * prob
            Fkq[q, k] = dens * prob
    m1 = np.zeros(d)
    m2 = np.zeros((d, d))
    for i in range(d):
        for k in range(d):
            m1[i] += S[i, k] * F[k]
    for i in range(d):
        for j in range(d):
            s = S[i, j] * m0
            for k in range(d):
                s += S[i, k] * S[j, k] * a[k] * F[k] / S[k, k]
                for q in range(d):
                    if q != k:
                        s += S[i, k] * (S[j, q] - S[k, q] * S[j, k] / S[k, k]) * Fkq[k, q]
            m2[i, j] = s
    # back to z - omega = S X, symmetrised
    for i in range(d):
        m1[i] *= signs[i]
    out = np.empty((d, d))
    for i in range(d):
        for j in range(d):
            out[i, j] = 0.5 * signs[i] * signs[j] * (m2[i, j] + m2[j, i])
    return m0, m1, out


@njit(cache=True)
def _fast_finish(m0, m1, m2, wsum, V, tol=FAST_TOL):
    """Normalise closed-form moments: (ok, log mass, mean - omega, cov).

    ``wsum`` is the sum of the weights of the pieces added into (m0, m1, m2), each piece
    exact to FAST_ABS_ERR in absolute terms.  ok is False when that bound does not promise
    FAST_TOL for the log mass, and for the mean and covariance relative to the posterior
    scale (the second moment about omega cancels against mean mean^T when the posterior
    is narrow or far from omega).
    """
    d = m1.shape[0]
    mean = np.zeros(d)
    cov = np.zeros((d, d))
    if not (m0 > 0.0) or not (wsum > 0.0):
        return False, -np.inf, mean, cov
    for i in range(d):
        mean[i] = m1[i] / m0
    for i in range(d):
        for j in range(d):
            cov[i, j] = m2[i, j] / m0 - mean[i] * mean[j]
    s2 = 0.0
    c = 0.0
    mm = 0.0
    for i in range(d):
        s2 += V[i, i]
        c += cov[i, i]
        mm += mean[i] * mean[i]
        if not (cov[i, i] > 0.0):
            return False, -np.inf, mean, cov
    s2 /= d
    c /= d
    err = FAST_ABS_ERR * wsum / m0
    ok = (err <= tol and err * (s2 + mm) <= tol * c
          and err * (math.sqrt(s2) + math.sqrt(mm)) <= tol * math.sqrt(c))
    return ok, math.log(m0), mean, cov


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

    V must be positive definite; (x, w) are Gauss-Legendre nodes and weights on [-1, 1]
    (used by the nested quadrature only).  Diagonal V is handled in closed form; general
    V by the closed form :func:`orthant_raw` where its error bound allows (the mass is
    not far in the tail, see :func:`_fast_finish`), else by :func:`orthant_moments_nested`.
    """
    d = omega.shape[0]
    if d > 1 and not _is_diagonal(V):
        m0, m1, m2 = orthant_raw(omega, V, signs)
        ok, lz, mean, cov = _fast_finish(m0, m1, m2, 1.0, V)
        if ok:
            for i in range(d):
                mean[i] += omega[i]
            return lz, mean, cov
    return orthant_moments_nested(omega, V, signs, x, w)


@njit(cache=True)
def orthant_moments_nested(omega, V, signs, x, w):
    """:func:`orthant_moments` by nested adaptive quadrature (the tails' fallback).

    Exact to about 1e-9 and stable however far the orthant lies in the tail, but slow
    for P = 3 (milliseconds per call).  Diagonal V is handled in closed form.
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


@njit(cache=True)
def _piece_loglik(y, output, noise):
    """log p(y | z in an orthant with output g): 0 / -inf when noiseless, else Gaussian."""
    if noise == 0.0:
        yk = 1.0 if y > 0.0 else -1.0
        return 0.0 if yk == output else -np.inf
    r = y - output
    return -0.5 * r * r / noise - 0.5 * math.log(2.0 * math.pi * noise)


@njit(cache=True)
def _negligible(m0, omega, mu, cv, V, mean_out, cov_out):
    """Moments of a y of negligible probability (SUMMED_NEGLIGIBLE_MASS): the closed form's where they
    are finite with a positive diagonal, else the prior's (its weight, m0, is then 0 or next to it)."""
    P = omega.shape[0]
    usable = m0 > 0.0
    for a in range(P):
        if not (cv[a, a] > 0.0) or not math.isfinite(mu[a]):
            usable = False
        for b in range(P):
            if not math.isfinite(cv[a, b]):
                usable = False
    for a in range(P):
        mean_out[a] = omega[a] + (mu[a] if usable else 0.0)
        for b in range(P):
            cov_out[a, b] = cv[a, b] if usable else V[a, b]


@njit(cache=True, nogil=True)
def orthant_mixture(y, omega, V, patterns, outputs, noise, x, w, summed=False):
    """Posterior of z ~ N(omega_i, V) given y_i for channels constant on orthants.

    patterns (K, P): sign patterns of the orthants; outputs (K,): g on each orthant.
    noise = 0: y = g(z) exactly (log partition = log probability of y);
    noise > 0: y = g(z) + sqrt(noise) N(0, 1) (log partition = log density of y).
    summed: the caller weights each y by its probability (SUMMED_FAST_TOL, SUMMED_NEGLIGIBLE_MASS).
    """
    n = y.shape[0]
    K, P = patterns.shape
    mean = np.zeros((n, P))
    cov = np.zeros((n, P, P))
    logz = np.zeros(n)
    fast = P > 1 and not _is_diagonal(V)
    for i in range(n):
        if fast:
            # closed form on every piece, combined before normalising: each piece's
            # absolute error counts against the total mass only
            llmax = -np.inf
            for k in range(K):
                ll = _piece_loglik(y[i], outputs[k], noise)
                if ll > llmax:
                    llmax = ll
            m0 = 0.0
            m1 = np.zeros(P)
            m2 = np.zeros((P, P))
            wsum = 0.0
            if llmax > -np.inf:
                for k in range(K):
                    ll = _piece_loglik(y[i], outputs[k], noise)
                    if ll == -np.inf:
                        continue
                    wk = math.exp(ll - llmax)
                    if wk == 0.0:
                        continue
                    p0, p1, p2 = orthant_raw(omega[i], V, patterns[k])
                    wsum += wk
                    m0 += wk * p0
                    for a in range(P):
                        m1[a] += wk * p1[a]
                        for b in range(P):
                            m2[a, b] += wk * p2[a, b]
            ok, lz, mu, cv = _fast_finish(m0, m1, m2, wsum, V, SUMMED_FAST_TOL if summed else FAST_TOL)
            if ok:
                logz[i] = lz + llmax
                for a in range(P):
                    mean[i, a] = omega[i, a] + mu[a]
                cov[i] = cv
                continue
            if summed and noise == 0.0 and llmax == 0.0 and m0 + FAST_ABS_ERR * wsum < SUMMED_NEGLIGIBLE_MASS:
                _negligible(m0, omega[i], mu, cv, V, mean[i], cov[i])
                logz[i] = math.log(m0) if m0 > 0.0 else -np.inf
                continue
        logw = np.full(K, -np.inf)
        means = np.zeros((K, P))
        covs = np.zeros((K, P, P))
        for k in range(K):
            ll = _piece_loglik(y[i], outputs[k], noise)
            if ll == -np.inf:
                continue
            lz, mu, cv = orthant_moments(omega[i], V, patterns[k], x, w)
            logw[k] = lz + ll
            means[k] = mu
            covs[k] = cv
        lz, mu, cv = _mix(logw, means, covs)
        logz[i] = lz
        mean[i] = mu
        cov[i] = cv
    return mean, cov, logz
