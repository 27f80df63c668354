"""A noisy multi-index model with P = 3 through the generic importance sampler (issue 10's
target: a P = 3 noisy threshold at ``standard`` in at most 20 s).  Run:
    python benchmarks/bench_noisy_multi_index.py [--precision standard] [--formula "z1*z2*z3"]
        [--noise 0.1] [--repeats 1]

Prints, in one process: the kernels' compilation (a posterior on 8 observations: the formula's
module is cached on disk, the generic noisy kernel is compiled once per process), then
``layer_thresholds`` at the precision ``repeats`` times (the first right after compiling, the
rest warm), with each threshold, its 95% half-width and the outer points it ended on.  For a
before/after comparison run it twice in one shell command, with PYTHONPATH on each version.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from solvers.models import MultiIndexSpec
from solvers.thresholds import layer_thresholds
from solvers.version import __version__


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--precision", default="standard")
    ap.add_argument("--formula", default="z1*z2*z3")
    ap.add_argument("--noise", type=float, default=0.1)
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()
    spec = MultiIndexSpec(link={"formula": args.formula}, noise=args.noise)
    t0 = time.perf_counter()
    ch = spec.channel()
    P = ch.n_indices
    ch.posterior_moments(np.zeros((8, 1)), np.zeros((8, P, 1)), np.eye(P))
    print(f"solver {__version__}, {args.formula} noise {args.noise}: compile {time.perf_counter() - t0:.1f} s",
          flush=True)
    for run in range(args.repeats):
        t0 = time.perf_counter()
        res = layer_thresholds(spec, args.precision, 0)
        seconds = time.perf_counter() - t0
        found = ", ".join(f"{t.kind} {t.alpha:.5g} +- {t.ci95:.2g}" for t in res.thresholds)
        print(f"  {args.precision} run {run + 1}: {seconds:.1f} s ({res.settings.outer_points} points per "
              f"scramble): {found}", flush=True)


if __name__ == "__main__":
    main()
