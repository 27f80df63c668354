"""Raw solver results (cached dicts) -> response bodies.  Pure functions, no I/O."""
from __future__ import annotations

import math
from typing import Any, Optional

from solvers.comparison import TheoryCurve, Threshold, compare, error_halfwidth
from solvers.sample_size import weak_recovery


def _finite(x) -> Optional[float]:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _solver(raw: dict) -> dict:
    settings = raw.get("settings") or {}
    return {"version": str(raw.get("solver_version", "unknown")),
            "method": str(raw.get("method") or settings.get("method") or "unknown"),
            "seconds": float(_finite(raw.get("seconds")) or 0.0)}


def _checks(raw: dict) -> list[dict]:
    return [{"name": str(c["name"]), "passed": bool(c["passed"]), "detail": str(c["detail"])}
            for c in raw.get("checks") or []]


def samples(alpha, dimension: Optional[int]) -> Optional[int]:
    a = _finite(alpha)
    if a is None or dimension is None:
        return None
    return int(math.ceil(a * dimension - 1e-9))


def thresholds(raw: dict, request: dict, cache: str) -> dict[str, Any]:
    dimension = request.get("dimension")
    entries = []
    for t in raw.get("thresholds", []):
        e = {"alpha": _finite(t.get("alpha")), "ci95": _finite(t.get("ci95")), "kind": t.get("kind")}
        if t.get("layer") is not None:
            e["layer"] = t["layer"]
        if t.get("direction") is not None:
            e["direction"] = [float(v) for v in t["direction"]]
        if t.get("reason"):
            e["reason"] = str(t["reason"])
        if dimension is not None:
            e["samples_needed"] = samples(e["alpha"], dimension)
        entries.append(e)
    entries.sort(key=lambda e: math.inf if e["alpha"] is None else e["alpha"])
    return {"model": raw.get("model", request.get("model")), "precision": request["precision"],
            "seed": request["seed"], "dimension": dimension, "thresholds": entries,
            "perfect_recovery_alpha": _finite(raw.get("perfect_recovery_alpha")),
            "perfect_recovery_ci95": _finite(raw.get("perfect_recovery_ci95")),
            "transitions": [_transition(t, dimension) for t in raw.get("transitions", [])],
            "checks": _checks(raw), "solver": _solver(raw), "cache": cache}


def _transition(t: dict, dimension) -> dict:
    e = {k: t.get(k) for k in ("transition", "kind", "coincide", "note")}
    e["alpha"], e["ci95"] = _finite(t.get("alpha")), _finite(t.get("ci95"))
    if dimension is not None:
        e["samples_needed"] = samples(e["alpha"], dimension)
    return e


_FP_KEYS = ("start", "overlap", "layer_overlaps", "overlap_ci95", "mse", "prediction_error_bayes",
            "prediction_error_plugin", "prediction_error_plugin_ci95", "free_entropy", "converged",
            "iterations", "residual")


def _fixed_point(fp: dict) -> dict:
    out = {k: fp.get(k) for k in _FP_KEYS}
    for k in ("mse", "prediction_error_bayes", "prediction_error_plugin", "prediction_error_plugin_ci95",
              "free_entropy", "residual"):
        out[k] = _finite(out[k])
    out["overlap"] = [[_finite(v) or 0.0 for v in row] for row in (out["overlap"] or [])]
    out["layer_overlaps"] = [_finite(v) or 0.0 for v in (out["layer_overlaps"] or [])]
    out["overlap_ci95"] = [_finite(v) for v in (out["overlap_ci95"] or [])]
    out["converged"] = bool(out["converged"])
    out["iterations"] = int(out["iterations"] or 0)
    return out


