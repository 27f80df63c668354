"""The worker: ``python -m service.worker [--lane cheap|expensive|all]`` (docker-compose's
``worker``; needs STAIRCASE_REDIS_URL).

An arq worker per lane it serves, on ``<STAIRCASE_REDIS_PREFIX>computations:<lane>``, where the
API puts the owner jobs of cold computations and sweep points when ``STAIRCASE_QUEUE=redis``
(the lane from the job's cost estimate, ``service.cost``).  ``--lane all`` (the default) serves
both with one pool: ``STAIRCASE_CHEAP_WORKERS`` cheap slots and ``STAIRCASE_WORKERS`` expensive
ones, so cheap work never waits behind expensive work; ``--lane cheap`` or ``--lane expensive``
serve one (scale them apart).  Each job runs through the same code as in the API without Redis
(``Engine.execute``: the cache, else a slot of this worker's pool, warmed up at start),
heart-beating its lease and arq's in-progress key every ``STAIRCASE_LEASE / 3`` seconds, and
looking every second whether it was cancelled (then its process is killed at once).  A worker
that dies (even SIGKILL) stops heart-beating: within a lease arq hands the job to another
worker, up to ``STAIRCASE_MAX_TRIES`` tries.  SIGTERM/SIGINT stop it; its running jobs go back
to the queue.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import uuid
from typing import Optional

from arq.connections import RedisSettings
from arq.worker import Retry
from arq.worker import Worker as ArqWorker
from arq.worker import func
from prometheus_client import start_http_server

from .cache import RedisStore, StoreUnavailable
from .jobs import TERMINAL, Engine
from .pool import LANES, Pool
from .queue import FUNCTION, ArqQueue, in_progress_key, queue_name, use_prefix
from .settings import Settings, get_settings

log = logging.getLogger("staircase.worker")


def lane_pool(settings: Settings, lane: str = "all") -> Pool:
    """The pool of a worker serving ``lane`` (cheap, expensive or all)."""
    return Pool(settings.workers if lane in ("all", "expensive") else 0, warm=settings.warm_up,
                cheap_workers=settings.cheap_workers if lane in ("all", "cheap") else 0)


async def _close(arq_worker: ArqWorker) -> None:
    """Stop an arq worker: its running jobs are cancelled and arq queues them again.

    A job cancelled while arq writes its result (a shielded step) ends in CancelledError,
    which arq's close passes on from its gather before it closes its connections; that is
    not a cancellation of the caller, so close is finished without that job's task."""
    try:
        await arq_worker.close()
    except asyncio.CancelledError:
        if asyncio.current_task().cancelling():
            raise
        arq_worker.tasks.clear()
        await arq_worker.close()


