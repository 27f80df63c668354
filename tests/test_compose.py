"""docker-compose.yml as a user deploys it, without a Docker engine: `--scale worker=2`.

The api and worker services' own commands and environments, read from docker-compose.yml, run as
local processes beside a private redis-server (the compose `redis` host becomes its URL).  A cold
request and a sweep are answered, and the sweep's points are computed by the two workers.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid

import httpx
import pytest
import yaml

from service_support import ROOT, RedisServer, free_port, wait_job

pytestmark = pytest.mark.timeout(900)

ONE_LAYER = {"family": "deep_attention", "layers": 1, "tokens": 2, "skip": 1.0, "beta": 1.0}


def _service(compose: dict, name: str, redis_url: str, extra: dict) -> tuple[list[str], dict]:
    svc = compose["services"][name]
    argv = list(svc["command"])
    env = {k: v for k, v in os.environ.items() if not k.startswith("STAIRCASE_")}
    for key, value in (svc.get("environment") or {}).items():
        env[key] = str(value).replace("redis://redis:6379", redis_url.rsplit("/", 1)[0])
    env.update(extra)
    if argv[0] == "python":
        argv[0] = sys.executable
    elif argv[0] == "uvicorn":
        argv = [sys.executable, "-m"] + argv
    return argv, env


@pytest.fixture()
def stack(tmp_path):
    redis_server = RedisServer().start()
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    prefix = f"staircase-compose:{uuid.uuid4().hex[:8]}:"
    # Lazy kernels: this test's one-layer model compiles in seconds (a fresh clone has no cache).
    common = {"STAIRCASE_REDIS_PREFIX": prefix, "STAIRCASE_WARM_UP": "false",
              "STAIRCASE_CACHE_DIR": str(tmp_path / "cache")}
    port = free_port()
    api_argv, api_env = _service(compose, "api", redis_server.url, common)
    api_argv[api_argv.index("--host") + 1] = "127.0.0.1"
    api_argv[api_argv.index("--port") + 1] = str(port)
    procs = {"api": subprocess.Popen(api_argv, cwd=ROOT, env=api_env, start_new_session=True,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)}
    worker_argv, worker_env = _service(compose, "worker", redis_server.url, common)
    for i in range(2):  # docker compose up --scale worker=2
        procs[f"worker{i}"] = subprocess.Popen(worker_argv, cwd=ROOT, env=worker_env,
                                               start_new_session=True, stdout=subprocess.DEVNULL,
                                               stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            assert all(p.poll() is None for p in procs.values()), "a compose process exited"
            try:
                if httpx.get(base + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        else:
            raise AssertionError("the api did not become ready")
        yield base, procs
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.terminate()
        for p in procs.values():
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        redis_server.stop()


def test_compose_scaled_to_two_workers_serves_cold_requests_and_sweeps(stack):
    base, procs = stack
    with httpx.Client(base_url=base, timeout=300) as client:
        body = {"model": ONE_LAYER, "precision": "fast", "seed": 11}
        cold = client.post("/v1/thresholds", json=body)
        assert cold.status_code == 200, cold.text
        assert cold.json()["cache"] == "miss"
        again = client.post("/v1/thresholds", json=body)
        assert again.status_code == 200 and again.json()["cache"] == "hit"
        assert again.json()["thresholds"] == cold.json()["thresholds"]

        sweep = {"model": ONE_LAYER, "compute": "thresholds", "precision": "fast", "seed": 12,
                 "grid": {"parameter": "skip", "values": [0.5, 1.0, 1.5, 2.0]}}
        r = client.post("/v1/sweeps", json=sweep)
        assert r.status_code == 202, r.text
        done = wait_job(client, r.headers["location"], timeout=600)
        assert done["status"] == "done", done
        points = done["result"]["points"]
        assert len(points) == 4 and all(p["status"] == "done" for p in points), points
        workers = {p["worker"] for p in points}
        worker_pids = {procs["worker0"].pid, procs["worker1"].pid}
        assert workers <= worker_pids, (workers, worker_pids)  # computed by the workers, not the api
        assert procs["api"].pid not in workers
