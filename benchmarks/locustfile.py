"""Locust users for ``benchmarks/load_test.py`` (which starts the service and locust; run that).

Two user classes, picked by name on locust's command line:

* ``CachedUser``: POST /v1/thresholds with one question answered before (a cache hit), back to
  back.  A response that is not 200 with ``"cache": "hit"`` counts as a failure.
* ``ColdUser``: POST /v1/thresholds with a new cheap question each time (a multi-index link of
  one index at precision fast, seed LOAD_SEED_BASE + a counter: a cache miss computed in the
  cheap lane), back to back.  A response that is not 200 with ``"cache": "miss"`` is a failure.

Environment (set by load_test.py): LOAD_CACHED_BODY (the cached question, JSON), LOAD_SEED_BASE
(first seed of the cold questions), LOAD_RECORD (a file: one JSON line per request as it ends,
with its end time, latency and outcome, and for cold ones the solver's own seconds: exact
counts, throughput and percentiles, independent of locust's rounded summary).
"""
from __future__ import annotations

import itertools
import json
import os
import time

from locust import FastHttpUser, constant, events, task

CHEAP_LINKS = ("square", "sign", "abs", "relu")  # one index each: cheap (service.cost)
_seeds = itertools.count(int(os.environ.get("LOAD_SEED_BASE", "1000")))
_out = open(os.environ["LOAD_RECORD"], "a", buffering=1) if os.environ.get("LOAD_RECORD") else None


def _write(record: dict) -> None:
    if _out is not None:
        _out.write(json.dumps(record) + "\n")


def cold_question(seed: int) -> dict:
    """The seed-th cheap cold question (a different model or seed each time)."""
    return {"model": {"family": "multi_index", "link": CHEAP_LINKS[seed % len(CHEAP_LINKS)]},
            "precision": "fast", "seed": seed}


class CachedUser(FastHttpUser):
    wait_time = constant(0)

    @task
    def cached(self):
        body = os.environ["LOAD_CACHED_BODY"]
        with self.client.post("/v1/thresholds", data=body, name="cached", catch_response=True,
                              headers={"content-type": "application/json"}) as r:
            if r.status_code != 200 or b'"cache":"hit"' not in (r.content or b""):
                r.failure(f"not a cache hit: {r.status_code} {(r.text or '')[:200]}")


class ColdUser(FastHttpUser):
    wait_time = constant(0)

    @task
    def cold(self):
        body = cold_question(next(_seeds))
        with self.client.post("/v1/thresholds", json=body, name="cold", catch_response=True) as r:
            if r.status_code != 200:
                r.failure(f"{r.status_code} {(r.text or '')[:200]}")
                return
            out = r.json()
            if out.get("cache") != "miss":
                r.failure(f"not computed: cache {out.get('cache')}")
                return
            _write({"name": "cold-solver", "seconds": out["solver"]["seconds"]})


@events.request.add_listener
def _record(name, response_time, exception, **_):
    _write({"name": name, "end": time.time(), "seconds": response_time / 1000.0,
            "ok": exception is None})
