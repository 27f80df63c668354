from typing import Optional

from fastapi import APIRouter, Depends, Header, Request

import solvers
from solvers.sample_size import check_target

from .. import examples
from ..schemas import SampleSizeRequest, SampleSizeResponse
from .common import compute_responses
from .deps import canonical_spec, compute_or_accept, require_api_key, spec_problem

router = APIRouter(tags=["sample size"], dependencies=[Depends(require_api_key)])


@router.post("/sample-size", response_model=SampleSizeResponse,
             responses=compute_responses(examples.SAMPLE_SIZE))
async def sample_size(body: SampleSizeRequest, http: Request,
                      prefer: Optional[str] = Header(None, description="'respond-async': answer 202 at once")):
    """How many samples N = alpha * D reach the target (weak recovery or a prediction error)."""
    try:
        spec = canonical_spec(body.model)
    except solvers.SpecError as exc:
        return spec_problem(exc)
    target = body.target.model_dump()
    try:
        check_target(solvers.spec_from_dict(dict(spec)), target)
    except solvers.SpecError as exc:
        return spec_problem(exc, prefix="")
    request = {"model": spec, "precision": body.precision, "seed": body.seed, "target": target,
               "dimension": body.dimension}
    if target["kind"] == "weak_recovery":  # read off the (shared, cached) thresholds
        numerics = {"precision": body.precision, "seed": body.seed}
        return await compute_or_accept(http, "thresholds", spec, numerics, numerics, request, prefer,
                                       view="sample_size")
    numerics = {"precision": body.precision, "seed": body.seed, "target": target}
    params = {**numerics, "dimension": body.dimension}
    return await compute_or_accept(http, "sample_size", spec, params, numerics, request, prefer)
