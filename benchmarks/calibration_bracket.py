"""The SE bracket and the other self-checks of every deep-attention model L <= 4, M <= 4 (issue 14).
Run:

    python benchmarks/calibration_bracket.py [--precisions fast standard] [--out bracket.jsonl]
                                             [--only L,M ...]

For each model (default skip and beta), cheapest first, and each precision asked for:
``layer_thresholds(spec, precision, seed=0, se_bracket=True)``, i.e. the thresholds, perfect
recovery and the checks (counting bound, staircase order, precision target, SE bracket: SE from
the uninformed start at 0.95x and 1.05x of each threshold shows that layer off then on).
Each row is printed (Markdown, the README's table) and appended to ``--out`` as one JSON line
as soon as it is done, so a partial run is not lost; models already in ``--out`` are skipped,
so a stopped run resumes.  With two or more precisions, the models' thresholds are also
compared pairwise: agreement within the sum of the half-widths (printed at the end).
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import time

import _checkout  # noqa: F401  (this checkout's solvers, not the installed ones)
from solvers import DeepAttentionSpec, layer_thresholds, warm_up
from solvers.checks import ROUNDING
from solvers.limits import MAX_LAYERS, MAX_TOKENS

# cheapest first: the cost grows with the number of layers (staircase steps, each a root search
# in a larger overlap) and with M (the inner integral's dimension)
MODELS = sorted(itertools.product(range(1, MAX_LAYERS + 1), range(2, MAX_TOKENS + 1)),
                key=lambda lm: (lm[0] + lm[1], lm[0]))


def _fmt(t: dict) -> str:
    if not math.isfinite(t["alpha"]):
        return f"L{t['layer']}: inf"
    return f"L{t['layer']}: {t['alpha']:.4g} +- {t['ci95']:.2g}"


def row_markdown(row: dict) -> str:
    thresholds = "; ".join(_fmt(t) for t in row["thresholds"])
    pr = ("-" if row["perfect_recovery_alpha"] is None
          else f"{row['perfect_recovery_alpha']:.4g} +- {row['perfect_recovery_ci95']:.2g}")
    passed = ", ".join(c["name"] for c in row["checks"] if c["passed"])
    failed = "; ".join(f"**{c['name']}**: {c['detail']}" for c in row["checks"] if not c["passed"])
    return (f"| {row['layers']} | {row['tokens']} | {row['precision']} | {thresholds} | {pr} "
            f"| {passed} | {failed or '-'} | {row['seconds']:.0f} |")


def agreement(rows: list[dict]) -> list[str]:
    """Pairwise agreement across precisions of each model's thresholds (same layer)."""
    lines = []
    by_model: dict[tuple, dict] = {}
    for r in rows:
        by_model.setdefault((r["layers"], r["tokens"]), {})[r["precision"]] = r
    for (L, M), per in sorted(by_model.items()):
        for a, b in itertools.combinations(sorted(per), 2):
            ta = {t["layer"]: t for t in per[a]["thresholds"]}
            tb = {t["layer"]: t for t in per[b]["thresholds"]}
            for layer in sorted(ta):
                x, y = ta[layer], tb[layer]
                if not (math.isfinite(x["alpha"]) and math.isfinite(y["alpha"])):
                    ok = x["alpha"] == y["alpha"]
                    diff = slack = float("nan")
                else:
                    diff = abs(x["alpha"] - y["alpha"])
                    slack = x["ci95"] + y["ci95"] + ROUNDING * x["alpha"]
                    ok = diff <= slack
                lines.append(f"| {L} | {M} | layer {layer} | {a} {x['alpha']:.5g} +- {x['ci95']:.2g} "
                             f"| {b} {y['alpha']:.5g} +- {y['ci95']:.2g} | {diff:.3g} <= {slack:.3g}: "
                             f"{'yes' if ok else '**no**'} |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--precisions", nargs="+", default=["fast"])
    ap.add_argument("--out", default="calibration_bracket.jsonl")
    ap.add_argument("--only", nargs="*", help="models as L,M (default: all L <= 4, M <= 4)")
    args = ap.parse_args()
    models = MODELS if not args.only else [tuple(int(x) for x in s.split(",")) for s in args.only]
    done = []
    if os.path.exists(args.out):
        with open(args.out) as fh:
            done = [json.loads(line) for line in fh if line.strip()]
    seen = {(r["layers"], r["tokens"], r["precision"]) for r in done}
    warm_up()
    print("| L | M | precision | thresholds | perfect recovery | checks passed | checks failed | seconds |")
    print("|---|---|---|---|---|---|---|---|")
    for r in done:
        print(row_markdown(r), flush=True)
    for precision in args.precisions:  # every model at the first precision before the next
        for L, M in models:
            if (L, M, precision) in seen:
                continue
            t0 = time.perf_counter()
            result = layer_thresholds(DeepAttentionSpec(layers=L, tokens=M), precision, seed=0, se_bracket=True)
            d = result.to_dict()
            row = {"layers": L, "tokens": M, "precision": precision, "seconds": time.perf_counter() - t0,
                   "thresholds": d["thresholds"], "perfect_recovery_alpha": d["perfect_recovery_alpha"],
                   "perfect_recovery_ci95": d["perfect_recovery_ci95"], "checks": d["checks"],
                   "solver_version": d["solver_version"]}
            done.append(row)
            with open(args.out, "a") as fh:
                fh.write(json.dumps(row) + "\n")
            print(row_markdown(row), flush=True)
    lines = agreement(done)
    if lines:
        print("\n| L | M | threshold | one precision | other | difference <= combined half-widths |")
        print("|---|---|---|---|---|---|")
        print("\n".join(lines))


if __name__ == "__main__":
    main()
