"""A typed Python client of the Staircase service, sync (:class:`Client`) and async
(:class:`AsyncClient`), built on httpx.

The requests and answers are the service's own Pydantic schemas (``service.schemas``): a verb
takes its request model (or its fields as keywords), validates it exactly as the server would
(a refusal is the server's problem+json, raised as :class:`ProblemError`), posts it, follows a
202 job to its end and returns the response model::

    from staircase.client import Client

    with Client("http://127.0.0.1:8000") as c:
        t = c.thresholds(model={"family": "deep_attention", "layers": 2, "tokens": 2},
                         precision="fast", dimension=768)
        print([(e.layer, e.alpha) for e in t.thresholds])

The conversation with the server (post, retry a 429/503 after its Retry-After, poll the job
with backoff, map errors) is written once, as a generator of steps (:func:`conversation`) that
both clients drive, one with blocking calls and one with awaits.
"""
from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Generator, Optional, Union

import httpx
from pydantic import BaseModel, ValidationError

from service.computations import COMPUTATIONS
from service.problems import validation_errors
from service.schemas import (AmpSimulationRequest, AmpSimulationResponse, ComparisonRequest,
                             ComparisonResponse, JobOut, SampleSizeRequest, SampleSizeResponse,
                             StateEvolutionRequest, StateEvolutionResponse, ThresholdsRequest,
                             ThresholdsResponse)
from service.sweeps import SweepRequest

URL_ENV = "STAIRCASE_URL"          # the server the CLI talks to (none: compute in-process)
API_KEY_ENV = "STAIRCASE_API_KEY"  # sent as X-API-Key (the server's own setting's name)
API = "/v1"

POLL_FIRST, POLL_MAX, POLL_GROWTH = 0.1, 2.0, 1.5  # seconds between job polls: 0.1, 0.15, ... 2
UNAVAILABLE_TRIES = 3      # a 503 is retried (after its Retry-After) this many times in all
DEFAULT_BUSY_PATIENCE = 600.0  # seconds of 429 (server busy) retries before giving up


# ------------------------------------------------------------------ errors

class StaircaseError(Exception):
    """Base of the client's errors."""


class ProblemError(StaircaseError):
    """The server (or the same validation in-process) refused the request: a 4xx problem+json,
    or the problem a failed job recorded.  ``problem`` is the body (type, title, status, detail,
    field, allowed, errors)."""

    def __init__(self, problem: dict):
        self.problem = dict(problem)
        self.status = int(self.problem.get("status") or 422)
        super().__init__(self.problem.get("detail") or self.problem.get("title") or "bad request")


class ServiceUnavailable(StaircaseError):
    """No answer: the server cannot be reached, answered 5xx, or stayed busy (429) or
    unavailable (503) through the retries."""


class JobCancelled(StaircaseError):
    """The job followed was cancelled (``job`` is its record)."""

    def __init__(self, job: dict):
        self.job = job
        super().__init__(f"job {job.get('id')} was cancelled")


# ------------------------------------------------------------------ the verbs

@dataclass(frozen=True)
class Verb:
    """One thing to ask: where it is posted, its request schema (None: not known to this
    version, sent as given) and the schema of its answer (None: a plain dict)."""

    name: str
    path: str
    request: Optional[type[BaseModel]]
    response: Optional[type[BaseModel]]


def _verbs() -> dict[str, Verb]:
    verbs = {c.name: Verb(c.name, API + c.path, c.request, c.response) for c in COMPUTATIONS.values()}
    # composed of several cached questions, so not registry entries: answered as jobs
    verbs["sweep"] = Verb("sweep", API + "/sweeps", SweepRequest, None)
    verbs["comparison"] = Verb("comparison", API + "/comparisons", ComparisonRequest, ComparisonResponse)
    return verbs


VERBS = _verbs()


def problem_of_validation(exc: ValidationError, path: str) -> dict:
    """The problem+json the server answers for this validation error (service.problems, the
    one mapping)."""
    import orjson

    return orjson.loads(validation_errors(exc.errors(), path).body)


def request_body(verb: Verb, request: Union[BaseModel, dict, None] = None, **fields) -> dict:
    """The JSON body of ``verb``: the request model (or a dict / keywords, validated against the
    request schema as the server does; a refusal raises the server's :class:`ProblemError`)."""
    given = request.model_dump(mode="json") if isinstance(request, BaseModel) else request or {}
    data = {**given, **fields}
    if verb.request is None:
        return data
    try:
        model = verb.request.model_validate(data)
    except ValidationError as exc:
        raise ProblemError(problem_of_validation(exc, verb.path)) from None
    return model.model_dump(mode="json", exclude_none=True)


# ------------------------------------------------------------------ the conversation

@dataclass
class Send:
    method: str
    url: str
    json: Optional[dict] = None


@dataclass
class Sleep:
    seconds: float


@dataclass
class Progress:
    job: dict


Step = Union[Send, Sleep, Progress]


def _retry_after(r: httpx.Response, default: float) -> float:
    try:
        return max(0.0, float(r.headers.get("Retry-After", default)))
    except ValueError:
        return default


