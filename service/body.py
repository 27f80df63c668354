"""A request's body, before anything reads it whole, and its parsing.

:class:`BodyLimits` (pure ASGI, in front of the fast path) reads every body itself, counting
bytes: a ``Content-Length`` over ``STAIRCASE_MAX_BODY_BYTES`` is answered 413 before a byte is
read, and a body without one (chunked) is cut off with 413 as soon as it passes the cap, so no
more than the cap is ever held.  A route that takes JSON answers 415 to a body whose
``Content-Type`` is not ``application/json`` or ``application/*+json`` (the fast path, which
answers repeated bodies from a memo, never sees it).  Both answers are problems of
``service.problems``.

:class:`JSONRoute` (the route class of the routes that take a body) parses a large JSON body
in a thread, off the event loop.
"""
from __future__ import annotations

import asyncio
import json
from typing import Optional

from fastapi import Request
from fastapi.routing import APIRoute
from starlette.datastructures import Headers

from .problems import PayloadTooLarge, UnsupportedMediaType

# Bodies above this are parsed in a thread: json.loads takes 40-70 ms a megabyte (more when
# the CPUs are busy), during which the event loop would answer nobody; below it the parse
# (under a millisecond) costs about what the hop to a thread does.
THREAD_PARSE_BYTES = 16 * 1024


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


def parse(body: bytes):
    """The JSON of a body, as Starlette parses it (the standard library: NaN is read, and the
    schemas refuse it with a 422 naming the field)."""
    return json.loads(body)


class JSONRequest(Request):
    async def json(self):
        if not hasattr(self, "_json"):
            body = await self.body()
            self._json = (await asyncio.to_thread(parse, body) if len(body) > THREAD_PARSE_BYTES
                          else parse(body))
        return self._json


class JSONRoute(APIRoute):
    """A route whose JSON body is parsed in a thread when it is large (:class:`JSONRequest`);
    a parse error is the same ``json.JSONDecodeError`` FastAPI turns into a validation error."""

    def get_route_handler(self):
        handler = super().get_route_handler()

        async def route_handler(request: Request):
            return await handler(JSONRequest(request.scope, request.receive))

        return route_handler
