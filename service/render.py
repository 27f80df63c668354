"""Raw solver results (cached dicts) -> response bodies.  Pure functions, no I/O."""
from __future__ import annotations

import math
from typing import Any, Optional


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
        if dimension is not None:
            e["samples_needed"] = samples(e["alpha"], dimension)
        entries.append(e)
    entries.sort(key=lambda e: math.inf if e["alpha"] is None else e["alpha"])
    return {"model": raw.get("model", request.get("model")), "precision": request["precision"],
            "seed": request["seed"], "dimension": dimension, "thresholds": entries,
            "perfect_recovery_alpha": _finite(raw.get("perfect_recovery_alpha")),
            "perfect_recovery_ci95": _finite(raw.get("perfect_recovery_ci95")),
            "solver": _solver(raw), "cache": cache}


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
            "seed": request["seed"], "points": points, "solver": _solver(raw), "cache": cache}


def sample_size(raw: dict, request: dict, cache: str) -> dict[str, Any]:
    dimension = request["dimension"]
    if "thresholds" in raw:  # weak recovery, read off a thresholds result
        from solvers.sample_size import weak_recovery

        alpha, ci95, method = weak_recovery(raw["thresholds"], request["target"])
        solver = {**_solver(raw), "method": method}
    else:
        alpha, ci95, solver = float(raw["alpha"]), _finite(raw.get("ci95")), _solver(raw)
    return {"model": raw.get("model", request.get("model")), "precision": request["precision"],
            "seed": request["seed"], "dimension": dimension, "target": request["target"],
            "alpha": _finite(alpha), "ci95": _finite(ci95),
            "samples": None if _finite(alpha) is None else max(1, samples(alpha, dimension)),
            "solver": solver, "cache": cache}


RENDER = {"thresholds": thresholds, "state_evolution": state_evolution, "sample_size": sample_size}
