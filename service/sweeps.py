"""Sweeps: many thresholds / state-evolution points over a grid, fanned out to workers.

A sweep is a record ``sweep:<id>`` in the service's store (Redis or the disk cache) listing
its points.  Each point is the very question of the matching ``/v1/thresholds`` or
``/v1/state-evolution`` request (same registry entry, same cache key), asked through the one
cache-or-compute path (``service.jobs.Engine.submit``) as a job with the id
:func:`point_job_id`; the sweep's status, progress and partial results are read off those
job records.

Where points run: with ``STAIRCASE_QUEUE=redis`` every point is submitted at once and its job
queued for ``python -m service.worker`` (a worker that dies loses nothing: its lease lapses and
another worker retries the point); otherwise a runner in the API feeds the points to its own
pool, as many at a time as the pool has processes, holding the lease ``lock:sweep:<id>`` so an
interrupted sweep resumes when it is next read.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
import uuid
from typing import Literal, Optional

import orjson
from pydantic import BaseModel, Field, model_validator

import solvers
from solvers.limits import MAX_ALPHA, MAX_SEED
from solvers.limits import MAX_SWEEP_POINTS as MAX_POINTS

from . import render
from .cache import StoreUnavailable
from .computations import Question, state_evolution_question, thresholds_question
from .jobs import TERMINAL, Engine, Job
from .problems import Busy, InvalidParameter
from .schemas import Alpha, Int, Model, PAPER_MODEL, Precision, request_config

log = logging.getLogger("staircase.sweeps")

PARAMETERS = {"deep_attention": ("skip", "beta", "noise", "tokens", "layers"),
              "multi_index": ("noise",)}
INTEGER_PARAMETERS = ("tokens", "layers")
ALLOWED_VALUES = "values the model accepts for the parameter (see GET /v1/models)"


# ------------------------------------------------------------------ the request

class SweepGrid(BaseModel):
    model_config = request_config()

    alpha: Optional[list[Alpha]] = Field(
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
        return self


class SweepRequest(BaseModel):
    model_config = request_config(json_schema_extra={
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
    seed: Int = Field(0, ge=0, le=MAX_SEED)


def sweep_error(field: str, detail: str, allowed: str) -> InvalidParameter:
    """A request that cannot be swept: a 422 naming the field."""
    return InvalidParameter(field, detail, allowed)


def point_question(p: dict, spec) -> Question:
    """A point's question: the one ``/v1/thresholds`` or ``/v1/state-evolution`` would ask."""
    n = p["numerics"]
    if p["kind"] == "thresholds":
        return thresholds_question(spec, n["precision"], n["seed"])
    return state_evolution_question(spec, n["precision"], n["seed"], n["alphas"])


def point_job_id(sid: str, i: int) -> str:
    """The id of the job answering point ``i`` of sweep ``sid``."""
    return hashlib.sha256(f"{sid}:{i}".encode()).hexdigest()[:32]


