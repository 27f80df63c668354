"""Computations as jobs: the one cache-or-compute path, for requests, jobs and sweep points.

The asking side (:meth:`Engine.answer`, :meth:`Engine.submit`):

1. look the fixed point up in the cache (hit: done);
2. claim the computation: the lease ``lock:<cache key>`` (service.leases) names the owning
   job, so identical cold questions, from this process or any replica, compute once and the
   others follow that job;
3. the owner job goes to the queue: the arq queue when ``STAIRCASE_QUEUE=redis``
   (``python -m service.worker`` runs it), else a task of this process (its pool);
4. a request waits up to ``STAIRCASE_SYNC_TIMEOUT`` seconds, then answers 202 with its job.

The running side (:meth:`Engine.execute`, here or in a worker): the cache again, else the
pool, heart-beating the lease and writing progress into the job record; the result goes to the
cache and the record.

Job records live in the store (``job:<id>``), so they survive restarts; a job whose lease
lapsed without an answer is resumed when it is next looked at.  When the store is down the
records stay in memory and computations run anyway.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import time
import uuid
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, fields
from typing import Any, Awaitable, Callable, Optional

import orjson
import redis

from . import metrics
from .cache import ResultCache, Store, StoreUnavailable
from .computations import COMPUTATIONS, Question
from .leases import Leases
from .pool import Pool
from .problems import Busy, ComputationFailed, solver_failure
from .queue import ArqQueue

log = logging.getLogger("staircase.jobs")

TERMINAL = ("done", "failed", "cancelled")
FOREVER = 1e7  # seconds: a deadline for waiters that never give up (sweep points)


@dataclass
class Job:
    id: str
    kind: str
    cache_key: str
    spec: dict
    params: dict
    request: dict
    owner: str
    status: str = "queued"
    done: int = 0
    total: int = 0
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)
    raw: Optional[dict] = None
    error: Optional[dict] = None
    view: str = ""  # the registry entry that renders the result (sample_size can view thresholds)
    cache: str = "miss"  # "hit": answered from the cache without computing
    seconds: Optional[float] = None  # wall time of the computation
    tries: int = 0  # attempts (a worker dying mid-computation costs one)
    worker: Optional[int] = None  # pid of the process that ran it
    solver_spec: Any = field(default=None, repr=False, compare=False)  # in memory only

    @classmethod
    def of(cls, q: Question, job_id: Optional[str] = None, **kw) -> "Job":
        jid = job_id or uuid.uuid4().hex
        return cls(id=jid, kind=q.kind, cache_key=q.key, spec=q.model, params=q.params,
                   request=q.request, owner=kw.pop("owner", jid), view=q.view, solver_spec=q.spec, **kw)

    def dump(self) -> bytes:
        return orjson.dumps({f.name: getattr(self, f.name) for f in fields(self)
                             if f.name != "solver_spec"})

    @classmethod
    def load(cls, raw) -> Optional["Job"]:
        try:
            return cls(**orjson.loads(raw))
        except Exception:
            return None

    def finish(self, raw: dict, cache: str) -> None:
        self.status, self.raw, self.cache = "done", raw, cache
        self.done = self.total = max(self.total, 1)

    def body(self) -> dict:
        """The job as ``GET /v1/jobs/{id}`` shows it."""
        result = None
        if self.status == "done" and self.raw is not None:
            result = COMPUTATIONS[self.view or self.kind].render(self.raw, self.request, "miss")
        return {"id": self.id, "kind": self.view or self.kind, "status": self.status,
                "progress": {"done": self.done, "total": self.total},
                "created_at": self.created_at, "updated_at": self.updated_at,
                "request": self.request, "result": result, "error": self.error}


@dataclass
class Answer:
    """Either a result (``raw`` + cache "hit"/"miss") or an accepted job."""

    raw: Optional[dict] = None
    cache: str = "miss"
    job: Optional[Job] = None


class Engine:
    def __init__(self, settings, store: Store, pool: Pool):
        self.settings = settings
        self.store = store
        self.cache = ResultCache(store, ttl=settings.cache_ttl,
                                 memory_bytes=settings.memory_cache_bytes)
        self.pool = pool
        self.leases = Leases(store, settings.lease)
        self.queue = ArqQueue(settings.redis_url, settings.redis_prefix) if settings.queued else None
        # a queued job holds its computation's lease until a worker takes it up
        self.claim_ttl = settings.job_ttl if settings.queued else settings.lease
        self.jobs: dict[str, Job] = {}          # records known to this process (store fallback)
        self.events: dict[str, asyncio.Event] = {}  # jobs this process is running
        self.inflight: dict[str, str] = {}      # cache key -> owning job id (this process)
        self.tasks: set[asyncio.Task] = set()

    # ---- records (degrade on outage)
    async def save(self, job: Job) -> None:
        job.updated_at = time.time()
        self._remember(job)
        try:  # kept for replay when the store is out: a record is never lost to an outage
            await self.store.set("job:" + job.id, job.dump(), ttl=self.settings.job_ttl, keep=True)
        except StoreUnavailable:
            pass

    def _remember(self, job: Job) -> None:
        """This process's copy of a record (what it reads while the store is out)."""
        self.jobs[job.id] = job
        if len(self.jobs) > 20000:  # keep memory bounded: drop the oldest finished
            for jid in [j for j, v in self.jobs.items() if v.status in TERMINAL][:5000]:
                self.jobs.pop(jid, None)

    async def load(self, job_id: str) -> Optional[Job]:
        local = self.jobs.get(job_id)
        if local is not None and job_id in self.events:
            return local  # running here: this object is the truth
        try:
            raw = await self.store.get("job:" + job_id)
        except StoreUnavailable:
            raw = None
        job = Job.load(raw) if raw is not None else None
        if job is None:
            return local
        if local is not None and local.updated_at >= job.updated_at:
            return local
        if job.status in TERMINAL:  # finished: stays readable here through an outage
            self._remember(job)
        return job

    async def load_many(self, job_ids: list[str]) -> list[Optional[Job]]:
        """Records of many jobs in one store round trip (None: unknown)."""
        try:
            raws = await self.store.mget(["job:" + j for j in job_ids])
        except StoreUnavailable:
            raws = [None] * len(job_ids)
        out = []
        for j, r in zip(job_ids, raws):
            job = Job.load(r) if r is not None else None
            if job is None:
                job = self.jobs.get(j)
            elif job.status in TERMINAL:  # finished: stays readable here through an outage
                self._remember(job)
            out.append(job)
        return out

    def pending(self) -> int:
        return len(self.events)

    # ---- the asking side
    async def answer(self, q: Question, respond_async: bool = False,
                     job_id: Optional[str] = None) -> Answer:
        """The cached answer, or the computed one within the sync timeout, or a job."""
        key = q.key
        raw = await self.cache.get(key, q.kind)
        if raw is not None:
            metrics.CACHE_HITS.labels(q.kind).inc()
            return Answer(raw=raw, cache="hit")
        metrics.CACHE_MISSES.labels(q.kind).inc()
        deadline = time.monotonic() + (0.0 if respond_async else self.settings.sync_timeout)
        for _ in range(100):
            owner = await self._claim(q, job_id)
            if isinstance(owner, dict):  # became available while claiming
                return Answer(raw=owner, cache="hit")
            outcome = await self._wait(key, owner, deadline)
            if outcome == "retry":
                continue
            if outcome is None:  # still running: 202
                return Answer(job=await self._job_for(owner, q, job_id))
            return Answer(raw=outcome, cache="miss")
        raise ComputationFailed({"detail": "the computation was cancelled repeatedly"})

    async def submit(self, q: Question, job_id: Optional[str] = None) -> Job:
        """A job for the question, always (done at once when cached)."""
        ans = await self.answer(q, respond_async=True, job_id=job_id)
        if ans.job is not None:
            return ans.job
        job = Job.of(q, job_id, done=1, total=1)
        job.finish(ans.raw, ans.cache)
        job.seconds, job.tries = 0.0, 1
        await self.save(job)
        return job

    async def settle(self, job: Job) -> Job:
        """Wait until ``job`` (or the job it follows) has finished; its record then."""
        try:
            await self._wait(job.cache_key, job.owner, time.monotonic() + FOREVER)
        except ComputationFailed:
            pass
        return await self.get(job.id) or job

    async def _claim(self, q: Question, job_id: Optional[str]):
        """The id of the job computing ``q`` (started here if nobody is), or the result."""
        key = q.key
        if key in self.inflight:
            return self.inflight[key]
        job = Job.of(q, job_id)
        if not await self.leases.take(key, job.id, ttl=self.claim_ttl):
            holder = await self.leases.holder(key)
            if holder:
                return holder
            return await self._claim(q, job_id)  # released meanwhile
        raw = await self.cache.get(key, q.kind)
        if raw is not None:
            await self.leases.release(key, job.id)
            return raw
        if self.pending() >= self.settings.max_pending_jobs:
            await self.leases.release(key, job.id)
            raise Busy()
        await self._start(job)
        return job.id

    async def _start(self, job: Job) -> None:
        if self.queue is not None:
            await self.save(job)
            try:
                # under the store's guard: a stuck Redis fails at once, and the job runs here
                await self.store.guard(self.queue.put(job.id, job.solver_spec))
                return
            except (StoreUnavailable, redis.exceptions.RedisError, OSError):
                log.warning("the queue is unreachable: job %s runs here", job.id)
        self.inflight[job.cache_key] = job.id
        self.events[job.id] = asyncio.Event()
        metrics.JOBS_ACTIVE.set(len(self.events))
        await self.save(job)
        self._spawn(self.execute(job))

    def _spawn(self, coro) -> None:
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _wait(self, key: str, owner_id: str, deadline: float):
        """The owner's raw result, None on timeout, "retry" when the owner went away."""
        delay = 0.02
        while True:
            remaining = deadline - time.monotonic()
            ev = self.events.get(owner_id)
            if ev is not None:
                try:
                    await asyncio.wait_for(ev.wait(), timeout=max(remaining, 0))
                except asyncio.TimeoutError:
                    return None
                job = self.jobs[owner_id]
            else:
                raw = await self.cache.get(key, "wait")
                if raw is not None:
                    return raw
                job = await self.load(owner_id)
                if job is None or (job.status not in TERMINAL and not await self.leases.holder(key)):
                    return "retry"
                if job.status not in TERMINAL:
                    if remaining <= 0:
                        return None
                    await asyncio.sleep(min(delay, remaining))
                    delay = min(delay * 1.5, 0.25)
                    continue
            if job.status == "done" and job.raw is not None:
                return job.raw
            if job.status == "failed":
                raise ComputationFailed(job.error or {"detail": "computation failed"})
            return "retry"  # cancelled by someone else: compute it for this request

    async def _job_for(self, owner_id: str, q: Question, job_id: Optional[str]) -> Job:
        """The job to hand out: the owner itself, or one following it."""
        owner = self.jobs.get(owner_id) or await self.load(owner_id)
        if owner is not None and (owner.id == job_id or (
                job_id is None and owner.request == q.request and owner.view == q.view)):
            return owner
        job = Job.of(q, job_id, owner=owner_id)
        await self.save(job)
        return job

    # ---- the running side (here, or in `python -m service.worker`)
    async def execute(self, job: Job, tries: int = 1,
                      renew: Optional[Callable[[], Awaitable[None]]] = None) -> None:
        """Run an owner job: the cache, else the pool, heart-beating its lease (and ``renew``,
        the queue's own lease on the job, in a worker)."""
        key = job.cache_key
        ev = self.events.setdefault(job.id, asyncio.Event())
        self.inflight[key] = job.id
        try:
            await self._execute(job, tries, renew)
        except Exception as exc:  # never leave waiters hanging
            log.exception("job %s crashed", job.id)
            job.status, job.error = "failed", {"detail": f"{type(exc).__name__}: {exc}"}
            await self.save(job)
        finally:
            if self.inflight.get(key) == job.id:
                del self.inflight[key]
            await self.leases.release(key, job.id)
            self.pool.forget(job.id)
            ev.set()
            self.events.pop(job.id, None)
            metrics.JOBS_ACTIVE.set(len(self.events))

    async def _execute(self, job: Job, tries: int, renew) -> None:
        if job.status == "cancelled":
            return
        job.tries, job.worker = tries, os.getpid()
        raw = await self.cache.get(job.cache_key, job.kind)
        if raw is not None:  # computed meanwhile (a queued or resumed job)
            job.finish(raw, "hit")
            job.seconds = 0.0
            await self.save(job)
            return
        t0 = time.perf_counter()
        for attempt in (1, 2, 3):
            fut, executor = self.pool.submit(job.kind, job.solver_spec or job.spec, job.params, job.id)
            afut = asyncio.wrap_future(fut)
            last_beat = time.monotonic()
            while not afut.done():
                await asyncio.wait([afut], timeout=0.5)
                prog = self.pool.progress(job.id)
                started = job.status == "queued" and (fut.running() or afut.done() or bool(prog))
                advanced = bool(prog) and (prog[0], prog[1]) != (job.done, job.total)
                if started:
                    job.status = "running"
                if advanced:
                    job.done, job.total = prog
                if started or advanced:  # one record write per poll
                    await self.save(job)
                if time.monotonic() - last_beat > self.settings.lease / 3:
                    last_beat = time.monotonic()
                    await self._heartbeat(job, renew)
            prog = self.pool.progress(job.id)  # the last report (a short job may end unpolled)
            if prog:
                job.done, job.total = prog
            try:
                outcome, info = afut.result()
                break
            except BrokenProcessPool:
                self.pool.restart(executor)
                outcome, info = "error", {"detail": "a solver process died"}
                if job.status == "cancelled":
                    outcome = "cancelled"
                    break
                job.tries += 1
                log.error("a pool process died; resubmitting job %s (attempt %d)", job.id, attempt)
            except concurrent.futures.CancelledError:
                outcome, info = "cancelled", {}
                break
        job.seconds = time.perf_counter() - t0
        metrics.COMPUTATIONS.labels(job.kind, outcome).inc()
        metrics.COMPUTE_SECONDS.labels(job.kind).observe(job.seconds)
        if outcome == "ok":
            await self.cache.put(job.cache_key, info)
            if job.status != "cancelled":
                job.finish(info, "miss")
        elif outcome == "cancelled" or job.status == "cancelled":
            job.status = "cancelled"
        else:
            job.status = "failed"
            job.error = solver_failure(outcome, info, COMPUTATIONS[job.kind].field_of)
        await self.save(job)

    async def _heartbeat(self, job: Job, renew) -> None:
        try:
            await self.leases.renew(job.cache_key)
            if renew is not None:
                await self.store.guard(renew())
            stored = await self.load(job.id)  # cancelled through another replica?
            if stored is not None and stored.status == "cancelled" and job.status != "cancelled":
                job.status = "cancelled"
                self._stop(job.id)
        except (StoreUnavailable, redis.exceptions.RedisError):
            pass

    # ---- the jobs API
    async def get(self, job_id: str) -> Optional[Job]:
        job = await self.load(job_id)
        if job is None:
            return None
        if job.owner != job.id and job.status not in TERMINAL:
            owner = await self.load(job.owner)
            if owner is None:
                job.status, job.error = "failed", {"detail": "the computation was lost"}
            else:
                job.done, job.total = owner.done, owner.total
                job.seconds, job.tries, job.worker = owner.seconds, owner.tries, owner.worker
                if owner.status in TERMINAL:
                    job.status, job.raw, job.error = owner.status, owner.raw, owner.error
                elif owner.status == "running":
                    job.status = "running"
                if owner.status not in TERMINAL:
                    await self._resume_if_orphaned(owner)
            await self.save(job)
        elif job.status not in TERMINAL:
            await self._resume_if_orphaned(job)
        return job

    async def _resume_if_orphaned(self, job: Job) -> None:
        """A job whose lease lapsed unanswered (its process went away): start it again.
        (Not while the store is out: then no lease can be read, and nothing is known to lapse.)"""
        if job.id in self.events or not self.store.available:
            return
        if await self.leases.holder(job.cache_key) is not None or not self.store.available:
            return
        if await self.leases.take(job.cache_key, job.id, ttl=self.claim_ttl) and job.id not in self.events:
            log.warning("resuming interrupted job %s", job.id)
            job.status = "queued"
            await self._start(job)

    async def cancel(self, job_id: str) -> Optional[Job]:
        job = await self.get(job_id)
        if job is None or job.status in TERMINAL:
            return job
        job.status = "cancelled"
        await self.save(job)
        if job.owner == job.id:
            local = self.jobs.get(job.id)
            if local is not None:
                local.status = "cancelled"
            self._stop(job.id)
        return job

    def _stop(self, job_id: str) -> None:
        """Cancel flag now (the solvers see it at their next progress report); if the job
        still runs after the grace period, kill its process."""
        self.pool.cancel(job_id)
        if job_id not in self.events:
            return

        async def enforce():
            await asyncio.sleep(self.settings.cancel_grace)
            if job_id in self.events:
                self.pool.kill(job_id)

        self._spawn(enforce())

    async def close(self) -> None:
        for t in list(self.tasks):
            t.cancel()
        if self.queue is not None:
            await self.queue.close()