class Worker:
    def __init__(self, settings: Settings, pool: Optional[Pool] = None, lane: str = "all"):
        if not settings.redis_url:
            raise SystemExit("service.worker needs STAIRCASE_REDIS_URL (the queue lives in Redis)")
        self.settings = settings
        self.store = RedisStore.of(settings)  # every call bounded, behind the circuit breaker
        use_prefix(settings.redis_prefix)  # arq's keys too
        self.pool = pool or lane_pool(settings, lane)
        self.lanes = [name for name in LANES if self.pool.slots[name]]  # served: those with slots
        self.engine = Engine(settings, self.store, self.pool)
        self.queue = ArqQueue(settings.redis_url, settings.redis_prefix, settings.job_ttl)
        self.id = uuid.uuid4().hex[:12]
        self.stop = asyncio.Event()
        self.processed = 0

    async def compute(self, ctx: dict, job_id: str, spec=None) -> str:
        """One queued owner job (``spec``: its solver spec, from the API)."""
        engine, tries = self.engine, ctx["job_try"]
        job = await engine.load(job_id)
        if job is None and not self.store.available:  # its record is out of reach: not lost
            raise Retry(defer=self.settings.redis_probe_interval * 2)
        if job is not None:  # taken up: no longer waiting in its client's share (any outcome)
            try:
                await self.store.guard(self.queue.started(job.id, job.lane, job.client))
            except Exception:  # noqa: BLE001 - only the fair order's bookkeeping
                log.warning("could not mark job %s started", job.id)
        if job is None or job.status in TERMINAL:
            return "skipped"
        if tries > self.settings.max_tries:
            job.status, job.error = "failed", {"detail": f"the computation was interrupted {tries - 1} times"}
            await engine.save(job)
            return "failed"
        holder = await engine.leases.holder(job.cache_key)
        if holder not in (None, job.id):  # its lease lapsed and another job took it over
            job.owner = holder
            await engine.save(job)
            return "following " + holder
        job.solver_spec = spec
        await engine.leases.give(job.cache_key, job.id)
        in_progress, redis = in_progress_key(ctx["job_id"]), ctx["redis"]

        async def renew() -> None:
            await redis.pexpire(in_progress, int(self.settings.lease * 1000))

        try:
            await self.store.guard(renew())
        except StoreUnavailable:  # Redis stuck: compute anyway (the heartbeat renews it later)
            pass
        log.info("running job %s (%s, try %d)", job.id, job.kind, tries)
        await engine.execute(job, tries=tries, renew=renew)
        self.processed += 1
        log.info("job %s: %s", job.id, job.status)
        return job.status

    def arq_worker(self, lane: str) -> ArqWorker:
        s = self.settings
        return ArqWorker(
            functions=[func(self.compute, name=FUNCTION, max_tries=s.max_tries + 1,
                            timeout=s.computation_timeout)],
            redis_settings=RedisSettings.from_dsn(s.redis_url), queue_name=queue_name(s.redis_prefix, lane),
            max_jobs=len(self.pool.slots[lane]), keep_result=0, poll_delay=0.2, handle_signals=False,
            health_check_interval=30)

    async def _announce(self) -> None:
        """Tell the API how many slots this worker has per lane (its ETAs divide by them)."""
        while True:
            for lane in self.lanes:
                try:
                    await self.store.guard(self.queue.announce(lane, self.id, len(self.pool.slots[lane])))
                except Exception:  # noqa: BLE001 - Redis away: the ETAs go unknown meanwhile
                    pass
            await asyncio.sleep(10)

    async def serve(self) -> None:
        self.pool.start()
        await self.pool.start_processes()
        compiling = asyncio.create_task(self.pool.compile_kernels())  # jobs run meanwhile
        log.info("worker ready: lanes %s (%s processes), solvers %s", ", ".join(self.lanes),
                 ", ".join(str(len(self.pool.slots[lane])) for lane in self.lanes), self.pool.version)
        arqs = [self.arq_worker(lane) for lane in self.lanes]
        running = [asyncio.create_task(a.async_run()) for a in arqs]
        announcing = asyncio.create_task(self._announce())
        stopping = asyncio.create_task(self.stop.wait())
        await asyncio.wait([*running, stopping], return_when=asyncio.FIRST_COMPLETED)
        for a in arqs:
            await _close(a)
        stopping.cancel()
        announcing.cancel()
        compiling.cancel()
        for t in running:
            if t.done() and not t.cancelled() and t.exception() is not None:
                raise t.exception()  # the worker itself failed (e.g. no Redis)

    async def close(self) -> None:
        await self.queue.close()
        await self.engine.close()
        await self.store.close()
        self.pool.close(kill=True)


async def amain(lane: str = "all") -> int:
    settings = get_settings()
    worker = Worker(settings, lane=lane)
    if settings.worker_metrics_port:
        start_http_server(settings.worker_metrics_port)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.stop.set)
    try:
        await worker.serve()
    finally:
        await worker.close()
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m service.worker", description=__doc__.split("\n")[0])
    parser.add_argument("--lane", choices=("all", *LANES), default="all",
                        help="the lane(s) to serve (default: all, with one pool)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s",
                        stream=sys.stderr)
    return asyncio.run(amain(args.lane))


if __name__ == "__main__":
    raise SystemExit(main())
