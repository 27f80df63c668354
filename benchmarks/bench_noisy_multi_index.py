"""A noisy multi-index model with P = 3: linear stability at Q = 0 by quadrature in y (the
default since solver 0.5.6) against the outer-QMC path (one importance-sampled posterior per
outer point), side by side in one process (issue 10's target: a P = 3 noisy threshold at
``standard`` in at most 20 s).  Run:
    python benchmarks/bench_noisy_multi_index.py [--precisions fast standard] [--formula "z1*z2*z3"]
        [--noise 0.1] [--outer-precisions fast standard]

Prints the load average, the compilation of each path's kernels (the formula's module and the
y-lattice kernel are cached on disk; the importance sampler is compiled once per link and
process), then per precision and path ``linear_stability`` with its time, alpha +- 95%, the
points per scramble it ended on (bank vectors on the y path) and its error terms, and for the
y path the whole ``layer_thresholds`` (what the service runs).
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np

import _checkout  # noqa: F401  (this checkout's solvers, not the installed ones)
from solvers.linear_stability import linear_stability
from solvers.models import MultiIndexSpec
from solvers.thresholds import layer_thresholds
from solvers.version import __version__


def load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--precisions", nargs="+", default=["fast", "standard"])
    ap.add_argument("--formula", default="z1*z2*z3")
    ap.add_argument("--noise", type=float, default=0.1)
    ap.add_argument("--outer-precisions", nargs="*", default=None,
                    help="precisions at which the outer path runs too (default: all of --precisions)")
    args = ap.parse_args()
    outer = args.precisions if args.outer_precisions is None else args.outer_precisions
    spec = MultiIndexSpec(link={"formula": args.formula}, noise=args.noise)
    ch = spec.channel()
    P = ch.n_indices
    print(f"solver {__version__}, {args.formula} noise {args.noise}, load average {load()}", flush=True)
    t0 = time.perf_counter()
    linear_stability(ch, n_points=1024, scrambles=2, y_quadrature=True)
    print(f"  compile y path: {time.perf_counter() - t0:.1f} s", flush=True)
    if outer:
        t0 = time.perf_counter()
        ch.posterior_moments(np.zeros((8, 1)), np.zeros((8, P, 1)), np.eye(P))
        print(f"  compile outer path: {time.perf_counter() - t0:.1f} s", flush=True)
    for precision in args.precisions:
        for path in ["y", "outer"] if precision in outer else ["y"]:
            t0 = time.perf_counter()
            r = linear_stability(ch, precision=precision, seed=0, y_quadrature=path == "y")
            seconds = time.perf_counter() - t0
            terms = {k: f"{v:.2g}" for k, v in r.settings.extra.items() if k.endswith("term")}
            print(f"  {precision} {path}: {seconds:.1f} s, alpha {r.alpha_c:.5g} +- {r.alpha_ci95:.2g} "
                  f"({r.settings.outer_points} points per scramble, rho terms {terms}, "
                  f"{len(r.thresholds)} directions; load {load()})", flush=True)
        t0 = time.perf_counter()
        res = layer_thresholds(spec, precision, 0)
        found = ", ".join(f"{t.kind} {t.alpha:.5g} +- {t.ci95:.2g}" for t in res.thresholds)
        print(f"  {precision} layer_thresholds: {time.perf_counter() - t0:.1f} s: {found}", flush=True)


if __name__ == "__main__":
    main()
