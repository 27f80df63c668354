"""Computations as jobs: the one cache-or-compute path, for requests, jobs and sweep points.

The asking side (:meth:`Engine.answer`, :meth:`Engine.submit`):

1. look the fixed point up in the cache (hit: done);
2. claim the computation: the lease ``lock:<cache key>`` (service.leases) names the owning
   job, so identical cold questions, from this process or any replica, compute once and the
   others follow that job;
3. the owner job goes to the queue: the arq queue when ``STAIRCASE_QUEUE=redis``
   (``python -m service.worker`` runs it), else a task of this process (its pool);
4. a request waits up to ``STAIRCASE_SYNC_TIMEOUT`` seconds, then answers 202 with its job.

Before it starts, every computation gets its cost estimate (``service.cost``) and so its lane;
an expensive one is admitted only while its lane's waiting list has room (else 429 with
Retry-After).

The running side (:meth:`Engine.execute`, here or in a worker): the cache again, else a slot
of the job's lane (``service.scheduler``: queued with a position and an ETA until one is free),
heart-beating the lease and writing progress into the job record; the result goes to the cache
and the record.  A cancel frees the slot at once (the waiting list, or the process is killed).

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

from . import cost, metrics
from .cache import ResultCache, Store, StoreUnavailable
from .computations import COMPUTATIONS, Question
from .leases import Leases
from .pool import LANES, Pool
from .problems import Busy, ComputationFailed, solver_failure
from .queue import ArqQueue
from .scheduler import Lane, Ticket, retry_after

log = logging.getLogger("staircase.jobs")

TERMINAL = ("done", "failed", "cancelled")
TRANSIENT = ("solver_spec", "queue_position", "eta_seconds")  # Job fields never stored
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
    estimated_seconds: Optional[float] = None  # service.cost's estimate, before it started
    lane: str = ""  # "cheap" or "expensive" (from the estimate)
    client: str = ""  # who asked (fair order in the expensive lane)
    started_at: Optional[float] = None  # when a slot started computing it
    solver_spec: Any = field(default=None, repr=False, compare=False)  # in memory only
    # where it is now, filled in when it is read (never stored)
    queue_position: Optional[int] = field(default=None, compare=False)
    eta_seconds: Optional[float] = field(default=None, compare=False)

    @classmethod
    def of(cls, q: Question, job_id: Optional[str] = None, **kw) -> "Job":
        jid = job_id or uuid.uuid4().hex
        return cls(id=jid, kind=q.kind, cache_key=q.key, spec=q.model, params=q.params,
                   request=q.request, owner=kw.pop("owner", jid), view=q.view, solver_spec=q.spec,
                   estimated_seconds=cost.estimate(q.kind, q.model, q.params), **kw)

    def dump(self) -> bytes:
        return orjson.dumps({f.name: getattr(self, f.name) for f in fields(self)
                             if f.name not in TRANSIENT})

    @classmethod
    def load(cls, raw) -> Optional["Job"]:
        try:
            return cls(**{k: v for k, v in orjson.loads(raw).items() if k not in TRANSIENT})
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
        waiting = self.status == "queued"
        running = self.status in ("queued", "running")
        return {"id": self.id, "kind": self.view or self.kind, "status": self.status,
                "progress": {"done": self.done, "total": self.total},
                "estimated_seconds": self.estimated_seconds, "lane": self.lane or None,
                "queue_position": self.queue_position if waiting else None,
                "eta_seconds": None if not running or self.eta_seconds is None
                else round(self.eta_seconds, 3),
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
        self.queue = (ArqQueue(settings.redis_url, settings.redis_prefix, settings.job_ttl)
                      if settings.queued else None)
        # a queued job holds its computation's lease until a worker takes it up
        self.claim_ttl = settings.job_ttl if settings.queued else settings.lease
        self.jobs: dict[str, Job] = {}          # records known to this process (store fallback)
        self.events: dict[str, asyncio.Event] = {}  # jobs this process is running
        self.inflight: dict[str, str] = {}      # cache key -> owning job id (this process)
        self.tasks: set[asyncio.Task] = set()
        self.killing: set[str] = set()  # cancelled jobs whose process is still to be killed
        # the pool's lanes (service.scheduler): each with its slots and waiting list
        self.lanes = {name: Lane(name, pool.slots[name],
                                 capacity=settings.max_queued_expensive if name == "expensive" else None,
                                 per_client=settings.max_queued_per_client if name == "expensive" else None)
                      for name in LANES}
        self.tickets: dict[str, tuple[Lane, Ticket]] = {}  # job id -> its place in a lane here

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
                     job_id: Optional[str] = None, client: str = "", admit: bool = True) -> Answer:
        """The cached answer, or the computed one within the sync timeout, or a job.

        ``client``: who asks (the expensive lane's fair order); ``admit=False``: skip the
        expensive lane's admission (sweep points: the sweep was admitted)."""
        key = q.key
        raw = await self.cache.get(key, q.kind)
        if raw is not None:
            metrics.CACHE_HITS.labels(q.kind).inc()
            return Answer(raw=raw, cache="hit")
        metrics.CACHE_MISSES.labels(q.kind).inc()
        deadline = time.monotonic() + (0.0 if respond_async else self.settings.sync_timeout)
        for _ in range(100):
            owner = await self._claim(q, job_id, client, admit)
            if isinstance(owner, dict):  # became available while claiming
                return Answer(raw=owner, cache="hit")
            outcome = await self._wait(key, owner, deadline)
            if outcome == "retry":
                continue
            if outcome is None:  # still running: 202
                return Answer(job=await self._job_for(owner, q, job_id, client))
            return Answer(raw=outcome, cache="miss")
        raise ComputationFailed({"detail": "the computation was cancelled repeatedly"})

    async def submit(self, q: Question, job_id: Optional[str] = None, client: str = "",
                     admit: bool = True) -> Job:
        """A job for the question, always (done at once when cached)."""
        ans = await self.answer(q, respond_async=True, job_id=job_id, client=client, admit=admit)
        if ans.job is not None:
            return ans.job
        job = Job.of(q, job_id, done=1, total=1, client=client)
        self._classify(job)
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

    async def _claim(self, q: Question, job_id: Optional[str], client: str = "", admit: bool = True):
        """The id of the job computing ``q`` (started here if nobody is), or the result."""
        key = q.key
        if key in self.inflight:
            return self.inflight[key]
        job = Job.of(q, job_id, client=client)
        self._classify(job)
        if not await self.leases.take(key, job.id, ttl=self.claim_ttl):
            holder = await self.leases.holder(key)
            if holder:
                return holder
            return await self._claim(q, job_id, client, admit)  # released meanwhile
        raw = await self.cache.get(key, q.kind)
        if raw is not None:
            await self.leases.release(key, job.id)
            return raw
        if self.pending() >= self.settings.max_pending_jobs:
            await self.leases.release(key, job.id)
            raise Busy()
        if admit and job.lane == "expensive":  # a question already computing was followed above
            wait = await self._admission(job)
            if wait is not None:
                await self.leases.release(key, job.id)
                raise Busy("the expensive lane's waiting list is full (or holds this client's "
                           "share); retry later", retry_after(wait))
        await self._start(job)
        return job.id

    # ---- lanes
    def _classify(self, job: Job) -> None:
        """The job's estimate (if its record predates them) and its lane."""
        if job.estimated_seconds is None:
            job.estimated_seconds = cost.estimate(job.kind, job.spec, job.params)
        if job.lane not in LANES:
            job.lane = cost.lane(job.estimated_seconds, self.settings.cheap_seconds)

    def _lane_for(self, job: Job) -> Lane:
        """The lane that runs ``job`` here (a worker serving one lane runs whatever it gets)."""
        self._classify(job)
        lane = self.lanes[job.lane]
        if lane.slots:
            return lane
        return next(l for l in self.lanes.values() if l.slots)

    def _enter(self, job: Job) -> tuple[Lane, Ticket]:
        """The job's place in its lane here (taken once)."""
        if job.id not in self.tickets:
            lane = self._lane_for(job)
            ticket = Ticket(job.id, job.client or "anonymous", float(job.estimated_seconds or 0.0))
            self.tickets[job.id] = (lane, lane.enter(ticket))
        return self.tickets[job.id]

    async def _admission(self, job: Job) -> Optional[float]:
        """None when ``job`` (expensive) may wait for a slot, else seconds until a place frees
        (on the queue, which does not see the workers' clocks: about when a job like this one
        is done, at least 5 s)."""
        s = self.settings
        if self.queue is not None:
            try:
                if await self.store.guard(self.queue.admit(job.lane, job.client, s.max_queued_expensive,
                                                           s.max_queued_per_client)):
                    return None
                return max(5.0, float(job.estimated_seconds or 0.0))
            except (StoreUnavailable, redis.exceptions.RedisError, OSError):
                pass  # the queue is unreachable: the job will run here
        return self.lanes[job.lane].admit(job.client or "anonymous")

    def where(self, job: Job) -> None:
        """Fill in the job's queue position and ETA from its lane here (if it is in one)."""
        entry = self.tickets.get(job.id)
        if entry is not None:
            lane, _ = entry
            job.queue_position = lane.position(job.id)
            job.eta_seconds = lane.eta(job.id)

    async def _start(self, job: Job) -> None:
        if self.queue is not None:
            await self.save(job)
            try:
                # under the store's guard: a stuck Redis fails at once, and the job runs here
                await self.store.guard(self.queue.put(job.id, job.solver_spec, job.lane, job.client))
                return
            except (StoreUnavailable, redis.exceptions.RedisError, OSError):
                log.warning("the queue is unreachable: job %s runs here", job.id)
        self.inflight[job.cache_key] = job.id
        self.events[job.id] = asyncio.Event()
        metrics.JOBS_ACTIVE.set(len(self.events))
        self._enter(job)  # its place in the lane now, so the next admission counts it
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

    async def _job_for(self, owner_id: str, q: Question, job_id: Optional[str], client: str = "") -> Job:
        """The job to hand out: the owner itself, or one following it."""
        owner = self.jobs.get(owner_id) or await self.load(owner_id)
        if owner is not None and (owner.id == job_id or (
                job_id is None and owner.request == q.request and owner.view == q.view)):
            return owner
        job = Job.of(q, job_id, owner=owner_id, client=client)
        self._classify(job)
        if owner is not None:
            job.lane = owner.lane or job.lane
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
        lane, ticket = self._enter(job)
        try:
            await self._compute(job, renew, ticket)
        finally:
            self.tickets.pop(job.id, None)
            lane.leave(ticket)  # the slot (or the place in the waiting list) goes to the next job

    async def _compute(self, job: Job, renew, ticket: Ticket) -> None:
        while not ticket.future.done():  # queued: wait for a slot of the lane
            await asyncio.wait([ticket.future], timeout=self.settings.lease / 3)
            if not ticket.future.done():
                await self._heartbeat(job, renew)  # (and a cancel through another replica)
        if ticket.future.cancelled() or job.status == "cancelled":
            job.status = "cancelled"
            await self.save(job)
            return
        slot = ticket.future.result()
        metrics.QUEUE_SECONDS.labels(job.lane).observe(time.monotonic() - ticket.queued_at)
        raw = await self.cache.get(job.cache_key, job.kind)
        if raw is not None:  # computed elsewhere while this one waited
            job.finish(raw, "hit")
            job.seconds = 0.0
            await self.save(job)
            return
        t0 = time.perf_counter()
        for attempt in (1, 2, 3):
            fut, executor = self.pool.submit(job.kind, job.solver_spec or job.spec, job.params,
                                             job.id, slot)
            afut = asyncio.wrap_future(fut)
            last_beat = last_look = time.monotonic()
            while not afut.done():
                await asyncio.wait([afut], timeout=0.25)
                prog = self.pool.progress(job.id)
                # running once the slot's process has taken it up (not while it starts)
                started = job.status == "queued" and (
                    afut.done() or bool(prog) or self.pool.pid_of(job.id) is not None)
                advanced = bool(prog) and (prog[0], prog[1]) != (job.done, job.total)
                if started:
                    job.status, job.started_at = "running", time.time()
                if advanced:
                    job.done, job.total = prog
                    ticket.progress = (job.done, job.total)
                if started or advanced:  # one record write per poll
                    await self.save(job)
                if time.monotonic() - last_beat > self.settings.lease / 3:
                    last_beat = last_look = time.monotonic()
                    await self._heartbeat(job, renew)
                elif renew is not None and time.monotonic() - last_look > 1.0:
                    last_look = time.monotonic()  # in a worker: cancelled through the API?
                    await self._cancelled_elsewhere(job)
            prog = self.pool.progress(job.id)  # the last report (a short job may end unpolled)
            if prog:
                job.done, job.total = prog
            try:
                outcome, info = afut.result()
                break
            except BrokenProcessPool:
                self.pool.restart(slot, executor)
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
        if outcome == "ok" and job.estimated_seconds:
            metrics.ESTIMATE_RATIO.labels(job.kind, job.lane).observe(job.seconds / job.estimated_seconds)
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
            await self._cancelled_elsewhere(job)
        except (StoreUnavailable, redis.exceptions.RedisError):
            pass

    async def _cancelled_elsewhere(self, job: Job) -> None:
        """Stop ``job`` if it was cancelled through another replica (or, for a worker's job,
        through the API): the mark ``cancel:<id>``, which the running side's own record writes
        cannot overwrite."""
        try:
            mark = await self.store.get("cancel:" + job.id)
        except (StoreUnavailable, redis.exceptions.RedisError):
            return
        if mark is not None and job.status != "cancelled":
            job.status = "cancelled"
            self._stop(job.id)

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
                job.estimated_seconds, job.lane = owner.estimated_seconds, owner.lane or job.lane
                job.started_at = owner.started_at
                if owner.status in TERMINAL:
                    job.status, job.raw, job.error = owner.status, owner.raw, owner.error
                elif owner.status == "running":
                    job.status = "running"
                if owner.status not in TERMINAL:
                    await self._resume_if_orphaned(owner)
                    await self._locate(owner)
                    job.queue_position, job.eta_seconds = owner.queue_position, owner.eta_seconds
            await self.save(job)
        elif job.status not in TERMINAL:
            await self._resume_if_orphaned(job)
            await self._locate(job)
        return job

    async def _locate(self, job: Job) -> None:
        """Where a job not yet finished is: its queue position and ETA (from its lane here, or
        from the arq queue of its lane)."""
        if job.id in self.tickets:
            self.where(job)
        elif job.status == "running" and job.started_at is not None:
            job.eta_seconds = cost.remaining(float(job.estimated_seconds or 0.0),
                                             time.time() - job.started_at, job.done, job.total)
        elif job.status == "queued" and self.queue is not None and job.lane in LANES:
            try:
                ids = await self.store.guard(self.queue.waiting(job.lane))
                if job.id not in ids:
                    return
                pos = ids.index(job.id) + 1
                slots = await self.store.guard(self.queue.slots(job.lane))
            except (StoreUnavailable, redis.exceptions.RedisError, OSError):
                return
            job.queue_position = pos
            if slots:  # the estimates of the jobs ahead spread over the lane's slots, then its own
                ahead = [j for j in await self.load_many(ids[:pos - 1][:200]) if j is not None]
                job.eta_seconds = (sum(float(j.estimated_seconds or 0.0) for j in ahead) / slots
                                   + float(job.estimated_seconds or 0.0))

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
            try:  # for the process running it, if that is not this one
                await self.store.set("cancel:" + job.id, b"1", ttl=self.settings.job_ttl)
            except StoreUnavailable:
                pass
            local = self.jobs.get(job.id)
            if local is not None:
                local.status = "cancelled"
            self._stop(job.id)
            if self.queue is not None and job.id not in self.events and job.lane in LANES:
                try:  # still waiting in the arq queue: its place frees now
                    await self.store.guard(self.queue.drop(job.id, job.lane, job.client))
                except (StoreUnavailable, redis.exceptions.RedisError, OSError):
                    pass  # a worker skips it when it comes up (its record says cancelled)
        return job

    def _stop(self, job_id: str) -> None:
        """Free the job's slot at once: out of the waiting list if it waits here; if it runs,
        the cancel flag (the solvers see it at their next progress report) and, after
        ``STAIRCASE_CANCEL_GRACE`` (0: at once), the kill of its process (a slot is one
        process, so no other job is touched; the slot gets a fresh process)."""
        self.pool.cancel(job_id)
        entry = self.tickets.get(job_id)
        if entry is not None and entry[1].slot is None:
            entry[0].leave(entry[1])  # its execute sees the cancelled ticket and ends
            return
        if job_id not in self.events:
            return

        async def enforce():
            try:
                await asyncio.sleep(self.settings.cancel_grace)
                while job_id in self.events:  # until it ends: it may not have started its process yet
                    if self.pool.kill(job_id):
                        return
                    await asyncio.sleep(0.05)
            finally:
                self.killing.discard(job_id)

        self.killing.add(job_id)
        self._spawn(enforce())

    async def close(self) -> None:
        # a cancel accepted just before shutdown is still carried out: cancelling its kill task
        # left the process running (a pool outliving this engine kept the slot busy: a test that
        # cancelled its jobs and closed its app left the next test waiting 120 s for a slot)
        for job_id in list(self.killing):
            self.pool.kill(job_id)
        for t in list(self.tasks):
            t.cancel()
        if self.queue is not None:
            await self.queue.close()
