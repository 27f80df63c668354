"""The sweep worker: ``arq service.sweep_worker.WorkerSettings`` (needs STAIRCASE_REDIS_URL).

Each arq job is one point of a sweep (``run_point(sweep_id, i)``, job id ``<sweep id>:<i>``,
queue ``<STAIRCASE_REDIS_PREFIX>sweeps``).  The point reads the cache (a hit costs nothing),
else computes in a thread of this process (the numba kernels release the GIL; the event loop
stays free to heart-beat) and writes the cache entry under the same key as ``/v1/thresholds``.

No point is lost when a worker dies: arq keeps a job in its queue until it finishes, guarded by
an ``arq:in-progress:<job id>`` key.  This worker renews that key every lease/3 seconds
(``STAIRCASE_SWEEP_LEASE``, 15 s) instead of holding it for the whole job timeout, so after a
SIGKILL another worker picks the point up within a lease and arq counts the try
(``STAIRCASE_SWEEP_MAX_TRIES``).  A cancelled sweep's running point stops at its next progress
report.
"""
from __future__ import annotations

import asyncio
import logging
import os
import threading
import time

from arq.connections import RedisSettings
from arq.constants import in_progress_key_prefix
from arq.worker import func

from . import compute
from .cache import RedisStore, ResultCache
from .config import Settings
from .sweeps import (SweepSettings, arq_queue, load_record, mark_point, point_key, running_key)

log = logging.getLogger("staircase.sweep_worker")


class _Progress:
    """The solvers' progress callback: raises JobCancelled once the sweep is cancelled."""

    def __init__(self, stop: threading.Event):
        self.stop = stop

    def __call__(self, done, total):
        if self.stop.is_set():
            raise compute.JobCancelled("sweep cancelled")


async def startup(ctx) -> None:
    settings = Settings()
    ctx["settings"], ctx["sweep"] = settings, SweepSettings()
    ctx["store"] = RedisStore(settings.redis_url, settings.redis_prefix)
    ctx["cache"] = ResultCache(ctx["store"])
    t0 = time.perf_counter()
    await asyncio.to_thread(compute.init_worker, settings.warm_up)  # compile the kernels once
    log.info("sweep worker %d ready in %.1f s (queue %s)", os.getpid(), time.perf_counter() - t0,
             arq_queue(settings.redis_prefix))


async def shutdown(ctx) -> None:
    store = ctx.get("store")
    if store is not None:
        await store.close()


async def run_point(ctx, sid: str, i: int) -> str:
    settings, sw, store, cache = ctx["settings"], ctx["sweep"], ctx["store"], ctx["cache"]
    ttl = settings.job_ttl
    rec = await load_record(store, sid)
    if rec is None or rec.get("status") == "cancelled":
        return "cancelled"
    if await store.get(point_key(sid, i)) is not None:
        return "done before"
    p = rec["points"][i]
    t0 = time.perf_counter()
    tries = ctx.get("job_try", 1)
    if await cache.get(p["key"], p["kind"]) is not None:
        await mark_point(store, sid, i, {"status": "done", "cache": "hit", "seconds": 0.0,
                                         "tries": tries, "worker": os.getpid(),
                                         "finished_at": time.time()}, ttl)
        return "hit"
    stop = threading.Event()
    lease_ms = int(sw.sweep_lease * 1000)
    in_progress = in_progress_key_prefix + ctx["job_id"]
    redis = ctx["redis"]

    async def beat():
        while True:
            await redis.pexpire(in_progress, lease_ms)
            await store.set(running_key(sid, i), str(os.getpid()).encode(), ttl=sw.sweep_lease)
            r = await load_record(store, sid)
            if r is None or r.get("status") == "cancelled":
                stop.set()
            await asyncio.sleep(sw.sweep_lease / 3)

    beating = asyncio.create_task(beat())
    try:
        work = asyncio.to_thread(compute.run, p["kind"], p["spec"], p["numerics"], _Progress(stop))
        try:
            outcome, info = await work
        except asyncio.CancelledError:
            stop.set()  # arq's timeout or shutdown: let the thread stop at its next report
            raise
    finally:
        beating.cancel()
        try:
            await store.delete(running_key(sid, i))
        except Exception:
            pass
    seconds = time.perf_counter() - t0
    if outcome == "ok":
        await cache.put(p["key"], info)
        state = {"status": "done", "cache": "miss", "seconds": seconds, "tries": tries,
                 "worker": os.getpid(), "finished_at": time.time()}
    elif outcome == "cancelled":
        return "cancelled"
    else:
        state = {"status": "failed", "error": {k: v for k, v in info.items() if k != "traceback"},
                 "tries": tries, "worker": os.getpid(), "finished_at": time.time()}
    await mark_point(store, sid, i, state, ttl)
    log.info("sweep %s point %d: %s in %.1f s (try %d)", sid, i, state["status"], seconds, tries)
    return state["status"]


def _settings():
    s, sw = Settings(), SweepSettings()
    return s, sw


_s, _sw = _settings()


class WorkerSettings:
    """``arq service.sweep_worker.WorkerSettings``."""

    functions = [func(run_point, name="run_point", max_tries=_sw.sweep_max_tries,
                      timeout=_sw.sweep_point_timeout)]
    on_startup = startup
    on_shutdown = shutdown
    redis_settings = RedisSettings.from_dsn(_s.redis_url or "redis://127.0.0.1:6379/0")
    queue_name = arq_queue(_s.redis_prefix)
    max_jobs = _sw.sweep_jobs
    keep_result = 600
    poll_delay = 0.2
    health_check_interval = 30
