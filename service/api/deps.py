"""Typed dependencies: the services built once in the app's lifespan, and the API key."""
from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Annotated, Optional

import orjson
from fastapi import Depends, HTTPException, Request
from fastapi.security import APIKeyHeader
from starlette.responses import Response

from ..cache import Store
from ..fastpath import Memo
from ..jobs import Engine
from ..pool import Pool
from ..settings import Settings
from ..sweeps import Sweeps


@dataclass
class Services:
    settings: Settings
    store: Store
    pool: Pool
    engine: Engine
    sweeps: Sweeps
    memo: Memo


def services(request: Request) -> Services:
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(services)]

api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False,
                              description="required only when STAIRCASE_API_KEY is set")


async def require_api_key(request: Request, key: Optional[str] = Depends(api_key_header)) -> None:
    expected = request.app.state.settings.api_key
    if expected is None:
        return
    if key is None or not secrets.compare_digest(key.encode(), expected.get_secret_value().encode()):
        raise HTTPException(401, "a valid X-API-Key header is required",
                            headers={"WWW-Authenticate": "ApiKey"})


def json(body, status: int = 200, headers: Optional[dict] = None) -> Response:
    """A JSON response (orjson) of a body the renderers made."""
    return Response(orjson.dumps(body), status_code=status, media_type="application/json",
                    headers=headers)


def accepted(job_id: str, status: str, **extra) -> Response:
    """202 with the job's Location."""
    loc = f"/v1/jobs/{job_id}"
    return json({"id": job_id, "status": status, "location": loc, **extra}, 202,
                headers={"Location": loc, "Retry-After": "1"})