def state_evolution(raw: dict, request: dict, cache: str) -> dict[str, Any]:
    points = [{"alpha": float(p["alpha"]), "uninformed": _fixed_point(p["uninformed"]),
               "informed": _fixed_point(p["informed"]), "bayes_optimal": p["bayes_optimal"],
               "gap": bool(p.get("gap"))} for p in raw.get("points", [])]
    return {"model": raw.get("model", request.get("model")), "precision": request["precision"],
            "seed": request["seed"], "points": points, "checks": _checks(raw), "solver": _solver(raw),
            "cache": cache}


def sample_size(raw: dict, request: dict, cache: str) -> dict[str, Any]:
    dimension = request["dimension"]
    if "thresholds" in raw:  # weak recovery, read off a thresholds result
        alpha, ci95, method = weak_recovery(raw["thresholds"], request["target"])
        solver = {**_solver(raw), "method": method}
    else:
        alpha, ci95, solver = float(raw["alpha"]), _finite(raw.get("ci95")), _solver(raw)
    return {"model": raw.get("model", request.get("model")), "precision": request["precision"],
            "seed": request["seed"], "dimension": dimension, "target": request["target"],
            "alpha": _finite(alpha), "ci95": _finite(ci95),
            "samples": None if _finite(alpha) is None else max(1, samples(alpha, dimension)),
            "checks": _checks(raw), "solver": solver, "cache": cache}


def _rows(a) -> list:
    """Nested lists of numbers with non-finite values as null."""
    if isinstance(a, (list, tuple)):
        return [_rows(v) for v in a]
    return _finite(a)


def amp_simulation(raw: dict, request: dict, cache: str) -> dict[str, Any]:
    seeds = list(raw.get("seeds", []))
    per_seed = raw.get("layer_overlaps", [])
    n_iter = raw.get("run_iterations", [])
    conv = raw.get("converged", [])
    secs = raw.get("run_seconds", [])
    errs = raw.get("prediction_errors", [])
    runs = [{"seed": int(s), "layer_overlaps": _rows(per_seed[k]), "iterations": int(n_iter[k]),
             "converged": bool(conv[k]), "prediction_error": _finite(errs[k]),
             "seconds": float(_finite(secs[k]) or 0.0)} for k, s in enumerate(seeds)]
    se = raw.get("state_evolution") or {}
    return {"model": raw.get("model", request.get("model")), "dimension": request["dimension"],
            "alpha": request["alpha"], "samples": int(raw.get("samples", 0)),
            "seeds": request["seeds"], "iterations": request["iterations"],
            "damping": request["damping"], "index_names": [str(n) for n in raw.get("index_names", [])],
            "runs": runs,
            **{k: _rows(raw.get(k, [])) for k in ("layer_overlaps_mean", "layer_overlaps_std",
                                                  "layer_overlaps_min", "layer_overlaps_max",
                                                  "final_layer_overlaps_mean",
                                                  "final_layer_overlaps_std")},
            "learned_level": float(raw.get("learned_level", 0.5)),
            "first_learned": [[int(v) for v in row] for row in raw.get("first_learned", [])],
            "prediction_error_mean": _finite(raw.get("prediction_error_mean")),
            "prediction_error_std": _finite(raw.get("prediction_error_std")),
            "state_evolution": {"alpha": float(se.get("alpha", request["alpha"])), "start": "uninformed",
                                "precision": se.get("precision", "fast"),
                                "layer_overlaps": [_finite(v) or 0.0 for v in se.get("layer_overlaps", [])],
                                "overlap_ci95": [_finite(v) for v in se.get("overlap_ci95", [])],
                                "converged": bool(se.get("converged")),
                                "iterations": int(se.get("iterations") or 0)},
            "solver": _solver(raw)}


def threshold_label(t: dict, j: int) -> str:
    """A rendered threshold's name: its layer (deep attention) or its place j (a direction)."""
    return f"layer {t['layer']}" if t.get("layer") is not None else f"direction {j + 1}"


