"""``POST /v1/amp-simulations``: GAMP on synthetic instances next to its state-evolution
prediction (issue 4).  Always a job: 202 with Location /v1/jobs/{id}."""
from fastapi import APIRouter, Depends, Request

import solvers
from solvers.amp import SOLVER_VERSION, check_simulation

from .. import examples
from ..schemas import AmpSimulationRequest, JobAccepted
from .common import problem_response
from .deps import accept_job, canonical_spec, require_api_key, spec_problem

router = APIRouter(tags=["amp simulations"], dependencies=[Depends(require_api_key)])

SE_PRECISION = "fast"

RESPONSES = {
    202: {"model": JobAccepted,
          "description": "The simulation's job: poll it at Location; progress counts GAMP iterations "
                         "over all seeds plus one step for the SE prediction, and the result "
                         "(AmpSimulationResponse) is the job's `result`",
          "headers": {"Location": {"schema": {"type": "string"}, "description": "/v1/jobs/{id}"}},
          "content": {"application/json": {"example": examples.ACCEPTED}}},
    400: problem_response("Malformed body (not JSON, or not UTF-8)"),
    401: problem_response("Missing or wrong X-API-Key (only when a key is configured)"),
    422: problem_response("Invalid input: names the field and its allowed range", examples.AMP_PROBLEM),
    429: problem_response("Too many computations pending"),
}


@router.post("/amp-simulations", status_code=202, response_model=JobAccepted, responses=RESPONSES)
async def amp_simulations(body: AmpSimulationRequest, http: Request):
    """Run GAMP (THEORY.md section 6) on `seeds` fresh synthetic instances of dimension D with
    N = alpha D samples: per-seed trajectories of the per-layer overlaps, their mean and spread
    over seeds, and the state-evolution fixed point from the uninformed start at that alpha
    (its layer overlaps and 95% half-widths) side by side.  The job's result has the shape of
    `AmpSimulationResponse` (see the amp_simulation example of `GET /v1/jobs/{id}`)."""
    try:
        spec = canonical_spec(body.model)
    except solvers.SpecError as exc:
        return spec_problem(exc)
    damping = 0.0 if body.damping is None else float(body.damping)
    try:
        check_simulation(solvers.spec_from_dict(dict(spec)), body.dimension, body.alpha, body.seeds,
                         body.iterations, damping)
    except solvers.SpecError as exc:
        return spec_problem(exc, prefix="")
    params = {"dimension": body.dimension, "alpha": float(body.alpha), "seeds": body.seeds,
              "iterations": body.iterations, "damping": damping, "se_precision": SE_PRECISION}
    numerics = {**params, "amp_version": SOLVER_VERSION}
    request = {"model": spec, "dimension": body.dimension, "alpha": float(body.alpha),
               "seeds": body.seeds, "iterations": body.iterations, "damping": damping}
    return await accept_job(http, "amp_simulation", spec, params, numerics, request)
