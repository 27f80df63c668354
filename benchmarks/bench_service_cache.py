"""Benchmark: cached POST /v1/thresholds under 50 concurrent clients on loopback.

    python benchmarks/bench_service_cache.py                    # starts uvicorn on the disk cache
    python benchmarks/bench_service_cache.py --redis redis://127.0.0.1:6379/0
    python benchmarks/bench_service_cache.py --url http://127.0.0.1:8000   # a running service

Primes the cache with one request (the paper's model, L = 2, M = 2, c = 1, precision fast; use
--model phase for a model that computes in a second), then runs --clients keep-alive
connections, each sending requests back to back for --seconds.  Prints requests per second,
client-side latency p50/p99, and the server's own time (Server-Timing header) p50/p99.
The client is a minimal asyncio HTTP/1.1 client so that it costs the server little CPU.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
MODELS = {
    "paper": {"family": "deep_attention", "layers": 2, "tokens": 2, "skip": 1.0, "beta": 1.0, "noise": 0.0},
    "phase": {"family": "multi_index", "link": "square", "noise": 0.0},
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url: str, body: dict, timeout=900) -> tuple[dict, dict]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read()), dict(r.headers)


def start_server(args) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "STAIRCASE_WORKERS": "1"}
    if args.redis:
        env["STAIRCASE_REDIS_URL"] = args.redis
        env["STAIRCASE_REDIS_PREFIX"] = f"staircase-bench:{os.getpid()}:"
    else:
        env["STAIRCASE_REDIS_URL"] = ""
        env["STAIRCASE_CACHE_DIR"] = args.cache_dir or tempfile.mkdtemp(prefix="staircase-bench-")
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "service.main:app", "--host", "127.0.0.1",
                             "--port", str(port), "--no-access-log", "--log-level", "warning"],
                            cwd=ROOT, env=env, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    for _ in range(3000):
        try:
            with urllib.request.urlopen(base + "/readyz", timeout=2) as r:
                if r.status == 200:
                    return proc, base
        except Exception:
            time.sleep(0.1)
    raise SystemExit("the service did not start")


async def client(host, port, request: bytes, stop_at: float, lat: list, server: list, errors: list):
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length, timing, status = 0, None, int(head.split(b" ", 2)[1])
            for line in head.split(b"\r\n")[1:]:
                k, _, v = line.partition(b":")
                k = k.strip().lower()
                if k == b"content-length":
                    length = int(v)
                elif k == b"server-timing":
                    timing = float(v.split(b"dur=")[1])
            body = await reader.readexactly(length)
            lat.append(time.perf_counter() - t0)
            if status != 200 or b'"cache":"hit"' not in body:
                errors.append(status)
            if timing is not None:
                server.append(timing / 1000)
    finally:
        writer.close()


async def run(base: str, body: dict, clients: int, seconds: float):
    u = urlparse(base)
    payload = json.dumps(body).encode()
    request = (f"POST /v1/thresholds HTTP/1.1\r\nHost: {u.hostname}:{u.port}\r\n"
               f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n").encode() + payload
    lat, server, errors = [], [], []
    t0 = time.perf_counter()
    stop_at = t0 + seconds
    await asyncio.gather(*[client(u.hostname, u.port, request, stop_at, lat, server, errors)
                           for _ in range(clients)])
    return lat, server, errors, time.perf_counter() - t0


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", help="a running service (default: start one)")
    ap.add_argument("--redis", help="start the service on this Redis URL instead of the disk cache")
    ap.add_argument("--cache-dir", help="disk cache directory for the started service")
    ap.add_argument("--model", choices=sorted(MODELS), default="paper")
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=10.0)
    args = ap.parse_args()

    proc = None
    base = args.url
    if base is None:
        proc, base = start_server(args)
    try:
        body = {"model": MODELS[args.model], "precision": "fast", "dimension": 768}
        t0 = time.perf_counter()
        first, _ = post(base + "/v1/thresholds", body)
        while "location" in first:  # 202: computing longer than the sync timeout; poll the job
            time.sleep(1.0)
            with urllib.request.urlopen(base + first["location"], timeout=60) as r:
                job = json.loads(r.read())
            if job["status"] in ("failed", "cancelled"):
                raise SystemExit(f"priming failed: {job}")
            if job["status"] == "done":
                first = {**job["result"], "cache": "miss (job)"}
        print(f"prime: cache={first['cache']} in {time.perf_counter() - t0:.2f} s "
              f"(solver {first['solver']['seconds']:.2f} s)")
        hit, headers = post(base + "/v1/thresholds", body)
        print(f"repeat: cache={hit['cache']}, {headers.get('server-timing')}")
        lat, server, errors, wall = asyncio.run(run(base, body, args.clients, args.seconds))
        n = len(lat)
        print(f"{args.clients} clients, {wall:.1f} s: {n} requests, {n / wall:.0f} req/s, "
              f"errors/non-hits {len(errors)}")
        print(f"client latency: p50 {1000 * pct(lat, 0.5):.2f} ms, p99 {1000 * pct(lat, 0.99):.2f} ms, "
              f"mean {1000 * statistics.fmean(lat):.2f} ms")
        if server:
            print(f"server time:    p50 {1000 * pct(server, 0.5):.3f} ms, "
                  f"p99 {1000 * pct(server, 0.99):.3f} ms")
        return 0 if not errors else 1
    finally:
        if proc is not None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(30)
            if args.redis:  # leave nothing behind in a shared Redis
                import redis

                r = redis.Redis.from_url(args.redis)
                keys = list(r.scan_iter(f"staircase-bench:{os.getpid()}:*"))
                if keys:
                    r.delete(*keys)


if __name__ == "__main__":
    raise SystemExit(main())
