"""GAMP benchmark and the D = 2000 runs of issue 4.

    python benchmarks/bench_amp.py                 # timing + all issue-4 runs (D = 2000)
    python benchmarks/bench_amp.py --only timing   # just the speed target
    python benchmarks/bench_amp.py --dimension 500 --seeds 3   # quicker look

Timing: L = 2, M = 2, c = 1, D = 2000, alpha = 1.2, 50 iterations (tol = 0, so all 50 are
run), median over seeds of the GAMP wall time (instance generation reported apart).
Target: at most 60 s on 2 cores.

Runs: phase retrieval (square) at alpha = 1.0 and 0.3; deep attention L = 2, M = 2, c = 1
at alpha = 0.5 and 1.2; 5 seeds each.  The table gives per-layer final overlaps
|w_hat_l . w*_l| / D as mean +- sd over seeds (min..max), the SE value beside them, and the
iteration at which each layer's overlap first exceeds 0.5 (which layer is learned first).
"SE" is the uninformed fixed point of the project's solver (solvers/state_evolution.py) with
its 95% half-width; "SE ref" an independent value: for phase retrieval computed here by
Monte-Carlo (two-point posterior z = +-sqrt(y), closed form), for deep attention the
published reference curve shared/reference/se_overlaps_L2_M2_c1.csv (a few percent noise).
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from _checkout import ROOT  # this checkout's solvers, not the installed ones

from solvers.amp import amp_simulation, gamp, generate_instance  # noqa: E402
from solvers.models import DeepAttentionSpec, MultiIndexSpec  # noqa: E402

REFERENCE = ROOT.parent / "shared" / "reference" / "se_overlaps_L2_M2_c1.csv"


def phase_retrieval_se(alpha: float, iterations: int = 3000, q0: float = 1e-6,
                       samples: int = 1 << 20, seed: int = 0) -> float:
    """SE fixed point of noiseless phase retrieval from a small start (what AMP reaches).

    Given y = z^2 and z ~ N(omega, V), z = +-sqrt(y) with weights N(+-sqrt(y); omega, V):
    E[z | y, omega] = sqrt(y) tanh(sqrt(y) omega / V).  Qhat = alpha E[g^2], g = (E[z|.] - omega)/V.
    """
    rng = np.random.default_rng(seed)
    xi, u = rng.standard_normal((2, samples))
    q = q0
    for _ in range(iterations):
        v = max(1.0 - q, 1e-12)
        omega = np.sqrt(q) * xi
        z = omega + np.sqrt(v) * u
        r = np.abs(z)
        mean = r * np.tanh(r * omega / v)
        qhat = alpha * np.mean((mean - omega) ** 2) / v ** 2
        q_new = qhat / (1 + qhat)
        if abs(q_new - q) < 1e-11:
            q = q_new
            break
        q = q_new
    return q


def attention_reference(alpha: float):
    if not REFERENCE.exists():
        return None
    data = np.loadtxt(REFERENCE, delimiter=",", skiprows=1)
    return (float(np.interp(alpha, data[:, 0], data[:, 1])),
            float(np.interp(alpha, data[:, 0], data[:, 2])))


def timing(dimension: int, seeds, iterations: int = 50) -> dict:
    spec = DeepAttentionSpec(layers=2, tokens=2, skip=1.0, beta=1.0)
    ch = spec.channel()
    # warm the numba caches outside the timed region
    gamp(ch, generate_instance(ch, 50, 1.2, 0), iterations=2, tol=0.0)
    gen, run, cpu = [], [], []
    for s in seeds:
        t0 = time.perf_counter()
        inst = generate_instance(ch, dimension, 1.2, s)
        gen.append(time.perf_counter() - t0)
        r = gamp(ch, inst, iterations=iterations, tol=0.0)
        run.append(r.seconds)
        cpu.append(r.cpu_seconds)
    return {"dimension": dimension, "alpha": 1.2, "iterations": iterations, "seeds": list(seeds),
            "gamp_seconds": run, "gamp_median_seconds": float(np.median(run)),
            "gamp_cpu_seconds": cpu, "instance_seconds_median": float(np.median(gen)),
            "load_average": os.getloadavg()}


def project_se(spec, alpha: float, precision: str):
    """Uninformed SE fixed point from the project's solver (solvers/state_evolution.py)."""
    if precision == "none":
        return None, None
    try:
        from solvers.state_evolution import fixed_point
    except ImportError:
        return None, None
    fp = fixed_point(spec, alpha, start="uninformed", precision=precision)
    return tuple(fp.layer_overlaps), tuple(fp.overlap_ci95)


