"""What runs inside the numerical pool's processes.  Nothing here touches asyncio.

Results cross the process boundary as plain dicts; errors as ("spec_error", {...}) tuples,
because SpecError does not survive pickling with its attributes.
"""
from __future__ import annotations

import os
import time
import traceback


class JobCancelled(Exception):
    pass


def init_worker(warm: bool = True) -> None:
    """Pool initializer: import the solvers and compile their numba kernels once."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if not warm:
        return
    import solvers

    fn = getattr(solvers, "warm_up", None)
    if fn is not None:
        fn()


def ping() -> dict:
    import solvers

    return {"pid": os.getpid(), "version": getattr(solvers, "__version__", "unknown")}


class Progress:
    """The solvers' progress callback: writes (done, total) to a shared dict and raises
    :class:`JobCancelled` when the job's cancel flag is set.  Throttled to 5 updates/s."""

    def __init__(self, table, job_id: str):
        self.table = table
        self.job_id = job_id
        self._last = 0.0

    def __getstate__(self):
        return {"table": self.table, "job_id": self.job_id, "_last": 0.0}

    def started(self) -> None:
        """Record which process runs the job (so a cancel can stop it if it never reports)."""
        try:
            if self.table is not None:
                self.table["pid:" + self.job_id] = os.getpid()
        except Exception:
            pass

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if self.table is None or (now - self._last < 0.2 and done < total):
            return
        self._last = now
        try:
            self.table[self.job_id] = (int(done), int(total))
            cancelled = self.table.get("cancel:" + self.job_id)
        except Exception:  # the manager went away: keep computing
            return
        if cancelled:
            raise JobCancelled(self.job_id)


def _api(name: str):
    """``solvers.<name>`` (the public API), falling back to the defining module."""
    import importlib

    import solvers

    fn = getattr(solvers, name, None)
    if fn is None:
        module = {"layer_thresholds": "solvers.thresholds",
                  "state_evolution": "solvers.state_evolution",
                  "fixed_point": "solvers.state_evolution"}[name]
        fn = getattr(importlib.import_module(module), name)
    return fn


def amp_simulation(spec, params: dict, progress=None) -> dict:
    """GAMP on ``seeds`` fresh instances and, next to it, the SE fixed point from the
    uninformed start at the same alpha.  Progress: one step per GAMP iteration and seed,
    plus a last one for the SE prediction (total = seeds * iterations + 1)."""
    from solvers.amp import amp_simulation as simulate

    seeds, iterations = int(params["seeds"]), int(params["iterations"])
    total = seeds * iterations + 1
    cb = None if progress is None else (lambda done, _total: progress(min(done, total - 1), total))
    res = simulate(spec, int(params["dimension"]), float(params["alpha"]), seeds=seeds,
                   iterations=iterations, damping=float(params["damping"]), progress=cb)
    out = res.to_dict()
    out["run_seconds"] = out.pop("seconds")
    out["run_iterations"] = out.pop("iterations")
    out["samples"] = int(res.runs[0].n_samples)
    out["prediction_errors"] = [float(r.prediction_error) for r in res.runs]
    out["method"] = "GAMP (Bayes-optimal, tied tokens) vs state evolution (uninformed start)"
    fp = _api("fixed_point")(spec, float(params["alpha"]), start="uninformed",
                             precision=params["se_precision"], seed=0)
    out["state_evolution"] = {"alpha": float(params["alpha"]), "start": "uninformed",
                              "precision": params["se_precision"],
                              "layer_overlaps": [float(v) for v in fp.layer_overlaps],
                              "overlap_ci95": [float(v) for v in fp.overlap_ci95],
                              "converged": bool(fp.converged), "iterations": int(fp.iterations)}
    if progress is not None:
        progress(total, total)
    return out


def run(kind: str, spec_dict: dict, params: dict, progress=None):
    """Run one computation; returns ("ok", result_dict) or (error_kind, info)."""
    import solvers

    if isinstance(progress, Progress):
        progress.started()
    try:
        spec = solvers.spec_from_dict(dict(spec_dict))
        t0 = time.perf_counter()
        if kind == "thresholds":
            res = _api("layer_thresholds")(spec, precision=params["precision"], seed=params["seed"],
                                           progress=progress)
        elif kind == "state_evolution":
            res = _api("state_evolution")(spec, list(params["alphas"]), precision=params["precision"],
                                          seed=params["seed"], progress=progress)
        elif kind == "sample_size":
            from solvers.sample_size import sample_size

            res = sample_size(spec, params["dimension"], params["target"],
                              precision=params["precision"], seed=params["seed"], progress=progress)
        elif kind == "amp_simulation":
            res = None
            out = amp_simulation(spec, params, progress)
        else:
            return ("error", {"detail": f"unknown computation {kind!r}"})
        if res is not None:
            out = res.to_dict()
        out.setdefault("seconds", time.perf_counter() - t0)
        return ("ok", out)
    except JobCancelled:
        return ("cancelled", {})
    except solvers.SpecError as exc:
        return ("spec_error", {"parameter": str(exc.parameter), "value": repr(exc.value),
                               "allowed": str(exc.allowed), "detail": str(exc)})
    except Exception as exc:  # a solver failure must not take the service down
        return ("error", {"detail": f"{type(exc).__name__}: {exc}",
                          "traceback": traceback.format_exc(limit=5)})
