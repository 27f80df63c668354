"""``POST /v1/comparisons``: the comparison (200) or its job (202); its plot and later reads
under ``/v1/jobs/{id}`` like a sweep's."""
from __future__ import annotations

import asyncio
import time
from typing import Optional

from fastapi import APIRouter, Depends, Header
from starlette.responses import Response

from ...body import JSONRoute
from ...comparisons import plan
from ...jobs import TERMINAL
from ...problems import ComputationFailed
from ...schemas import ComparisonRequest, ComparisonResponse
from ..deps import ServicesDep, accepted, json, require_api_key
from ..responses import computation_responses

router = APIRouter(tags=["comparisons"], dependencies=[Depends(require_api_key)], route_class=JSONRoute)

POLL_SECONDS = 0.1


@router.post("/comparisons", response_model=None, responses=computation_responses(
    {"type": "/problems/validation-error", "title": "Invalid request", "status": 422,
     "detail": "points[2].samples: Input should be greater than or equal to 1; allowed: ...",
     "field": "points[2].samples"},
    {"model": ComparisonResponse, "description": "The comparison (its theory points from the cache, or "
                                                 "computed within the wait)"},
    "Still computing its theory points: poll the job at Location (its result is the comparison)"))
async def create_comparison(body: ComparisonRequest, svc: ServicesDep,
                            prefer: Optional[str] = Header(None, description="'respond-async': answer 202 at once")
                            ) -> Response:
    """Your measured learning curve against the theory's.  Per point (alpha = samples / D): the
    Bayes-optimal and AMP prediction errors at alpha (95% half-widths), the samples each would
    need to reach your error and your samples over them, the layers learnable at alpha; for the
    curve: the interval of your sharpest error drop per log-sample and the thresholds near it.
    The theory points are `/v1/state-evolution` questions (one alpha each, on a 2^(k/4) grid
    around your alphas, yours among them) and `/v1/thresholds`, shared with those endpoints'
    cache.  Plot: `GET /v1/jobs/{id}/plot.png` (or `.svg`)."""
    sweep, request = plan(body)
    rec = await svc.sweeps.create(sweep, comparison=request)
    wait = 0.0 if prefer and "respond-async" in prefer.lower() else svc.settings.sync_timeout
    deadline = time.monotonic() + wait
    while True:
        job = await svc.sweeps.get(rec["id"])
        if job["status"] in TERMINAL or time.monotonic() >= deadline:
            break
        await asyncio.sleep(POLL_SECONDS)
    if job["status"] == "done":
        return json(job["result"])
    if job["status"] == "failed":
        first = job["error"]["points"][0].get("error") or {}
        raise ComputationFailed({**first, "detail": f"{job['error']['detail']}: {first.get('detail', '')}"})
    return accepted(rec["id"], job["status"], points=job["progress"]["total"])
