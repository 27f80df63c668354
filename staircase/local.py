"""In-process answers (no server): the service's own path through its computations registry.

A request body is validated against the entry's schema (a refusal is the server's problem+json,
``service.problems``), the entry's ``ask`` makes the :class:`~service.computations.Question`,
the pool's ``run`` (the very function a pool process runs, here in this process) solves it and
the entry's renderer makes the body, so the answer is the body the server would send (with
``cache: "miss"``: nothing is cached here).  Sweeps need the service's job machinery:
:func:`serving` runs the whole app in this process for them.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Optional

import orjson

from service.computations import COMPUTATIONS, Computation
from service.pool import run
from service.problems import ComputationFailed, ServiceError, solver_failure

from .client import API, AsyncClient, ProblemError, Verb, request_body

ProgressCallback = Callable[[int, int], None]


def computation_of(verb: Verb) -> Optional[Computation]:
    """The registry entry answering ``verb`` (None: not a single computation, e.g. a sweep)."""
    return next((c for c in COMPUTATIONS.values() if API + c.path == verb.path), None)


def _problem(error: ServiceError) -> ProblemError:
    return ProblemError(orjson.loads(error.response().body))


class _Reporter:
    """The pool's progress interface (``started``, ``cancelled``, ``(done, total)``) around a
    callback: nothing here cancels a computation in this process."""

    def __init__(self, callback: Optional[ProgressCallback]):
        self.callback = callback

    def started(self) -> None:
        pass

    def cancelled(self) -> bool:
        return False

    def __call__(self, done: int, total: int) -> None:
        if self.callback is not None:
            self.callback(int(done), int(total))


def answer(verb: Verb, body: dict, progress: Optional[ProgressCallback] = None) -> dict:
    """The body the server answers to POSTing ``body`` to ``verb`` (a job's result for the
    kinds that are always jobs), computed here.  Raises :class:`ProblemError` as the server
    would answer 422."""
    c = computation_of(verb)
    if c is None:
        raise ValueError(f"{verb.name} is not a computation of this service's registry")
    request = c.request.model_validate(request_body(verb, body))
    try:
        q = c.ask(request)
    except ServiceError as exc:
        raise _problem(exc) from None
    outcome, out = run(q.kind, q.spec, q.params, _Reporter(progress))
    if outcome != "ok":
        raise _problem(ComputationFailed(solver_failure(outcome, out, COMPUTATIONS[q.kind].field_of)))
    return COMPUTATIONS[q.view].render(out, q.request, "miss")


@contextlib.asynccontextmanager
async def serving(**client_options):
    """An :class:`AsyncClient` talking to the service's app run in this process (its lifespan:
    pool, store per ``STAIRCASE_*`` settings), for what needs the job machinery (sweeps)."""
    import httpx

    from service.main import create_app

    app = create_app()
    async with app.router.lifespan_context(app):
        async with AsyncClient("http://in-process", transport=httpx.ASGITransport(app=app),
                               **client_options) as client:
            yield client
