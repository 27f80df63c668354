"""The app's routes under their full templates (``/v1/thresholds``, ``/v1/jobs/{job_id}``).

FastAPI (since 0.137) keeps an included router as one nested entry, so the route a request
matched knows only its own path (``/thresholds``), not its router's prefix;
``fastapi.routing.iter_route_contexts`` gives every route with its full template.  The metrics
label requests with it (one label per route, whether the fast path or FastAPI answered), a 405
lists every method of the path in ``Allow``, and the body limits (``service.body``) ask which
routes take a JSON body before any route is matched.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from fastapi.routing import iter_route_contexts


@dataclass(frozen=True)
class RouteInfo:
    template: str
    regex: re.Pattern
    methods: frozenset
    takes_json: bool


class RouteMap:
    def __init__(self, routes):
        self.routes = [RouteInfo(rc.path, rc.path_regex, frozenset(rc.methods or ()),
                                 getattr(rc, "body_field", None) is not None)
                       for rc in iter_route_contexts(routes)
                       if getattr(rc, "path_regex", None) is not None]

    def matching(self, path: str) -> list[RouteInfo]:
        return [r for r in self.routes if r.regex.match(path)]

    def template(self, path: str) -> str:
        """The route template of ``path`` (the metrics' label), or ``unmatched``."""
        return next((r.template for r in self.routes if r.regex.match(path)), "unmatched")

    def allow(self, path: str) -> str:
        """Every method some route of ``path`` answers (the Allow header of a 405)."""
        return ", ".join(sorted({m for r in self.matching(path) for m in r.methods}))

    def takes_json(self, method: str, path: str) -> bool:
        return any(r.takes_json and method in r.methods for r in self.matching(path))
