"""The queue of cold computations and sweep points when Redis is configured (arq).

One arq queue, ``<STAIRCASE_REDIS_PREFIX>computations``, holds owner jobs (arq job id = the
job's id, so enqueueing is idempotent); ``python -m service.worker`` processes serve it.  Without
Redis the same jobs run in the API's own pool (``service.jobs.Engine``), by the same code.
"""
from __future__ import annotations

from typing import Any, Optional

import arq.connections
import arq.constants
import arq.jobs
import arq.worker
from arq import create_pool
from arq.connections import ArqRedis, RedisSettings

FUNCTION = "compute"

# arq (0.28) names its keys with module constants ("arq:job:<id>", "arq:result:<id>",
# "arq:retry:<id>", "arq:in-progress:<id>", the sorted set "arq:abort"), imported by name into
# its modules, and offers no option for them.  use_prefix puts them under the prefix.
ARQ_KEYS = {name: getattr(arq.constants, name) for name in (
    "job_key_prefix", "in_progress_key_prefix", "result_key_prefix", "retry_key_prefix",
    "abort_jobs_ss")}
_ARQ_MODULES = (arq.constants, arq.connections, arq.jobs, arq.worker)


def use_prefix(prefix: str) -> None:
    """Name arq's own keys ``<prefix>arq:...``, like every other key of the service (the queue
    itself is ``queue_name(prefix)``, its health check ``queue_name(prefix):health-check``).
    Process-wide: a process serves one STAIRCASE_REDIS_PREFIX (the API and every worker set it
    from the same setting)."""
    for name, original in ARQ_KEYS.items():
        for module in _ARQ_MODULES:
            if hasattr(module, name):
                setattr(module, name, prefix + original)


def in_progress_key(arq_job_id: str) -> str:
    """arq's in-progress key of a job (a worker renews it while the job runs)."""
    return arq.worker.in_progress_key_prefix + arq_job_id


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
        use_prefix(prefix)

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