def _problem(r: httpx.Response) -> dict:
    try:
        body = r.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        body = {"title": r.reason_phrase, "detail": r.text[:500] or r.reason_phrase}
    body.setdefault("status", r.status_code)
    return body


def _send(method: str, url: str, body: Optional[dict], busy_patience: float):
    """Send once; a 429 again after its Retry-After (while ``busy_patience`` lasts), a 503 up to
    UNAVAILABLE_TRIES times; 4xx -> ProblemError, 5xx -> ServiceUnavailable."""
    waited, unavailable = 0.0, 0
    while True:
        r = yield Send(method, url, body)
        if r.status_code == 429 and waited < busy_patience:
            pause = _retry_after(r, 1.0)
            waited += pause
            yield Sleep(pause)
            continue
        if r.status_code == 503 and unavailable + 1 < UNAVAILABLE_TRIES:
            unavailable += 1
            yield Sleep(_retry_after(r, 1.0))
            continue
        if r.status_code == 429 or r.status_code >= 500:
            raise ServiceUnavailable(f"{method} {url}: {r.status_code} {_problem(r).get('detail', '')}")
        if r.status_code >= 400:
            raise ProblemError(_problem(r))
        return r


def answer_of(job: dict) -> dict:
    """What a finished job answers: a computation's result body, or the sweep itself (its
    id, progress and points)."""
    return job if job.get("kind") == "sweep" else job["result"]


def follow(location: str, busy_patience: float = DEFAULT_BUSY_PATIENCE,
           ) -> Generator[Step, Any, dict]:
    """Poll a job (GET ``location``) with backoff until it ends; returns its answer."""
    pause = POLL_FIRST
    while True:
        r = yield from _send("GET", location, None, busy_patience)
        job = r.json()
        yield Progress(job)
        if job["status"] == "done":
            return answer_of(job)
        if job["status"] == "failed":
            raise ProblemError(job.get("error") or {"status": 422, "detail": "the job failed"})
        if job["status"] == "cancelled":
            raise JobCancelled(job)
        yield Sleep(pause)
        pause = min(pause * POLL_GROWTH, POLL_MAX)


def conversation(verb: Verb, body: dict, wait: bool = True,
                 busy_patience: float = DEFAULT_BUSY_PATIENCE) -> Generator[Step, Any, dict]:
    """Post ``body``; a 200 is the answer, a 202 is followed (or, ``wait=False``, its job record
    is the answer)."""
    r = yield from _send("POST", verb.path, body, busy_patience)
    if r.status_code != 202:
        return r.json()
    location = r.headers.get("Location") or r.json()["location"]
    if not wait:
        job = (yield from _send("GET", location, None, busy_patience)).json()
        yield Progress(job)
        return job
    return (yield from follow(location, busy_patience))


def _unreachable(url: str, exc: Exception) -> ServiceUnavailable:
    return ServiceUnavailable(f"cannot reach the service at {url}: {type(exc).__name__}: {exc}")


def _base_url(url: Optional[str]) -> str:
    url = url or os.environ.get(URL_ENV)
    if not url:
        raise ValueError(f"no service URL: pass url= or set {URL_ENV}")
    return url.rstrip("/")


def _headers(api_key: Optional[str]) -> dict:
    key = api_key or os.environ.get(API_KEY_ENV)
    return {"X-API-Key": key} if key else {}


def _typed(verb: Verb, answer: dict):
    return verb.response.model_validate(answer) if verb.response is not None else answer


# ------------------------------------------------------------------ the clients

