"""The job worker: ``python -m service.worker`` (docker-compose's ``worker`` service).

With ``STAIRCASE_QUEUE=redis`` the API queues cold computations in Redis
(``<prefix>queue``); this process pops them, runs them in its own process pool (warmed up at
start) and writes progress, results and the cache entry to Redis, where any API replica
reads them.  It needs ``STAIRCASE_REDIS_URL``.  SIGTERM/SIGINT stop it after the running jobs.
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys

from .cache import RedisStore, StoreUnavailable
from .config import get_settings
from .jobs import QUEUE, TERMINAL, Engine, Pool

log = logging.getLogger("staircase.worker")


class Worker:
    def __init__(self, settings, pool: Pool | None = None):
        if not settings.redis_url:
            raise SystemExit("service.worker needs STAIRCASE_REDIS_URL (the queue lives in Redis)")
        self.settings = settings
        self.store = RedisStore(settings.redis_url, settings.redis_prefix)
        self.pool = pool or Pool(settings.workers, warm=settings.warm_up)
        self.engine = Engine(settings, self.store, self.pool)
        self.stop = asyncio.Event()
        self.processed = 0

    async def handle(self, job_id: str) -> None:
        store, engine = self.store, self.engine
        job = await engine.load(job_id)
        if job is None or job.status in TERMINAL:
            return
        if not await store.add("run:" + job_id, str(os.getpid()).encode(), ttl=self.settings.lock_ttl):
            return  # another worker has it
        try:
            raw = await engine.cache.get(job.cache_key, job.kind)
            if raw is not None:
                job.status, job.raw = "done", raw
                job.done = job.total = max(job.total, 1)
                await engine.save(job)
                return
            await store.set("lock:" + job.cache_key, job.id.encode(), ttl=self.settings.lock_ttl)
            log.info("running job %s (%s)", job.id, job.kind)
            await engine.run(job)
            self.processed += 1
            log.info("job %s: %s", job.id, job.status)
        finally:
            try:
                await store.delete("run:" + job_id)
            except StoreUnavailable:
                pass

    async def serve(self) -> None:
        self.pool.start()
        await self.pool.warm_up()
        log.info("worker ready: %d processes, solvers %s", self.pool.workers, self.pool.version)
        slots = asyncio.Semaphore(self.pool.workers)
        tasks: set[asyncio.Task] = set()
        while not self.stop.is_set():
            await slots.acquire()
            try:
                raw = await self.store.pop(QUEUE, timeout=1)
            except StoreUnavailable:
                slots.release()
                await asyncio.sleep(1.0)
                continue
            if raw is None:
                slots.release()
                continue
            task = asyncio.create_task(self.handle(raw.decode()))
            tasks.add(task)
            task.add_done_callback(lambda t: (tasks.discard(t), slots.release()))
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def close(self) -> None:
        await self.store.close()
        self.pool.close(kill=True)


async def amain() -> int:
    settings = get_settings()
    worker = Worker(settings)
    if settings.worker_metrics_port:
        from prometheus_client import start_http_server

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
