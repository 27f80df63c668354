"""Errors as application/problem+json (RFC 9457), naming the field and its allowed range.

The one place errors become problems: the service's exceptions (:class:`InvalidParameter`,
:class:`Busy`, :class:`ComputationFailed`, :class:`NotFound`, :class:`Unavailable` (and the
store's ``StoreUnavailable``, should one ever escape the layers that degrade), and the body's
:class:`MalformedBody`, :class:`PayloadTooLarge`, :class:`UnsupportedMediaType`), request
validation and HTTP errors are mapped by the handlers :func:`install` registers (the body's
size and media type are refused earlier, by ``service.body``, with these same responses);
:func:`solver_failure` turns a solver's refusal or failure (in a pool process) into the problem
a job records.
"""
from __future__ import annotations

import logging
from typing import Any, Optional

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from .cache import StoreUnavailable
from .schemas import ALLOWED, AMP_ALLOWED, COMPARISON_ALLOWED

# routes whose fields have their own ranges (looked up before ALLOWED)
ALLOWED_BY_PATH = {"/v1/amp-simulations": AMP_ALLOWED, "/v1/comparisons": COMPARISON_ALLOWED}

log = logging.getLogger("staircase.problems")

PROBLEM = "application/problem+json"
TITLES = {400: "Bad request", 401: "Unauthorized", 404: "Not found", 405: "Method not allowed",
          406: "Not acceptable", 413: "Payload too large", 415: "Unsupported media type",
          422: "Invalid request", 429: "Too many pending computations", 500: "Internal error",
          503: "Service unavailable"}

# The union tags pydantic puts in error locations; they are not field names.
_TAGS = {"deep_attention", "multi_index", "weak_recovery", "prediction_error", "float", "int",
         "list[float]", "literal['all']", "function-after", "constrained-float", "gaussian", "binary",
         "sparse"}


class ServiceError(Exception):
    """An error with a problem+json answer (see :func:`install`)."""

    def response(self) -> Response:
        raise NotImplementedError


class InvalidParameter(ServiceError):
    """A value the solvers (or the sweep planner) refuse: 422, naming the field."""

    def __init__(self, field: str, detail: str, allowed: str, errors: Optional[list] = None):
        super().__init__(detail)
        self.field, self.detail, self.allowed, self.errors = field, detail, allowed, errors

    @classmethod
    def from_spec_error(cls, exc, prefix: str = "") -> "InvalidParameter":
        field = prefix + str(exc.parameter)
        return cls(field, str(exc), str(exc.allowed), errors=[
            {"field": field, "message": str(exc), "allowed": str(exc.allowed), "value": repr(exc.value)}])

    def response(self) -> Response:
        return problem(422, self.detail, type_="/problems/invalid-parameter", field=self.field,
                       allowed=self.allowed, errors=self.errors)


class Busy(ServiceError):
    """Beyond capacity: too many computations (or sweeps) pending in this process, or the
    expensive lane's waiting list full (service.scheduler): 429 with Retry-After (seconds)."""

    def __init__(self, detail: str = "too many computations pending; retry later",
                 retry_after: int = 5):
        super().__init__(detail)
        self.detail = detail
        self.retry_after = retry_after

    def response(self) -> Response:
        return problem(429, self.detail, type_="/problems/busy",
                       headers={"Retry-After": str(int(self.retry_after))})


class ComputationFailed(ServiceError):
    """The solvers refused or failed on this input: the job's problem, as a 422."""

    def __init__(self, problem_: dict):
        super().__init__(problem_.get("detail", "computation failed"))
        self.problem = problem_

    def response(self) -> Response:
        p = self.problem
        return problem(422, p.get("detail", "computation failed"),
                       type_=p.get("type", "/problems/computation-failed"),
                       field=p.get("field"), allowed=p.get("allowed"))


class MalformedBody(ServiceError):
    """A body that is not JSON (or not UTF-8): 400, before any field is looked at."""

    def __init__(self, detail: str):
        super().__init__(detail)
        self.detail = detail

    def response(self) -> Response:
        return problem(400, self.detail, type_="/problems/malformed-body", field="body",
                       allowed="a JSON object, UTF-8")


class PayloadTooLarge(ServiceError):
    """A body over STAIRCASE_MAX_BODY_BYTES: 413, answered before the body is read whole."""

    def __init__(self, limit: int):
        super().__init__(f"the request body is larger than {limit} bytes")
        self.limit = limit

    def response(self) -> Response:
        # close: the client may still be sending the rest of the body, which is never read
        return problem(413, str(self), type_="/problems/payload-too-large", field="body",
                       allowed=f"at most {self.limit} bytes", headers={"Connection": "close"})


class UnsupportedMediaType(ServiceError):
    """A body that does not say it is JSON: 415."""

    ALLOWED = "Content-Type: application/json (or application/*+json)"

    def __init__(self, content_type: Optional[str]):
        got = repr(content_type) if content_type else "no Content-Type"
        super().__init__(f"the body must be JSON, not {got}")

    def response(self) -> Response:
        return problem(415, str(self), type_="/problems/unsupported-media-type",
                       field="Content-Type", allowed=self.ALLOWED)


class Unavailable(ServiceError):
    """The store (Redis) is down or stuck and this answer needs it: 503 with Retry-After.
    (The service degrades instead wherever it can: answers from memory, computations and
    sweeps run here; this is the safety net that keeps an outage from ever being a 500.)"""

    def __init__(self, detail: str = "the cache store is unavailable; retry later", retry_after: int = 2):
        super().__init__(detail)
        self.detail, self.retry_after = detail, retry_after

    def response(self) -> Response:
        return problem(503, self.detail, type_="/problems/store-unavailable",
                       headers={"Retry-After": str(self.retry_after)})


