"""The registry of computation kinds: everything the service knows about one kind of question.

A :class:`Computation` names its endpoint (path, request schema, response schema for the
document), how a validated request becomes a :class:`Question` (the solver spec, validated once,
the parameters, the cache key's inputs and the canonical request), the solve function that runs
in a pool process, the renderer of its raw result, and which request field a solver parameter
came from.  Routes, jobs, sweeps, the fast path and the pool all look kinds up here; a new
endpoint is one entry (and its renderer in ``render.py``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Callable, Optional

from pydantic import BaseModel

import solvers
from solvers.amp import SOLVER_VERSION as AMP_SOLVER_VERSION
from solvers.amp import amp_simulation as simulate
from solvers.amp import check_simulation
from solvers.sample_size import check_target, sample_size

from . import examples, render
from .cache import cache_key
from .problems import InvalidParameter
from .schemas import (AmpSimulationRequest, AmpSimulationResponse, SampleSizeRequest,
                      SampleSizeResponse, StateEvolutionRequest, StateEvolutionResponse,
                      ThresholdsRequest, ThresholdsResponse)

# The state-evolution fixed point shown next to an AMP simulation is computed at this precision.
AMP_SE_PRECISION = "fast"


@dataclass
class Question:
    """One validated question: what to compute, its cache key, and how to answer it."""

    kind: str             # the computation that answers it (the cache key's kind)
    view: str             # the registry entry whose renderer makes the body (sample_size can
                          # read a thresholds result)
    model: dict           # the canonical spec (solvers' to_dict): part of the cache key
    params: dict          # what the solve function takes besides the spec
    numerics: dict        # what else goes into the cache key
    request: dict         # the canonical request, echoed in bodies and job records
    spec: Any = field(default=None, repr=False)  # the solver spec object (validated once)

    @cached_property
    def key(self) -> str:
        return cache_key(self.kind, self.model, solvers.__version__, **self.numerics)


@dataclass(frozen=True)
class Computation:
    name: str
    path: str
    tag: str
    request: type[BaseModel]
    response: type[BaseModel]                # the body (for always-a-job kinds: the job's result)
    example: Optional[dict]                  # an example body (None: always a job)
    ask: Callable[[Any], Question]           # request body -> Question (raises InvalidParameter)
    solve: Callable[[Any, dict, Any], dict]  # (spec, params, progress) -> raw result (pool side)
    render: Callable[[dict, dict, str], dict]  # (raw, request, cache) -> body
    field_of: Callable[[str], str]           # solver parameter -> request field
    always_job: bool = False                 # answer 202 with a job even from the cache
    summary: str = ""                        # the endpoint's description in the document
    operation: str = ""                      # the route's name (operation id), default: name
    problem_example: dict = field(default_factory=lambda: examples.PROBLEM)
    job_description: str = "Still computing: poll the job at Location"

    @property
    def route_name(self) -> str:
        return self.operation or self.name


# ------------------------------------------------------------------ validation, once

def solver_spec(model: BaseModel):
    """The solvers' spec of a request's model (the only value validation of a spec)."""
    try:
        return solvers.spec_from_dict(model.model_dump(exclude_none=True))
    except solvers.SpecError as exc:
        raise InvalidParameter.from_spec_error(exc, prefix="model.") from exc


def _question(kind: str, spec, params: dict, numerics: dict, request_extra: dict,
              view: Optional[str] = None) -> Question:
    model = spec.to_dict()
    return Question(kind=kind, view=view or kind, model=model, params=params, numerics=numerics,
                    request={"model": model, **request_extra}, spec=spec)


def request_field(parameter: str) -> str:
    """The request field a solver parameter came from (the spec's own: under model.)."""
    top = parameter.split("[")[0].split(".")[0]
    if top == "alpha":
        return "alphas"
    if top in ("alphas", "target", "dimension", "precision", "seed"):
        return parameter
    return "model." + parameter


AMP_FIELDS = ("alpha", "dimension", "seeds", "iterations", "damping")


def amp_field(parameter: str) -> str:
    top = parameter.split("[")[0].split(".")[0]
    return top if top in AMP_FIELDS else request_field(parameter)


# ------------------------------------------------------------------ the kinds

def thresholds_question(spec, precision: str, seed: int, dimension: Optional[int] = None,
                        se_bracket: bool = False) -> Question:
    numerics = {"precision": precision, "seed": seed}
    if se_bracket:  # a different result (one more check); the plain question keeps its key
        numerics["se_bracket"] = True
    return _question("thresholds", spec, numerics, numerics,
                     {"precision": precision, "seed": seed, "dimension": dimension, "se_bracket": se_bracket})


def ask_thresholds(body: ThresholdsRequest) -> Question:
    return thresholds_question(solver_spec(body.model), body.precision, body.seed, body.dimension,
                               body.se_bracket)


def solve_thresholds(spec, params: dict, progress) -> dict:
    """Progress: one step per layer (direction) the solvers have placed on the staircase, plus
    a last one for perfect recovery and the checks (total P + 1), reported from the start."""
    model = spec.to_dict()
    P = int(model.get("layers") or model.get("indices") or 1)
    total = P + 1
    cb = None
    if progress is not None:
        progress(0, total)
        cb = lambda done, _P: progress(min(int(done), P), total)  # noqa: E731
    out = solvers.layer_thresholds(spec, precision=params["precision"], seed=params["seed"],
                                   progress=cb, se_bracket=bool(params.get("se_bracket"))).to_dict()
    if progress is not None:
        progress(total, total)
    return out


def state_evolution_question(spec, precision: str, seed: int, alphas) -> Question:
    numerics = {"precision": precision, "seed": seed, "alphas": [float(a) for a in alphas]}
    return _question("state_evolution", spec, numerics, numerics, numerics)


def ask_state_evolution(body: StateEvolutionRequest) -> Question:
    return state_evolution_question(solver_spec(body.model), body.precision, body.seed, body.alphas)


def solve_state_evolution(spec, params: dict, progress) -> dict:
    return solvers.state_evolution(spec, list(params["alphas"]), precision=params["precision"],
                                   seed=params["seed"], progress=progress).to_dict()


def ask_sample_size(body: SampleSizeRequest) -> Question:
    spec = solver_spec(body.model)
    target = body.target.model_dump()
    try:
        check_target(spec, target)
    except solvers.SpecError as exc:
        raise InvalidParameter.from_spec_error(exc) from exc
    echo = {"precision": body.precision, "seed": body.seed, "target": target,
            "dimension": body.dimension}
    if target["kind"] == "weak_recovery":  # read off the (shared, cached) thresholds
        numerics = {"precision": body.precision, "seed": body.seed}
        return _question("thresholds", spec, numerics, numerics, echo, view="sample_size")
    numerics = {"precision": body.precision, "seed": body.seed, "target": target}
    return _question("sample_size", spec, {**numerics, "dimension": body.dimension}, numerics, echo)


def solve_sample_size(spec, params: dict, progress) -> dict:
    return sample_size(spec, params["dimension"], params["target"], precision=params["precision"],
                       seed=params["seed"], progress=progress).to_dict()


def ask_amp_simulation(body: AmpSimulationRequest) -> Question:
    spec = solver_spec(body.model)
    damping = 0.0 if body.damping is None else float(body.damping)
    try:
        check_simulation(spec, body.dimension, body.alpha, body.seeds, body.iterations, damping)
    except solvers.SpecError as exc:
        raise InvalidParameter.from_spec_error(exc) from exc
    params = {"dimension": body.dimension, "alpha": float(body.alpha), "seeds": body.seeds,
              "iterations": body.iterations, "damping": damping, "se_precision": AMP_SE_PRECISION}
    return _question("amp_simulation", spec, params, {**params, "amp_version": AMP_SOLVER_VERSION},
                     {"dimension": body.dimension, "alpha": float(body.alpha), "seeds": body.seeds,
                      "iterations": body.iterations, "damping": damping})


def solve_amp_simulation(spec, params: dict, progress=None) -> dict:
    """GAMP on ``seeds`` fresh instances and, next to it, the SE fixed point from the
    uninformed start at the same alpha.  Progress: one step per GAMP iteration and seed,
    plus a last one for the SE prediction (total = seeds * iterations + 1)."""
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
    fp = solvers.fixed_point(spec, float(params["alpha"]), start="uninformed",
                             precision=params["se_precision"], seed=0)
    out["state_evolution"] = {"alpha": float(params["alpha"]), "start": "uninformed",
                              "precision": params["se_precision"],
                              "layer_overlaps": [float(v) for v in fp.layer_overlaps],
                              "overlap_ci95": [float(v) for v in fp.overlap_ci95],
                              "converged": bool(fp.converged), "iterations": int(fp.iterations)}
    if progress is not None:
        progress(total, total)
    return out


COMPUTATIONS: dict[str, Computation] = {c.name: c for c in (
    Computation("thresholds", "/thresholds", "thresholds", ThresholdsRequest, ThresholdsResponse,
                examples.THRESHOLDS, ask_thresholds, solve_thresholds, render.thresholds,
                request_field,
                summary="Weak-recovery thresholds, sorted by alpha: the order in which layers are "
                        "learned."),
    Computation("state_evolution", "/state-evolution", "state evolution", StateEvolutionRequest,
                StateEvolutionResponse, examples.STATE_EVOLUTION, ask_state_evolution,
                solve_state_evolution, render.state_evolution, request_field,
                summary="State-evolution fixed points from the uninformed and informed starts, "
                        "per alpha."),
    Computation("sample_size", "/sample-size", "sample size", SampleSizeRequest, SampleSizeResponse,
                examples.SAMPLE_SIZE, ask_sample_size, solve_sample_size, render.sample_size,
                request_field,
                summary="How many samples N = alpha * D reach the target (weak recovery or a "
                        "prediction error)."),
    Computation("amp_simulation", "/amp-simulations", "amp simulations", AmpSimulationRequest,
                AmpSimulationResponse, None, ask_amp_simulation, solve_amp_simulation,
                render.amp_simulation, amp_field, always_job=True, operation="amp_simulations",
                problem_example=examples.AMP_PROBLEM,
                job_description="The simulation's job: poll it at Location; progress counts GAMP "
                                "iterations over all seeds plus one step for the SE prediction, "
                                "and the result (AmpSimulationResponse) is the job's `result`",
                summary="""Run GAMP (THEORY.md section 6) on `seeds` fresh synthetic instances of dimension D with
N = alpha D samples: per-seed trajectories of the per-layer overlaps, their mean and spread
over seeds, and the state-evolution fixed point from the uninformed start at that alpha
(its layer overlaps and 95% half-widths) side by side.  The job's result has the shape of
`AmpSimulationResponse` (see the amp_simulation example of `GET /v1/jobs/{id}`)."""),
)}