def _theory_curve(se_points: list[dict], branch: str):
    """The TheoryCurve of one branch ("bayes_optimal": the point's larger free entropy, or
    "uninformed": AMP) from rendered state-evolution points sorted by alpha."""
    fps = [p[p["bayes_optimal"]] if branch == "bayes_optimal" else p[branch] for p in se_points]
    return TheoryCurve(alphas=tuple(p["alpha"] for p in se_points),
                       errors=tuple(float(fp["prediction_error_plugin"]) for fp in fps),
                       overlaps=tuple(tuple(fp["layer_overlaps"]) for fp in fps),
                       overlap_ci95=tuple(tuple(math.inf if v is None else v for v in fp["overlap_ci95"])
                                          for fp in fps),
                       # results cached before the plug-in error had its half-width: unknown (inf)
                       error_ci95=tuple(math.inf if fp.get("prediction_error_plugin_ci95") is None
                                        else fp["prediction_error_plugin_ci95"] for fp in fps))


def comparison(request: dict, theory_points: list[dict], job_id: str, solver_version: str) -> dict[str, Any]:
    """A comparison's body from its finished theory points (the sweep points of
    ``service.sweeps.view``: one state-evolution point per alpha of the theory grid, the user's
    alphas among them, each /v1/state-evolution's point, and the thresholds)."""
    dimension = request["dimension"]
    se_points = sorted((p["result"] for p in theory_points if p["kind"] == "state_evolution"),
                       key=lambda p: p["alpha"])
    thresholds_body = next(p["result"] for p in theory_points if p["kind"] == "thresholds")
    bo, amp = _theory_curve(se_points, "bayes_optimal"), _theory_curve(se_points, "uninformed")
    ths = [Threshold(threshold_label(t, j), _finite(t.get("alpha")), _finite(t.get("ci95")))
           for j, t in enumerate(thresholds_body["thresholds"])]
    pr = _finite(thresholds_body.get("perfect_recovery_alpha"))
    perfect = [] if pr is None else [Threshold("perfect recovery", pr, None)]
    pts = request["points"]
    res = compare(dimension, [p["samples"] for p in pts], [p["test_error"] for p in pts],
                  [p.get("error_bar") for p in pts], bo, amp, ths, perfect).to_dict()
    for p in res["points"]:
        for est in ("bayes_optimal", "amp"):
            p[est]["ci95"] = _finite(p[est]["ci95"])
            p[est]["alpha_needed_range"] = [_finite(v) for v in p[est]["alpha_needed_range"]]
    curve = {"alphas": list(bo.alphas), "samples": [samples(a, dimension) for a in bo.alphas],
             "bayes_optimal": list(bo.errors),
             "bayes_optimal_ci95": [_finite(error_halfwidth(bo, i)) for i in range(len(bo.alphas))],
             "amp": list(amp.errors),
             "amp_ci95": [_finite(error_halfwidth(amp, i)) for i in range(len(amp.alphas))]}
    return {"id": job_id, "model": request["model"], "dimension": dimension, "metric": request["metric"],
            "precision": request["precision"], "seed": request["seed"], "points": res["points"],
            "summary": res["summary"], "theory": curve,
            "thresholds": [{"label": t.label, "kind": kind, "alpha": t.alpha, "ci95": t.ci95,
                            "samples": samples(t.alpha, dimension)}
                           for kind, group in (("weak_recovery", ths), ("perfect_recovery", perfect))
                           for t in group],
            "theory_points": {"total": len(theory_points),
                              "from_cache": sum(p["cache"] == "hit" for p in theory_points)},
            "plot": {"png": f"/v1/jobs/{job_id}/plot.png", "svg": f"/v1/jobs/{job_id}/plot.svg"},
            "solver": {"version": solver_version,
                       "method": "state evolution on a 2^(k/4) alpha grid with the user's alphas "
                                 "(Bayes-optimal: larger free entropy; AMP: uninformed start), "
                                 "inverted linearly in log alpha; thresholds from /v1/thresholds",
                       "seconds": float(sum(float(p.get("seconds") or 0.0) for p in theory_points))}}
