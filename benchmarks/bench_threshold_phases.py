"""Where a deep-attention thresholds question spends its time (issue 10).  Run:

    python benchmarks/bench_threshold_phases.py [--model 3x2] [--precision fast]

One cold ``layer_thresholds`` call (kernels compiled first by ``solvers.warm_up``) with every
call of the importance-sampling posteriors (``posterior_prior_bank``: inner layers at their
prior; ``posterior_importance``: a learned inner layer) logged, then printed grouped by runs of
consecutive calls with the same kernel, samples per call and inner state: calls, seconds summed
over the calls (they overlap: the engines run scrambles in threads) and the wall-clock span.  The
runs read as the phases of the staircase: the thresholds at Q = 0, each step's pilot and SE start,
its Newton or secant evaluations on the final points and the double-resolution subset.  The
paper's L = 2, M = 2 uses other (grid) kernels and logs nothing here.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import _checkout  # noqa: F401  (this checkout's solvers, not the installed ones)
import solvers.channels.deep_attention as deep_attention
from solvers import DeepAttentionSpec, layer_thresholds, warm_up

LOGGED = ("posterior_prior_bank", "posterior_importance")


class _LoggedKernels:
    """Stands in for the kernel module of the deep-attention channel: the logged posteriors are
    timed, everything else is the module's own."""

    def __init__(self, kernels, log, t0):
        self._kernels, self._log, self._t0 = kernels, log, t0

    def __getattr__(self, name):
        kernel = getattr(self._kernels, name)
        if name not in LOGGED:
            return kernel

        def timed(a, omega, v, *args):
            start = time.perf_counter()
            out = kernel(a, omega, v, *args)
            inner = "inner at prior" if np.all(v[:-1] == 1.0) else "inner learned"
            self._log.append((start - self._t0[0], time.perf_counter() - start, name, a.shape[0], inner))
            return out
        return timed


def phases(log):
    """Runs of consecutive calls with the same (kernel, samples per call, inner state)."""
    runs = []
    for start, seconds, name, samples, inner in sorted(log):
        key = (name, samples, inner)
        if runs and runs[-1]["key"] == key:
            run = runs[-1]
            run["calls"] += 1
            run["seconds"] += seconds
            run["end"] = max(run["end"], start + seconds)
        else:
            runs.append({"key": key, "calls": 1, "seconds": seconds, "start": start, "end": start + seconds})
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="3x2", help="layers x tokens, e.g. 3x2")
    parser.add_argument("--precision", default="fast")
    args = parser.parse_args()
    L, M = (int(x) for x in args.model.split("x"))
    warm_up()
    log, t0 = [], [0.0]
    deep_attention.K = _LoggedKernels(deep_attention.K, log, t0)
    t0[0] = time.perf_counter()
    result = layer_thresholds(DeepAttentionSpec(layers=L, tokens=M), args.precision)
    total = time.perf_counter() - t0[0]
    print(f"L = {L}, M = {M}, {args.precision}: {total:.1f} s;",
          ", ".join(f"{t.layer}: {t.alpha:.5g} +- {t.ci95:.2g}" for t in result.thresholds))
    print("| kernel | samples per call | inner layers | calls | seconds (summed) | wall span (s) |")
    print("|---|---|---|---|---|---|")
    for run in phases(log):
        name, samples, inner = run["key"]
        print(f"| {name} | {samples} | {inner} | {run['calls']} | {run['seconds']:.1f} | "
              f"{run['start']:.1f}-{run['end']:.1f} |")


if __name__ == "__main__":
    main()
