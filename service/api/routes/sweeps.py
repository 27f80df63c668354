"""``POST /v1/sweeps`` -> a job (read, cancelled and plotted under ``/v1/jobs/{id}``)."""
from __future__ import annotations

from fastapi import APIRouter, Depends
from starlette.responses import Response

from ...body import JSONRoute
from ...sweeps import SweepRequest
from ..deps import ServicesDep, accepted, require_api_key
from ..responses import UNAUTHORIZED, body_responses, problem_response

router = APIRouter(tags=["sweeps"], dependencies=[Depends(require_api_key)], route_class=JSONRoute)

SWEEP_ID = "0f3c5d0e9b8a4c7e8f1a2b3c4d5e6f70"


@router.post("/sweeps", status_code=202, responses={
    202: {"description": "The sweep's job: poll it at Location (progress, partial results)",
          "headers": {"Location": {"schema": {"type": "string"}, "description": "/v1/jobs/{id}"}},
          "content": {"application/json": {"example": {
              "id": SWEEP_ID, "status": "queued", "location": f"/v1/jobs/{SWEEP_ID}",
              "points": 9, "backend": "arq"}}}},
    **body_responses(),
    401: problem_response(UNAUTHORIZED),
    422: problem_response("Invalid input: names the field and its allowed range"),
    429: problem_response("Too many sweeps running in this server's pool")})
async def create_sweep(body: SweepRequest, svc: ServicesDep) -> Response:
    """A grid over alpha and/or one model parameter (at most 400 points) of thresholds or
    state-evolution overlaps.  Each point is computed by a worker (arq, or this server's pool
    without Redis) and cached exactly like `/v1/thresholds` / `/v1/state-evolution`."""
    rec = await svc.sweeps.create(body)
    return accepted(rec["id"], "queued", points=len(rec["points"]), backend=rec["backend"])
