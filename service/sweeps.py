"""Sweeps: many thresholds / state-evolution points over a grid, fanned out to workers.

A sweep is a record ``sweep:<id>`` in the service's store (Redis or the disk cache) listing
its points; each point is one ordinary computation with the *same cache key* as the matching
``/v1/thresholds`` or ``/v1/state-evolution`` request, so points fill and reuse that cache.
When a point finishes, its state goes to ``sweep:<id>:pt:<i>``; the sweep's status, progress
and partial results are read off those keys (nothing needs to coordinate the workers).

Where points run:

* ``STAIRCASE_REDIS_URL`` set and ``STAIRCASE_QUEUE=redis``: each point is an arq job
  (job id ``<sweep id>:<i>``) in the queue ``<prefix>sweeps``, run by
  ``arq service.sweep_worker.WorkerSettings`` processes on any machine that reaches the Redis.
  A worker that dies loses nothing: the point's arq lease expires and another worker retries it.
* otherwise: the API process runs the points in its own process pool (``service.jobs.Engine``,
  sharing its locks and cache with ``/v1/thresholds``).
"""
from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Literal, Optional

import orjson
from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .cache import ResultCache, Store, StoreUnavailable, cache_key
from .schemas import MAX_ALPHA, MAX_SEED, Model, PAPER_MODEL, Precision

log = logging.getLogger("staircase.sweeps")

MAX_POINTS = 400
PARAMETERS = {"deep_attention": ("skip", "beta", "noise", "tokens", "layers"),
              "multi_index": ("noise",)}
INTEGER_PARAMETERS = ("tokens", "layers")
ALLOWED_VALUES = "values the model accepts for the parameter (see GET /v1/models)"


class SweepSettings(BaseSettings):
    """The sweep's own knobs (same ``STAIRCASE_`` prefix as service.config.Settings)."""

    model_config = SettingsConfigDict(env_prefix="STAIRCASE_", extra="ignore")

    # A point whose worker stops heart-beating is retried by another worker after this long.
    sweep_lease: float = Field(15.0, ge=1.0, le=3600.0)
    # Times a point is tried (a worker dying mid-point costs one try).
    sweep_max_tries: int = Field(5, ge=1, le=100)
    # Points one arq worker process computes at once.
    sweep_jobs: int = Field(1, ge=1, le=64)
    # Longest a single point may compute (seconds).
    sweep_point_timeout: float = Field(3 * 3600.0, ge=1.0)


# ------------------------------------------------------------------ the request

class SweepGrid(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    alpha: Optional[list[float]] = Field(
        None, min_length=1, max_length=MAX_POINTS,
        description="sample ratios alpha = N / D (state_evolution only), each in (0, 1000]")
    parameter: Optional[Literal["skip", "beta", "noise", "tokens", "layers"]] = Field(
        None, description="the model parameter to vary (deep_attention: skip, beta, noise, tokens, "
                          "layers; multi_index: noise)")
    values: Optional[list[float]] = Field(None, min_length=1, max_length=MAX_POINTS,
                                          description="the parameter's values")

    @model_validator(mode="after")
    def _check(self):
        if (self.parameter is None) != (self.values is None):
            raise ValueError("grid.parameter and grid.values go together")
        if self.alpha is None and self.parameter is None:
            raise ValueError("the grid needs alpha values, a parameter with values, or both")
        for a in self.alpha or ():
            if not 0.0 < a <= MAX_ALPHA:
                raise ValueError(f"grid.alpha values must be in (0, {MAX_ALPHA:g}]")
        return self


class SweepRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, json_schema_extra={
        "examples": [{"model": PAPER_MODEL, "compute": "thresholds",
                      "grid": {"parameter": "skip", "values": [0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 4]},
                      "precision": "fast"},
                     {"model": {"family": "deep_attention", "layers": 1, "tokens": 2},
                      "compute": "state_evolution", "grid": {"alpha": [0.25, 0.5, 1.0, 1.5, 2.0]},
                      "precision": "fast"}]})

    model: Model
    compute: Literal["thresholds", "state_evolution"] = Field(
        description="thresholds per parameter value (a phase diagram), or state-evolution overlaps "
                    "per (parameter value, alpha)")
    grid: SweepGrid
    precision: Precision = "standard"
    seed: int = Field(0, ge=0, le=MAX_SEED)


