"""Measured coverage of the `fast` 95% half-widths (issue 14).  Run:

    python benchmarks/calibration_coverage.py [--seeds 20] [--only NAME ...] [--out coverage.json]

For each quantity of solvers.calibration.QUANTITIES: the `precise` value at seed 0, then the
`fast` value and half-width at seeds 1..N, and how many of the N intervals contain the precise
value (or an independent value where solvers.calibration.REFERENCES has one).  Prints each
seed's value on stderr as it comes, a Markdown table (the README's), and writes the raw numbers
as JSON.  The cheap quantities are also measured by tests/test_calibration.py; the others take
minutes per seed.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict

import _checkout  # noqa: F401  (this checkout's solvers, not the installed ones)
from solvers import warm_up
from solvers.calibration import QUANTITIES, coverage


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--only", nargs="*", help="quantity names (default: all)")
    ap.add_argument("--out", default="coverage.json")
    args = ap.parse_args()
    warm_up()
    names = args.only or list(QUANTITIES)
    rows = []
    print("| quantity | precise value (seed 0) | fast median half-width | covered | seconds (fast runs) |")
    print("|---|---|---|---|---|")
    for name in names:
        t0 = time.perf_counter()
        c = coverage(name, seeds=args.seeds,
                     on_estimate=lambda seed, e: print(f"  seed {seed}: {e.alpha:.6g} +- {e.ci95:.2g} "
                                                       f"({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True))
        rows.append({"name": name, "covered": c.covered, "seeds": c.seeds, "fraction": c.fraction,
                     "reference": asdict(c.reference), "estimates": [asdict(e) for e in c.estimates],
                     "fast_seconds": c.seconds, "total_seconds": time.perf_counter() - t0})
        print(f"| {name} | {c.reference.alpha:.6g} +- {c.reference.ci95:.2g} | {c.median_relative_ci95:.2%} "
              f"| {c.covered}/{c.seeds} ({c.fraction:.0%}) | {c.seconds:.0f} |", flush=True)
        with open(args.out, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
