"""The computation endpoints, one per registry entry (service.computations): validate the
body, ask the engine (the cache, else compute within the wait, else a job), render."""
from __future__ import annotations

import inspect
from typing import Optional

from fastapi import APIRouter, Depends, Header, Request
from starlette.responses import Response

from ...body import JSONRoute
from ...computations import COMPUTATIONS, Computation
from ..deps import ServicesDep, accepted, json, require_api_key
from ..responses import computation_responses

router = APIRouter(dependencies=[Depends(require_api_key)], route_class=JSONRoute)

PREFER = Header(None, description="'respond-async': answer 202 at once")


async def answer(c: Computation, body, http: Request, svc, prefer: Optional[str]) -> Response:
    """Answer from the cache, or compute (waiting up to the sync timeout), or 202 a job.

    A 200 answer teaches the fast path (service.fastpath) this request body's question."""
    q = c.ask(body)
    client = http.client.host if http.client is not None else ""  # the expensive lane's fair order
    if c.always_job:  # even a cached answer is a (finished) job, so every answer looks alike
        job = await svc.engine.submit(q, client=client)
        return accepted(job.id, job.status)
    ans = await svc.engine.answer(q, respond_async=bool(prefer) and "respond-async" in prefer.lower(),
                                  client=client)
    if ans.job is not None:
        return accepted(ans.job.id, ans.job.status)
    raw_body = http.scope.get("state", {}).get("raw_body")
    if raw_body is not None:
        svc.memo.put(http.url.path, raw_body, q)
    return json(COMPUTATIONS[q.view].render(ans.raw, q.request, ans.cache))


def endpoint_for(c: Computation):
    """The route function of ``c``, typed with its request schema (FastAPI reads the signature)."""
    async def endpoint(body, http: Request, svc: ServicesDep, prefer=None) -> Response:
        return await answer(c, body, http, svc, prefer)

    params = [inspect.Parameter("body", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=c.request),
              inspect.Parameter("http", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Request),
              inspect.Parameter("svc", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=ServicesDep)]
    if not c.always_job:
        params.append(inspect.Parameter("prefer", inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                        default=PREFER, annotation=Optional[str]))
    endpoint.__signature__ = inspect.Signature(params, return_annotation=Response)
    return endpoint


for _c in COMPUTATIONS.values():
    answer_doc = None if _c.always_job else {
        "model": _c.response, "description": "The answer (from the cache, or computed within the wait)",
        "content": {"application/json": {"example": _c.example}}}
    router.add_api_route(
        _c.path, endpoint_for(_c), methods=["POST"], name=_c.route_name, tags=[_c.tag],
        description=_c.summary, status_code=202 if _c.always_job else 200,
        responses=computation_responses(_c.problem_example, answer_doc, _c.job_description))
