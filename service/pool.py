"""The numerical process pool, and what runs inside its processes.

:class:`Pool` is a ProcessPoolExecutor (spawn) with a manager dict for progress reports, cancel
flags and the pid running each job.  The API runs cold computations in one (``STAIRCASE_QUEUE=
local``); each ``python -m service.worker`` runs the queued ones in its own.

Inside a pool process nothing touches asyncio: :func:`run` looks the kind up in the registry
and returns ("ok", raw result) or (error kind, info), because SpecError does not survive
pickling with its attributes.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import multiprocessing
import os
import signal
import threading
import time
import traceback
from typing import Optional

import solvers

from .computations import COMPUTATIONS

log = logging.getLogger("staircase.pool")


class JobCancelled(Exception):
    pass


def _exit_with_parent(parent: int) -> None:
    """A pool process outlives a SIGKILLed parent (it blocks on its task queue): exit then."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)


def init_worker(warm: bool = True, parent: Optional[int] = None) -> None:
    """Pool initializer: watch the parent, compile the solvers' numba kernels once."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if parent is not None:
        threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()
    if warm:
        solvers.warm_up()


def ping() -> dict:
    return {"pid": os.getpid(), "version": solvers.__version__}


class Progress:
    """The solvers' progress callback: writes (done, total) to the pool's shared dict and
    raises :class:`JobCancelled` when the job's cancel flag is set.  Throttled to 5 updates/s."""

    def __init__(self, table, job_id: str):
        self.table = table
        self.job_id = job_id
        self._last = 0.0

    def __getstate__(self):
        return {"table": self.table, "job_id": self.job_id, "_last": 0.0}

    def started(self) -> None:
        """Record which process runs the job (so a cancel can stop it if it never reports)."""
        try:
            self.table["pid:" + self.job_id] = os.getpid()
        except Exception:  # the manager went away: nothing to record
            pass

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self._last < 0.2 and done < total:
            return
        self._last = now
        try:
            self.table[self.job_id] = (int(done), int(total))
            cancelled = self.table.get("cancel:" + self.job_id)
        except Exception:  # the manager went away: keep computing
            return
        if cancelled:
            raise JobCancelled(self.job_id)


def run(kind: str, spec, params: dict, progress: Progress):
    """Run one computation of the registry; returns ("ok", result) or (error kind, info).
    ``spec`` is the solver spec (or, for a job resumed from its record, its canonical dict)."""
    progress.started()
    try:
        if isinstance(spec, dict):
            spec = solvers.spec_from_dict(dict(spec))
        t0 = time.perf_counter()
        out = COMPUTATIONS[kind].solve(spec, params, progress)
        out.setdefault("seconds", time.perf_counter() - t0)
        return ("ok", out)
    except JobCancelled:
        return ("cancelled", {})
    except solvers.SpecError as exc:
        return ("spec_error", {"parameter": str(exc.parameter), "value": repr(exc.value),
                               "allowed": str(exc.allowed), "detail": str(exc)})
    except Exception as exc:  # a solver failure must not take the service down
        return ("error", {"detail": f"{type(exc).__name__}: {exc}",
                          "traceback": traceback.format_exc(limit=5)})


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
                initializer=init_worker, initargs=(self.warm, os.getpid()))

    async def warm_up(self) -> None:
        """Start every worker process (its initializer compiles the kernels) and wait."""
        t0 = time.perf_counter()
        try:
            loop = asyncio.get_running_loop()
            outs = await asyncio.gather(*[loop.run_in_executor(self.executor, ping)
                                          for _ in range(self.workers)])
            self.version = outs[0]["version"]
            self.ready = True
            self.warm_seconds = time.perf_counter() - t0
        except Exception as exc:  # solvers missing or broken: readyz reports it
            self.error = f"{type(exc).__name__}: {exc}"
            log.exception("warm-up failed")

    def submit(self, kind: str, spec, params: dict, job_id: str):
        """(future, executor): the executor is what to restart if this future breaks."""
        self.start()
        ex = self.executor
        return ex.submit(run, kind, spec, params, Progress(self.table, job_id)), ex

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
        try:
            pid = self.table.get("pid:" + job_id) if self.table is not None else None
        except Exception:
            pid = None
        if pid is None or pid not in self.pids():
            return False
        log.warning("killing pool process %s to cancel job %s", pid, job_id)
        os.kill(pid, signal.SIGKILL)
        return True

    def pids(self) -> set[int]:
        # ProcessPoolExecutor has no public list of its processes
        return set(getattr(self.executor, "_processes", None) or {})

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
                for k in (job_id, "cancel:" + job_id, "pid:" + job_id):
                    self.table.pop(k, None)
        except Exception:
            pass

    def close(self, kill: bool = False) -> None:
        ex, self.executor = self.executor, None
        if ex is not None:
            if kill:
                for p in list(getattr(ex, "_processes", {}).values()):
                    p.terminate()
            ex.shutdown(wait=not kill, cancel_futures=True)
        if self.manager is not None:
            self.manager.shutdown()
            self.manager = None
            self.table = None
