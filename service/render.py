"""Raw solver results (cached dicts) -> response bodies.  Pure functions, no I/O."""
from __future__ import annotations

import math
from typing import Any, Optional

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
            "prediction_error_plugin", "free_entropy", "converged", "iterations", "residual")


def _fixed_point(fp: dict) -> dict:
    out = {k: fp.get(k) for k in _FP_KEYS}
    for k in ("mse", "prediction_error_bayes", "prediction_error_plugin", "free_entropy", "residual"):
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

