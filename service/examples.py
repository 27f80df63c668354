"""Examples for the OpenAPI document (one per endpoint)."""

PAPER_MODEL = {"family": "deep_attention", "layers": 2, "tokens": 2, "skip": [1.0, 1.0],
               "beta": [1.0, 1.0], "noise": 0.0}
SOLVER = {"version": "0.1.0", "method": "staircase", "seconds": 61.6}

THRESHOLDS = {
    "model": PAPER_MODEL, "precision": "fast", "seed": 0, "dimension": 768,
    "thresholds": [
        {"layer": 2, "alpha": 0.18548, "ci95": 4.5e-12, "kind": "linear_stability", "samples_needed": 143},
        {"layer": 1, "alpha": 0.72455, "ci95": 0.0116, "kind": "staircase", "samples_needed": 557}],
    "perfect_recovery_alpha": None, "perfect_recovery_ci95": None, "solver": SOLVER, "cache": "hit"}

_FP = {"overlap": [[0.0, 0.0], [0.0, 0.41]], "layer_overlaps": [0.0, 0.41],
       "overlap_ci95": [0.0, 0.004], "mse": 1.59, "prediction_error_bayes": 0.21,
       "prediction_error_plugin": 0.27, "free_entropy": -0.12, "converged": True,
       "iterations": 41, "residual": 1e-9}
STATE_EVOLUTION = {
    "model": PAPER_MODEL, "precision": "fast", "seed": 0,
    "points": [{"alpha": 0.5, "uninformed": {"start": "uninformed", **_FP},
                "informed": {"start": "informed", **_FP}, "bayes_optimal": "uninformed", "gap": False}],
    "solver": SOLVER, "cache": "miss"}

SAMPLE_SIZE = {"model": PAPER_MODEL, "precision": "fast", "seed": 0, "dimension": 768,
               "target": {"kind": "weak_recovery", "layers": "all"}, "alpha": 0.72455, "ci95": 0.0116,
               "samples": 557, "solver": {**SOLVER, "method": "weak-recovery threshold (staircase)"},
               "cache": "hit"}

ACCEPTED = {"id": "5f0c6f1c2b7e4b1e9a8f3a6d2c1b0e9f", "status": "queued",
            "location": "/v1/jobs/5f0c6f1c2b7e4b1e9a8f3a6d2c1b0e9f"}

JOB = {"id": "5f0c6f1c2b7e4b1e9a8f3a6d2c1b0e9f", "kind": "thresholds", "status": "running",
       "progress": {"done": 3, "total": 8}, "created_at": 1764385200.0, "updated_at": 1764385203.5,
       "request": {"model": PAPER_MODEL, "precision": "standard", "seed": 0, "dimension": None},
       "result": None, "error": None}

MODELS = {"families": {"deep_attention": {"description": "Deep tied low-rank attention",
                                          "parameters": {"layers": {"type": "integer", "min": 1,
                                                                    "max": 4, "default": 2}}}},
          "precisions": {"fast": {"ci95_relative": [0.02, 0.02]}}, "solver_version": "0.1.0"}

PROBLEM = {"type": "/problems/validation-error", "title": "Invalid request", "status": 422,
           "detail": "model.layers: Input should be less than or equal to 4; allowed: an integer in [1, 4]",
           "field": "model.layers", "allowed": "an integer in [1, 4]",
           "errors": [{"field": "model.layers", "message": "Input should be less than or equal to 4",
                       "allowed": "an integer in [1, 4]", "value": 7}]}

HEALTH = {"status": "ok"}
READY = {"status": "ready", "cache": {"backend": "redis", "available": True},
         "solvers": {"ready": True, "version": "0.1.0", "workers": 2, "warm_up_seconds": 12.5}}
METRICS = ("# HELP staircase_cache_hits_total Answers served from the cache\n"
           "# TYPE staircase_cache_hits_total counter\n"
           "staircase_cache_hits_total{kind=\"thresholds\"} 42.0\n")