def issue_runs(dimension: int, seeds, iterations: int, which=("pr", "attention"),
               se_precision: str = "standard", damping: float = 0.0) -> list[dict]:
    rows = []
    cases = []
    if "pr" in which:
        pr = MultiIndexSpec(link="square")
        cases += [("phase retrieval", pr, 1.0, None), ("phase retrieval", pr, 0.3, None)]
    if "attention" in which:
        da = DeepAttentionSpec(layers=2, tokens=2, skip=1.0, beta=1.0)
        cases += [("attention L2 M2 c1", da, 0.5, None), ("attention L2 M2 c1", da, 1.2, None)]
    for name, spec, alpha, _ in cases:
        t0 = time.perf_counter()
        res = amp_simulation(spec, dimension, alpha, seeds=seeds, iterations=iterations,
                             damping=damping)
        wall = time.perf_counter() - t0
        if isinstance(spec, MultiIndexSpec):
            ref = (phase_retrieval_se(alpha),)
        else:
            ref = attention_reference(alpha)
        se, se_ci = project_se(spec, alpha, se_precision)
        rows.append({
            "model": name, "alpha": alpha, "dimension": dimension, "seeds": list(res.seeds),
            "index_names": list(res.index_names),
            "final_mean": res.final_layer_overlaps_mean.tolist(),
            "final_std": res.final_layer_overlaps_std.tolist(),
            "final_min": res.layer_overlaps[:, -1].min(0).tolist(),
            "final_max": res.layer_overlaps[:, -1].max(0).tolist(),
            "se_ref": None if ref is None else list(ref),
            "se": None if se is None else list(se),
            "se_ci95": None if se_ci is None else list(se_ci),
            "first_learned": res.first_learned.tolist(),
            "iterations": list(res.iterations), "converged": list(res.converged),
            "prediction_error_mean": res.prediction_error_mean,
            "prediction_error_std": res.prediction_error_std,
            "mean_trajectory": res.layer_overlaps_mean.tolist(),
            "seconds": wall,
        })
    return rows


def print_table(rows: list[dict]) -> None:
    head = (f"{'model':<20} {'alpha':>5} {'D':>5} {'layer':<8} {'overlap mean+-sd':>18} "
            f"{'min..max':>13} {'SE+-ci95':>14} {'SE ref':>7} {'first>0.5 (per seed)':<24} "
            f"{'pred.err':>16} {'s':>6}")
    print(head)
    print("-" * len(head))
    for r in rows:
        for l, nm in enumerate(r["index_names"]):
            se = "" if r["se"] is None else f"{r['se'][l]:.3f}+-{r['se_ci95'][l]:.3f}"
            ref = "" if r["se_ref"] is None else f"{r['se_ref'][l]:.3f}"
            fl = ",".join(str(x[l]) for x in r["first_learned"])
            pe = f"{r['prediction_error_mean']:.4f}+-{r['prediction_error_std']:.4f}" if l == 0 else ""
            sec = f"{r['seconds']:.0f}" if l == 0 else ""
            print(f"{r['model'] if l == 0 else '':<20} {r['alpha'] if l == 0 else '':>5} "
                  f"{r['dimension'] if l == 0 else '':>5} {nm:<8} "
                  f"{r['final_mean'][l]:>8.3f} +- {r['final_std'][l]:<6.3f} "
                  f"{r['final_min'][l]:>6.3f}..{r['final_max'][l]:<6.3f} {se:>14} {ref:>7} {fl:<24} "
                  f"{pe:>16} {sec:>6}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dimension", type=int, default=2000)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--iterations", type=int, default=100, help="for the issue-4 runs")
    ap.add_argument("--timing-seeds", type=int, default=3)
    ap.add_argument("--only", choices=["timing", "runs", "pr", "attention"], default=None)
    ap.add_argument("--se-precision", choices=["none", "fast", "standard", "precise"], default="standard",
                    help="precision of the project's SE solver for the SE column")
    ap.add_argument("--damping", type=float, default=0.0, help="GAMP damping for the issue-4 runs")
    ap.add_argument("--json", type=str, default=None, help="write all numbers to this file")
    args = ap.parse_args(argv)
    out = {"cpus": os.cpu_count()}
    if args.only in (None, "timing"):
        t = timing(args.dimension, list(range(args.timing_seeds)))
        out["timing"] = t
        print(f"timing: L=2 M=2 c=1 D={t['dimension']} alpha=1.2, {t['iterations']} iterations: "
              f"median GAMP {t['gamp_median_seconds']:.2f} s over seeds {t['seeds']} "
              f"(runs {', '.join(f'{s:.2f}' for s in t['gamp_seconds'])} s; instance generation "
              f"{t['instance_seconds_median']:.2f} s; CPU time {', '.join(f'{s:.1f}' for s in t['gamp_cpu_seconds'])} s; "
              f"{out['cpus']} cpus, load average {', '.join(f'{x:.1f}' for x in t['load_average'])})")
    if args.only != "timing":
        which = {"runs": ("pr", "attention"), None: ("pr", "attention"), "pr": ("pr",),
                 "attention": ("attention",)}[args.only]
        rows = issue_runs(args.dimension, list(range(args.seeds)), args.iterations, which,
                          args.se_precision, args.damping)
        out["runs"] = rows
        print()
        print_table(rows)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
