"""``GET /v1/models``: the solvers' catalogue (FastAPI serializes it: response_model is used)."""
from typing import Any

from fastapi import APIRouter, Depends

import solvers
from solvers.precision import PRECISION_TARGETS

from ... import examples
from ..deps import require_api_key
from ..responses import UNAUTHORIZED, problem_response

router = APIRouter(tags=["models"], dependencies=[Depends(require_api_key)])


@router.get("/models", response_model=dict[str, Any], responses={
    200: {"description": "Families, links, parameters, ranges and defaults",
          "content": {"application/json": {"example": examples.MODELS}}},
    401: problem_response(UNAUTHORIZED)})
async def models():
    """The catalogue of model families and links with their parameters, ranges and defaults."""
    return {"families": solvers.catalogue(),
            "precisions": {k: {"ci95_relative": list(v)} for k, v in PRECISION_TARGETS.items()},
            "solver_version": solvers.__version__}
