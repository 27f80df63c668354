"""OpenAPI response declarations shared by the routes."""
from ..schemas import JobAccepted, Problem
from .. import examples


def problem_response(description: str, example=None) -> dict:
    content = {"schema": {"$ref": "#/components/schemas/Problem"}}
    if example is not None:
        content["example"] = example
    return {"description": description, "content": {"application/problem+json": content}}


def compute_responses(example: dict) -> dict:
    return {
        200: {"description": "The answer (from the cache, or computed within the wait)",
              "content": {"application/json": {"example": example}}},
        202: {"model": JobAccepted, "description": "Still computing: poll the job at Location",
              "headers": {"Location": {"schema": {"type": "string"},
                                       "description": "/v1/jobs/{id}"}},
              "content": {"application/json": {"example": examples.ACCEPTED}}},
        400: problem_response("Malformed body (not JSON, or not UTF-8)"),
        401: problem_response("Missing or wrong X-API-Key (only when a key is configured)"),
        422: problem_response("Invalid input: names the field and its allowed range", examples.PROBLEM),
        429: problem_response("Too many computations pending"),
    }


__all__ = ["Problem", "problem_response", "compute_responses"]
