"""Sweeps: ``POST /v1/sweeps`` -> a job; its plot at ``/v1/jobs/{id}/plot.png`` and ``.svg``.

A sweep is read and cancelled at ``/v1/jobs/{id}`` like any job: the GET and DELETE below are
registered before service.api.jobs's (and hidden from the OpenAPI document, which documents
those); ids that are not sweeps go on to service.api.jobs.
"""
from __future__ import annotations

from fastapi import APIRouter, Depends, Path, Request
from starlette.responses import Response

from ..jobs import Busy, Engine
from ..problems import problem
from ..sweeps import SweepError, SweepRequest, Sweeps
from . import jobs as job_routes
from .common import problem_response
from .deps import engine, json, require_api_key

router = APIRouter(tags=["sweeps"], dependencies=[Depends(require_api_key)])

JobId = Path(pattern="^[0-9a-f]{32}$", description="job id (32 hex digits)")

SWEEP_JOB = {"id": "0f3c5d0e9b8a4c7e8f1a2b3c4d5e6f70", "kind": "sweep", "status": "running",
             "progress": {"done": 1, "total": 2, "failed": 0},
             "created_at": 1764400000.0, "updated_at": 1764400030.0,
             "request": {"model": {"family": "multi_index", "link": "square"},
                         "compute": "thresholds", "grid": {"parameter": "noise", "values": [0.0, 0.5]},
                         "precision": "fast", "seed": 0},
             "result": {"compute": "thresholds", "parameter": "noise", "backend": "arq", "points": [
                 {"index": 0, "kind": "thresholds", "value": 0.0, "alpha": None, "status": "done",
                  "cache": "miss", "seconds": 1.2, "tries": 1,
                  "result": {"thresholds": [{"direction": [1.0], "alpha": 0.5, "ci95": 0.0,
                                             "kind": "linear_stability"}],
                             "perfect_recovery_alpha": 1.0}},
                 {"index": 1, "kind": "thresholds", "value": 0.5, "alpha": None, "status": "running",
                  "cache": None, "result": None}]},
             "error": None}


def sweeps(request: Request) -> Sweeps:
    state = request.app.state
    current = getattr(state, "sweeps", None)
    if current is None or current.store is not state.store:  # first use, or a new lifespan
        state.sweeps = Sweeps(state.settings, state.store, state.engine)
    return state.sweeps


@router.post("/sweeps", status_code=202, responses={
    202: {"description": "The sweep's job: poll it at Location (progress, partial results)",
          "headers": {"Location": {"schema": {"type": "string"}, "description": "/v1/jobs/{id}"}},
          "content": {"application/json": {"example": {
              "id": SWEEP_JOB["id"], "status": "queued", "location": f"/v1/jobs/{SWEEP_JOB['id']}",
              "points": 9, "backend": "arq"}}}},
    400: problem_response("Malformed body (not JSON, or not UTF-8)"),
    401: problem_response("Missing or wrong X-API-Key (only when a key is configured)"),
    422: problem_response("Invalid input: names the field and its allowed range"),
    429: problem_response("Too many sweeps running in this server's pool")})
async def create_sweep(body: SweepRequest, sw: Sweeps = Depends(sweeps)):
    """A grid over alpha and/or one model parameter (at most 400 points) of thresholds or
    state-evolution overlaps.  Each point is computed by a worker (arq, or this server's pool
    without Redis) and cached exactly like `/v1/thresholds` / `/v1/state-evolution`."""
    try:
        rec = await sw.create(body)
    except Busy:
        return problem(429, "too many sweeps running; retry later", type_="/problems/busy",
                       headers={"Retry-After": "5"})
    except SweepError as exc:
        return problem(422, exc.detail, type_="/problems/invalid-parameter", field=exc.field,
                       allowed=exc.allowed)
    loc = f"/v1/jobs/{rec['id']}"
    return json({"id": rec["id"], "status": "queued", "location": loc, "points": len(rec["points"]),
                 "backend": rec["backend"]}, 202, headers={"Location": loc, "Retry-After": "1"})


@router.get("/jobs/{job_id}", include_in_schema=False)
async def get_job(job_id: str = JobId, sw: Sweeps = Depends(sweeps), eng: Engine = Depends(engine)):
    body = await sw.get(job_id)
    if body is None:
        return await job_routes.get_job(job_id, eng)
    return json(body)


@router.delete("/jobs/{job_id}", include_in_schema=False)
async def cancel_job(job_id: str = JobId, sw: Sweeps = Depends(sweeps), eng: Engine = Depends(engine)):
    body = await sw.cancel(job_id)
    if body is None:
        return await job_routes.cancel_job(job_id, eng)
    return json(body)


PLOT_RESPONSES = {404: problem_response("No such sweep"),
                  401: problem_response("Missing or wrong X-API-Key (only when a key is configured)"),
                  422: problem_response("Malformed job id")}


async def _plot(job_id: str, sw: Sweeps, fmt: str, media: str) -> Response:
    import asyncio

    from .. import plots

    body = await sw.get(job_id)
    if body is None:
        return problem(404, f"no sweep {job_id}", type_="/problems/not-found", field="job_id")
    data = await asyncio.to_thread(plots.render, body, fmt)
    return Response(data, media_type=media, headers={"X-Sweep-Status": body["status"]})


@router.get("/jobs/{job_id}/plot.png", response_class=Response, responses={
    200: {"description": "Phase diagram (thresholds sweep) or overlap curves (state-evolution "
                         "sweep) of the points finished so far", "content": {"image/png": {}}},
    **PLOT_RESPONSES})
async def plot_png(job_id: str = JobId, sw: Sweeps = Depends(sweeps)):
    """The sweep as a PNG (matplotlib)."""
    return await _plot(job_id, sw, "png", "image/png")


@router.get("/jobs/{job_id}/plot.svg", response_class=Response, responses={
    200: {"description": "The same picture as SVG", "content": {"image/svg+xml": {}}},
    **PLOT_RESPONSES})
async def plot_svg(job_id: str = JobId, sw: Sweeps = Depends(sweeps)):
    """The sweep as an SVG (matplotlib)."""
    return await _plot(job_id, sw, "svg", "image/svg+xml")