class NotFound(ServiceError):
    def __init__(self, detail: str):
        super().__init__(detail)
        self.detail = detail

    def response(self) -> Response:
        return problem(404, self.detail, type_="/problems/not-found", field="job_id")


def solver_failure(outcome: str, info: dict, field_of) -> dict:
    """The problem a job records when the solvers refused (``spec_error``) or failed."""
    if outcome == "spec_error":
        return {"type": "/problems/invalid-parameter", "title": "Invalid model parameter",
                "status": 422, "detail": info["detail"], "field": field_of(info["parameter"]),
                "allowed": info["allowed"]}
    return {"type": "/problems/computation-failed", "title": "Computation failed", "status": 422,
            "detail": "the solvers could not compute this input: " + info.get("detail", "")}


def problem(status: int, detail: str, *, type_: str = "about:blank", field: Optional[str] = None,
            allowed: Optional[str] = None, errors: Optional[list] = None,
            headers: Optional[dict] = None) -> Response:
    body: dict[str, Any] = {"type": type_, "title": TITLES.get(status, "Error"), "status": status,
                            "detail": detail}
    if field is not None:
        body["field"] = field
    if allowed is not None:
        body["allowed"] = allowed
    body["errors"] = errors or []
    return Response(orjson.dumps(body), status_code=status, media_type=PROBLEM, headers=headers)


def _field(loc) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    parts = [p for p in parts if p not in _TAGS and not p.startswith(("literal[", "list[", "function",
                                                                      "constrained-"))]
    out = ""
    for p in parts:
        out += f"[{p}]" if p.isdigit() else (("." if out else "") + p)
    return out or "body"


def _allowed(field: str, err: dict, path: Optional[str] = None) -> str:
    names = [p for p in field.replace("[", ".").replace("]", "").split(".") if p and not p.isdigit()]
    own = ALLOWED_BY_PATH.get(path or "", {})
    if names and names[0] in own:  # a top-level field of a route with its own ranges
        return own[names[0]]
    for name in reversed(names):
        if name in ALLOWED:
            return ALLOWED[name]
    ctx = err.get("ctx") or {}
    if "expected" in ctx:
        return f"one of {ctx['expected']}"
    return "see the OpenAPI document for this field"


# A body under the size cap can still fail validation in 100,000 places (one per unknown key)
# or carry a megabyte-long list: a problem lists the first MAX_ERRORS errors and echoes at most
# MAX_ECHO characters of a value, so it stays small and quick to build (a 1.5 MB body of extra
# keys was answered with 11.7 MB, built in 0.8 s on the event loop).
MAX_ERRORS = 20
MAX_ECHO = 200


def _safe(v):
    try:
        text = orjson.dumps(v).decode()
    except Exception:
        text, v = repr(v), repr(v)
    return v if len(text) <= MAX_ECHO else text[:MAX_ECHO] + "..."


def validation_errors(errors, path: Optional[str] = None) -> Response:
    out, seen = [], set()
    for err in errors:
        if len(out) == MAX_ERRORS:
            break
        field = _field(err.get("loc", ()))
        if err.get("type") == "extra_forbidden":
            allowed = "no such field"
        else:
            allowed = _allowed(field, err, path)
        if (field, err.get("msg")) in seen:
            continue
        seen.add((field, err.get("msg")))
        out.append({"field": field, "message": str(err.get("msg")), "allowed": allowed,
                    "value": _safe(err.get("input")) if err.get("type") != "missing" else None})
    first = out[0] if out else {"field": "body", "message": "invalid request", "allowed": "JSON"}
    return problem(422, f"{first['field']}: {first['message']}; allowed: {first['allowed']}",
                   type_="/problems/validation-error", field=first["field"],
                   allowed=first["allowed"], errors=out)


def malformed(errors) -> Optional[MalformedBody]:
    """A body FastAPI could not parse as JSON (its validation error of type json_invalid)."""
    for err in errors:
        if err.get("type") == "json_invalid":
            where = err.get("loc", ())[-1:]
            at = f" at character {where[0]}" if where and isinstance(where[0], int) else ""
            reason = (err.get("ctx") or {}).get("error", "")
            return MalformedBody(f"the body is not valid JSON: {reason}{at}")
    return None


def install(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        errors = exc.errors()
        bad = malformed(errors)
        if bad is not None:  # not JSON at all: no field to name (was a 422 naming "[21]")
            return bad.response()
        return validation_errors(errors, request.url.path)

    @app.exception_handler(ServiceError)
    async def _service(request: Request, exc: ServiceError):
        return exc.response()

    @app.exception_handler(StoreUnavailable)
    async def _store(request: Request, exc: StoreUnavailable):
        log.warning("store unavailable on %s: %s", request.url.path, exc)
        return Unavailable().response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        detail = exc.detail if isinstance(exc.detail, str) else TITLES.get(exc.status_code, "Error")
        if exc.status_code == 400:  # here FastAPI's only 400: a body json.loads raised on
            return MalformedBody("the body could not be decoded as JSON (not UTF-8, or nested "
                                 "too deeply)").response()
        headers = getattr(exc, "headers", None)
        if exc.status_code == 405:  # Starlette's Allow names the first route of the path only
            headers = {**(headers or {}), "Allow": request.app.state.route_map.allow(request.url.path)}
        return problem(exc.status_code, detail, headers=headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):  # pragma: no cover - a bug
        log.exception("unhandled error on %s", request.url.path)
        return problem(500, "internal error")
