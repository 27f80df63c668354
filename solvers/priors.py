"""Weight priors: the input side of state evolution and GAMP (THEORY.md sections 3 and 7).

Each index row w_p of the teacher has iid entries from the prior; the input side of SE is
the P-dimensional Gaussian channel
    r = Qhat w* + Qhat^{1/2} xi,  xi ~ N(0, I_P),
    Z_in(r) = E_w exp(r^T w - 1/2 w^T Qhat w),  f_in = E[w | r],  C_in = Cov[w | r],
    Q = E[f_in f_in^T] = Q_0 - E[C_in]  (Nishimori),  Psi_w(Qhat) = E log Z_in(r).
(With this Z_in, Psi_w(Qhat) is THEORY.md's E log Z_in - 1/2 Tr Qhat for Z_in normalised as
E_w exp(r^T w - 1/2 (w - w*)^T ...); for the Gaussian prior both give 1/2 Tr Qhat -
1/2 log det(I + Qhat).)  Q_0 = E[w w^T] = I for every prior here.

* ``gaussian``: N(0, 1), the closed form Q = Qhat (I + Qhat)^{-1} (the engines' historical
  update, kept bit for bit).
* ``binary``: +-1 with probability 1/2: the posterior is a sum over the 2^P sign patterns.
* ``sparse``: Gauss-Bernoulli, w = 0 with probability 1 - rho, else N(0, 1/rho) (unit
  variance overall): a mixture over the 2^P support patterns, each Gaussian in closed form.

The outer expectation is over r, a mixture of 2^P Gaussians (one per pattern of w*'s signs or
support).  With Qhat diagonal (sign-symmetric channels) the update factorises into scalar
ones, computed by the trapezoid rule on a fine xi grid (spectrally accurate for these smooth
Gaussian-weighted integrands; the half-width is the change on the grid of double step);
otherwise by randomised QMC over xi in R^P (half-width over scrambles).  GAMP uses the same
:meth:`Prior.denoiser`.
"""
from __future__ import annotations

import itertools
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import optimize
from scipy.special import logsumexp

from .errors import SpecError
from .quadrature import scrambled_normals, t_halfwidth

# the scalar rule: trapezoid on [-XI_RANGE, XI_RANGE] (the Gaussian weight beyond is < 1e-31)
XI_RANGE = 12.0
XI_STEP = 0.01
# the P-dimensional rule (non-diagonal Qhat): scrambles x points of scrambled Sobol normals
QMC_POINTS = 4096
QMC_SCRAMBLES = 16
QMC_SEED = 20261130


@dataclass(frozen=True)
class Denoised:
    """Posterior of w under the input channel, per sample: mean (n, P), cov (n, P, P),
    log_partition (n,) = log Z_in(r)."""

    mean: np.ndarray
    cov: np.ndarray
    log_partition: np.ndarray


@dataclass(frozen=True)
class InputUpdate:
    """Q = E[f_in f_in^T] at one Qhat, with the 95% half-width of each entry (quadrature)."""

    Q: np.ndarray
    ci95: np.ndarray