def plan(body: SweepRequest) -> tuple[list[dict], list[Question]]:
    """The points of a sweep (``{"i", "kind", "value", "alpha", "spec", "numerics", "key"}``)
    and their questions.

    A thresholds sweep has one point per parameter value (thresholds do not depend on alpha).
    A state-evolution sweep has one point per (value, alpha) -- each the cache entry of
    ``/v1/state-evolution`` with ``alphas: [alpha]`` -- plus the thresholds of each value, which
    the plot marks on the curves."""
    grid = body.grid
    base = body.model.model_dump(exclude_none=True)
    family = base["family"]
    if grid.parameter is not None and grid.parameter not in PARAMETERS[family]:
        raise sweep_error("grid.parameter", f"{family} has no parameter {grid.parameter!r} to sweep",
                          "one of: " + ", ".join(PARAMETERS[family]))
    if body.compute == "thresholds" and grid.alpha is not None:
        raise sweep_error("grid.alpha", "thresholds do not depend on alpha: sweep a parameter",
                          "omit grid.alpha when compute is thresholds")
    if body.compute == "state_evolution" and grid.alpha is None:
        raise sweep_error("grid.alpha", "a state-evolution sweep needs alpha values",
                          f"a list of 1 to {MAX_POINTS} numbers in (0, {MAX_ALPHA:g}]")
    values = list(grid.values) if grid.values is not None else [None]
    alphas = [float(a) for a in grid.alpha] if grid.alpha is not None else [None]
    n = len(values) * len(alphas)
    if n > MAX_POINTS:
        raise sweep_error("grid", f"{n} points requested", f"at most {MAX_POINTS} points")
    specs = []
    for j, v in enumerate(values):
        d = dict(base)
        if v is not None:
            if grid.parameter in INTEGER_PARAMETERS:
                if float(v) != int(v):
                    raise sweep_error(f"grid.values[{j}]", f"{grid.parameter} must be an integer",
                                      "integers")
                v = int(v)
            d[grid.parameter] = v
        try:
            specs.append(solvers.spec_from_dict(d))
        except solvers.SpecError as exc:
            field = f"grid.values[{j}]" if exc.parameter == grid.parameter else f"model.{exc.parameter}"
            raise sweep_error(field, str(exc), str(exc.allowed)) from exc
        except (TypeError, ValueError) as exc:
            raise sweep_error(f"grid.values[{j}]", str(exc), ALLOWED_VALUES) from exc
    points: list[dict] = []
    questions: list[Question] = []
    base_numerics = {"precision": body.precision, "seed": body.seed}

    def add(kind, value, alpha, spec, numerics):
        p = {"i": len(points), "kind": kind, "value": value, "alpha": alpha, "spec": spec.to_dict(),
             "numerics": numerics}
        q = point_question(p, spec)
        p["key"] = q.key
        points.append(p)
        questions.append(q)

    for v, spec in zip(values, specs):
        if body.compute == "thresholds":
            add("thresholds", v, None, spec, dict(base_numerics))
        else:
            for a in alphas:
                add("state_evolution", v, a, spec, {**base_numerics, "alphas": [a]})
    if body.compute == "state_evolution":
        for v, spec in zip(values, specs):
            add("thresholds", v, None, spec, dict(base_numerics))
    return points, questions


# ------------------------------------------------------------------ records and views

def record_key(sid: str) -> str:
    return "sweep:" + sid


def _loads(raw) -> Optional[dict]:
    if raw is None:
        return None
    try:
        v = orjson.loads(raw)
        return v if isinstance(v, dict) else None
    except Exception:
        return None


def _render_point(p: dict, job: Optional[Job]) -> dict:
    out = {"index": p["i"], "kind": p["kind"], "value": p["value"], "alpha": p["alpha"],
           "status": "queued", "cache": None, "result": None}
    if job is None or job.status == "cancelled":
        return out
    if job.status not in TERMINAL:
        out["status"] = job.status
        if job.worker is not None:
            out["worker"] = job.worker  # the process computing it
        return out
    out.update(status=job.status, cache=job.cache, seconds=job.seconds, tries=job.tries,
               worker=job.worker)
    if job.status == "failed":
        out["error"] = job.error
    elif job.raw is not None:
        request = {"model": p["spec"], **p["numerics"]}
        if p["kind"] == "thresholds":
            body = render.thresholds(job.raw, request, job.cache)
            out["result"] = {"thresholds": body["thresholds"],
                             "perfect_recovery_alpha": body["perfect_recovery_alpha"]}
        else:
            pts = render.state_evolution(job.raw, request, job.cache)["points"]
            out["result"] = pts[0] if pts else None
    return out


def view(rec: dict, jobs: list[Optional[Job]]) -> dict:
    """The job body of a sweep: status, progress and the points finished so far."""
    sid, points = rec["id"], rec["points"]
    n = len(points)
    finished = [j for j in jobs if j is not None and j.status in ("done", "failed")]
    done, failed = len(finished), sum(j.status == "failed" for j in finished)
    if rec.get("status") == "cancelled":
        status = "cancelled"
    elif done == n:
        status = "failed" if failed == n else "done"
    elif done or any(j is not None and j.status == "running" for j in jobs):
        status = "running"
    else:
        status = "queued"
    updated = max([rec.get("updated_at", rec["created_at"])] + [j.updated_at for j in finished])
    if "comparison" in rec:
        return comparison_view(rec, jobs, status, updated)
    return {"id": sid, "kind": "sweep", "status": status,
            "progress": {"done": done, "total": n, "failed": failed},
            "created_at": rec["created_at"], "updated_at": updated, "request": rec["request"],
            "result": {"compute": rec["request"]["compute"],
                       "parameter": rec["request"]["grid"].get("parameter"),
                       "backend": rec.get("backend"),
                       "points": [_render_point(p, j) for p, j in zip(points, jobs)]},
            "error": None if status != "failed" else {"detail": "every point failed"}}