class SweepError(Exception):
    """A request that cannot be swept: a 422 naming the field."""

    def __init__(self, field: str, detail: str, allowed: str):
        super().__init__(detail)
        self.field, self.detail, self.allowed = field, detail, allowed


def _solver_version() -> str:
    import solvers

    return solvers.__version__


def plan(body: SweepRequest) -> list[dict]:
    """The points of a sweep: ``{"i", "kind", "value", "alpha", "spec", "numerics", "key"}``.

    A thresholds sweep has one point per parameter value (thresholds do not depend on alpha).
    A state-evolution sweep has one point per (value, alpha) -- each the cache entry of
    ``/v1/state-evolution`` with ``alphas: [alpha]`` -- plus the thresholds of each value, which
    the plot marks on the curves."""
    import solvers

    grid = body.grid
    base = body.model.model_dump(exclude_none=True)
    family = base["family"]
    if grid.parameter is not None and grid.parameter not in PARAMETERS[family]:
        raise SweepError("grid.parameter", f"{family} has no parameter {grid.parameter!r} to sweep",
                         "one of: " + ", ".join(PARAMETERS[family]))
    if body.compute == "thresholds" and grid.alpha is not None:
        raise SweepError("grid.alpha", "thresholds do not depend on alpha: sweep a parameter",
                         "omit grid.alpha when compute is thresholds")
    if body.compute == "state_evolution" and grid.alpha is None:
        raise SweepError("grid.alpha", "a state-evolution sweep needs alpha values",
                         f"a list of 1 to {MAX_POINTS} numbers in (0, {MAX_ALPHA:g}]")
    values = list(grid.values) if grid.values is not None else [None]
    alphas = [float(a) for a in grid.alpha] if grid.alpha is not None else [None]
    n = len(values) * len(alphas)
    if n > MAX_POINTS:
        raise SweepError("grid", f"{n} points requested", f"at most {MAX_POINTS} points")
    version = _solver_version()
    specs = []
    for j, v in enumerate(values):
        d = dict(base)
        if v is not None:
            if grid.parameter in INTEGER_PARAMETERS:
                if float(v) != int(v):
                    raise SweepError(f"grid.values[{j}]", f"{grid.parameter} must be an integer",
                                     "integers")
                v = int(v)
            d[grid.parameter] = v
        try:
            specs.append(solvers.spec_from_dict(d).to_dict())
        except solvers.SpecError as exc:
            field = f"grid.values[{j}]" if exc.parameter == grid.parameter else f"model.{exc.parameter}"
            raise SweepError(field, str(exc), str(exc.allowed)) from exc
        except (TypeError, ValueError) as exc:
            raise SweepError(f"grid.values[{j}]", str(exc), ALLOWED_VALUES) from exc
    points: list[dict] = []
    base_numerics = {"precision": body.precision, "seed": body.seed}

    def add(kind, value, alpha, spec, numerics):
        points.append({"i": len(points), "kind": kind, "value": value, "alpha": alpha, "spec": spec,
                       "numerics": numerics, "key": cache_key(kind, spec, version, **numerics)})

    for v, spec in zip(values, specs):
        if body.compute == "thresholds":
            add("thresholds", v, None, spec, dict(base_numerics))
        else:
            for a in alphas:
                add("state_evolution", v, a, spec, {**base_numerics, "alphas": [a]})
    if body.compute == "state_evolution":
        for v, spec in zip(values, specs):
            add("thresholds", v, None, spec, dict(base_numerics))
    return points


