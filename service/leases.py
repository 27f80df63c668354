"""Leases: the one scheme by which a process owns a piece of work across processes and replicas.

A lease is the key ``lock:<name>`` in the store, holding its holder's id, taken atomically
(SET NX on Redis, ``add`` on diskcache) with a time to live, and renewed by its holder every
``ttl / 3`` seconds while it works.  A holder that dies stops renewing; the lease expires and
another process takes the work over.  Names in use: ``lock:<cache key>`` (the computation of a
fixed point: holder = the owning job's id) and ``lock:sweep:<id>`` (the local runner of a sweep).
When the store is down every ``take`` succeeds (dedupe within this process only).
"""
from __future__ import annotations

from typing import Optional

from .cache import Store, StoreUnavailable


class Leases:
    def __init__(self, store: Store, ttl: float):
        self.store = store
        self.ttl = ttl

    @staticmethod
    def key(name: str) -> str:
        return "lock:" + name

    async def take(self, name: str, holder: str, ttl: Optional[float] = None) -> bool:
        try:
            return await self.store.add(self.key(name), holder.encode(), ttl=ttl or self.ttl)
        except StoreUnavailable:
            return True

    async def give(self, name: str, holder: str) -> None:
        """Take the lease whoever holds it (a queued job starting to run)."""
        try:
            await self.store.set(self.key(name), holder.encode(), ttl=self.ttl)
        except StoreUnavailable:
            pass

    async def holder(self, name: str) -> Optional[str]:
        try:
            v = await self.store.get(self.key(name))
        except StoreUnavailable:
            return None
        return v.decode() if isinstance(v, bytes) else v

    async def renew(self, name: str) -> None:
        await self.store.touch(self.key(name), self.ttl)

    async def release(self, name: str, holder: str) -> None:
        try:
            if await self.holder(name) == holder:
                await self.store.delete(self.key(name))
        except StoreUnavailable:
            pass
