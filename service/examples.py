"""Examples for the OpenAPI document (one per endpoint)."""
from solvers import __version__ as SOLVERS_VERSION

PAPER_MODEL = {"family": "deep_attention", "layers": 2, "tokens": 2, "skip": [1.0, 1.0],
               "beta": [1.0, 1.0], "noise": 0.0}
SOLVER = {"version": SOLVERS_VERSION, "method": "staircase", "seconds": 8.6}
THRESHOLD_CHECKS = [
    {"name": "staircase order", "passed": True, "detail": "2 thresholds in learned order, each at or above the last"},
    {"name": "counting bound", "passed": True, "detail": "perfect recovery 1 +- 9.2e-17 vs the counting bound 1"},
    {"name": "precision target", "passed": True,
     "detail": "every half-width within fast's 2.0% (at Q = 0) / 2.0% (staircase)"}]

THRESHOLDS = {
    "model": PAPER_MODEL, "precision": "fast", "seed": 0, "dimension": 768,
    "thresholds": [
        {"layer": 2, "alpha": 0.18548, "ci95": 4.5e-12, "kind": "linear_stability", "samples_needed": 143},
        {"layer": 1, "alpha": 0.72477, "ci95": 0.0103, "kind": "staircase", "samples_needed": 557}],
    "perfect_recovery_alpha": 1.0, "perfect_recovery_ci95": 9.2e-17, "checks": THRESHOLD_CHECKS,
    "solver": SOLVER, "cache": "hit"}

_FP = {"overlap": [[0.0, 0.0], [0.0, 0.41]], "layer_overlaps": [0.0, 0.41],
       "overlap_ci95": [0.0, 0.004], "mse": 1.59, "prediction_error_bayes": 0.21,
       "prediction_error_plugin": 0.27, "free_entropy": -0.12, "converged": True,
       "iterations": 41, "residual": 1e-9}
STATE_EVOLUTION = {
    "model": PAPER_MODEL, "precision": "fast", "seed": 0,
    "points": [{"alpha": 0.5, "uninformed": {"start": "uninformed", **_FP},
                "informed": {"start": "informed", **_FP}, "bayes_optimal": "uninformed", "gap": False}],
    "checks": [{"name": "converged", "passed": True, "detail": "all 2 fixed points met the stopping rule"},
               {"name": "branch order", "passed": True,
                "detail": "the informed branch lies at or above the uninformed one everywhere"}],
    "solver": SOLVER, "cache": "miss"}

SAMPLE_SIZE = {"model": PAPER_MODEL, "precision": "fast", "seed": 0, "dimension": 768,
               "target": {"kind": "weak_recovery", "layers": "all"}, "alpha": 0.72477, "ci95": 0.0103,
               "samples": 557, "checks": THRESHOLD_CHECKS, "solver": {**SOLVER, "method": "weak-recovery threshold (staircase)"},
               "cache": "hit"}

ACCEPTED = {"id": "5f0c6f1c2b7e4b1e9a8f3a6d2c1b0e9f", "status": "queued",
            "location": "/v1/jobs/5f0c6f1c2b7e4b1e9a8f3a6d2c1b0e9f"}

JOB = {"id": "5f0c6f1c2b7e4b1e9a8f3a6d2c1b0e9f", "kind": "thresholds", "status": "running",
       "progress": {"done": 1, "total": 3}, "estimated_seconds": 60.0, "lane": "expensive",
       "queue_position": None, "eta_seconds": 56.5,
       "created_at": 1764385200.0, "updated_at": 1764385203.5,
       "request": {"model": PAPER_MODEL, "precision": "standard", "seed": 0, "dimension": None,
                   "se_bracket": False},
       "result": None, "error": None}

MODELS = {"families": {"deep_attention": {"description": "Deep tied low-rank attention",
                                          "parameters": {"layers": {"type": "integer", "min": 1,
                                                                    "max": 4, "default": 2}}}},
          "precisions": {"fast": {"ci95_relative": [0.02, 0.02]}}, "solver_version": "0.4.0"}

