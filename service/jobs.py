"""Computations as jobs: a process pool, Redis/disk locks, persisted job records.

The flow of a cold request (``Engine.answer``):

1. look the fixed point up in the cache (hit: done);
2. claim the computation: a lock ``lock:<cache key>`` holding the id of the owning job,
   taken with SET NX (Redis) or ``add`` (diskcache), so identical cold requests, from this
   process or any other replica, compute once and the others wait for that job;
3. the owner runs it in the pool (``STAIRCASE_QUEUE=local``) or queues it for
   ``python -m service.worker`` (``STAIRCASE_QUEUE=redis``), heart-beating the lock and
   writing progress into the job record;
4. the request waits up to ``STAIRCASE_SYNC_TIMEOUT`` seconds, then answers 202 with the job.

Job records live in the same store as the cache (``job:<id>``), so they survive restarts;
an interrupted job (no live lock) is resumed when it is next looked at.  When the store is
down the records stay in memory and computations run anyway.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import multiprocessing
import time
import uuid
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from typing import Optional

import orjson

from . import compute, metrics
from .cache import ResultCache, Store, StoreUnavailable, cache_key

log = logging.getLogger("staircase.jobs")

TERMINAL = ("done", "failed", "cancelled")
KINDS = ("thresholds", "state_evolution", "sample_size", "amp_simulation")
QUEUE = "queue"


def _field_of(parameter: str, kind: str = "") -> str:
    """The request field a solver parameter came from."""
    top = parameter.split("[")[0].split(".")[0]
    if kind == "amp_simulation" and top in ("alpha", "dimension", "seeds", "iterations", "damping"):
        return top
    if top in ("alpha", "alphas", "target", "dimension", "precision", "seed"):
        return "alphas" if top == "alpha" else parameter
    return "model." + parameter


class ComputationFailed(Exception):
    """The solvers refused or failed on this input: a 422 problem."""

    def __init__(self, problem: dict):
        super().__init__(problem.get("detail", "computation failed"))
        self.problem = problem


class Busy(Exception):
    """Too many jobs pending: a 429 problem."""


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
    view: str = ""  # how the result is rendered (default: kind); sample_size can view thresholds

    def dump(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def load(cls, raw) -> Optional["Job"]:
        try:
            d = orjson.loads(raw)
            return cls(**d)
        except Exception:
            return None


# ------------------------------------------------------------------ the process pool

class Pool:
    """ProcessPoolExecutor (spawn) + a manager dict for progress and cancel flags."""

    def __init__(self, workers: int, warm: bool = True):
        self.workers = workers
        self.warm = warm
        self.ctx = multiprocessing.get_context("spawn")
        self.executor: Optional[concurrent.futures.ProcessPoolExecutor] = None
        self.manager = None
        self.table = None
        self.ready = False
        self.version = "unknown"
        self.warm_seconds: Optional[float] = None
        self.error: Optional[str] = None

    def start(self) -> None:
        if self.manager is None:
            self.manager = self.ctx.Manager()
            self.table = self.manager.dict()
        if self.executor is None:
            self.executor = concurrent.futures.ProcessPoolExecutor(
                max_workers=self.workers, mp_context=self.ctx,
                initializer=compute.init_worker, initargs=(self.warm,))

    async def warm_up(self) -> None:
        """Start every worker process (its initializer compiles the kernels) and wait."""
        t0 = time.perf_counter()
        try:
            loop = asyncio.get_running_loop()
            outs = await asyncio.gather(*[loop.run_in_executor(self.executor, compute.ping)
                                          for _ in range(self.workers)])
            self.version = outs[0]["version"]
            self.ready = True
            self.warm_seconds = time.perf_counter() - t0
        except Exception as exc:  # solvers missing or broken: readyz reports it
            self.error = f"{type(exc).__name__}: {exc}"
            log.exception("warm-up failed")

    def submit(self, kind: str, spec: dict, params: dict, job_id: str):
        """(future, executor): the executor is what to restart if this future breaks."""
        self.start()
        progress = compute.Progress(self.table, job_id)
        ex = self.executor
        return ex.submit(compute.run, kind, spec, params, progress), ex

    def restart(self, broken=None) -> None:
        """After a worker died (BrokenProcessPool): a fresh executor (once per breakage)."""
        if broken is not None and broken is not self.executor:
            return  # someone already replaced it
        old, self.executor = self.executor, None
        if old is not None:
            old.shutdown(wait=False, cancel_futures=True)
        self.start()

    def kill(self, job_id: str) -> bool:
        """Stop the process running a job that ignores its cancel flag (the pool then breaks
        and is replaced; other jobs in it are resubmitted)."""
        import os
        import signal

        try:
            pid = self.table.get("pid:" + job_id) if self.table is not None else None
        except Exception:
            pid = None
        procs = getattr(self.executor, "_processes", None) or {}
        if pid is None or pid not in procs:
            return False
        log.warning("killing pool process %s to cancel job %s", pid, job_id)
        os.kill(pid, signal.SIGKILL)
        return True

    def progress(self, job_id: str) -> Optional[tuple[int, int]]:
        try:
            return self.table.get(job_id) if self.table is not None else None
        except Exception:
            return None

    def cancel(self, job_id: str) -> None:
        try:
            if self.table is not None:
                self.table["cancel:" + job_id] = True
        except Exception:
            pass

    def forget(self, job_id: str) -> None:
        try:
            if self.table is not None:
                self.table.pop(job_id, None)
                self.table.pop("cancel:" + job_id, None)
                self.table.pop("pid:" + job_id, None)
        except Exception:
            pass

    def close(self, kill: bool = False) -> None:
        ex, self.executor = self.executor, None
        if ex is not None:
            procs = list(getattr(ex, "_processes", {}).values()) if kill else []
            for p in procs:
                p.terminate()
            ex.shutdown(wait=not kill, cancel_futures=True)
        if self.manager is not None:
            self.manager.shutdown()
            self.manager = None
            self.table = None


# ------------------------------------------------------------------ the engine

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
        self.cache = ResultCache(store)
        self.pool = pool
        self.jobs: dict[str, Job] = {}          # records known to this process (store fallback)
        self.events: dict[str, asyncio.Event] = {}  # jobs this process is running
        self.inflight: dict[str, str] = {}      # cache key -> owning job id (this process)
        self.tasks: set[asyncio.Task] = set()

    # ---- store helpers (degrade on outage)
    async def save(self, job: Job) -> None:
        job.updated_at = time.time()
        self.jobs[job.id] = job
        if len(self.jobs) > 20000:  # keep memory bounded: drop the oldest finished
            for jid in [j for j, v in self.jobs.items() if v.status in TERMINAL][:5000]:
                self.jobs.pop(jid, None)
        try:
            await self.store.set("job:" + job.id, job.dump(), ttl=self.settings.job_ttl)
        except StoreUnavailable:
            pass

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
        return job

    async def _lock_holder(self, key: str) -> Optional[str]:
        try:
            v = await self.store.get("lock:" + key)
        except StoreUnavailable:
            return None
        return v.decode() if isinstance(v, bytes) else v

    def key(self, kind: str, spec: dict, numerics: dict) -> str:
        import solvers

        return cache_key(kind, spec, solvers.__version__, **numerics)

    def pending(self) -> int:
        return len(self.events)

    # ---- the request path
    async def answer(self, kind: str, spec: dict, params: dict, numerics: dict, request: dict,
                     respond_async: bool = False, view: Optional[str] = None) -> Answer:
        key = self.key(kind, spec, numerics)
        raw = await self.cache.get(key, kind)
        if raw is not None:
            metrics.CACHE_HITS.labels(kind).inc()
            return Answer(raw=raw, cache="hit")
        metrics.CACHE_MISSES.labels(kind).inc()
        deadline = time.monotonic() + (0.0 if respond_async else self.settings.sync_timeout)
        for _ in range(100):
            owner = await self._claim(kind, key, spec, params, request, view)
            if isinstance(owner, dict):  # became available while claiming
                return Answer(raw=owner, cache="hit")
            outcome = await self._wait(key, owner, deadline)
            if outcome == "retry":
                continue
            if outcome is None:  # still running: 202
                return Answer(job=await self._job_for(owner, kind, key, spec, params, request, view))
            return Answer(raw=outcome, cache="miss")
        raise ComputationFailed({"detail": "the computation was cancelled repeatedly"})

    async def _claim(self, kind, key, spec, params, request, view=None):
        """The id of the job computing ``key`` (started here if nobody is), or the result."""
        if key in self.inflight:
            return self.inflight[key]
        job = Job(id=uuid.uuid4().hex, kind=kind, cache_key=key, spec=spec, params=params,
                  request=request, owner="", view=view or kind)
        job.owner = job.id
        try:
            lock_ttl = self.settings.job_ttl if self.settings.queue == "redis" else self.settings.lock_ttl
            acquired = await self.store.add("lock:" + key, job.id.encode(), ttl=lock_ttl)
        except StoreUnavailable:
            acquired = True  # degraded: dedupe within this process only
        if not acquired:
            holder = await self._lock_holder(key)
            if holder:
                return holder
            return await self._claim(kind, key, spec, params, request, view)  # released meanwhile
        raw = await self.cache.get(key, kind)
        if raw is not None:
            await self._release(key, job.id)
            return raw
        if self.pending() >= self.settings.max_pending_jobs:
            await self._release(key, job.id)
            raise Busy()
        await self._start(job)
        return job.id

    async def _start(self, job: Job) -> None:
        if self.settings.queue == "redis" and self.store.backend == "redis":
            await self.save(job)
            try:
                await self.store.push(QUEUE, job.id.encode())
                return
            except StoreUnavailable:
                pass  # no queue without Redis: run it here
        self.inflight[job.cache_key] = job.id
        self.events[job.id] = asyncio.Event()
        metrics.JOBS_ACTIVE.set(len(self.events))
        await self.save(job)
        task = asyncio.create_task(self.run(job))
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
                if job is None or (job.status not in TERMINAL and not await self._lock_holder(key)):
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

    async def _job_for(self, owner_id, kind, key, spec, params, request, view=None) -> Job:
        owner = self.jobs.get(owner_id) or await self.load(owner_id)
        if owner is not None and owner.request == request and owner.view == (view or kind):
            return owner
        job = Job(id=uuid.uuid4().hex, kind=kind, cache_key=key, spec=spec, params=params,
                  request=request, owner=owner_id, view=view or kind)
        await self.save(job)
        return job

    # ---- running (the owner side; also used by service.worker)
    async def run(self, job: Job) -> None:
        key = job.cache_key
        ev = self.events.setdefault(job.id, asyncio.Event())
        try:
            await self._run(job)
        except Exception as exc:  # never leave waiters hanging
            log.exception("job %s crashed", job.id)
            job.status, job.error = "failed", {"detail": f"{type(exc).__name__}: {exc}"}
            await self.save(job)
        finally:
            if self.inflight.get(key) == job.id:
                del self.inflight[key]
            await self._release(key, job.id)
            self.pool.forget(job.id)
            ev.set()
            self.events.pop(job.id, None)
            metrics.JOBS_ACTIVE.set(len(self.events))

    async def _run(self, job: Job) -> None:
        if job.status == "cancelled":
            return
        t0 = time.perf_counter()
        for attempt in (1, 2, 3):
            fut, executor = self.pool.submit(job.kind, job.spec, job.params, job.id)
            afut = asyncio.wrap_future(fut)
            last_beat = time.monotonic()
            while not afut.done():
                await asyncio.wait([afut], timeout=0.5)
                if job.status == "queued" and (fut.running() or afut.done()):
                    job.status = "running"
                    await self.save(job)
                prog = self.pool.progress(job.id)
                if prog and (prog[0], prog[1]) != (job.done, job.total):
                    job.done, job.total = prog
                    if job.status == "queued":
                        job.status = "running"
                    await self.save(job)
                if time.monotonic() - last_beat > self.settings.lock_ttl / 3:
                    last_beat = time.monotonic()
                    await self._heartbeat(job)
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
                log.error("a pool process died; resubmitting job %s (attempt %d)", job.id, attempt)
            except concurrent.futures.CancelledError:
                outcome, info = "cancelled", {}
                break
        seconds = time.perf_counter() - t0
        metrics.COMPUTATIONS.labels(job.kind, outcome).inc()
        metrics.COMPUTE_SECONDS.labels(job.kind).observe(seconds)
        if outcome == "ok":
            await self.cache.put(job.cache_key, info)
            if job.status != "cancelled":
                job.status, job.raw = "done", info
                job.done = job.total = max(job.total, 1)
        elif outcome == "cancelled" or job.status == "cancelled":
            job.status = "cancelled"
        elif outcome == "spec_error":
            job.status = "failed"
            job.error = {"type": "/problems/invalid-parameter", "title": "Invalid model parameter",
                         "status": 422, "detail": info["detail"],
                         "field": _field_of(info["parameter"], job.kind), "allowed": info["allowed"]}
        else:
            job.status = "failed"
            job.error = {"type": "/problems/computation-failed", "title": "Computation failed",
                         "status": 422, "detail": "the solvers could not compute this input: "
                         + info.get("detail", "")}
        await self.save(job)

    async def _heartbeat(self, job: Job) -> None:
        try:
            await self.store.touch("lock:" + job.cache_key, self.settings.lock_ttl)
            await self.store.touch("run:" + job.id, self.settings.lock_ttl)
            stored = await self.load(job.id)  # cancelled through another replica?
            if stored is not None and stored.status == "cancelled" and job.status != "cancelled":
                job.status = "cancelled"
                self._stop(job.id)
        except StoreUnavailable:
            pass

    async def _release(self, key: str, job_id: str) -> None:
        try:
            if await self._lock_holder(key) == job_id:
                await self.store.delete("lock:" + key)
        except StoreUnavailable:
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
        """A job whose computing process went away (restart, crash): run it again."""
        if job.id in self.events:
            return
        if self.settings.queue == "redis" and self.store.backend == "redis":
            try:
                running = await self.store.get("run:" + job.id)
            except StoreUnavailable:
                return
            if job.status == "running" and running is None:
                log.warning("re-queueing interrupted job %s", job.id)
                job.status = "queued"
                await self.save(job)
                await self.store.push(QUEUE, job.id.encode())
            return
        holder = await self._lock_holder(job.cache_key)
        if holder is not None:
            return
        try:
            acquired = await self.store.add("lock:" + job.cache_key, job.id.encode(),
                                            ttl=self.settings.lock_ttl)
        except StoreUnavailable:
            acquired = True
        if acquired and job.id not in self.events:
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

        task = asyncio.create_task(enforce())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def close(self) -> None:
        for t in list(self.tasks):
            t.cancel()
