"""Key-value stores for fixed points, locks and job records.

* :class:`RedisStore`: redis-py's asyncio client (``STAIRCASE_REDIS_URL``).
* :class:`DiskStore`: an embedded on-disk cache (diskcache, ``STAIRCASE_CACHE_DIR``), so one
  machine needs nothing else.  Safe across processes (SQLite).

Both raise :class:`StoreUnavailable` when the backend cannot be reached; the layers above
degrade (compute anyway, keep job records in memory) and resume when it is back.
:class:`ResultCache` wraps a store with integrity checks: an entry that does not parse, names
another key or fails its checksum is ignored (and counted), so it gets recomputed.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
from typing import Optional

import diskcache
import orjson
import redis
import redis.asyncio as aioredis

from . import metrics

log = logging.getLogger("staircase.cache")

CACHE_FORMAT = "staircase-fixed-point/1"


class StoreUnavailable(Exception):
    """The backing store did not answer (Redis down, disk unwritable)."""


class Store:
    backend = "abstract"

    async def get(self, key: str) -> Optional[bytes]: ...
    async def set(self, key: str, value: bytes, ttl: Optional[float] = None) -> None: ...
    async def add(self, key: str, value: bytes, ttl: float) -> bool: ...
    async def delete(self, key: str) -> None: ...
    async def touch(self, key: str, ttl: float) -> None: ...
    async def mget(self, keys: list[str]) -> list[Optional[bytes]]: ...
    async def ping(self) -> bool: ...
    async def close(self) -> None: ...

    def info(self) -> dict:
        return {"backend": self.backend}


class RedisStore(Store):
    backend = "redis"

    def __init__(self, url: str, prefix: str = "staircase:"):
        self.url = url
        self.prefix = prefix
        self._errors = (redis.exceptions.RedisError, OSError, ConnectionError)
        self.client = aioredis.Redis.from_url(
            url, socket_connect_timeout=0.5, socket_timeout=2.0, retry_on_timeout=False,
            health_check_interval=5)
        self.available = True

    def _k(self, key: str) -> str:
        return self.prefix + key

    async def _call(self, coro):
        try:
            out = await coro
        except self._errors as exc:
            if self.available:
                log.warning("redis unavailable: %s", exc)
            self.available = False
            metrics.STORE_AVAILABLE.set(0)
            raise StoreUnavailable(str(exc)) from exc
        if not self.available:
            log.warning("redis is back")
        self.available = True
        metrics.STORE_AVAILABLE.set(1)
        return out

    async def get(self, key):
        return await self._call(self.client.get(self._k(key)))

    async def set(self, key, value, ttl=None):
        px = int(ttl * 1000) if ttl else None
        await self._call(self.client.set(self._k(key), value, px=px))

    async def add(self, key, value, ttl):
        return bool(await self._call(self.client.set(self._k(key), value, nx=True, px=int(ttl * 1000))))

    async def delete(self, key):
        await self._call(self.client.delete(self._k(key)))

    async def touch(self, key, ttl):
        await self._call(self.client.pexpire(self._k(key), int(ttl * 1000)))

    async def mget(self, keys):
        """Many keys in one round trip."""
        if not keys:
            return []
        return await self._call(self.client.mget([self._k(k) for k in keys]))

    async def ping(self):
        try:
            await self._call(self.client.ping())
            return True
        except StoreUnavailable:
            return False

    async def close(self):
        try:
            await self.client.aclose()
        except Exception:  # pragma: no cover - closing a dead connection
            pass

    def info(self):
        return {"backend": "redis", "available": self.available}


class DiskStore(Store):
    """diskcache.Cache: SQLite-backed, process-safe; operations take microseconds."""

    backend = "disk"

    def __init__(self, directory):
        self.directory = str(directory)
        self.cache = diskcache.Cache(self.directory, size_limit=2**30)
        self.available = True

    def _call(self, fn, *args, **kw):
        try:
            return fn(*args, **kw)
        except OSError as exc:  # disk full, permissions
            self.available = False
            metrics.STORE_AVAILABLE.set(0)
            raise StoreUnavailable(str(exc)) from exc

    async def get(self, key):
        v = self._call(self.cache.get, key)
        return v if isinstance(v, (bytes, type(None))) else None

    async def set(self, key, value, ttl=None):
        self._call(self.cache.set, key, value, expire=ttl)

    async def add(self, key, value, ttl):
        return bool(self._call(self.cache.add, key, value, expire=ttl))

    async def delete(self, key):
        self._call(self.cache.delete, key)

    async def touch(self, key, ttl):
        self._call(self.cache.touch, key, expire=ttl)

    async def mget(self, keys):
        return [await self.get(k) for k in keys]

    async def ping(self):
        return True

    async def close(self):
        self.cache.close()

    def info(self):
        return {"backend": "disk", "directory": self.directory, "available": True}


def make_store(settings) -> Store:
    if settings.redis_url:
        return RedisStore(settings.redis_url, settings.redis_prefix)
    return DiskStore(settings.cache_dir)


def cache_key(kind: str, spec: dict, solver_version: str, **numerics) -> str:
    """Hash of the canonical spec, the numerical settings and the solver version."""
    payload = {"kind": kind, "model": spec, "solver_version": solver_version, **numerics}
    digest = hashlib.sha256(orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)).hexdigest()
    return f"fp:{kind}:{digest}"


class ResultCache:
    """Immutable fixed points, checksummed.  Store outages read as misses."""

    def __init__(self, store: Store):
        self.store = store
        self._reads: dict[str, "asyncio.Future"] = {}

    @staticmethod
    def encode(key: str, result: dict) -> bytes:
        payload = orjson.dumps(result, option=orjson.OPT_SORT_KEYS)
        return orjson.dumps({"format": CACHE_FORMAT, "key": key,
                             "sha256": hashlib.sha256(payload).hexdigest(),
                             "payload": payload.decode()})

    @staticmethod
    def decode(key: str, raw) -> Optional[dict]:
        try:
            env = orjson.loads(raw)
            if not isinstance(env, dict) or env.get("format") != CACHE_FORMAT or env.get("key") != key:
                return None
            payload = env["payload"].encode()
            if hashlib.sha256(payload).hexdigest() != env.get("sha256"):
                return None
            result = orjson.loads(payload)
            return result if isinstance(result, dict) else None
        except Exception:
            return None

    async def get(self, key: str, kind: str) -> Optional[dict]:
        """Read and verify an entry.  Concurrent reads of one key share a single store read
        (single flight), so a burst of identical questions costs Redis one GET."""
        pending = self._reads.get(key)
        if pending is not None:
            try:
                return await asyncio.shield(pending)
            except asyncio.CancelledError:
                if not pending.cancelled():
                    raise  # this request itself was cancelled
                return await self._get(key, kind)  # the leading read was: read ourselves
        fut = asyncio.get_running_loop().create_future()
        self._reads[key] = fut
        try:
            result = await self._get(key, kind)
            fut.set_result(result)
            return result
        except asyncio.CancelledError:
            fut.cancel()
            raise
        except Exception as exc:
            fut.set_exception(exc)
            fut.exception()  # retrieved: no "never retrieved" warning when nobody waits
            raise
        finally:
            self._reads.pop(key, None)

    async def _get(self, key: str, kind: str) -> Optional[dict]:
        try:
            raw = await self.store.get(key)
        except StoreUnavailable:
            return None
        if raw is None:
            return None
        result = self.decode(key, raw)
        if result is None:
            metrics.CACHE_CORRUPT.labels(kind).inc()
            log.warning("ignoring a corrupt or foreign cache entry %s", key)
            try:
                await self.store.delete(key)
            except StoreUnavailable:
                pass
        return result

    async def put(self, key: str, result: dict) -> bool:
        try:
            await self.store.set(key, self.encode(key, result))
            return True
        except StoreUnavailable:
            return False
