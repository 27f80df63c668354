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
import time
from collections import OrderedDict
from typing import Optional

import diskcache
import orjson
import redis
import redis.asyncio as aioredis

from . import metrics

log = logging.getLogger("staircase.cache")

CACHE_FORMAT = "staircase-fixed-point/1"


class StoreUnavailable(Exception):
    """The backing store did not answer (Redis down or stuck, disk unwritable)."""


class Store:
    backend = "abstract"
    available = True

    async def get(self, key: str) -> Optional[bytes]: ...
    async def set(self, key: str, value: bytes, ttl: Optional[float] = None,
                  keep: bool = False) -> None: ...
    async def add(self, key: str, value: bytes, ttl: float) -> bool: ...
    async def delete(self, key: str) -> None: ...
    async def touch(self, key: str, ttl: float) -> None: ...
    async def mget(self, keys: list[str]) -> list[Optional[bytes]]: ...
    async def ping(self) -> bool: ...
    async def close(self) -> None: ...

    async def guard(self, coro):
        """Run another client's call on the same backend (arq's) under this store's guard."""
        return await coro

    def info(self) -> dict:
        return {"backend": self.backend}


class RedisStore(Store):
    """redis.asyncio behind THE guard of every Redis call (the store's own, and arq's through
    :meth:`guard`).

    A call (connect, send and read alike) that has no answer after ``timeout`` seconds, while
    Redis answered no other call in that time either, has failed: Redis is stuck.  (When other
    calls were answered meanwhile, or the guard itself woke late, Redis is alive and this
    process merely busy -- a burst of requests holds the event loop, or the machine did not
    schedule it -- so the call waits on; a busy process must not open the breaker, or every
    lease would be granted and identical questions computed many times.  redis-py's own socket
    timeouts, 20x longer but at least 1 s, are the backstop.)  A failure or a stuck call opens the
    circuit breaker: while it is open no call touches Redis (each raises
    :class:`StoreUnavailable` at once, so callers degrade without waiting), and a background
    probe pings Redis every ``probe_interval`` seconds; when Redis answers, the writes kept
    during the outage (``set(..., keep=True)``: results, job and sweep records) are replayed
    and the breaker closes.
    """

    backend = "redis"
    KEEP_BYTES = 64 * 1024 * 1024  # writes kept for replay, at most (the oldest are dropped)

    def __init__(self, url: str, prefix: str = "staircase:", timeout: float = 0.05,
                 probe_interval: float = 0.5):
        self.url = url
        self.prefix = prefix
        self.timeout = timeout
        self.probe_interval = probe_interval
        self._errors = (redis.exceptions.RedisError, OSError, ConnectionError, asyncio.TimeoutError)
        backstop = max(1.0, 20 * timeout)
        self.client = aioredis.Redis.from_url(
            url, socket_connect_timeout=backstop, socket_timeout=backstop, retry_on_timeout=False,
            health_check_interval=5)
        self.available = True
        self.last_answer = 0.0  # monotonic time Redis last answered a call
        self.opened_at: Optional[float] = None   # monotonic time the breaker opened
        self._probe: Optional[asyncio.Task] = None
        self._kept: "OrderedDict[str, tuple[bytes, Optional[float]]]" = OrderedDict()
        self._kept_bytes = 0

    @classmethod
    def of(cls, settings) -> "RedisStore":
        return cls(settings.redis_url, settings.redis_prefix, timeout=settings.redis_timeout,
                   probe_interval=settings.redis_probe_interval)

    def _k(self, key: str) -> str:
        return self.prefix + key

    # ---- the guard
    async def guard(self, coro):
        if not self.available:  # breaker open: do not wait for a Redis that is not answering
            coro.close()
            raise StoreUnavailable("redis is unavailable (circuit open; probing)")
        call = asyncio.ensure_future(coro)
        try:
            while True:
                since = time.monotonic()
                await asyncio.wait([call], timeout=self.timeout)
                for _ in range(3):  # replies that came while the loop was busy: read them first
                    if call.done():
                        break
                    await asyncio.sleep(0)
                if call.done():
                    out = call.result()
                    self.last_answer = time.monotonic()
                    return out
                late = time.monotonic() - since - self.timeout
                if late > self.timeout / 2:  # this process was busy (or not scheduled): not a
                    log.debug("redis guard woke %.3f s late; waiting on", late)  # verdict on Redis
                    continue
                if self.last_answer <= since:  # no answer to anyone for `timeout` s: stuck
                    call.cancel()
                    raise asyncio.TimeoutError(f"no answer from redis within {self.timeout} s")
        except self._errors as exc:
            self._open(exc)
            raise StoreUnavailable(str(exc) or type(exc).__name__) from exc
        except BaseException:  # cancelled (the request went away): the call goes with it
            call.cancel()
            raise

    def _open(self, exc) -> None:
        if self.available:
            log.warning("redis unavailable (%s): circuit open, probing every %.2f s",
                        str(exc) or type(exc).__name__, self.probe_interval)
            self.opened_at = time.monotonic()
        self.available = False
        metrics.STORE_AVAILABLE.set(0)
        if self._probe is None or self._probe.done():
            try:
                self._probe = asyncio.get_running_loop().create_task(self._probing())
            except RuntimeError:  # pragma: no cover - no loop: the next call probes
                self.available = True

    async def _probing(self) -> None:
        while True:
            await asyncio.sleep(self.probe_interval)
            try:
                async with asyncio.timeout(self.timeout * 4):
                    await self.client.ping()
                self.last_answer = time.monotonic()
                await self._replay()
            except self._errors:
                continue
            except Exception:  # pragma: no cover - keep probing whatever happened
                log.exception("redis probe failed")
                continue
            log.warning("redis is back after %.1f s: circuit closed",
                        time.monotonic() - (self.opened_at or time.monotonic()))
            self.available, self.opened_at = True, None
            metrics.STORE_AVAILABLE.set(1)
            return

    def _keep(self, key: str, value: bytes, ttl: Optional[float]) -> None:
        old = self._kept.pop(key, None)
        if old is not None:
            self._kept_bytes -= len(old[0])
        self._kept[key] = (value, time.time() + ttl if ttl else None)
        self._kept_bytes += len(value)
        while self._kept_bytes > self.KEEP_BYTES and self._kept:
            _, (v, _) = self._kept.popitem(last=False)
            self._kept_bytes -= len(v)

    async def _replay(self) -> None:
        """Write what was kept during the outage (oldest first; a failure keeps the rest)."""
        while self._kept:
            key, (value, expires) = next(iter(self._kept.items()))
            if expires is None or expires > time.time():
                px = int((expires - time.time()) * 1000) if expires else None
                async with asyncio.timeout(self.timeout * 4):
                    await self.client.set(self._k(key), value, px=px or None)
            self._kept.pop(key, None)
            self._kept_bytes -= len(value)
        if self._kept_bytes:  # pragma: no cover - bookkeeping drift
            self._kept_bytes = 0

    # ---- the commands
    async def get(self, key):
        return await self.guard(self.client.get(self._k(key)))

    async def set(self, key, value, ttl=None, keep=False):
        px = int(ttl * 1000) if ttl else None
        try:
            await self.guard(self.client.set(self._k(key), value, px=px))
        except StoreUnavailable:
            if keep:
                self._keep(key, value, ttl)
            raise
        if keep and key in self._kept:  # a newer value went through: never replay the old one
            self._kept_bytes -= len(self._kept.pop(key)[0])

    async def add(self, key, value, ttl):
        return bool(await self.guard(self.client.set(self._k(key), value, nx=True, px=int(ttl * 1000))))

    async def delete(self, key):
        await self.guard(self.client.delete(self._k(key)))

    async def touch(self, key, ttl):
        await self.guard(self.client.pexpire(self._k(key), int(ttl * 1000)))

    async def mget(self, keys):
        """Many keys in one round trip."""
        if not keys:
            return []
        return await self.guard(self.client.mget([self._k(k) for k in keys]))

    async def ping(self):
        try:
            await self.guard(self.client.ping())
            return True
        except StoreUnavailable:
            return False

    async def close(self):
        if self._probe is not None:
            self._probe.cancel()
        try:
            await self.client.aclose()
        except Exception:  # pragma: no cover - closing a dead connection
            pass

    def info(self):
        out = {"backend": "redis", "available": self.available}
        if self.opened_at is not None:
            out["unavailable_seconds"] = round(time.monotonic() - self.opened_at, 3)
        return out