class Prior(ABC):
    """A separable weight prior with unit variance (Q_0 = I)."""

    kind: str
    entropy: float | None = None  # per entry, for a discrete prior (the free entropy of Q_0 is -P times it)
    # lim_{Qhat -> inf} Qhat (1 - q(Qhat)): how the scalar update contracts 1 - q near Q_0
    # (1 for the Gaussian, rho for Gauss-Bernoulli, 0 for a discrete prior, faster than any power)
    perfect_recovery_factor: float

    def to_dict(self) -> dict:
        return {"kind": self.kind}

    def __eq__(self, other):
        return isinstance(other, Prior) and other.to_dict() == self.to_dict()

    def __hash__(self):
        return hash(tuple(sorted(self.to_dict().items())))

    def __reduce__(self):
        # unpickled in another process (the service's pool) as the same canonical object
        return _from_canonical, (self.to_dict(),)

    @abstractmethod
    def sample(self, rng: np.random.Generator, shape: tuple) -> np.ndarray:
        """Teacher weights with this prior (GAMP's instances)."""

    @abstractmethod
    def denoiser(self, r: np.ndarray, Qhat: np.ndarray) -> Denoised:
        """Posterior moments of w given r (n, P) for the channel with precision Qhat (P, P)."""

    @abstractmethod
    def _patterns(self, Qhat: np.ndarray):
        """The outer mixture of r: (weights (K,), means (K, P), covariance factors (K, P, P))."""

    # -- the outer expectation ---------------------------------------------------------------
    def _averages(self, Qhat: np.ndarray):
        """(E f f^T, E C, E log Z_in, half-widths of the first two) over the mixture of r."""
        Qhat = (Qhat + Qhat.T) / 2
        P = Qhat.shape[0]
        if P == 1 or not np.any(Qhat - np.diag(np.diag(Qhat))):
            if P == 1:
                return self._scalar_averages(float(Qhat[0, 0]))
            parts = [self._scalar_averages(float(Qhat[p, p])) for p in range(P)]
            ff = np.diag([p[0][0, 0] for p in parts])
            cc = np.diag([p[1][0, 0] for p in parts])
            hw = np.diag([p[3][0, 0] for p in parts])
            return ff, cc, sum(p[2] for p in parts), hw
        return self._qmc_averages(Qhat)

    def _scalar_averages(self, qhat: float):
        return _scalar_averages_cached(self, qhat)

    def _grid_averages(self, qhat: float, step: float):
        xi = np.arange(-XI_RANGE, XI_RANGE + step / 2, step)
        w = np.exp(-xi ** 2 / 2) / math.sqrt(2 * math.pi) * step
        weights, means, factors = self._patterns(np.array([[qhat]]))
        ff = cc = lz = 0.0
        for pk, mk, Lk in zip(weights, means, factors):
            r = (mk[0] + Lk[0, 0] * xi)[:, None]
            d = self.denoiser(r, np.array([[qhat]]))
            ff += pk * np.dot(w, d.mean[:, 0] ** 2)
            cc += pk * np.dot(w, d.cov[:, 0, 0])
            lz += pk * np.dot(w, d.log_partition)
        return ff, cc, lz

    def _qmc_averages(self, Qhat: np.ndarray):
        P = Qhat.shape[0]
        xi = _qmc_normals(P)  # (R, n, P)
        R = xi.shape[0]
        weights, means, factors = self._patterns(Qhat)
        ff = np.zeros((R, P, P))
        cc = np.zeros((R, P, P))
        lz = np.zeros(R)
        for pk, mk, Lk in zip(weights, means, factors):
            r = mk[None, None] + np.einsum("pq,snq->snp", Lk, xi)
            d = self.denoiser(r.reshape(-1, P), Qhat)
            mean = d.mean.reshape(R, -1, P)
            ff += pk * np.einsum("snp,snq->spq", mean, mean) / xi.shape[1]
            cc += pk * d.cov.reshape(R, -1, P, P).mean(1)
            lz += pk * d.log_partition.reshape(R, -1).mean(1)
        return ff.mean(0), cc.mean(0), float(lz.mean()), np.maximum(t_halfwidth(ff), t_halfwidth(cc))

    # -- the input side of SE ------------------------------------------------------------------
    def input_update(self, Qhat: np.ndarray) -> InputUpdate:
        """Q = E[f_in f_in^T], blended with its Nishimori form I - E[C_in]: the direct form is
        accurate for small overlaps, the Nishimori form near Q_0 (1 - q without cancellation);
        their weight is the overlap itself (both are exact up to the quadrature error)."""
        ff, cc, _, hw = self._averages(Qhat)
        P = ff.shape[0]
        s = float(np.clip(np.trace(ff) / P, 0.0, 1.0))
        Q = (1.0 - s) * ff + s * (np.eye(P) - cc)
        return InputUpdate((Q + Q.T) / 2, hw)

    def free_entropy(self, Q: np.ndarray, Qhat: np.ndarray) -> float:
        """The prior's side of the free entropy, -1/2 Tr(Q Qhat) + Psi_w(Qhat)."""
        return float(-0.5 * np.trace(Q @ Qhat) + self.free_entropy_term(Qhat))

    def free_entropy_term(self, Qhat: np.ndarray) -> float:
        """Psi_w(Qhat) = E log Z_in(r)."""
        return float(self._averages(Qhat)[2])

    def scalar_overlap(self, qhat: float) -> float:
        """q(qhat) of one index (P = 1)."""
        return float(self.input_update(np.array([[qhat]])).Q[0, 0])

    def alpha_at(self, q, h):
        """alpha at which an index with output statistic h (Qhat = alpha h) sits at overlap q."""
        return self.inverse_update(q) / h

    def inverse_update(self, q):
        """The scalar qhat with q(qhat) = q (q in (0, 1)), elementwise: the learned layers of a
        staircase sit at their fixed point q = q(alpha H), so alpha = inverse_update(q) / H."""
        q = np.asarray(q, dtype=float)
        out = np.array([_inverse_scalar(self, float(x)) for x in q.ravel()]).reshape(q.shape)
        return out if out.ndim else float(out)


