"""Orthant-truncated Gaussians with a general V: the closed form (solver 0.5.10) against
the nested quadrature it replaced, side by side in one process, then the committee_sign
SE that depends on them.  Run:
    python benchmarks/bench_orthant.py [--points 1024] [--no-se]

Prints the load average, the first-call (compile or cache-load) time of the kernels, then
per case the per-observation time of ``orthant_mixture`` (all of a link's orthants for one
observation) by the nested routine (``orthant_moments_nested`` on every piece: the code of
solver 0.5.9) and by the current ``orthant_mixture``, with the largest differences between
the two (log partition absolute; mean and cov relative to the posterior scale).  Then,
unless --no-se, ``fixed_point(committee_sign, 3.0, "fast", seed=0)`` and
``layer_thresholds(committee_sign, "fast", 0)`` with their times.
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np
from numba import njit

import _checkout  # noqa: F401  (this checkout's solvers, not the installed ones)
from solvers.channels import _gauss
from solvers.channels._gauss import gauss_legendre
from solvers.channels.multi_index import GL_ORDER, CommitteeSignChannel, SignProductChannel, _regularise


def load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


@njit(cache=True)
def nested_mixture(y, omega, V, patterns, outputs, noise, x, w):
    """orthant_mixture as of solver 0.5.9: every piece by the nested quadrature."""
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
            ll = _gauss._piece_loglik(y[i], outputs[k], noise)
            if ll == -np.inf:
                continue
            lz, mu, cv = _gauss.orthant_moments_nested(omega[i], V, patterns[k], x, w)
            logw[k] = lz + ll
            means[k] = mu
            covs[k] = cv
        lz, mu, cv = _gauss._mix(logw, means, covs)
        logz[i] = lz
        mean[i] = mu
        cov[i] = cv
    return mean, cov, logz


def observations(channel, V, n, rng):
    """omega ~ N(0, I - V) and y from the link at z ~ N(omega, V) (the SE's outer law)."""
    P = V.shape[0]
    Q = np.eye(P) - V
    om = rng.multivariate_normal(np.zeros(P), Q, size=n, check_valid="ignore")
    z = om + rng.multivariate_normal(np.zeros(P), V, size=n, check_valid="ignore")
    return np.ascontiguousarray(channel.vectorised_link(z)), np.ascontiguousarray(om)


def compare(name, channel, V, n, noise, rng):
    x, w = gauss_legendre(GL_ORDER)
    y, om = observations(channel, V, n, rng)
    args = (channel.patterns, channel.outputs, noise, x, w)
    t = time.perf_counter()
    old = nested_mixture(y, om, V, *args)
    t_old = (time.perf_counter() - t) / n
    t = time.perf_counter()
    new = _gauss.orthant_mixture(y, om, V, *args)
    t_new = (time.perf_counter() - t) / n
    scale = np.sqrt(np.einsum("nii->n", old[1]) / V.shape[0])
    e_lz = np.abs(new[2] - old[2]).max()
    e_m = (np.abs(new[0] - old[0]).max(axis=1) / scale).max()
    e_c = (np.abs(new[1] - old[1]).max(axis=(1, 2)) / scale ** 2).max()
    print(f"{name:48s} nested {t_old * 1e6:9.1f} us  new {t_new * 1e6:7.2f} us  "
          f"x{t_old / t_new:7.0f}   |d logZ| {e_lz:.1e}  |d mean| {e_m:.1e}  |d cov| {e_c:.1e}", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--points", type=int, default=1024)
    ap.add_argument("--no-se", action="store_true")
    args = ap.parse_args()
    print(f"load average {load()}")
    x, w = gauss_legendre(GL_ORDER)
    t = time.perf_counter()
    cs, sp = CommitteeSignChannel(), SignProductChannel()
    V3 = np.eye(3) - 0.196 * np.ones((3, 3))
    _gauss.orthant_mixture(np.ones(1), np.zeros((1, 3)), V3, cs.patterns, cs.outputs, 0.0, x, w)
    _gauss.orthant_mixture(np.ones(1), np.zeros((1, 2)), np.array([[1.0, 0.5], [0.5, 1.0]]),
                           sp.patterns, sp.outputs, 0.0, x, w)
    print(f"first call of orthant_mixture (P = 2 and 3, compile or cache load): {time.perf_counter() - t:.2f} s")
    nested_mixture(np.ones(1), np.zeros((1, 3)), V3, cs.patterns, cs.outputs, 0.0, x, w)
    nested_mixture(np.ones(1), np.zeros((1, 2)), np.eye(2) * 0.5 + 0.1, sp.patterns, sp.outputs, 0.0, x, w)
    rng = np.random.default_rng(0)
    n = args.points
    cases = [
        ("committee_sign, V = I - 0.196 J", cs, V3, 0.0),
        ("committee_sign, V = I - Q, Q = 0.8 I + 0.05 (J - I)", cs,
         np.eye(3) - (0.8 * np.eye(3) + 0.05 * (np.ones((3, 3)) - np.eye(3))), 0.0),
        ("committee_sign, V = I - 0.196 J, noise 0.1", cs, V3, 0.1),
        ("sign_product, V = [[1, .6], [.6, 1]] / 2", sp, np.array([[0.5, 0.3], [0.3, 0.5]]), 0.0),
        # not positive definite (det -1e-6): as the channel does, eigenvalues floored at 1e-12
        ("sign_product, V = [[.436, .435], [.435, .434]]", sp,
         _regularise(np.array([[0.436, 0.435], [0.435, 0.434]]), 2), 0.0),
        ("sign_product, V = [[.436, .433], [.433, .434]]", sp,
         np.array([[0.436, 0.433], [0.433, 0.434]]), 0.0),
    ]
    for name, ch, V, noise in cases:
        compare(name, ch, np.ascontiguousarray(V), n, noise, rng)
    if args.no_se:
        return
    from solvers.models import MultiIndexSpec
    from solvers.state_evolution import fixed_point
    from solvers.thresholds import layer_thresholds
    spec = MultiIndexSpec(link="committee_sign")
    print(f"load average {load()}", flush=True)
    t = time.perf_counter()
    fp = fixed_point(spec, 3.0, precision="fast", seed=0)
    print(f"fixed_point(committee_sign, 3.0, fast, seed=0): {time.perf_counter() - t:.1f} s", flush=True)
    print(fp, flush=True)
    t = time.perf_counter()
    lt = layer_thresholds(spec, "fast", 0)
    print(f"layer_thresholds(committee_sign, fast, 0): {time.perf_counter() - t:.1f} s", flush=True)
    print(lt, flush=True)
    print(f"load average {load()}")


if __name__ == "__main__":
    main()
