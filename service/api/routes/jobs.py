"""``/v1/jobs/{id}``: one route for every job (computations, sweeps, comparisons), and the plots of
sweeps and comparisons."""
from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, Path
from starlette.responses import Response

from ... import examples, plots
from ...problems import NotFound
from ...schemas import JobOut
from ..deps import ServicesDep, json, require_api_key
from ..responses import UNAUTHORIZED, problem_response

router = APIRouter(tags=["jobs"], dependencies=[Depends(require_api_key)])
sweep_plots = APIRouter(tags=["sweeps"], dependencies=[Depends(require_api_key)])

JobId = Annotated[str, Path(pattern="^[0-9a-f]{32}$", description="job id (32 hex digits)")]
RESPONSES = {200: {"model": JobOut, "description": "The job", "content": {"application/json": {"examples": {
    "thresholds": {"summary": "a running thresholds job", "value": examples.JOB},
    "amp_simulation": {"summary": "a finished amp simulation", "value": examples.AMP_JOB}}}}},
             401: problem_response(UNAUTHORIZED),
             404: problem_response("No such job"),
             422: problem_response("Malformed job id", examples.PROBLEM)}


async def _job(job_id: str, of_sweep, of_job) -> Response:
    """The sweep's body if ``job_id`` is a sweep, else the job's."""
    body = await of_sweep(job_id)
    if body is None:
        job = await of_job(job_id)
        if job is None:
            raise NotFound(f"no job {job_id}")
        body = job.body()
    return json(body)


@router.get("/jobs/{job_id}", responses=RESPONSES)
async def get_job(job_id: JobId, svc: ServicesDep) -> Response:
    """Status (queued, running, done, failed, cancelled), progress, the cost estimate
    (`estimated_seconds`) and lane, while queued its `queue_position`, while queued or running
    its `eta_seconds`, and, when done, the result."""
    return await _job(job_id, svc.sweeps.get, svc.engine.get)


@router.delete("/jobs/{job_id}", responses=RESPONSES)
async def cancel_job(job_id: JobId, svc: ServicesDep) -> Response:
    """Cancel a queued or running job (a finished one is returned unchanged): a queued one
    leaves its lane's waiting list, a running one has its process killed, so its slot is free
    at once for the next job."""
    return await _job(job_id, svc.sweeps.cancel, svc.engine.cancel)


PLOT_RESPONSES = {404: problem_response("No such sweep or comparison"), 401: problem_response(UNAUTHORIZED),
                  422: problem_response("Malformed job id")}


async def _plot(job_id: str, svc, fmt: str, media: str) -> Response:
    body = await svc.sweeps.get(job_id)
    if body is None:
        raise NotFound(f"no sweep or comparison {job_id}")
    data = await asyncio.to_thread(plots.render, body, fmt)
    return Response(data, media_type=media, headers={"X-Sweep-Status": body["status"]})


@sweep_plots.get("/jobs/{job_id}/plot.png", response_class=Response, responses={
    200: {"description": "Phase diagram (thresholds sweep) or overlap curves (state-evolution "
                         "sweep) of the points finished so far; for a comparison, the user's points "
                         "over the theory's error curves", "content": {"image/png": {}}},
    **PLOT_RESPONSES})
async def plot_png(job_id: JobId, svc: ServicesDep):
    """The sweep or comparison as a PNG (matplotlib)."""
    return await _plot(job_id, svc, "png", "image/png")


@sweep_plots.get("/jobs/{job_id}/plot.svg", response_class=Response, responses={
    200: {"description": "The same picture as SVG", "content": {"image/svg+xml": {}}},
    **PLOT_RESPONSES})
async def plot_svg(job_id: JobId, svc: ServicesDep):
    """The sweep or comparison as an SVG (matplotlib)."""
    return await _plot(job_id, svc, "svg", "image/svg+xml")