@lru_cache(maxsize=4096)
def _scalar_averages_cached(prior: Prior, qhat: float):
    ff, cc, lz = prior._grid_averages(qhat, XI_STEP)
    ff2, cc2, _ = prior._grid_averages(qhat, 2 * XI_STEP)
    hw = max(abs(ff - ff2), abs(cc - cc2))
    return np.array([[ff]]), np.array([[cc]]), float(lz), np.array([[hw]])


@lru_cache(maxsize=1024)
def _inverse_scalar(prior: Prior, q: float) -> float:
    if q <= 0:
        return 0.0
    # 1 - q decreases with qhat; bracket then solve in log qhat
    lo, hi = -30.0, 1.0
    while prior.scalar_overlap(math.exp(hi)) < q:
        hi += 2.0
        if hi > 40:
            return math.inf
    return math.exp(optimize.brentq(lambda u: prior.scalar_overlap(math.exp(u)) - q, lo, hi, xtol=1e-12))


@lru_cache(maxsize=8)
def _qmc_normals(P: int) -> np.ndarray:
    return scrambled_normals(QMC_POINTS, P, QMC_SCRAMBLES, QMC_SEED)


def _cholesky_psd(A: np.ndarray) -> np.ndarray:
    w, U = np.linalg.eigh((A + A.T) / 2)
    return U * np.sqrt(np.clip(w, 0.0, None))


class GaussianPrior(Prior):
    """N(0, 1) entries: Q = Qhat (I + Qhat)^{-1}, Psi_w = 1/2 Tr Qhat - 1/2 log det(I + Qhat)."""

    kind = "gaussian"
    perfect_recovery_factor = 1.0

    def sample(self, rng, shape):
        return rng.standard_normal(shape)

    def denoiser(self, r, Qhat):
        P = Qhat.shape[0]
        C = np.linalg.inv(np.eye(P) + Qhat)
        mean = r @ C  # C symmetric
        logdet = np.linalg.slogdet(np.eye(P) + Qhat)[1]
        lz = 0.5 * np.einsum("np,pq,nq->n", r, C, r) - 0.5 * logdet
        return Denoised(mean, np.broadcast_to(C, (r.shape[0], P, P)), lz)

    def _patterns(self, Qhat):
        P = Qhat.shape[0]
        return np.ones(1), np.zeros((1, P)), _cholesky_psd(Qhat + Qhat @ Qhat)[None]

    def input_update(self, Qhat):
        P = Qhat.shape[0]
        return InputUpdate(Qhat @ np.linalg.inv(np.eye(P) + Qhat), np.zeros((P, P)))

    def free_entropy(self, Q, Qhat):
        sign, logdet = np.linalg.slogdet(np.eye(Q.shape[0]) + Qhat)
        return float(-0.5 * np.trace(Q @ Qhat) + 0.5 * np.trace(Qhat) - 0.5 * logdet)

    def free_entropy_term(self, Qhat):
        return float(0.5 * np.trace(Qhat) - 0.5 * np.linalg.slogdet(np.eye(Qhat.shape[0]) + Qhat)[1])

    def inverse_update(self, q):
        return q / (1.0 - q)

    def alpha_at(self, q, h):
        return q / ((1.0 - q) * h)