class DiskStore(Store):
    """diskcache.Cache: SQLite-backed, process-safe; operations take microseconds."""

    backend = "disk"

    def __init__(self, directory):
        self.directory = str(directory)
        self.cache = diskcache.Cache(self.directory, size_limit=2**30)
        self.available = True

    def _call(self, fn, *args, **kw):
        try:
            out = fn(*args, **kw)
        except OSError as exc:  # disk full, permissions
            self.available = False
            metrics.STORE_AVAILABLE.set(0)
            raise StoreUnavailable(str(exc)) from exc
        if not self.available:  # the disk works again
            self.available = True
            metrics.STORE_AVAILABLE.set(1)
        return out

    async def get(self, key):
        v = self._call(self.cache.get, key)
        return v if isinstance(v, (bytes, type(None))) else None

    async def set(self, key, value, ttl=None, keep=False):
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
        return {"backend": "disk", "directory": self.directory, "available": self.available}


def make_store(settings) -> Store:
    if settings.redis_url:
        return RedisStore.of(settings)
    return DiskStore(settings.cache_dir)


def cache_key(kind: str, spec: dict, solver_version: str, **numerics) -> str:
    """Hash of the canonical spec, the numerical settings and the solver version."""
    payload = {"kind": kind, "model": spec, "solver_version": solver_version, **numerics}
    digest = hashlib.sha256(orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)).hexdigest()
    return f"fp:{kind}:{digest}"


