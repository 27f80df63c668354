"""Cold thresholds across the deep-attention catalogue (issue 10).  Run:

    python benchmarks/bench_catalogue.py [--precision fast standard] [--models 2x2 2x3 3x2 ...]

For each model L x M (default skip and temperature) and precision: the seconds of one cold
``layer_thresholds`` call (kernels compiled first by ``solvers.warm_up``, nothing else cached),
every threshold with its 95% half-width, and the checks it failed.  One run, one process: compare
rows of the same run (the machine's load moves absolute figures)."""
from __future__ import annotations

import argparse
import time

import _checkout  # noqa: F401  (this checkout's solvers, not the installed ones)
from solvers import DeepAttentionSpec, layer_thresholds, warm_up


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precision", nargs="+", default=["fast"])
    parser.add_argument("--models", nargs="+", default=["2x2", "2x3", "3x2", "2x4", "3x3", "4x2"],
                        help="layers x tokens, e.g. 3x2")
    args = parser.parse_args()
    t0 = time.perf_counter()
    warm_up()
    print(f"warm-up (compile or load kernels): {time.perf_counter() - t0:.1f} s", flush=True)
    print("| model | precision | seconds | thresholds (layer: alpha +- 95%) | failed checks |")
    print("|---|---|---|---|---|")
    for precision in args.precision:
        for name in args.models:
            L, M = (int(x) for x in name.split("x"))
            t0 = time.perf_counter()
            res = layer_thresholds(DeepAttentionSpec(layers=L, tokens=M), precision)
            seconds = time.perf_counter() - t0
            found = ", ".join(f"{t.layer}: {t.alpha:.4g} +- {t.ci95:.2g}" for t in res.thresholds)
            failed = ", ".join(c.name for c in res.checks if not c.passed) or "none"
            print(f"| L = {L}, M = {M} | {precision} | {seconds:.1f} | {found} | {failed} |", flush=True)


if __name__ == "__main__":
    main()