def comparison_view(rec: dict, jobs: list[Optional[Job]], status: str, updated: float) -> dict:
    """The job body of a comparison (a sweep of its theory points): when every point is done,
    the comparison (render.comparison); a point that failed fails the comparison."""
    points = [_render_point(p, j) for p, j in zip(rec["points"], jobs)]
    failed = [p for p in points if p["status"] == "failed"]
    if status == "done" and failed:
        status = "failed"
    done = sum(p["status"] in ("done", "failed") for p in points)
    result = error = None
    if status == "done":
        result = render.comparison(rec["comparison"], points, rec["id"], solvers.__version__)
    elif status == "failed":
        error = {"detail": f"{len(failed)} of the {len(points)} theory points failed",
                 "points": [{"alpha": p["alpha"], "kind": p["kind"], "error": p.get("error")} for p in failed]}
    return {"id": rec["id"], "kind": "comparison", "status": status,
            "progress": {"done": done, "total": len(points), "failed": len(failed)},
            "created_at": rec["created_at"], "updated_at": updated, "request": rec["comparison"],
            "result": result, "error": error}


# ------------------------------------------------------------------ the manager

class Sweeps:
    """Creates sweeps, submits their points (all at once to the queue, or paced into the local
    pool), reads and cancels them."""

    def __init__(self, settings, engine: Engine):
        self.settings = settings
        self.engine = engine
        self.store = engine.store
        self.runners: dict[str, asyncio.Task] = {}
        self.records: dict[str, dict] = {}  # this process's copy of sweep records (outages)
        self.holder = f"{os.getpid()}:{uuid.uuid4().hex}"  # this process, as a lease holder

    @property
    def backend(self) -> str:
        return "arq" if self.engine.queue is not None else "local"

    async def create(self, body: SweepRequest, comparison: Optional[dict] = None) -> dict:
        """Start a sweep; with ``comparison`` (the canonical request of POST /v1/comparisons) a
        comparison whose theory points the sweep computes (its job body: comparison_view)."""
        points, questions = plan(body)  # raises InvalidParameter
        if self.backend == "local" and len(self.runners) >= self.settings.max_pending_jobs:
            raise Busy("too many sweeps running; retry later")
        sid = uuid.uuid4().hex
        rec = {"id": sid, "request": body.model_dump(mode="json"), "points": points,
               "status": "active", "backend": self.backend, "created_at": time.time()}
        if comparison is not None:
            rec["comparison"] = comparison
        await self._save(rec)  # kept for replay if the store is out
        if rec["backend"] == "arq" and not self.store.available:
            rec["backend"] = "local"  # Redis is down or stuck: the points run in this pool
            await self._save(rec)
        if rec["backend"] == "arq":
            for p, q in zip(points, questions):  # admitted as a sweep: one client, no 429 per point
                await self.engine.submit(q, job_id=point_job_id(sid, p["i"]), client="sweep:" + sid,
                                         admit=False)
        else:
            await self.engine.leases.take("sweep:" + sid, self.holder)
            self._start_local(rec, questions)
        return rec

    async def get(self, sid: str) -> Optional[dict]:
        rec = await self._load(sid)
        if rec is None:
            return None
        body = view(rec, await self._jobs(rec))
        if body["status"] in ("queued", "running") and rec["backend"] == "local":
            await self._resume_if_orphaned(rec)
        return body

    async def cancel(self, sid: str) -> Optional[dict]:
        rec = await self._load(sid)
        if rec is None:
            return None
        if view(rec, await self._jobs(rec))["status"] not in TERMINAL:
            rec["status"] = "cancelled"
            await self._save(rec)
            for p in rec["points"]:  # queued points are skipped, running ones stop at their next beat
                await self.engine.cancel(point_job_id(sid, p["i"]))
        return view(rec, await self._jobs(rec))

    async def close(self) -> None:
        for t in list(self.runners.values()):
            t.cancel()

    # ---- records
    async def _load(self, sid: str) -> Optional[dict]:
        """The record from the store, else this process's copy (the store is out, or lost it)."""
        try:
            rec = _loads(await self.store.get(record_key(sid)))
        except StoreUnavailable:
            rec = None
        local = self.records.get(sid)
        if rec is None or (local is not None and local.get("updated_at", 0) > rec.get("updated_at", 0)):
            return local
        self._remember(rec)
        return rec

    async def _save(self, rec: dict) -> None:
        rec["updated_at"] = time.time()
        self._remember(rec)
        try:  # kept for replay when the store is out (then this process's copy answers)
            await self.store.set(record_key(rec["id"]), orjson.dumps(rec), ttl=self.settings.job_ttl,
                                 keep=True)
        except StoreUnavailable:
            log.warning("sweep %s: the store is unavailable; its record is kept here", rec["id"])

    def _remember(self, rec: dict) -> None:
        self.records[rec["id"]] = rec
        if len(self.records) > 2000:  # bounded: the oldest go first
            for sid in list(self.records)[:500]:
                self.records.pop(sid, None)

    async def _jobs(self, rec: dict) -> list[Optional[Job]]:
        """The points' job records, followers resolved through the jobs they follow."""
        ids = [point_job_id(rec["id"], p["i"]) for p in rec["points"]]
        jobs = await self.engine.load_many(ids)
        return [await self.engine.get(j.id) if j is not None and j.status not in TERMINAL else j
                for j in jobs]

    async def _cancelled(self, sid: str) -> bool:
        rec = await self._load(sid)
        return rec is None or rec.get("status") == "cancelled"

    # ---- the local runner
    def _start_local(self, rec: dict, questions: list[Question]) -> None:
        task = asyncio.create_task(self._run_local(rec, questions))
        self.runners[rec["id"]] = task
        task.add_done_callback(lambda t, sid=rec["id"]: self.runners.pop(sid, None))

    async def _resume_if_orphaned(self, rec: dict) -> None:
        """A local sweep whose API process went away: run its missing points here."""
        if rec["id"] in self.runners or not await self.engine.leases.take("sweep:" + rec["id"],
                                                                          self.holder):
            return
        log.warning("resuming interrupted sweep %s", rec["id"])
        questions = [point_question(p, solvers.spec_from_dict(dict(p["spec"]))) for p in rec["points"]]
        self._start_local(rec, questions)

    async def _run_local(self, rec: dict, questions: list[Question]) -> None:
        sid = rec["id"]
        lease = "sweep:" + sid
        slots = asyncio.Semaphore(max(1, self.engine.pool.workers))

        async def beat():
            while True:
                await asyncio.sleep(self.settings.lease / 3)
                try:
                    await self.engine.leases.renew(lease)
                except StoreUnavailable:
                    pass

        async def one(p: dict, q: Question):
            async with slots:
                job_id = point_job_id(sid, p["i"])
                for _ in range(1000):
                    job = await self.engine.load(job_id)
                    if (job is not None and job.status in ("done", "failed")) or await self._cancelled(sid):
                        return  # finished (maybe before an interruption), or cancelled
                    try:
                        job = await self.engine.submit(q, job_id=job_id, client="sweep:" + sid,
                                                       admit=False)
                    except Busy:
                        await asyncio.sleep(0.5)
                        continue
                    await self.engine.settle(job)  # then done, failed or cancelled by someone else

        beating = asyncio.create_task(beat())
        try:
            await asyncio.gather(*(one(p, q) for p, q in zip(rec["points"], questions)))
        except Exception:
            log.exception("sweep %s crashed", sid)
        finally:
            beating.cancel()
            await self.engine.leases.release(lease, self.holder)


__all__ = ["SweepRequest", "SweepGrid", "Sweeps", "plan", "view", "point_job_id", "MAX_POINTS"]
