"""The service's one Settings, read from the environment with the prefix ``STAIRCASE_``."""
from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal, Optional

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def _env(name: str, *old: str):
    """The field ``name`` read from STAIRCASE_<NAME>, or from the older variables ``old``."""
    return AliasChoices(name, *(f"STAIRCASE_{n.upper()}" for n in (name, *old)))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STAIRCASE_", extra="ignore", populate_by_name=True)

    # Redis (redis.asyncio) when set, e.g. redis://127.0.0.1:6379/0; else the embedded disk cache.
    redis_url: Optional[str] = None
    # Embedded on-disk cache (diskcache) used when no Redis URL is given.
    cache_dir: Path = Field(default_factory=lambda: Path.home() / ".cache" / "staircase")
    # Optional API key, sent by clients in the X-API-Key header; off when unset.
    api_key: Optional[SecretStr] = None
    # Processes of the expensive lane of the numerical pool (the API's, and each
    # `python -m service.worker`'s): at most this many expensive computations run at once there.
    workers: int = Field(default_factory=_default_workers, ge=1, le=64)
    # Processes of the cheap lane: computations estimated at most STAIRCASE_CHEAP_SECONDS run
    # there, never queued behind expensive ones (service.cost has the estimate).
    cheap_workers: int = Field(1, ge=1, le=64)
    # The estimate (seconds) up to which a computation is cheap.
    cheap_seconds: float = Field(5.0, ge=0.0, le=86400.0)
    # Expensive computations waiting at most (in this API process's lane, or in the arq queue
    # of the expensive lane); beyond this a new expensive question gets 429 with Retry-After.
    max_queued_expensive: int = Field(16, ge=0, le=100000)
    # Expensive computations one client (its host; a sweep counts as one) may have waiting at most.
    max_queued_per_client: int = Field(4, ge=1, le=100000)
    # Where cold computations and sweep points run: "local" (this process's pool) or "redis"
    # (the arq queue, served by `python -m service.worker`; needs STAIRCASE_REDIS_URL).
    queue: Literal["local", "redis"] = "local"
    # A POST waits this long for a cold computation before answering 202 + Location.
    sync_timeout: float = Field(120.0, ge=0.0, le=3600.0)
    # Jobs waiting or running at once in one API process; beyond this a cold request gets 429.
    max_pending_jobs: int = Field(64, ge=1, le=100000)
    # Keys in Redis start with this prefix (cache entries, leases, jobs, sweeps, the queue and
    # arq's own job, result, retry and in-progress keys).
    redis_prefix: str = "staircase:"
    # Longest a Redis command (or a connect) may take, seconds; one that takes longer opens the
    # circuit breaker: Redis is skipped (answers from this process's memory, or computed here)
    # until a background probe gets an answer again.
    redis_timeout: float = Field(0.05, ge=0.001, le=30.0)
    # Seconds between the breaker's probes of a Redis that failed (recovery is automatic).
    redis_probe_interval: float = Field(0.5, ge=0.01, le=60.0)
    # Cache entries (fixed points) expire after this many seconds (Redis and disk alike), so the
    # cache's footprint stays bounded; see also docker-compose's maxmemory policy.
    cache_ttl: int = Field(30 * 24 * 3600, ge=60)
    # Bytes of answers each process keeps in its own memory (an LRU, read- and write-through),
    # served while the store is unreachable and written back when it lost them.  0: off.
    memory_cache_bytes: int = Field(64 * 1024 * 1024, ge=0)
    # A computation's lease expires this long after its last heartbeat (seconds); then another
    # process may take the computation over.  (Formerly STAIRCASE_LOCK_TTL and STAIRCASE_SWEEP_LEASE.)
    lease: float = Field(15.0, ge=1.0, le=3600.0,
                         validation_alias=_env("lease", "lock_ttl", "sweep_lease"))
    # Times a queued computation is tried (a worker dying mid-computation costs one try).
    max_tries: int = Field(5, ge=1, le=100, validation_alias=_env("max_tries", "sweep_max_tries"))
    # Longest a queued computation may run (seconds).
    computation_timeout: float = Field(
        3 * 3600.0, ge=1.0, validation_alias=_env("computation_timeout", "sweep_point_timeout"))
    # A cancelled job still running after this many seconds has its process killed (0: at
    # once; a slot is one process, so killing it stops only that job).
    cancel_grace: float = Field(0.0, ge=0.0, le=600.0)
    # Job and sweep records are kept this long (seconds).
    job_ttl: int = Field(7 * 24 * 3600, ge=60)
    # `python -m service.worker` serves its Prometheus metrics on this port when set.
    worker_metrics_port: Optional[int] = Field(None, ge=1, le=65535)
    # Compile the numba kernels into the on-disk cache at start, in a background process (the
    # service is ready before; off: each kernel compiles where it is first used).
    warm_up: bool = True
    # Largest request body (bytes) read; a larger one is answered 413 before it is read whole.
    max_body_bytes: int = Field(1_048_576, ge=1024, le=1 << 30)

    @property
    def queued(self) -> bool:
        """Cold computations go to the arq queue (else this process's pool)."""
        return self.queue == "redis" and bool(self.redis_url)


@lru_cache
def get_settings() -> Settings:
    return Settings()
