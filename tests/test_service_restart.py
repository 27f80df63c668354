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


def test_job_interrupted_by_a_crash_resumes_after_restart(tmp_path):
    """SIGKILL the service while a job runs; the restarted service resumes the job."""
    import os
    import signal
    import time

    env = {"STAIRCASE_CACHE_DIR": str(tmp_path / "cache"), "STAIRCASE_REDIS_URL": "",
           "STAIRCASE_LOCK_TTL": "2"}
    slow = {"model": {"family": "deep_attention", "layers": 2, "tokens": 2}, "alphas": [0.5],
            "precision": "fast"}
    server = Uvicorn(env).start()
    try:
        with server.client() as c:
            r = c.post("/v1/state-evolution", json=slow, headers={"Prefer": "respond-async"})
            assert r.status_code == 202
            loc = r.headers["location"]
            for _ in range(600):
                if c.get(loc).json()["status"] == "running":
                    break
                time.sleep(0.1)
            assert c.get(loc).json()["status"] == "running"
    finally:
        os.killpg(server.proc.pid, signal.SIGKILL)  # a crash: no shutdown, the lock stays
        server.proc.wait(10)
        server.proc = None
    time.sleep(2.5)  # the lock expires (STAIRCASE_LOCK_TTL)
    server = Uvicorn(env).start()
    try:
        with server.client() as c:
            job = wait_job(c, loc)
            assert job["status"] == "done", job
            assert job["result"]["points"][0]["alpha"] == 0.5
            again = c.post("/v1/state-evolution", json=slow).json()
            assert again["cache"] == "hit"
    finally:
        server.stop()