# ------------------------------------------------------------------ records

def record_key(sid: str) -> str:
    return "sweep:" + sid


def point_key(sid: str, i: int) -> str:
    return f"sweep:{sid}:pt:{i}"


def running_key(sid: str, i: int) -> str:
    return f"sweep:{sid}:run:{i}"


def arq_queue(prefix: str) -> str:
    return prefix + "sweeps"


def arq_job_id(sid: str, i: int) -> str:
    return f"{sid}:{i}"


async def mget(store: Store, keys: list[str]) -> list[Optional[bytes]]:
    """Many keys in one round trip on Redis (MGET), a loop on the disk store."""
    if not keys:
        return []
    if store.backend == "redis":
        return await store._call(store.client.mget([store._k(k) for k in keys]))
    return [await store.get(k) for k in keys]


def _loads(raw) -> Optional[dict]:
    if raw is None:
        return None
    try:
        v = orjson.loads(raw)
        return v if isinstance(v, dict) else None
    except Exception:
        return None


async def load_record(store: Store, sid: str) -> Optional[dict]:
    try:
        return _loads(await store.get(record_key(sid)))
    except StoreUnavailable:
        return None


async def save_record(store: Store, rec: dict, ttl: float) -> None:
    rec["updated_at"] = time.time()
    await store.set(record_key(rec["id"]), orjson.dumps(rec), ttl=ttl)


async def mark_point(store: Store, sid: str, i: int, state: dict, ttl: float) -> None:
    await store.set(point_key(sid, i), orjson.dumps(state), ttl=ttl)


# ------------------------------------------------------------------ rendering

def _render_point(p: dict, state: Optional[dict], raw: Optional[dict], running: bool) -> dict:
    from . import render

    out = {"index": p["i"], "kind": p["kind"], "value": p["value"], "alpha": p["alpha"],
           "status": "running" if running else "queued", "cache": None, "result": None}
    if state is None:
        return out
    out.update(status=state["status"], cache=state.get("cache"), seconds=state.get("seconds"),
               tries=state.get("tries"), worker=state.get("worker"))
    if state["status"] == "failed":
        out["error"] = state.get("error")
    elif raw is not None:
        request = {"model": p["spec"], **p["numerics"]}
        if p["kind"] == "thresholds":
            body = render.thresholds(raw, request, state.get("cache") or "miss")
            out["result"] = {"thresholds": body["thresholds"],
                             "perfect_recovery_alpha": body["perfect_recovery_alpha"]}
        else:
            pts = render.state_evolution(raw, request, state.get("cache") or "miss")["points"]
            out["result"] = pts[0] if pts else None
    return out


async def view(store: Store, rec: dict, with_results: bool = True) -> dict:
    """The job body of a sweep: status, progress and the points finished so far."""
    sid, points = rec["id"], rec["points"]
    n = len(points)
    try:
        states = [_loads(r) for r in await mget(store, [point_key(sid, i) for i in range(n)])]
        running = await mget(store, [running_key(sid, i) for i in range(n)])
    except StoreUnavailable:
        states, running = [None] * n, [None] * n
    raws: list[Optional[dict]] = [None] * n
    if with_results:
        want = [i for i, s in enumerate(states) if s is not None and s.get("status") == "done"]
        try:
            blobs = await mget(store, [points[i]["key"] for i in want])
        except StoreUnavailable:
            blobs = [None] * len(want)
        for i, blob in zip(want, blobs):
            raws[i] = ResultCache.decode(points[i]["key"], blob) if blob is not None else None
    done = sum(1 for s in states if s is not None)
    failed = sum(1 for s in states if s is not None and s.get("status") == "failed")
    if rec.get("status") == "cancelled":
        status = "cancelled"
    elif done == n:
        status = "failed" if failed == n else "done"
    elif done or any(running):
        status = "running"
    else:
        status = "queued"
    rendered = [_render_point(p, s, raw, bool(r)) for p, s, raw, r in zip(points, states, raws, running)]
    updated = max([rec.get("updated_at", rec["created_at"])]
                  + [s.get("finished_at", 0) for s in states if s is not None])
    return {"id": sid, "kind": "sweep", "status": status,
            "progress": {"done": done, "total": n, "failed": failed},
            "created_at": rec["created_at"], "updated_at": updated, "request": rec["request"],
            "result": {"compute": rec["request"]["compute"],
                       "parameter": rec["request"]["grid"].get("parameter"),
                       "backend": rec.get("backend"), "points": rendered},
            "error": None if status != "failed" else {"detail": "every point failed"}}


