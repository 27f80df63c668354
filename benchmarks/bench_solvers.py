"""Solver benchmarks (issue 2).  Run:  python benchmarks/bench_solvers.py [--repeats 3]

Reports medians (kernels compiled first) of
  1. L = 2, M = 2 thresholds at Q = 0 with CI <= 0.5%  (target <= 5 s),
  2. the staircase threshold with CI <= 1%              (target <= 60 s),
  3. an SE curve of 30 alpha points                     (target <= 60 s),
  4. per-sample posterior moments: our zooming grid against scipy.integrate.dblquad and
     scipy.integrate.cubature (the methods of the paper's public code) at equal or better
     accuracy, and the speed ratios, side by side in one run.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from scipy import integrate

import _checkout  # noqa: F401  (this checkout's solvers, not the installed ones)
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


def cubature_moments(a, omega, v, eps):
    """The same moments by scipy.integrate.cubature: one adaptive (Genz-Malik) cubature of all
    21 array-valued integrands (1, z_k, z_i z_j) at once, vectorised over the rule's points."""
    def integrand(x):  # x: (n, 2) values of z_1 (one per token)
        logits = 1.0 * x[:, :, None] * x[:, None, :]
        logits -= logits.max(axis=2, keepdims=True)
        S = np.exp(logits)
        S /= S.sum(axis=2, keepdims=True)
        B = S + np.eye(2)
        det = B[:, 0, 0] * B[:, 1, 1] - B[:, 0, 1] * B[:, 1, 0]
        z2 = np.stack([B[:, 1, 1] * a[0] - B[:, 0, 1] * a[1], B[:, 0, 0] * a[1] - B[:, 1, 0] * a[0]], 1) / det[:, None]
        out = np.zeros((x.shape[0], 21))
        for sign in (1.0, -1.0):
            z = np.concatenate([x, sign * z2], 1)
            lw = (-0.5 * np.sum((x - omega[0]) ** 2, 1) / v[0] - 0.5 * np.sum((sign * z2 - omega[1]) ** 2, 1) / v[1]
                  - np.log(np.abs(det)))
            w = np.exp(lw)
            out[:, 0] += w
            out[:, 1:5] += w[:, None] * z
            out[:, 5:] += w[:, None] * (z[:, :, None] * z[:, None, :]).reshape(-1, 16)
        return out

    lo = omega[0] - 8 * np.sqrt(v[0])
    hi = omega[0] + 8 * np.sqrt(v[0])
    res = integrate.cubature(integrand, lo, hi, rtol=eps, atol=eps * 1e-6, max_subdivisions=100000)
    total = res.estimate
    mean = total[1:5] / total[0]
    return mean, total[5:].reshape(4, 4) / total[0] - np.outer(mean, mean)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-curve", action="store_true")
    parser.add_argument("--samples-only", action="store_true", help="only part 4, the per-sample comparison")
    args = parser.parse_args()
    warm_up()
    ch = PAPER.channel()
    if not args.samples_only:
        thresholds_and_curve(ch, args)
    per_sample_comparison(ch, args)


def thresholds_and_curve(ch, args):
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



def per_sample_comparison(ch, args):
    # 4. per outer sample: ours batched as SE calls it (the work arrays are set up once per
    # chunk of samples), the baselines one sample per call as the paper's code does; errors
    # against our finest grid (GRID_MAX points, tolerance 1e-10)
    normals = outer_normals(ch, 256, 1, 5)
    batch, reference = [], []
    for q in ((0.0, 0.0), (0.0, 0.5), (0.3, 0.9)):
        omega, Z, obs, V = sample_outer(ch, np.diag(q), normals[0])
        v = np.diag(V).copy()
        batch.append((obs, omega, v))
        reference += [(obs[i], omega[i], v) for i in range(2)]
    t_ours, err_ours = 0.0, 0.0
    for obs, omega, v in batch:
        exact_m, exact_c, _ = K.posterior_grid_L2(obs, omega, v, 1.0, 1.0, K.GRID_MAX, 5, 1e-10)
        t, (m, c, _) = median_time(lambda: K.posterior_grid_L2(obs, omega, v, 1.0, 1.0, 32, 5, 1e-7), args.repeats)
        t_ours += t / (len(batch) * len(obs))
        err_ours = max(err_ours, np.abs(m - exact_m).max(), np.abs(c - exact_c).max())
    t_ref, err_ref, t_cub, err_cub = [], [], [], []
    for a, om, v in reference:
        exact_m, exact_c, _ = K.posterior_grid_L2(a[None], om[None], v, 1.0, 1.0, K.GRID_MAX, 5, 1e-10)
        t0 = time.perf_counter()
        mr, cr = dblquad_moments(a, om, v, 1e-8)
        t_ref.append(time.perf_counter() - t0)
        err_ref.append(max(np.abs(mr - exact_m[0]).max(), np.abs(cr - exact_c[0]).max()))
        t0 = time.perf_counter()
        mc, cc = cubature_moments(a, om, v, 1e-4)
        t_cub.append(time.perf_counter() - t0)
        err_cub.append(max(np.abs(mc - exact_m[0]).max(), np.abs(cc - exact_c[0]).max()))
    print(f"4. posterior moments per outer sample: ours {1e6 * t_ours:.0f} us (batched, max error "
          f"{err_ours:.1e}); dblquad {statistics.median(t_ref):.2f} s (max error {max(err_ref):.1e}), "
          f"ratio {statistics.median(t_ref) / t_ours:.0f}x; cubature {1e3 * statistics.median(t_cub):.0f} ms "
          f"(max error {max(err_cub):.1e}), ratio {statistics.median(t_cub) / t_ours:.0f}x")


if __name__ == "__main__":
    main()
