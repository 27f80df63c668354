"""The worker: ``python -m service.worker`` (docker-compose's ``worker``; needs STAIRCASE_REDIS_URL).

An arq worker on the queue ``<STAIRCASE_REDIS_PREFIX>computations``, where the API puts the
owner jobs of cold computations and sweep points when ``STAIRCASE_QUEUE=redis``.  Each job runs
through the same code as in the API without Redis (``Engine.execute``: the cache, else this
worker's process pool, warmed up at start), heart-beating its lease and arq's in-progress key
every ``STAIRCASE_LEASE / 3`` seconds.  A worker that dies (even SIGKILL) stops heart-beating:
within a lease arq hands the job to another worker, up to ``STAIRCASE_MAX_TRIES`` tries.
SIGTERM/SIGINT stop it; its running jobs go back to the queue.
"""
from __future__ import annotations

import asyncio
import logging
import signal
import sys
from typing import Optional

from arq.connections import RedisSettings
from arq.worker import Retry
from arq.worker import Worker as ArqWorker
from arq.worker import func
from prometheus_client import start_http_server

from .cache import RedisStore, StoreUnavailable
from .jobs import TERMINAL, Engine
from .pool import Pool
from .queue import FUNCTION, in_progress_key, queue_name, use_prefix
from .settings import Settings, get_settings

log = logging.getLogger("staircase.worker")


class Worker:
    def __init__(self, settings: Settings, pool: Optional[Pool] = None):
        if not settings.redis_url:
            raise SystemExit("service.worker needs STAIRCASE_REDIS_URL (the queue lives in Redis)")
        self.settings = settings
        self.store = RedisStore.of(settings)  # every call bounded, behind the circuit breaker
        use_prefix(settings.redis_prefix)  # arq's keys too
        self.pool = pool or Pool(settings.workers, warm=settings.warm_up)
        self.engine = Engine(settings, self.store, self.pool)
        self.stop = asyncio.Event()
        self.processed = 0

    async def compute(self, ctx: dict, job_id: str, spec=None) -> str:
        """One queued owner job (``spec``: its solver spec, from the API)."""
        engine, tries = self.engine, ctx["job_try"]
        job = await engine.load(job_id)
        if job is None and not self.store.available:  # its record is out of reach: not lost
            raise Retry(defer=self.settings.redis_probe_interval * 2)
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

    def arq_worker(self) -> ArqWorker:
        s = self.settings
        return ArqWorker(
            functions=[func(self.compute, name=FUNCTION, max_tries=s.max_tries + 1,
                            timeout=s.computation_timeout)],
            redis_settings=RedisSettings.from_dsn(s.redis_url), queue_name=queue_name(s.redis_prefix),
            max_jobs=self.pool.workers, keep_result=0, poll_delay=0.2, handle_signals=False,
            health_check_interval=30)

    async def serve(self) -> None:
        self.pool.start()
        await self.pool.warm_up()
        log.info("worker ready: %d processes, solvers %s, queue %s", self.pool.workers,
                 self.pool.version, queue_name(self.settings.redis_prefix))
        arq = self.arq_worker()
        running = asyncio.create_task(arq.async_run())
        stopping = asyncio.create_task(self.stop.wait())
        await asyncio.wait([running, stopping], return_when=asyncio.FIRST_COMPLETED)
        await arq.close()  # cancels running jobs: arq queues them again
        stopping.cancel()
        if running.done() and not running.cancelled() and running.exception() is not None:
            raise running.exception()  # the worker itself failed (e.g. no Redis)

    async def close(self) -> None:
        await self.engine.close()
        await self.store.close()
        self.pool.close(kill=True)


async def amain() -> int:
    settings = get_settings()
    worker = Worker(settings)
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


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s",
                        stream=sys.stderr)
    return asyncio.run(amain())


if __name__ == "__main__":
    raise SystemExit(main())