def _signs(P: int) -> np.ndarray:
    return np.array(list(itertools.product((-1.0, 1.0), repeat=P)))  # (2^P, P)


def _supports(P: int) -> np.ndarray:
    return np.array(list(itertools.product((0.0, 1.0), repeat=P)))  # (2^P, P)


class BinaryPrior(Prior):
    """+-1 entries, each with probability 1/2: Z_in = 2^-P sum_s exp(r.s - 1/2 s^T Qhat s)."""

    kind = "binary"
    perfect_recovery_factor = 0.0
    entropy = math.log(2.0)

    def sample(self, rng, shape):
        return np.where(rng.random(shape) < 0.5, -1.0, 1.0)

    def denoiser(self, r, Qhat):
        P = Qhat.shape[0]
        S = _signs(P)  # (K, P)
        logw = r @ S.T - 0.5 * np.einsum("kp,pq,kq->k", S, Qhat, S)[None] - P * math.log(2.0)  # (n, K)
        lz = logsumexp(logw, axis=1)
        pi = np.exp(logw - lz[:, None])
        if P == 1:
            # tanh and sech^2 in closed form: accurate 1 - tanh^2 where the posterior is sure
            x = r[:, 0]
            mean = np.tanh(x)[:, None]
            e = np.exp(-2.0 * np.abs(x))
            cov = (4.0 * e / (1.0 + e) ** 2)[:, None, None]
            return Denoised(mean, cov, lz)
        mean = pi @ S
        second = np.einsum("nk,kp,kq->npq", pi, S, S)
        return Denoised(mean, second - np.einsum("np,nq->npq", mean, mean), lz)

    def _patterns(self, Qhat):
        S = _signs(Qhat.shape[0])
        L = _cholesky_psd(Qhat)
        return np.full(len(S), 1.0 / len(S)), S @ Qhat.T, np.broadcast_to(L, (len(S),) + L.shape)


