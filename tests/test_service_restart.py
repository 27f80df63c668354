"""A real uvicorn process: answers and job records survive a restart (disk cache and Redis)."""
from __future__ import annotations

import uuid

import pytest

from service_support import PHASE, REDIS_URL, Uvicorn, redis_up, wait_job

pytestmark = pytest.mark.timeout(1200)


@pytest.mark.parametrize("backend", ["disk", "redis"])
def test_restart_keeps_cache_and_jobs(backend, tmp_path):
    if backend == "redis" and not redis_up():
        pytest.skip("Redis at 127.0.0.1:6379 is not running")
    prefix = f"staircase-test:{uuid.uuid4().hex[:12]}:"
    env = {"STAIRCASE_CACHE_DIR": str(tmp_path / "cache")}
    if backend == "redis":
        env.update(STAIRCASE_REDIS_URL=REDIS_URL, STAIRCASE_REDIS_PREFIX=prefix)
    else:
        env["STAIRCASE_REDIS_URL"] = ""
    paper = {"model": PHASE, "precision": "fast", "dimension": 768}
    server = Uvicorn(env).start()
    try:
        with server.client() as c:
            first = c.post("/v1/thresholds", json=paper)
            assert first.status_code == 200, first.text
            assert first.json()["cache"] == "miss"
            assert c.post("/v1/thresholds", json=paper).json()["cache"] == "hit"
            r = c.post("/v1/thresholds", json={**paper, "seed": 4}, headers={"Prefer": "respond-async"})
            assert r.status_code == 202
            loc = r.headers["location"]
            job = wait_job(c, loc)
            assert job["status"] == "done"
            assert c.get("/readyz").json()["cache"]["backend"] == backend
    finally:
        server.stop()
    server = Uvicorn(env).start()
    try:
        with server.client() as c:
            again = c.post("/v1/thresholds", json=paper).json()
            assert again["cache"] == "hit"
            assert again["thresholds"] == first.json()["thresholds"]
            after = c.get(loc).json()
            assert after["status"] == "done" and after["result"] == job["result"]
    finally:
        server.stop()
        if backend == "redis":
            import redis

            r = redis.Redis.from_url(REDIS_URL)
            keys = list(r.scan_iter(prefix + "*"))
            if keys:
                r.delete(*keys)
