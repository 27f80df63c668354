"""Shared route plumbing: the engine, the API key, and the compute-or-202 response."""
from __future__ import annotations

import secrets
import uuid
from typing import Optional

import orjson
from fastapi import Depends, HTTPException, Request
from fastapi.security import APIKeyHeader
from starlette.responses import Response

import solvers

from .. import render
from ..jobs import Busy, ComputationFailed, Engine, Job
from ..problems import problem

api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False,
                              description="required only when STAIRCASE_API_KEY is set")


async def require_api_key(request: Request, key: Optional[str] = Depends(api_key_header)) -> None:
    expected = request.app.state.settings.api_key
    if expected is None:
        return
    if key is None or not secrets.compare_digest(key.encode(), expected.get_secret_value().encode()):
        raise HTTPException(401, "a valid X-API-Key header is required",
                            headers={"WWW-Authenticate": "ApiKey"})


async def engine(request: Request) -> Engine:
    return request.app.state.engine


def json(body, status: int = 200, headers: Optional[dict] = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json",
                    headers=headers)


def spec_problem(exc: solvers.SpecError, prefix: str = "model.") -> Response:
    field = prefix + str(exc.parameter)
    return problem(422, str(exc), type_="/problems/invalid-parameter", field=field,
                   allowed=str(exc.allowed),
                   errors=[{"field": field, "message": str(exc), "allowed": str(exc.allowed),
                            "value": repr(exc.value)}])


def canonical_spec(model) -> dict:
    """The solvers' canonical dict of a request model (raises SpecError)."""
    return solvers.spec_from_dict(model.model_dump(exclude_none=True)).to_dict()


def job_location(job: Job) -> str:
    return f"/v1/jobs/{job.id}"


def job_body(job: Job) -> dict:
    result = None
    view = job.view or job.kind
    if job.status == "done" and job.raw is not None:
        result = render.RENDER[view](job.raw, job.request, "miss")
    return {"id": job.id, "kind": view, "status": job.status,
            "progress": {"done": job.done, "total": job.total},
            "created_at": job.created_at, "updated_at": job.updated_at,
            "request": job.request, "result": result, "error": job.error}


def engine_problem(exc: Busy | ComputationFailed) -> Response:
    """The problem response to the engine's refusal: 429 when busy, 422 when it failed."""
    if isinstance(exc, Busy):
        return problem(429, "too many computations pending; retry later",
                       type_="/problems/busy", headers={"Retry-After": "5"})
    p = exc.problem
    return problem(422, p.get("detail", "computation failed"),
                   type_=p.get("type", "/problems/computation-failed"),
                   field=p.get("field"), allowed=p.get("allowed"))


async def compute_or_accept(http: Request, kind: str, spec: dict, params: dict, numerics: dict,
                            request: dict, prefer: Optional[str], view: Optional[str] = None) -> Response:
    """Answer from the cache, or compute (waiting up to the sync timeout), or 202 a job.

    A 200 answer teaches the fast path (service.fastpath) this request body's cache key."""
    eng: Engine = http.app.state.engine
    respond_async = bool(prefer) and "respond-async" in prefer.lower()
    try:
        ans = await eng.answer(kind, spec, params, numerics, request, respond_async=respond_async,
                               view=view)
    except (Busy, ComputationFailed) as exc:
        return engine_problem(exc)
    if ans.job is not None:
        loc = job_location(ans.job)
        return json({"id": ans.job.id, "status": ans.job.status, "location": loc}, 202,
                    headers={"Location": loc, "Retry-After": "1"})
    body = http.scope.get("state", {}).get("raw_body")
    if body is not None:
        http.app.state.memo.put(http.url.path, body,
                                (kind, view or kind, eng.key(kind, spec, numerics), request))
    return json(render.RENDER[view or kind](ans.raw, request, ans.cache))


async def accept_job(http: Request, kind: str, spec: dict, params: dict, numerics: dict,
                     request: dict) -> Response:
    """Always 202 with a job, even for a cached answer (then a job that is already done), so
    that long-running endpoints answer alike every time."""
    eng: Engine = http.app.state.engine
    try:
        ans = await eng.answer(kind, spec, params, numerics, request, respond_async=True)
    except (Busy, ComputationFailed) as exc:
        return engine_problem(exc)
    job = ans.job
    if job is None:  # answered from the cache (or finished at once): a finished job
        job = Job(id=uuid.uuid4().hex, kind=kind, cache_key=eng.key(kind, spec, numerics), spec=spec,
                  params=params, request=request, owner="", status="done", done=1, total=1,
                  raw=ans.raw, view=kind)
        job.owner = job.id
        await eng.save(job)
    loc = job_location(job)
    return json({"id": job.id, "status": job.status, "location": loc}, 202,
                headers={"Location": loc, "Retry-After": "1"})
