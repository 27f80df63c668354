"""Operations: liveness, readiness, metrics."""
from fastapi import APIRouter
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import Response

from ... import examples
from ...schemas import Health, Ready
from ..deps import ServicesDep, json

router = APIRouter(tags=["operations"])


@router.get("/healthz", response_model=Health,
            responses={200: {"content": {"application/json": {"example": examples.HEALTH}}}})
async def healthz() -> Health:
    """Liveness: the event loop answers."""
    return Health(status="ok")


@router.get("/readyz", responses={
    200: {"model": Ready, "description": "ready, or degraded (cache store down or stuck: "
                                         "answers come from this process's memory or are "
                                         "computed here)",
          "content": {"application/json": {"example": examples.READY}}},
    503: {"model": Ready, "description": "starting: the pool's processes are not up yet"}})
async def readyz(svc: ServicesDep) -> Response:
    """Readiness: the pool's processes up with the solvers imported, and the cache store
    reachable.  ``solvers.kernels`` says whether the numba kernels are still compiling in the
    background ("compiling": a request that needs one not compiled yet waits for that one),
    "compiled", "failed" or "lazy" (STAIRCASE_WARM_UP=false: each compiles on first use)."""
    pool = svc.pool
    store_ok = await svc.store.ping()
    solvers_info = {"ready": pool.ready, "version": pool.version, "workers": pool.workers,
                    "cheap_workers": pool.cheap_workers, "start_seconds": pool.start_seconds,
                    "kernels": pool.kernels, "warm_up_seconds": pool.warm_seconds}
    if pool.error:
        solvers_info["error"] = pool.error
    if pool.kernels_error:
        solvers_info["kernels_error"] = pool.kernels_error
    status = "starting" if not pool.ready else ("ready" if store_ok else "degraded")
    return json({"status": status, "cache": {**svc.store.info(), "available": store_ok},
                 "solvers": solvers_info}, 503 if status == "starting" else 200)


@router.get("/metrics", response_class=Response,
            responses={200: {"description": "Prometheus text format",
                             "content": {"text/plain": {"schema": {"type": "string"},
                                                        "example": examples.METRICS}}}})
async def metrics():
    """Prometheus metrics: requests, latency, cache hits and misses, computations."""
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
