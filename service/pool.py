"""The numerical pool: lanes of single-process slots, and what runs inside their processes.

:class:`Pool` holds two lanes (``service.cost``): ``cheap`` (``STAIRCASE_CHEAP_WORKERS``
slots) and ``expensive`` (``STAIRCASE_WORKERS`` slots).  A slot is a ProcessPoolExecutor (forkserver)
with one process, so cancelling a job kills exactly the process running it (the slot is then
replaced, the other slots are untouched); a manager dict carries progress reports, cancel flags
and the pid running each job.  Which job runs in which slot, and in what order the waiting ones
start, is the engine's business (``service.scheduler``); a slot never holds more than one job.
The API runs cold computations in its pool (``STAIRCASE_QUEUE=local``); each
``python -m service.worker`` runs the queued ones in its own.

Inside a pool process nothing touches asyncio: :func:`run` looks the kind up in the registry
and returns ("ok", raw result) or (error kind, info), because SpecError does not survive
pickling with its attributes.  A pool built with ``hook="module:function"`` (tests only: a
model made slow on purpose) calls that function first in every process; a dict it returns is
the result, None lets the solvers compute.
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
from concurrent.futures.process import BrokenProcessPool
from importlib import import_module
from multiprocessing.managers import SyncManager
from typing import Callable, Optional

import solvers

from .computations import COMPUTATIONS

log = logging.getLogger("staircase.pool")


class JobCancelled(Exception):
    pass


def process_running(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie (a killed API not yet reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def _exit_with(api: int) -> None:
    """A pool process outlives a SIGKILLed API (it blocks on its task queue): exit when the API
    is gone.  Not its parent: that is the fork server, which lives as long as any process it
    forked (each holds the server's liveness pipe)."""
    while process_running(api):
        time.sleep(1.0)
    os._exit(1)


def watch_api(api: int) -> None:
    """Initializer of the manager and the compiler: exit with the API (see :func:`_exit_with`)."""
    threading.Thread(target=_exit_with, args=(api,), daemon=True).start()


_HOOK: Optional[Callable] = None  # set in a pool process by init_worker (tests only)


def load_hook(path: Optional[str]) -> Optional[Callable]:
    if not path:
        return None
    module, _, name = path.partition(":")
    return getattr(import_module(module), name)


def init_worker(api: int, hook: Optional[str] = None) -> None:
    """Pool initializer: exit with the API.  No kernel is compiled here: a job loads the kernels it
    needs from numba's on-disk cache (filled in the background by :func:`compile_every_kernel`) or,
    before that cache holds them, compiles just those."""
    global _HOOK
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    watch_api(api)
    _HOOK = load_hook(hook)


def compile_every_kernel() -> float:
    """Run in a one-off process at low priority: compile every solver kernel into numba's on-disk
    cache (or load it, where it is there already).  Returns the seconds it took."""
    os.nice(10)  # a job's own compiling, in a slot, goes first
    t0 = time.perf_counter()
    solvers.warm_up()
    return time.perf_counter() - t0


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

    def cancelled(self) -> bool:
        try:
            return bool(self.table.get("cancel:" + self.job_id))
        except Exception:  # the manager went away: keep computing
            return False

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self._last < 0.2 and done < total:
            return
        self._last = now
        try:
            self.table[self.job_id] = (int(done), int(total))
        except Exception:  # the manager went away: keep computing
            return
        if self.cancelled():
            raise JobCancelled(self.job_id)


def run(kind: str, spec, params: dict, progress: Progress):
    """Run one computation of the registry; returns ("ok", result) or (error kind, info).
    ``spec`` is the solver spec (or, for a job resumed from its record, its canonical dict)."""
    progress.started()
    if progress.cancelled():  # cancelled before this process took it up: never start it
        return ("cancelled", {})
    try:
        if isinstance(spec, dict):
            spec = solvers.spec_from_dict(dict(spec))
        t0 = time.perf_counter()
        out = _HOOK(kind, spec, params, progress) if _HOOK is not None else None
        if out is None:
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


def _shut_down(ex: concurrent.futures.ProcessPoolExecutor, kill: bool) -> None:
    """Shut an executor down, its waiting tasks cancelled; ``kill``: its processes terminated
    at once rather than waited for."""
    if kill:
        for p in list(getattr(ex, "_processes", {}).values()):
            p.terminate()
    ex.shutdown(wait=not kill, cancel_futures=True)


LANES = ("cheap", "expensive")


class Slot:
    """One process of a lane: a ProcessPoolExecutor with a single worker process."""

    def __init__(self, lane: str, index: int):
        self.lane, self.index = lane, index
        self.executor: Optional[concurrent.futures.ProcessPoolExecutor] = None

    @property
    def name(self) -> str:
        return f"{self.lane}-{self.index}"

    def pids(self) -> set[int]:
        # ProcessPoolExecutor has no public list of its processes
        return set(getattr(self.executor, "_processes", None) or {})


class Pool:
    """Lanes of single-process slots + a manager dict for progress and cancel flags.

    ``workers``: slots of the expensive lane; ``cheap_workers``: slots of the cheap lane (either
    may be 0 in a worker that serves one lane).  ``start_method`` "forkserver" (the default)
    forks every process from one server that imported the solvers once: spawning imported them
    in each (about 3 s of CPU apiece: with three slots on two cores, 5-6 s before the pool was
    up, and again for every slot replaced after a cancel).  The server keeps the environment it
    started with; "spawn" gives each process the environment of the moment (tests)."""

    def __init__(self, workers: int, warm: bool = True, cheap_workers: int = 1,
                 hook: Optional[str] = None, start_method: str = "forkserver"):
        self.workers = workers
        self.cheap_workers = cheap_workers
        self.warm = warm
        self.hook = hook
        self.ctx = multiprocessing.get_context(start_method)
        if start_method == "forkserver":
            self.ctx.set_forkserver_preload(["service.pool"])
        self.slots: dict[str, list[Slot]] = {
            "cheap": [Slot("cheap", i) for i in range(cheap_workers)],
            "expensive": [Slot("expensive", i) for i in range(workers)]}
        self.manager = None
        self.table = None
        self.submitted: dict[str, concurrent.futures.Future] = {}  # job id -> its last future
        self.ready = False  # every slot's process is up, with the solvers imported
        self.version = "unknown"
        self.start_seconds: Optional[float] = None
        # the kernels' background compile: "compiling", "compiled", "failed", or "lazy" (warm off)
        self.kernels = "compiling" if warm else "lazy"
        self.warm_seconds: Optional[float] = None
        self.error: Optional[str] = None
        self.kernels_error: Optional[str] = None
        self._compiler: Optional[concurrent.futures.ProcessPoolExecutor] = None

    def all_slots(self) -> list[Slot]:
        return [s for lane in LANES for s in self.slots[lane]]

    def _executor(self) -> concurrent.futures.ProcessPoolExecutor:
        return concurrent.futures.ProcessPoolExecutor(
            max_workers=1, mp_context=self.ctx, initializer=init_worker,
            initargs=(os.getpid(), self.hook))

    def start(self) -> None:
        if self.manager is None:
            self.manager = SyncManager(ctx=self.ctx)
            self.manager.start(watch_api, (os.getpid(),))
            self.table = self.manager.dict()
        for slot in self.all_slots():
            if slot.executor is None:
                slot.executor = self._executor()

    async def warm_up(self) -> None:
        """Start every slot's process (then the pool is ready), then compile the kernels."""
        await self.start_processes()
        if self.ready:
            await self.compile_kernels()

    async def start_processes(self) -> None:
        """Spawn every slot's process and wait until each has imported the solvers: the pool is
        ready then.  Nothing is compiled here (a fresh install took a minute to compile every
        kernel before it was ready; issue 10 wants 60 s at most)."""
        t0 = time.perf_counter()
        try:
            loop = asyncio.get_running_loop()
            outs = await asyncio.gather(*[loop.run_in_executor(s.executor, ping) for s in self.all_slots()])
            if outs:
                self.version = outs[0]["version"]
            self.ready = True
            self.start_seconds = time.perf_counter() - t0
        except Exception as exc:  # solvers missing or broken: readyz reports it
            self.error = f"{type(exc).__name__}: {exc}"
            log.exception("the pool's processes did not start")

    async def compile_kernels(self) -> None:
        """Compile every kernel once into numba's on-disk cache, in a process of its own at low
        priority, while the slots serve jobs: a job that needs a kernel the cache does not hold
        yet compiles just that one; on a machine where the service has run before this only
        loads the cache.  One process compiles, not every slot: three processes compiling every
        kernel at once on two cores took 99 s against 58 s."""
        if not self.warm:
            return
        self.kernels = "compiling"
        self._compiler = ex = concurrent.futures.ProcessPoolExecutor(
            max_workers=1, mp_context=self.ctx, initializer=watch_api, initargs=(os.getpid(),))
        try:
            self.warm_seconds = await asyncio.get_running_loop().run_in_executor(ex, compile_every_kernel)
            self.kernels = "compiled"
        except Exception as exc:  # the slots still compile what they need themselves
            self.kernels = "failed"
            self.kernels_error = f"{type(exc).__name__}: {exc}"
            log.exception("compiling the kernels failed")
        finally:
            self._stop_compiler()

    def _stop_compiler(self) -> None:
        ex, self._compiler = self._compiler, None
        if ex is not None:
            _shut_down(ex, kill=True)

    def submit(self, kind: str, spec, params: dict, job_id: str, slot: Slot):
        """(future, executor) of ``job_id`` run in ``slot``: the executor is what to restart if
        this future breaks."""
        self.start()
        ex = slot.executor
        if getattr(ex, "_broken", False):  # its process died with nobody left to replace it
            self.restart(slot, ex)
            ex = slot.executor
        try:
            fut = ex.submit(run, kind, spec, params, Progress(self.table, job_id))
        except BrokenProcessPool:  # broke just now
            self.restart(slot, ex)
            ex = slot.executor
            fut = ex.submit(run, kind, spec, params, Progress(self.table, job_id))
        self.submitted[job_id] = fut
        return fut, ex

    def restart(self, slot: Slot, broken=None) -> None:
        """After the slot's process died (BrokenProcessPool, or killed by a cancel): a fresh
        process (once per breakage)."""
        if broken is not None and broken is not slot.executor:
            return  # someone already replaced it
        old, slot.executor = slot.executor, None
        if old is not None:
            old.shutdown(wait=False, cancel_futures=True)
        self.start()
        # spawn the new process now, not with the next job
        slot.executor.submit(ping).add_done_callback(lambda f: f.cancelled() or f.exception())

    def kill(self, job_id: str) -> bool:
        """Stop the process running a job at once (a cancel): only its slot breaks, and is
        replaced by whoever waits on the job's future."""
        pid = self.pid_of(job_id)
        if pid is None or pid not in self.pids():
            return False
        log.warning("killing pool process %s to cancel job %s", pid, job_id)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return False
        return True

    def pid_of(self, job_id: str) -> Optional[int]:
        """The pid of the process running ``job_id``, once it has started it."""
        try:
            return self.table.get("pid:" + job_id) if self.table is not None else None
        except Exception:
            return None

    def pids(self) -> set[int]:
        return set().union(*(s.pids() for s in self.all_slots()))

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
        """Drop the job's progress, cancel flag and pid, once its process is done with it: a job
        handed to its slot's process but not yet finished there (cancelled before the process took
        it up: there was no pid to kill) keeps its cancel flag until then, so :func:`run`
        refuses it instead of starting it for nobody."""
        fut = self.submitted.get(job_id)
        if fut is not None and not fut.done():
            fut.add_done_callback(lambda f: self._drop(job_id, f))
        else:
            self._drop(job_id, fut)

    def _drop(self, job_id: str, fut) -> None:
        if self.submitted.get(job_id) is not fut:
            return  # submitted again since (a resumed job): its entries are the new run's
        self.submitted.pop(job_id, None)
        try:
            if self.table is not None:
                for k in (job_id, "cancel:" + job_id, "pid:" + job_id):
                    self.table.pop(k, None)
        except Exception:
            pass

    def close(self, kill: bool = False) -> None:
        self._stop_compiler()
        for slot in self.all_slots():
            ex, slot.executor = slot.executor, None
            if ex is not None:
                _shut_down(ex, kill)
        self.submitted.clear()
        if self.manager is not None:
            self.manager.shutdown()
            self.manager = None
            self.table = None
