"""The ASGI app: ``uvicorn service.main:app``.

``create_app(settings, pool)`` builds one; tests pass their own settings and share a pool.
"""
from __future__ import annotations

import asyncio
import logging
import time
from contextlib import asynccontextmanager
from typing import Optional

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

import solvers

from . import metrics, plots, problems
from .api.deps import Services
from .api.routes import operations, v1
from .body import BodyLimits
from .cache import make_store
from .fastpath import FastPath, Memo
from .jobs import Engine
from .pool import Pool
from .routemap import RouteMap
from .schemas import Problem
from .settings import Settings, get_settings
from .sweeps import Sweeps

log = logging.getLogger("staircase")

DESCRIPTION = """Learning thresholds of sequence multi-index models and deep attention networks.

Answers are cached fixed points (Redis, or an embedded disk cache): the same question comes back
in milliseconds.  A cold question is computed in a process pool; if it takes longer than
`STAIRCASE_SYNC_TIMEOUT` seconds (or the request says `Prefer: respond-async`) the answer is
`202 Accepted` with `Location: /v1/jobs/{id}`.  Errors are `application/problem+json` naming the
field and its allowed range.
"""


class MetricsMiddleware:
    """Pure ASGI: request counts and latency per route template (the full one, /v1/...: the
    app's route map), and a Server-Timing header."""

    def __init__(self, app, owner):
        self.app = app
        self.owner = owner  # the FastAPI instance (its route map)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        status = [500]

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                ms = (time.perf_counter() - t0) * 1000
                message.setdefault("headers", [])
                message["headers"] = list(message["headers"]) + [
                    (b"server-timing", f"app;dur={ms:.3f}".encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            path = self.owner.state.route_map.template(scope["path"])
            metrics.REQUESTS.labels(scope["method"], path, str(status[0])).inc()
            metrics.LATENCY.labels(path).observe(time.perf_counter() - t0)


def custom_openapi(app: FastAPI) -> dict:
    if app.openapi_schema:
        return app.openapi_schema
    doc = get_openapi(title=app.title, version=app.version, description=app.description,
                      routes=app.routes, tags=app.openapi_tags)
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    schemas["Problem"] = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    key_optional = app.state.settings.api_key is None
    for path in doc["paths"].values():
        for op in path.values():
            if key_optional and op.get("security"):
                # no key configured: X-API-Key is not checked, so no operation requires it
                # ({} in the list: no credentials is one of the ways to call it)
                op["security"] = [{}, *op["security"]]
            resp = op.get("responses", {})
            if "422" in resp:
                content = resp["422"].get("content", {})
                content.pop("application/json", None)
                if "application/problem+json" not in content:
                    content["application/problem+json"] = {
                        "schema": {"$ref": "#/components/schemas/Problem"}}
                resp["422"]["content"] = content
                resp["422"]["description"] = resp["422"].get("description") or "Invalid input"
    _link_jobs(doc)
    app.openapi_schema = doc
    return doc


def _link_jobs(doc: dict) -> None:
    """OpenAPI links from every 202 (a job accepted) to reading and cancelling that job, so
    clients and tools (schemathesis's stateful tests) can follow a job from its creation."""
    job = doc["paths"].get("/v1/jobs/{job_id}", {})
    targets = {"GetJob": (job.get("get", {}).get("operationId"), "read the job this request started"),
               "CancelJob": (job.get("delete", {}).get("operationId"), "cancel the job this request started")}
    for path in doc["paths"].values():
        for op in path.values():
            accepted = op.get("responses", {}).get("202")
            if accepted is None:
                continue
            accepted["links"] = {name: {"operationId": op_id, "parameters": {"job_id": "$response.body#/id"},
                                        "description": text}
                                 for name, (op_id, text) in targets.items() if op_id}


async def load_plots() -> None:
    """matplotlib, loaded in a thread at startup: imported with the app, its import held the
    event loop (0.7 s here; seconds while it builds its font cache)."""
    try:
        await asyncio.to_thread(plots.load)
    except Exception:  # pragma: no cover - the plots are optional; their requests will fail
        log.exception("matplotlib could not be loaded")


def create_app(settings: Optional[Settings] = None, pool: Optional[Pool] = None) -> FastAPI:
    settings = settings or get_settings()
    memo = Memo()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        own_pool = pool is None
        p = pool or Pool(settings.workers, warm=settings.warm_up, cheap_workers=settings.cheap_workers)
        p.start()
        store = make_store(settings)
        engine = Engine(settings, store, p)
        app.state.services = Services(settings=settings, store=store, pool=p, engine=engine,
                                      sweeps=Sweeps(settings, engine), memo=memo)
        # the store first, alone: beside the pool's process starts and matplotlib's import the
        # event loop could miss the guard's 50 ms, and the breaker would open at startup
        await store.ping()
        warm = None
        if not p.ready:
            warm = asyncio.create_task(p.warm_up())
        plotting = asyncio.create_task(load_plots())
        try:
            yield
        finally:
            if warm is not None and not warm.done():
                warm.cancel()
            if not plotting.done():
                plotting.cancel()
            await app.state.services.sweeps.close()
            await engine.close()
            await store.close()
            if own_pool:
                p.close(kill=True)

    app = FastAPI(title="Staircase", version=solvers.__version__, description=DESCRIPTION,
                  lifespan=lifespan, openapi_tags=[
                      {"name": "thresholds"}, {"name": "state evolution"}, {"name": "sample size"},
                      {"name": "models"}, {"name": "jobs"}, {"name": "operations"}])
    app.state.settings = settings
    problems.install(app)
    app.include_router(v1)
    app.include_router(operations)
    app.state.route_map = RouteMap(app.routes)
    app.state.memo = memo
    # the last added is the outermost: metrics -> body limits -> fast path -> FastAPI
    app.add_middleware(FastPath, owner=app)
    app.add_middleware(BodyLimits, owner=app, max_bytes=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware, owner=app)
    app.openapi = lambda: custom_openapi(app)
    return app


def __getattr__(name):  # `uvicorn service.main:app` builds the app on first access
    if name == "app":
        global app
        app = create_app()
        return app
    raise AttributeError(name)
