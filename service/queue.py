"""The queue of cold computations and sweep points when Redis is configured (arq).

One arq queue, ``<STAIRCASE_REDIS_PREFIX>computations``, holds owner jobs (arq job id = the
job's id, so enqueueing is idempotent); ``python -m service.worker`` processes serve it.  Without
Redis the same jobs run in the API's own pool (``service.jobs.Engine``), by the same code.
"""
from __future__ import annotations

from typing import Any, Optional

from arq import create_pool
from arq.connections import ArqRedis, RedisSettings

FUNCTION = "compute"


def queue_name(prefix: str) -> str:
    return prefix + "computations"


def redis_settings(url: str) -> RedisSettings:
    """arq's connection to ``url``; one attempt, so a Redis that is down fails an enqueue at
    once (the caller then runs the job itself)."""
    settings = RedisSettings.from_dsn(url)
    settings.conn_retries, settings.conn_timeout = 0, 1
    return settings


class ArqQueue:
    def __init__(self, url: str, prefix: str):
        self.url = url
        self.name = queue_name(prefix)
        self._redis: Optional[ArqRedis] = None

    async def put(self, job_id: str, spec: Any = None) -> None:
        """Queue an owner job; ``spec`` is its solver spec (pickled), so workers need not
        validate it again."""
        if self._redis is None:
            self._redis = await create_pool(redis_settings(self.url), default_queue_name=self.name)
        await self._redis.enqueue_job(FUNCTION, job_id, spec, _job_id=job_id, _queue_name=self.name)

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None