class Memory:
    """The process's own LRU of verified answers, bounded in bytes (their encoded size)."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.entries: "OrderedDict[str, tuple[dict, int]]" = OrderedDict()
        self.bytes = 0

    def get(self, key: str) -> Optional[dict]:
        entry = self.entries.get(key)
        if entry is None:
            return None
        self.entries.move_to_end(key)
        return entry[0]

    def clear(self) -> None:
        self.entries.clear()
        self.bytes = 0

    def put(self, key: str, result: dict, size: int) -> None:
        if size > self.max_bytes:
            return
        old = self.entries.pop(key, None)
        if old is not None:
            self.bytes -= old[1]
        self.entries[key] = (result, size)
        self.bytes += size
        while self.bytes > self.max_bytes:
            _, (_, n) = self.entries.popitem(last=False)
            self.bytes -= n


class ResultCache:
    """Immutable fixed points, checksummed, with a time to live (``ttl``, seconds).

    The store is the truth; the process's own memory (:class:`Memory`, read- and write-through)
    answers when the store cannot (an outage, an open circuit) and when it lost an entry (Redis
    restarted empty, or evicted it): then the entry is written back.  A cache key names its
    inputs and the solver version, so an entry never changes and the memory is never stale."""

    def __init__(self, store: Store, ttl: Optional[float] = None, memory_bytes: int = 64 << 20):
        self.store = store
        self.ttl = ttl
        self.memory = Memory(memory_bytes)
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
            return self.memory.get(key)
        result = self.decode(key, raw) if raw is not None else None
        if raw is not None and result is None:
            metrics.CACHE_CORRUPT.labels(kind).inc()
            log.warning("ignoring a corrupt or foreign cache entry %s", key)
            try:
                await self.store.delete(key)
            except StoreUnavailable:
                pass
        if result is not None:
            self.memory.put(key, result, len(raw))
            return result
        result = self.memory.get(key)
        if result is not None:  # the store lost it (restarted empty, evicted): write it back
            await self.put(key, result)
        return result

    async def put(self, key: str, result: dict) -> bool:
        """Keep ``result`` here and in the store (kept for replay when the store is out)."""
        data = self.encode(key, result)
        self.memory.put(key, result, len(data))
        try:
            await self.store.set(key, data, ttl=self.ttl, keep=True)
            return True
        except StoreUnavailable:
            return False