# ------------------------------------------------------------------ the manager (API side)

class Sweeps:
    """Creates sweeps, runs their points (arq or the local pool), reads and cancels them."""

    def __init__(self, settings, store: Store, engine):
        self.settings = settings
        self.store = store
        self.engine = engine
        self.sweep_settings = SweepSettings()
        self.runners: dict[str, asyncio.Task] = {}
        self._arq = None

    @property
    def backend(self) -> str:
        if self.settings.redis_url and self.settings.queue == "redis" and self.store.backend == "redis":
            return "arq"
        return "local"

    async def arq(self):
        if self._arq is None:
            from arq import create_pool
            from arq.connections import RedisSettings

            self._arq = await create_pool(RedisSettings.from_dsn(self.settings.redis_url),
                                          default_queue_name=arq_queue(self.settings.redis_prefix))
        return self._arq

    async def create(self, body: SweepRequest) -> dict:
        points = plan(body)  # raises SweepError
        if self.backend == "local" and len(self.runners) >= self.settings.max_pending_jobs:
            from .jobs import Busy

            raise Busy()
        sid = uuid.uuid4().hex
        rec = {"id": sid, "request": body.model_dump(mode="json"), "points": points,
               "status": "active", "backend": self.backend, "created_at": time.time()}
        await save_record(self.store, rec, self.settings.job_ttl)
        if rec["backend"] == "arq":
            pool = await self.arq()
            for p in points:
                await pool.enqueue_job("run_point", sid, p["i"], _job_id=arq_job_id(sid, p["i"]),
                                       _queue_name=arq_queue(self.settings.redis_prefix))
        else:
            self._start_local(rec)
        return rec

    async def get(self, sid: str) -> Optional[dict]:
        rec = await load_record(self.store, sid)
        if rec is None:
            return None
        body = await view(self.store, rec)
        if body["status"] in ("queued", "running") and rec["backend"] == "local":
            await self._resume_if_orphaned(rec)
        return body

    async def cancel(self, sid: str) -> Optional[dict]:
        rec = await load_record(self.store, sid)
        if rec is None:
            return None
        body = await view(self.store, rec, with_results=False)
        if body["status"] in ("done", "failed", "cancelled"):
            return await view(self.store, rec)
        rec["status"] = "cancelled"
        await save_record(self.store, rec, self.settings.job_ttl)
        if rec["backend"] == "arq":
            try:  # queued points leave the queue; running ones see the flag at their next beat
                pool = await self.arq()
                ids = [arq_job_id(sid, p["i"]) for p in rec["points"]]
                await pool.zrem(arq_queue(self.settings.redis_prefix), *ids)
            except Exception:  # pragma: no cover - the workers still skip cancelled points
                log.exception("could not dequeue the points of sweep %s", sid)
        else:
            for job in list(self.engine.jobs.values()):
                if (job.request or {}).get("sweep") == sid and job.status not in ("done", "failed",
                                                                                   "cancelled"):
                    await self.engine.cancel(job.id)
        return await view(self.store, rec)

    async def close(self) -> None:
        for t in list(self.runners.values()):
            t.cancel()
        if self._arq is not None:
            await self._arq.aclose()
            self._arq = None

    # ---- the local pool
    def _start_local(self, rec: dict) -> None:
        task = asyncio.create_task(self._run_local(rec))
        self.runners[rec["id"]] = task
        task.add_done_callback(lambda t, sid=rec["id"]: self.runners.pop(sid, None))

    async def _resume_if_orphaned(self, rec: dict) -> None:
        """A local sweep whose API process went away: run its missing points here."""
        if rec["id"] in self.runners:
            return
        try:
            if not await self.store.add(f"sweep:{rec['id']}:runner", b"1", ttl=self.settings.lock_ttl):
                return
        except StoreUnavailable:
            return
        log.warning("resuming interrupted sweep %s", rec["id"])
        self._start_local(rec)

    async def _cancelled(self, sid: str) -> bool:
        rec = await load_record(self.store, sid)
        return rec is None or rec.get("status") == "cancelled"

    async def _run_local(self, rec: dict) -> None:
        sid = rec["id"]
        slots = asyncio.Semaphore(max(1, self.engine.pool.workers))

        async def beat():
            while True:
                try:
                    await self.store.set(f"sweep:{sid}:runner", b"1", ttl=self.settings.lock_ttl)
                except StoreUnavailable:
                    pass
                await asyncio.sleep(self.settings.lock_ttl / 3)

        async def one(p):
            async with slots:
                try:
                    if await self.store.get(point_key(sid, p["i"])) is not None:
                        return  # finished before an interruption
                except StoreUnavailable:
                    pass
                if await self._cancelled(sid):
                    return
                await self.store.set(running_key(sid, p["i"]), b"local", ttl=self.settings.job_ttl)
                try:
                    state = await self._point_local(sid, p)
                finally:
                    await self.store.delete(running_key(sid, p["i"]))
                if state is not None:
                    await mark_point(self.store, sid, p["i"], state, self.settings.job_ttl)

        beating = asyncio.create_task(beat())
        try:
            await asyncio.gather(*(one(p) for p in rec["points"]))
        except Exception:
            log.exception("sweep %s crashed", sid)
        finally:
            beating.cancel()

    async def _point_local(self, sid: str, p: dict) -> Optional[dict]:
        """One point through the engine: cache, then the shared lock and pool (as /v1/thresholds)."""
        from .jobs import Busy, ComputationFailed

        eng = self.engine
        t0 = time.perf_counter()
        raw = await eng.cache.get(p["key"], p["kind"])
        if raw is not None:
            return {"status": "done", "cache": "hit", "seconds": 0.0, "tries": 1,
                    "finished_at": time.time()}
        params = p["numerics"]
        request = {"model": p["spec"], **p["numerics"], "sweep": sid}
        for _ in range(1000):
            if await self._cancelled(sid):
                return None
            try:
                owner = await eng._claim(p["kind"], p["key"], p["spec"], params, request)
            except Busy:
                await asyncio.sleep(0.5)
                continue
            except ComputationFailed as exc:
                return _failed(exc.problem)
            if isinstance(owner, dict):
                return {"status": "done", "cache": "hit", "seconds": 0.0, "tries": 1,
                        "finished_at": time.time()}
            try:
                outcome = await eng._wait(p["key"], owner, time.monotonic() + 1e7)
            except ComputationFailed as exc:
                return _failed(exc.problem)
            if outcome == "retry":
                continue
            return {"status": "done", "cache": "miss", "seconds": time.perf_counter() - t0,
                    "tries": 1, "finished_at": time.time()}
        return _failed({"detail": "the computation was interrupted repeatedly"})


def _failed(problem: dict) -> dict:
    return {"status": "failed", "error": problem, "finished_at": time.time()}


__all__ = ["SweepRequest", "SweepGrid", "SweepError", "Sweeps", "SweepSettings", "plan", "view",
           "MAX_POINTS"]
