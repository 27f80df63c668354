"""Solver benchmarks (issue 2).  Run:  python benchmarks/bench_solvers.py [--repeats 3]

Reports medians (kernels compiled first) of
  1. L = 2, M = 2 thresholds at Q = 0 with CI <= 0.5%  (target <= 5 s),
  2. the staircase threshold with CI <= 1%              (target <= 60 s),
  3. an SE curve of 30 alpha points                     (target <= 60 s),
  4. per-sample posterior moments: our zooming grid against scipy.integrate.dblquad (the
     method of the paper's public code) at equal or better accuracy, and the speed ratio.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from scipy import integrate

from solvers import DeepAttentionSpec, state_evolution, warm_up
from solvers.channels import attention_kernels as K
from solvers.thresholds import rates_at_zero, staircase
from solvers.statistics import outer_normals, sample_outer

PAPER = DeepAttentionSpec()


def median_time(fn, repeats):
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def dblquad_moments(a, omega, v, eps):
    """Posterior moments of (z_1, z_2) for one sample by nested adaptive quadrature."""
    S = np.empty((2, 2))

    def parts(z10, z11):
        z1 = np.array([z10, z11])
        K.softmax_rows(z1, 1.0, S)
        B = S + np.eye(2)
        det = np.linalg.det(B)
        x = np.linalg.solve(B, a)
        out = []
        for s in (1.0, -1.0):
            z2 = s * x
            lw = (-0.5 * np.sum((z1 - omega[0]) ** 2) / v[0] - 0.5 * np.sum((z2 - omega[1]) ** 2) / v[1]
                  - np.log(det))
            out.append((np.exp(lw), np.concatenate([z1, z2])))
        return out

    lo0, hi0 = omega[0, 0] - 8 * np.sqrt(v[0]), omega[0, 0] + 8 * np.sqrt(v[0])
    lo1, hi1 = omega[0, 1] - 8 * np.sqrt(v[0]), omega[0, 1] + 8 * np.sqrt(v[0])

    def integral(f):
        return integrate.dblquad(lambda y, x: f(x, y), lo0, hi0, lo1, hi1, epsabs=eps, epsrel=eps)[0]

    Z = integral(lambda x, y: sum(w for w, _ in parts(x, y)))
    mean = np.array([integral(lambda x, y, k=k: sum(w * z[k] for w, z in parts(x, y))) for k in range(4)]) / Z
    second = np.array([[integral(lambda x, y, i=i, j=j: sum(w * z[i] * z[j] for w, z in parts(x, y)))
                        for j in range(4)] for i in range(4)]) / Z
    return mean, second - np.outer(mean, mean)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-curve", action="store_true")
    args = parser.parse_args()
    warm_up()
    ch = PAPER.channel()
    rates_at_zero(ch, "standard", 0)

    t, zero = median_time(lambda: rates_at_zero(ch, "standard", 0), args.repeats)
    print(f"1. thresholds at Q=0: layer 1 {zero.alpha[0]:.7f} +- {zero.ci95[0]:.1e}, "
          f"layer 2 {zero.alpha[1]:.7f} +- {zero.ci95[1]:.1e}; median {t:.2f} s")

    t, (ths, _) = median_time(lambda: staircase(ch, "standard", 0), 1)
    st = ths[1]
    print(f"2. staircase: layer {st.layer} at {st.alpha:.5f} +- {st.ci95:.5f} "
          f"({100 * st.ci95 / st.alpha:.2f}%); {t:.1f} s")

    if not args.skip_curve:
        alphas = list(np.linspace(0.05, 1.5, 30))
        t, curve = median_time(lambda: state_evolution(PAPER, alphas, precision="fast"), args.repeats)
        fixed_points = [fp for p in curve.points for fp in (p.uninformed, p.informed)]
        print(f"3. SE curve, 30 alphas, both starts, precision fast: median {t:.1f} s; "
              f"{sum(fp.converged for fp in fixed_points)}/{len(fixed_points)} converged, "
              f"{sum(fp.iterations for fp in fixed_points)} map evaluations")

    normals = outer_normals(ch, 8, 1, 5)
    samples = []
    for q in ((0.0, 0.0), (0.0, 0.5), (0.3, 0.9)):
        omega, Z, obs, V = sample_outer(ch, np.diag(q), normals[0])
        samples += [(obs[i], omega[i], np.diag(V).copy()) for i in range(2)]
    t_ours, t_ref, err_ours, err_ref = [], [], [], []
    for a, om, v in samples:
        exact_m, exact_c, _ = K.posterior_grid_L2(a[None], om[None], v, 1.0, 1.0, K.GRID_MAX, 5, 1e-10)
        t0 = time.perf_counter()
        reps = 200
        for _ in range(reps):
            m, c, _ = K.posterior_grid_L2(a[None], om[None], v, 1.0, 1.0, 32, 5, 1e-7)
        t_ours.append((time.perf_counter() - t0) / reps)
        t0 = time.perf_counter()
        mr, cr = dblquad_moments(a, om, v, 1e-8)
        t_ref.append(time.perf_counter() - t0)
        err_ours.append(max(np.abs(m[0] - exact_m[0]).max(), np.abs(c[0] - exact_c[0]).max()))
        err_ref.append(max(np.abs(mr - exact_m[0]).max(), np.abs(cr - exact_c[0]).max()))
    print(f"4. posterior moments per sample: ours {1e6 * statistics.median(t_ours):.0f} us "
          f"(max error {max(err_ours):.1e}), dblquad {statistics.median(t_ref):.2f} s "
          f"(max error {max(err_ref):.1e}); ratio {statistics.median(t_ref) / statistics.median(t_ours):.0f}x")


if __name__ == "__main__":
    main()
