"""The queue of cold computations and sweep points when Redis is configured (arq).

Two arq queues, one per lane (``service.cost``): ``<STAIRCASE_REDIS_PREFIX>computations:cheap``
and ``<STAIRCASE_REDIS_PREFIX>computations:expensive``; they hold owner jobs (arq job id = the
job's id, so enqueueing is idempotent).  ``python -m service.worker --lane cheap|expensive|all``
processes serve them.  Without Redis the same jobs run in the API's own pool
(``service.jobs.Engine``), by the same code.

Fair order in a lane: arq starts the eligible job of lowest score first, so a job's score is its
enqueue time moved back by a round: a client's k-th waiting job (k = 0, 1, ...) gets
``enqueue time - ROUND * (MAX_ROUNDS - k)``, which puts it after the other clients' jobs of
rounds below k enqueued within ``ROUND`` (round robin across clients, as the local lanes do).
A client's waiting jobs are the set ``<prefix>waiting:<lane>:<client>`` (removed when a worker
starts one, or when it is cancelled).  Workers announce their slots per lane
(``<prefix>slots:<lane>:<worker>``, a key with a TTL), which the ETAs divide by.
"""
from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from typing import Any, Optional

import arq.connections
import arq.constants
import arq.jobs
import arq.worker
from arq import create_pool
from arq.connections import ArqRedis, RedisSettings

FUNCTION = "compute"
LANES = ("cheap", "expensive")
ROUND_MS = 3600 * 1000     # a round of the fair order
MAX_ROUNDS = 1000          # rounds beyond this share the last one (a sweep has at most 400 points)
SLOTS_TTL = 30             # seconds a worker's announcement of its slots lives (renewed every 10 s)

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


def queue_name(prefix: str, lane: str) -> str:
    return f"{prefix}computations:{lane}"


def waiting_key(prefix: str, lane: str, client: str) -> str:
    return f"{prefix}waiting:{lane}:{client or 'anonymous'}"


def slots_key(prefix: str, lane: str, worker: str = "*") -> str:
    return f"{prefix}slots:{lane}:{worker}"


def redis_settings(url: str) -> RedisSettings:
    """arq's connection to ``url``; one attempt, so a Redis that is down fails an enqueue at
    once (the caller then runs the job itself)."""
    settings = RedisSettings.from_dsn(url)
    settings.conn_retries, settings.conn_timeout = 0, 1
    return settings


def score(now_ms: int, rank: int) -> int:
    """The arq score of a client's ``rank``-th waiting job (0: its first)."""
    return now_ms - ROUND_MS * (MAX_ROUNDS - min(rank, MAX_ROUNDS))


class ArqQueue:
    def __init__(self, url: str, prefix: str, job_ttl: int = 7 * 24 * 3600):
        self.url = url
        self.prefix = prefix
        self.job_ttl = job_ttl
        self._redis: Optional[ArqRedis] = None
        use_prefix(prefix)

    async def redis(self) -> ArqRedis:
        if self._redis is None:
            self._redis = await create_pool(redis_settings(self.url),
                                            default_queue_name=queue_name(self.prefix, "expensive"))
        return self._redis

    async def put(self, job_id: str, spec: Any = None, lane: str = "expensive",
                  client: str = "") -> None:
        """Queue an owner job in its lane, in fair order; ``spec`` is its solver spec (pickled),
        so workers need not validate it again."""
        r = await self.redis()
        now = int(time.time() * 1000)
        wkey = waiting_key(self.prefix, lane, client)
        await r.zremrangebyscore(wkey, "-inf", now - self.job_ttl * 1000)  # lost ones
        rank = await r.zcard(wkey)
        await r.zadd(wkey, {job_id: now})
        await r.expire(wkey, self.job_ttl)
        when = datetime.fromtimestamp(score(now, rank) / 1000, tz=timezone.utc)
        await r.enqueue_job(FUNCTION, job_id, spec, _job_id=job_id,
                            _queue_name=queue_name(self.prefix, lane), _defer_until=when,
                            _expires=timedelta(seconds=self.job_ttl))

    async def started(self, job_id: str, lane: str, client: str) -> None:
        """A worker took the job up (or it was cancelled): no longer waiting."""
        await (await self.redis()).zrem(waiting_key(self.prefix, lane, client), job_id)

    async def drop(self, job_id: str, lane: str, client: str) -> None:
        """A cancelled job leaves the queue at once (its place is free for the next one)."""
        r = await self.redis()
        await r.zrem(queue_name(self.prefix, lane), job_id)
        await r.zrem(waiting_key(self.prefix, lane, client), job_id)

    async def waiting(self, lane: str) -> list[str]:
        """The lane's jobs not yet taken up by a worker, in the order they will start."""
        r = await self.redis()
        members = await r.zrange(queue_name(self.prefix, lane), 0, -1)
        ids = [m.decode() if isinstance(m, bytes) else m for m in members]
        if not ids:
            return []
        async with r.pipeline(transaction=False) as pipe:
            for j in ids:
                pipe.exists(in_progress_key(j))  # under the prefix (use_prefix renamed it)
            running = await pipe.execute()
        return [j for j, busy in zip(ids, running) if not busy]

    async def slots(self, lane: str) -> int:
        """Slots the live workers announce for ``lane``."""
        r = await self.redis()
        keys = [k async for k in r.scan_iter(match=slots_key(self.prefix, lane), count=100)]
        if not keys:
            return 0
        return sum(int(v) for v in await r.mget(keys) if v is not None)

    async def announce(self, lane: str, worker: str, slots: int) -> None:
        await (await self.redis()).set(slots_key(self.prefix, lane, worker), slots, ex=SLOTS_TTL)

    async def admit(self, lane: str, client: str, capacity: int, per_client: int) -> bool:
        """May a new job of ``client`` wait in ``lane``?"""
        r = await self.redis()
        if await r.zcard(waiting_key(self.prefix, lane, client)) >= per_client:
            return False
        return len(await self.waiting(lane)) < capacity

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None
