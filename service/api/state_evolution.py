from typing import Optional

from fastapi import APIRouter, Depends, Header, Request

import solvers

from .. import examples
from ..schemas import StateEvolutionRequest, StateEvolutionResponse
from .common import compute_responses
from .deps import canonical_spec, compute_or_accept, require_api_key, spec_problem

router = APIRouter(tags=["state evolution"], dependencies=[Depends(require_api_key)])


@router.post("/state-evolution", response_model=StateEvolutionResponse,
             responses=compute_responses(examples.STATE_EVOLUTION))
async def state_evolution(body: StateEvolutionRequest, http: Request,
                          prefer: Optional[str] = Header(None, description="'respond-async': answer 202 at once")):
    """State-evolution fixed points from the uninformed and informed starts, per alpha."""
    try:
        spec = canonical_spec(body.model)
    except solvers.SpecError as exc:
        return spec_problem(exc)
    numerics = {"precision": body.precision, "seed": body.seed, "alphas": [float(a) for a in body.alphas]}
    request = {"model": spec, **numerics}
    return await compute_or_accept(http, "state_evolution", spec, numerics, numerics, request, prefer)
