"""A request's body, before anything reads it whole.

:class:`BodyLimits` (pure ASGI, in front of the fast path) reads every body itself, counting
bytes: a ``Content-Length`` over ``STAIRCASE_MAX_BODY_BYTES`` is answered 413 before a byte is
read, and a body without one (chunked) is cut off with 413 as soon as it passes the cap, so no
more than the cap is ever held.  A route that takes JSON answers 415 to a body whose
``Content-Type`` is not ``application/json`` or ``application/*+json`` (the fast path, which
answers repeated bodies from a memo, never sees it).  Both answers are problems of
``service.problems``.
"""
from __future__ import annotations

from typing import Optional

from starlette.datastructures import Headers

from .problems import PayloadTooLarge, UnsupportedMediaType


def is_json(content_type: Optional[str]) -> bool:
    """``application/json`` or ``application/*+json``, with any parameters (charset=utf-8)."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def declared_length(headers: Headers) -> Optional[int]:
    """The Content-Length, or None when there is none (or it is not a number: then the bytes
    are counted as they come)."""
    value = headers.get("content-length")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


class BodyLimits:
    """Pure ASGI: the size cap (413) and the media type of JSON routes (415), see above."""

    def __init__(self, app, owner, max_bytes: int):
        self.asgi = app         # the next ASGI layer
        self.app = owner        # the FastAPI instance (its route map: which routes take JSON)
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.asgi(scope, receive, send)
        headers = Headers(scope=scope)
        length = declared_length(headers)
        if length is not None and length > self.max_bytes:
            return await PayloadTooLarge(self.max_bytes).response()(scope, receive, send)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client left: the app sees it as usual
                return await self.asgi(scope, _replay(message, receive), send)
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                return await PayloadTooLarge(self.max_bytes).response()(scope, receive, send)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        content_type = headers.get("content-type")
        if body and not is_json(content_type) and self.app.state.route_map.takes_json(
                scope["method"], scope["path"]):
            return await UnsupportedMediaType(content_type).response()(scope, receive, send)
        return await self.asgi(scope, _replay({"type": "http.request", "body": body,
                                               "more_body": False}, receive), send)


def _replay(first, upstream):
    """A receive() that gives ``first`` once, then listens upstream (disconnects)."""
    pending = [first]

    async def receive():
        if pending:
            return pending.pop()
        return await upstream()

    return receive
