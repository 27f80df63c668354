"""Formula links against the named links they equal (issue 12).  Run:
    python benchmarks/bench_formula.py [--repeats 3]

For each pair, the Q = 0 threshold at precision ``fast`` (seed 0): linear stability of Q = 0
(``solvers.linear_stability``) for links without sign symmetry, the per-index rates at Q = 0
(``solvers.thresholds.rates_at_zero``) for sign-symmetric ones.  Medians over the repeats,
after one untimed run that compiles the kernels (a formula's module is cached on disk by
numba; the generic noisy kernel is compiled once per process).  Target: a formula at most
2x the time of its named link.  Also prints both alphas with their 95% half-widths.
"""
from __future__ import annotations

import argparse
import statistics
import time

import _checkout  # noqa: F401  (this checkout's solvers, not the installed ones)
from solvers.linear_stability import linear_stability
from solvers.models import MultiIndexSpec
from solvers.thresholds import rates_at_zero

PAIRS = [("sign", "sign(z1)", 0.0), ("sign_product", "sign(z1*z2)", 0.0),
         ("committee_sign", "sign(sign(z1) + sign(z2) + sign(z3))", 0.0),
         ("square", "z1**2", 0.1), ("abs", "abs(z1)", 0.1), ("product", "z1*z2", 0.1)]


def q0_threshold(spec):
    ch = spec.channel()
    if ch.sign_symmetric:
        r = rates_at_zero(ch, "fast", 0)
        return float(r.alpha.min()), float(r.ci95[r.alpha.argmin()])
    r = linear_stability(ch, seed=0, precision="fast")
    return r.alpha_c, r.alpha_ci95


def median_time(fn, repeats):
    fn()  # compile
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    print(f"{'named':>15} {'formula':>38} {'noise':>5} {'named s':>8} {'formula s':>9} {'ratio':>5}  "
          "alpha named / formula (95% half-width)")
    for name, formula, noise in PAIRS:
        tn, (an, cn) = median_time(lambda: q0_threshold(MultiIndexSpec(link=name, noise=noise)), args.repeats)
        tf, (af, cf) = median_time(lambda: q0_threshold(MultiIndexSpec(link={"formula": formula}, noise=noise)),
                                   args.repeats)
        print(f"{name:>15} {formula:>38} {noise:5g} {tn:8.2f} {tf:9.2f} {tf / tn:5.2f}  "
              f"{an:.4f} +- {cn:.4f} / {af:.4f} +- {cf:.4f}", flush=True)


if __name__ == "__main__":
    main()
