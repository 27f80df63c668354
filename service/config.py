"""Settings, read from the environment with the prefix ``STAIRCASE_`` (pydantic-settings)."""
from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal, Optional

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STAIRCASE_", extra="ignore")

    # Redis (redis.asyncio) when set, e.g. redis://127.0.0.1:6379/0; else the embedded disk cache.
    redis_url: Optional[str] = None
    # Embedded on-disk cache (diskcache) used when no Redis URL is given.
    cache_dir: Path = Field(default_factory=lambda: Path.home() / ".cache" / "staircase")
    # Optional API key, sent by clients in the X-API-Key header; off when unset.
    api_key: Optional[SecretStr] = None
    # Processes of the numerical pool (each compiles the numba kernels once at start).
    workers: int = Field(default_factory=_default_workers, ge=1, le=64)
    # Where jobs run: "local" (this process's pool) or "redis" (queued for `python -m service.worker`).
    queue: Literal["local", "redis"] = "local"
    # A POST waits this long for a cold computation before answering 202 + Location.
    sync_timeout: float = Field(120.0, ge=0.0, le=3600.0)
    # Jobs waiting or running at once; beyond this a cold request gets 429.
    max_pending_jobs: int = Field(64, ge=1, le=100000)
    # Keys in Redis start with this prefix (cache entries, locks, jobs, the queue).
    redis_prefix: str = "staircase:"
    # A computation lock expires this long after its last heartbeat (seconds).
    lock_ttl: float = Field(30.0, ge=1.0, le=3600.0)
    # A cancelled job still running after this many seconds has its process killed.
    cancel_grace: float = Field(2.0, ge=0.0, le=600.0)
    # Job records are kept this long (seconds).
    job_ttl: int = Field(7 * 24 * 3600, ge=60)
    # `python -m service.worker` serves its Prometheus metrics on this port when set.
    worker_metrics_port: Optional[int] = Field(None, ge=1, le=65535)
    # Warm the numba kernels in every pool process at start (turn off only to start faster).
    warm_up: bool = True


@lru_cache
def get_settings() -> Settings:
    return Settings()