class SparsePrior(Prior):
    """Gauss-Bernoulli(rho): 0 with probability 1 - rho, else N(0, 1/rho).  Given the support
    S of w, w_S ~ N(0, I / rho) meets the channel: A = Qhat_SS + rho I, weight
    rho^|S| (1 - rho)^(P - |S|) det(I + Qhat_SS / rho)^(-1/2) exp(1/2 r_S^T A^{-1} r_S),
    mean A^{-1} r_S, covariance A^{-1}; the posterior is the mixture over the 2^P supports."""

    kind = "sparse"

    def __init__(self, density: float):
        self.density = density
        self.perfect_recovery_factor = density

    def to_dict(self):
        return {"kind": self.kind, "density": self.density}

    def sample(self, rng, shape):
        on = rng.random(shape) < self.density
        return np.where(on, rng.standard_normal(shape) / math.sqrt(self.density), 0.0)

    def denoiser(self, r, Qhat):
        n, P = r.shape
        rho = self.density
        logw, means, seconds = [], [], []
        for s in _supports(P):
            on = s.astype(bool)
            k = int(on.sum())
            if k < P and rho == 1.0:
                continue  # a support with an off entry has weight 0
            base = k * math.log(rho) + (P - k) * math.log1p(-rho) if k < P else P * math.log(rho)
            mean = np.zeros((n, P))
            second = np.zeros((n, P, P))
            if k:
                A = Qhat[np.ix_(on, on)] + rho * np.eye(k)
                Ainv = np.linalg.inv(A)
                rs = r[:, on]
                m = rs @ Ainv
                logdet = np.linalg.slogdet(np.eye(k) + Qhat[np.ix_(on, on)] / rho)[1]
                logw.append(base - 0.5 * logdet + 0.5 * np.einsum("np,np->n", m, rs))
                mean[:, on] = m
                block = Ainv[None] + np.einsum("np,nq->npq", m, m)
                full = np.zeros((n, P, P))
                full[:, on[:, None] & on[None, :]] = block.reshape(n, -1)
                second = full
            else:
                logw.append(np.full(n, base))
            means.append(mean)
            seconds.append(second)
        logw = np.stack(logw, axis=1)  # (n, K)
        lz = logsumexp(logw, axis=1)
        pi = np.exp(logw - lz[:, None])
        mean = np.einsum("nk,knp->np", pi, np.stack(means))
        second = np.einsum("nk,knpq->npq", pi, np.stack(seconds))
        if P == 1:
            # Var = pi_on / A + pi_on (1 - pi_on) m^2: no cancellation where the posterior is sure
            pon = pi[:, -1]
            A = Qhat[0, 0] + rho
            m = r[:, 0] / A
            cov = (pon / A + pon * (1.0 - pon) * m ** 2)[:, None, None]
            return Denoised(mean, cov, lz)
        return Denoised(mean, second - np.einsum("np,nq->npq", mean, mean), lz)

    def _patterns(self, Qhat):
        P = Qhat.shape[0]
        rho = self.density
        weights, factors = [], []
        for s in _supports(P):
            k = int(s.sum())
            weights.append(rho ** k * (1.0 - rho) ** (P - k))
            D = np.diag(s)
            factors.append(_cholesky_psd(Qhat + Qhat @ D @ Qhat / rho))
        return np.array(weights), np.zeros((len(weights), P)), np.array(factors)


GAUSSIAN = GaussianPrior()
BINARY = BinaryPrior()
KINDS = ("gaussian", "binary", "sparse")


def _from_canonical(data: dict) -> Prior:
    return GAUSSIAN if data["kind"] == "gaussian" else BINARY if data["kind"] == "binary" else SparsePrior(
        data["density"])


def prior_from_dict(data, density_range: tuple[float, float]) -> Prior:
    """A prior from its request form {"kind": ..., ["density": rho]} (None: Gaussian);
    ``density_range`` is the allowed (exclusive lower, inclusive upper) density."""
    if data is None:
        return GAUSSIAN
    if isinstance(data, Prior):
        return data
    if not isinstance(data, dict):
        raise SpecError("prior", data, "an object {\"kind\": one of " + ", ".join(KINDS) + "}")
    kind = data.get("kind", "gaussian")
    allowed = {"gaussian": {"kind"}, "binary": {"kind"}, "sparse": {"kind", "density"}}
    if kind not in allowed:
        raise SpecError("prior.kind", kind, "one of " + ", ".join(KINDS))
    unknown = set(data) - allowed[kind]
    if unknown:
        name = sorted(unknown)[0]
        raise SpecError(f"prior.{name}", data[name], f"no such parameter of a {kind} prior")
    if kind == "gaussian":
        return GAUSSIAN
    if kind == "binary":
        return BINARY
    lo, hi = density_range
    rho = data.get("density")
    try:
        x = float(rho)
    except (TypeError, ValueError):
        x = math.nan
    if isinstance(rho, bool) or not (math.isfinite(x) and lo < x <= hi):
        raise SpecError("prior.density", rho, f"a number in ({lo:g}, {hi:g}]")
    return SparsePrior(x)