class Client:
    """Blocking client.  ``url``: the service (default $STAIRCASE_URL); ``on_progress``: called
    with each job record read while following a job; ``busy_patience``: seconds of 429 retries."""

    def __init__(self, url: Optional[str] = None, *, api_key: Optional[str] = None,
                 timeout: float = 300.0, on_progress: Optional[Callable[[dict], None]] = None,
                 busy_patience: float = DEFAULT_BUSY_PATIENCE, transport=None):
        self.url = _base_url(url)
        self.on_progress = on_progress
        self.busy_patience = busy_patience
        self.http = httpx.Client(base_url=self.url, timeout=timeout, headers=_headers(api_key),
                                 transport=transport)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def run(self, steps: Generator[Step, Any, Any]):
        """Drive a conversation with blocking calls."""
        reply = None
        while True:
            try:
                step = steps.send(reply)
            except StopIteration as stop:
                return stop.value
            reply = None
            if isinstance(step, Send):
                try:
                    reply = self.http.request(step.method, step.url, json=step.json)
                except httpx.TransportError as exc:
                    raise _unreachable(self.url, exc) from None
            elif isinstance(step, Sleep):
                time.sleep(step.seconds)
            elif self.on_progress is not None:
                self.on_progress(step.job)

    def ask(self, verb: str, body: dict, wait: bool = True) -> dict:
        """Post a JSON body to a verb (a name of :data:`VERBS`) as is; the answer's JSON."""
        return self.run(conversation(VERBS[verb], body, wait, self.busy_patience))

    def _ask(self, name: str, request, fields):
        verb = VERBS[name]
        return _typed(verb, self.ask(name, request_body(verb, request, **fields)))

    def thresholds(self, request: Union[ThresholdsRequest, dict, None] = None, /,
                   **fields) -> ThresholdsResponse:
        return self._ask("thresholds", request, fields)

    def state_evolution(self, request: Union[StateEvolutionRequest, dict, None] = None, /,
                        **fields) -> StateEvolutionResponse:
        return self._ask("state_evolution", request, fields)

    def sample_size(self, request: Union[SampleSizeRequest, dict, None] = None, /,
                    **fields) -> SampleSizeResponse:
        return self._ask("sample_size", request, fields)

    def amp_simulation(self, request: Union[AmpSimulationRequest, dict, None] = None, /,
                       **fields) -> AmpSimulationResponse:
        return self._ask("amp_simulation", request, fields)

    def sweep(self, request: Union[SweepRequest, dict, None] = None, /, **fields) -> dict:
        """Run a sweep to its end: its job body (id, status, progress, result.points)."""
        return self._ask("sweep", request, fields)

    def compare(self, request: Union[ComparisonRequest, dict, None] = None, /,
                **fields) -> ComparisonResponse:
        """POST /v1/comparisons: measured test errors against the theory's prediction (its
        plot: :meth:`plot` of the answer's ``id``)."""
        return self._ask("comparison", request, fields)

    def job(self, job_id: str) -> JobOut:
        return JobOut.model_validate(self.run(_send("GET", f"{API}/jobs/{job_id}", None, 0.0)).json())

    def plot(self, job_id: str, fmt: str = "png") -> bytes:
        """The picture (``png`` or ``svg``) of a sweep or a comparison job, of its points finished so far."""
        return self.run(_send("GET", f"{API}/jobs/{job_id}/plot.{fmt}", None, self.busy_patience)).content


class AsyncClient:
    """The same verbs as :class:`Client`, awaited (httpx.AsyncClient)."""

    def __init__(self, url: Optional[str] = None, *, api_key: Optional[str] = None,
                 timeout: float = 300.0, on_progress: Optional[Callable[[dict], None]] = None,
                 busy_patience: float = DEFAULT_BUSY_PATIENCE, transport=None):
        self.url = _base_url(url)
        self.on_progress = on_progress
        self.busy_patience = busy_patience
        self.http = httpx.AsyncClient(base_url=self.url, timeout=timeout,
                                      headers=_headers(api_key), transport=transport)

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.http.aclose()

    async def run(self, steps: Generator[Step, Any, Any]):
        """Drive a conversation with awaits."""
        reply = None
        while True:
            try:
                step = steps.send(reply)
            except StopIteration as stop:
                return stop.value
            reply = None
            if isinstance(step, Send):
                try:
                    reply = await self.http.request(step.method, step.url, json=step.json)
                except httpx.TransportError as exc:
                    raise _unreachable(self.url, exc) from None
            elif isinstance(step, Sleep):
                await asyncio.sleep(step.seconds)
            elif self.on_progress is not None:
                self.on_progress(step.job)

    async def ask(self, verb: str, body: dict, wait: bool = True) -> dict:
        return await self.run(conversation(VERBS[verb], body, wait, self.busy_patience))

    async def _ask(self, name: str, request, fields):
        verb = VERBS[name]
        return _typed(verb, await self.ask(name, request_body(verb, request, **fields)))

    async def thresholds(self, request: Union[ThresholdsRequest, dict, None] = None, /,
                         **fields) -> ThresholdsResponse:
        return await self._ask("thresholds", request, fields)

    async def state_evolution(self, request: Union[StateEvolutionRequest, dict, None] = None, /,
                              **fields) -> StateEvolutionResponse:
        return await self._ask("state_evolution", request, fields)

    async def sample_size(self, request: Union[SampleSizeRequest, dict, None] = None, /,
                          **fields) -> SampleSizeResponse:
        return await self._ask("sample_size", request, fields)

    async def amp_simulation(self, request: Union[AmpSimulationRequest, dict, None] = None, /,
                             **fields) -> AmpSimulationResponse:
        return await self._ask("amp_simulation", request, fields)

    async def sweep(self, request: Union[SweepRequest, dict, None] = None, /, **fields) -> dict:
        return await self._ask("sweep", request, fields)

    async def compare(self, request: Union[ComparisonRequest, dict, None] = None, /,
                      **fields) -> ComparisonResponse:
        return await self._ask("comparison", request, fields)

    async def job(self, job_id: str) -> JobOut:
        r = await self.run(_send("GET", f"{API}/jobs/{job_id}", None, 0.0))
        return JobOut.model_validate(r.json())

    async def plot(self, job_id: str, fmt: str = "png") -> bytes:
        return (await self.run(_send("GET", f"{API}/jobs/{job_id}/plot.{fmt}", None,
                                     self.busy_patience))).content
