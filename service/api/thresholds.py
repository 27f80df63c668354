from typing import Optional

from fastapi import APIRouter, Depends, Header, Request

import solvers

from .. import examples
from ..schemas import ThresholdsRequest, ThresholdsResponse
from .common import compute_responses
from .deps import canonical_spec, compute_or_accept, require_api_key, spec_problem

router = APIRouter(tags=["thresholds"], dependencies=[Depends(require_api_key)])


@router.post("/thresholds", response_model=ThresholdsResponse,
             responses=compute_responses(examples.THRESHOLDS))
async def thresholds(body: ThresholdsRequest, http: Request,
                     prefer: Optional[str] = Header(None, description="'respond-async': answer 202 at once")):
    """Weak-recovery thresholds, sorted by alpha: the order in which layers are learned."""
    try:
        spec = canonical_spec(body.model)
    except solvers.SpecError as exc:
        return spec_problem(exc)
    numerics = {"precision": body.precision, "seed": body.seed}
    request = {"model": spec, **numerics, "dimension": body.dimension}
    return await compute_or_accept(http, "thresholds", spec, numerics, numerics, request, prefer)