PROBLEM = {"type": "/problems/validation-error", "title": "Invalid request", "status": 422,
           "detail": "model.layers: Input should be less than or equal to 4; allowed: an integer in [1, 4]",
           "field": "model.layers", "allowed": "an integer in [1, 4]",
           "errors": [{"field": "model.layers", "message": "Input should be less than or equal to 4",
                       "allowed": "an integer in [1, 4]", "value": 7}]}

AMP_PROBLEM = {"type": "/problems/validation-error", "title": "Invalid request", "status": 422,
               "detail": "seeds: Input should be less than or equal to 10; allowed: an integer in "
                         "[1, 10] (runs on seeds 0 .. seeds - 1)",
               "field": "seeds", "allowed": "an integer in [1, 10] (runs on seeds 0 .. seeds - 1)",
               "errors": [{"field": "seeds", "message": "Input should be less than or equal to 10",
                           "allowed": "an integer in [1, 10] (runs on seeds 0 .. seeds - 1)", "value": 11}]}

_AMP_REQUEST = {"model": {"family": "multi_index", "link": "square", "indices": 1, "noise": 0.0},
                "dimension": 200, "alpha": 2.0, "seeds": 2, "iterations": 3, "damping": 0.0}
AMP_JOB = {"id": "9b1d3c5e7f9a4b2c8d6e0f1a3b5c7d9e", "kind": "amp_simulation", "status": "done",
           "progress": {"done": 7, "total": 7}, "estimated_seconds": 0.23, "lane": "cheap",
           "queue_position": None, "eta_seconds": None,
           "created_at": 1764385200.0, "updated_at": 1764385201.2,
           "request": _AMP_REQUEST,
           "result": {**{k: v for k, v in _AMP_REQUEST.items()}, "samples": 400, "index_names": ["w1"],
                      "runs": [{"seed": 0, "layer_overlaps": [[0.0], [0.12], [0.71], [0.99]],
                                "iterations": 3, "converged": False, "prediction_error": 0.05,
                                "seconds": 0.02},
                               {"seed": 1, "layer_overlaps": [[0.0], [0.09], [0.64], [0.98]],
                                "iterations": 3, "converged": False, "prediction_error": 0.07,
                                "seconds": 0.02}],
                      "layer_overlaps_mean": [[0.0], [0.105], [0.675], [0.985]],
                      "layer_overlaps_std": [[0.0], [0.021], [0.049], [0.007]],
                      "layer_overlaps_min": [[0.0], [0.09], [0.64], [0.98]],
                      "layer_overlaps_max": [[0.0], [0.12], [0.71], [0.99]],
                      "final_layer_overlaps_mean": [0.985], "final_layer_overlaps_std": [0.007],
                      "learned_level": 0.5, "first_learned": [[2], [2]],
                      "prediction_error_mean": 0.06, "prediction_error_std": 0.014,
                      "state_evolution": {"alpha": 2.0, "start": "uninformed", "precision": "fast",
                                          "layer_overlaps": [1.0], "overlap_ci95": [0.0],
                                          "converged": True, "iterations": 12},
                      "solver": {"version": "amp-0.1.1",
                                 "method": "GAMP (Bayes-optimal, tied tokens) vs state evolution "
                                           "(uninformed start)", "seconds": 0.1}},
           "error": None}

HEALTH = {"status": "ok"}
READY = {"status": "ready", "cache": {"backend": "redis", "available": True},
         "solvers": {"ready": True, "version": SOLVERS_VERSION, "workers": 2, "cheap_workers": 1,
                     "start_seconds": 2.1, "kernels": "compiled", "warm_up_seconds": 12.5}}
METRICS = ("# HELP staircase_cache_hits_total Answers served from the cache\n"
           "# TYPE staircase_cache_hits_total counter\n"
           "staircase_cache_hits_total{kind=\"thresholds\"} 42.0\n")
