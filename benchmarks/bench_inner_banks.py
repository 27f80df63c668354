"""SE fixed points of formula links with one inner bank for all scrambles (solver 0.5.4) against
a bank per scramble (0.5.6), side by side in one run, with a 16x larger bank per scramble and
the named link's exact posterior as references (issue 14).

    python benchmarks/bench_inner_banks.py [--precision fast] [--seeds 0] [--only FORMULA]

One line per (formula, noise, alpha, seed, variant): overlaps, 95% half-widths, map
evaluations, seconds.  "shared" is 0.5.4's state evolution (output_statistics without a seed),
"per scramble" is 0.5.6's, "16x bank" the same with 16x the inner points, "exact" the named link.
The 16x bank costs 10-20x per fixed point: all cases with three seeds took over half an hour on
the loaded 2-core machine (use --only to pick one).
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import _checkout  # noqa: F401  (this checkout's solvers, not the installed ones)
from solvers.channels.multi_index import REGION_BANK_SIZE, FormulaChannel
from solvers.channels.noisy import DEFAULT_BANK_SIZE
from solvers.fixed_point_iteration import iterate_fixed_point
from solvers.models import MultiIndexSpec
from solvers.precision import SCRAMBLES, SE_DECISION_POINTS, SE_POINTS
from solvers.state_evolution import STATISTICAL_TOLERANCE, UNINFORMED_START, _fixed_point_result
from solvers.statistics import outer_normals

CASES = [  # formula, noise, named link with an exact posterior (or None), alphas
    ("sign(z1)", 0.1, "sign", (2.0, 8.0)),
    ("sign(z1)", 0.0, "sign", (1.0, 16.0)),
    ("sign(z1)*sign(z2)", 0.0, "sign_product", (6.0,)),
    ("z1*z2", 0.1, None, (1.5, 3.0)),
]


def se_fixed_point(channel, alpha: float, precision: str, seed: int, bank_seed):
    """fixed_point of solvers.state_evolution for a channel object, the banks' seed explicit
    (None: one bank for every scramble)."""
    normals = outer_normals(channel, SE_POINTS[precision], SCRAMBLES, seed)
    decision = outer_normals(channel, SE_DECISION_POINTS[precision], SCRAMBLES, seed)
    start = np.eye(channel.n_indices) * UNINFORMED_START
    fp = iterate_fixed_point(channel, alpha, start, normals, statistical_tolerance=STATISTICAL_TOLERANCE,
                             decision_normals=decision, seed=bank_seed)
    return _fixed_point_result(channel, alpha, "uninformed", fp, normals, 1, bank_seed)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--precision", default="fast")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--only", help="run the cases whose formula is this one")
    args = ap.parse_args()
    for formula, noise, named, alphas in CASES:
        if args.only is not None and formula != args.only:
            continue
        channel = MultiIndexSpec(link={"formula": formula}, noise=noise).channel()
        large = FormulaChannel(formula, noise, bank_size=16 * DEFAULT_BANK_SIZE,
                               region_bank_size=16 * REGION_BANK_SIZE)
        variants = [("shared", channel, False), ("per scramble", channel, True), ("16x bank", large, True)]
        if named is not None:
            variants.append(("exact " + named, MultiIndexSpec(link=named, noise=noise).channel(), True))
        se_fixed_point(channel, alphas[0], args.precision, 0, 0)  # compile outside the timings
        for alpha in alphas:
            for seed in args.seeds:
                for name, ch, per_scramble in variants:
                    t0 = time.perf_counter()
                    fp = se_fixed_point(ch, alpha, args.precision, seed, seed if per_scramble else None)
                    seconds = time.perf_counter() - t0
                    q = np.round(np.diag(np.array(fp.overlap)), 5).tolist()
                    ci = np.round(fp.overlap_ci95, 5).tolist()
                    print(f"{formula!r} noise {noise} alpha {alpha} seed {seed} {name:>18}: q {q} +- {ci} "
                          f"phi {fp.free_entropy:.5f} evaluations {fp.iterations} {seconds:.2f} s", flush=True)


if __name__ == "__main__":
    main()
