"""OpenAPI response declarations shared by the routes."""
from __future__ import annotations

from typing import Optional

from .. import examples
from ..schemas import JobAccepted

UNAUTHORIZED = "Missing or wrong X-API-Key (only when a key is configured)"


def problem_response(description: str, example=None) -> dict:
    content = {"schema": {"$ref": "#/components/schemas/Problem"}}
    if example is not None:
        content["example"] = example
    return {"description": description, "content": {"application/problem+json": content}}


def body_responses() -> dict:
    """The problems of a request body, on every route that takes one (service.body, and the
    parse errors service.problems maps)."""
    return {
        400: problem_response("Malformed body (not JSON, or not UTF-8)"),
        413: problem_response("Body larger than STAIRCASE_MAX_BODY_BYTES (default 1 MiB)"),
        415: problem_response("Body not declared as JSON (Content-Type: application/json or "
                              "application/*+json)"),
    }


def accepted_response(description: str) -> dict:
    return {"model": JobAccepted, "description": description,
            "headers": {"Location": {"schema": {"type": "string"}, "description": "/v1/jobs/{id}"}},
            "content": {"application/json": {"example": examples.ACCEPTED}}}


def computation_responses(problem_example: dict, answer: Optional[dict] = None,
                          accepted: str = "Still computing: poll the job at Location") -> dict:
    """200 (``answer``: the body's model and example; none for always-a-job endpoints), 202
    with the job, and the problems."""
    out = {} if answer is None else {200: answer}
    out.update({
        202: accepted_response(accepted),
        **body_responses(),
        401: problem_response(UNAUTHORIZED),
        422: problem_response("Invalid input: names the field and its allowed range", problem_example),
        429: {**problem_response("Beyond capacity: too many computations pending, or the expensive "
                                 "lane's waiting list full (or holding this client's share); retry "
                                 "after Retry-After seconds"),
              "headers": {"Retry-After": {"schema": {"type": "integer"},
                                          "description": "seconds until a place is expected to free up"}}},
    })
    return out
