"""Fixtures and helpers shared by tests/test_service_*.py (imported, not a conftest)."""
from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
REDIS_URL = os.environ.get("STAIRCASE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
PAPER = {"family": "deep_attention", "layers": 2, "tokens": 2, "skip": 1.0, "beta": 1.0, "noise": 0.0}
PHASE = {"family": "multi_index", "link": "square", "noise": 0.0}


def settings(tmp_path=None, **kw):
    from service.settings import Settings

    base = dict(cache_dir=str(tmp_path or Path("/tmp") / f"staircase-test-{uuid.uuid4().hex}"),
                workers=2, sync_timeout=900.0, redis_url=None, api_key=None)
    base.update(kw)
    return Settings(_env_file=None, **base)


@pytest.fixture(scope="session")
def pool():
    """One warmed-up numerical pool for the whole session (numba compiles once)."""
    from service.pool import Pool

    p = Pool(workers=int(os.environ.get("STAIRCASE_TEST_WORKERS", "2")))
    p.start()
    asyncio.run(p.warm_up())
    assert p.ready, p.error
    assert p.kernels == "compiled", p.kernels_error  # the background compile ended (here: loaded)
    yield p
    p.close(kill=True)


@pytest.fixture(scope="module")
def app_client(pool, tmp_path_factory):
    """A TestClient of the app on the shared pool and a fresh disk cache, for one test module."""
    from fastapi.testclient import TestClient

    from service.main import create_app

    app = create_app(settings(tmp_path_factory.mktemp("cache")), pool=pool)
    with TestClient(app) as c:
        yield c


def counter(metrics_text: str, name: str, **labels) -> float:
    """Sum of a Prometheus sample over series matching the labels."""
    total = 0.0
    for line in metrics_text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        series, value = line.rsplit(" ", 1)
        if all(f'{k}="{v}"' in series for k, v in labels.items()):
            total += float(value)
    return total


def computations(client, kind="thresholds", outcome="ok") -> float:
    return counter(client.get("/metrics").text, "staircase_computations_total", kind=kind,
                   outcome=outcome)


def redis_up(url=REDIS_URL) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=0.5).ping())
    except Exception:
        return False


requires_redis = pytest.mark.skipif(not redis_up(), reason="Redis at 127.0.0.1:6379 is not running "
                                    "(.ci/run starts it)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """A private, throw-away redis-server (so stopping it disturbs nobody)."""

    def __init__(self, args=("--save", "", "--appendonly", "no")):
        self.port = free_port()
        self.args = list(args)  # the server's options beside its port
        self.proc = None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self):
        exe = shutil.which("redis-server")
        if exe is None:
            pytest.skip("redis-server is not installed")
        self.proc = subprocess.Popen([exe, "--port", str(self.port), "--bind", "127.0.0.1", *self.args],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            if redis_up(self.url):
                return self
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self):
        if self.proc is not None:
            self.proc.send_signal(signal.SIGCONT)  # a paused server cannot act on SIGTERM
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None

    def pause(self):
        """SIGSTOP: the server hangs (connections accepted by the kernel, never answered)."""
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self):
        self.proc.send_signal(signal.SIGCONT)

    def kill(self):
        """SIGKILL: Redis gone at once (no shutdown)."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None


class Uvicorn:
    """The service as a real uvicorn process (for restart and persistence tests)."""

    def __init__(self, env: dict, hook: str | None = None):
        """``hook``: run the app on a pool with this test hook (``tests/slow_app.py``)."""
        self.port = free_port()
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("STAIRCASE_")}
        self.env = {**inherited, "STAIRCASE_WORKERS": "1", **env}
        self.app = ["service.main:app"]
        if hook is not None:
            self.app = ["--factory", "slow_app:create"]
            self.env["SLOW_APP_HOOK"] = hook
            self.env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "tests"),
                                                      self.env.get("PYTHONPATH", "")])
        self.proc = None
        self.base = f"http://127.0.0.1:{self.port}"

    def start(self, timeout=600):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", *self.app, "--host", "127.0.0.1", "--port",
             str(self.port)], cwd=ROOT, env=self.env, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, "uvicorn exited"
            with contextlib.suppress(httpx.HTTPError):
                r = httpx.get(self.base + "/readyz", timeout=2)
                if r.status_code == 200:
                    return self
            time.sleep(0.2)
        raise RuntimeError("the service did not become ready")

    def stop(self):
        if self.proc is not None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
            self.proc = None

    def client(self):
        return httpx.Client(base_url=self.base, timeout=300)


def wait_job(client, location, timeout=900):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = client.get(location).json()
        if body["status"] in ("done", "failed", "cancelled"):
            return body
        time.sleep(0.1)
    raise AssertionError(f"job {location} did not finish")


def run_app(app, scenario, timeout: float = 600):
    """Run ``await scenario(client)`` against ``app`` inside its lifespan (an in-process ASGI
    client, ``timeout`` seconds per request) and return what it returns."""
    async def main():
        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t",
                                         timeout=timeout) as c:
                return await scenario(c)

    return asyncio.run(main())


def jobs_server(cache_dir) -> Uvicorn:
    """A live uvicorn that answers every cold question with a 202 job (sync timeout 0), on a
    fresh disk cache, without warming the kernels first (numba loads them from its disk cache
    on the first computation)."""
    return Uvicorn({"STAIRCASE_SYNC_TIMEOUT": "0", "STAIRCASE_WARM_UP": "false",
                    "STAIRCASE_CACHE_DIR": str(cache_dir)}).start()
