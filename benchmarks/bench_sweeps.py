"""The 9-point sweep of L = 2, M = 2 over the skip strength c, on 1 and on 2 arq workers.

    python benchmarks/bench_sweeps.py [--precision fast] [--workers 1 2] [--png docs/sweep_skip.png]
                                      [--layers 2]   (--layers 1: the same grid on the cheap one-layer model)

Needs Redis (STAIRCASE_TEST_REDIS_URL, default redis://127.0.0.1:6379/0).  Each run uses its own
key prefix (cold cache, its own arq queue) and starts fresh `python -m service.worker`
processes; the wall time is measured from the POST (workers already warm) to the last point.
Afterwards the same sweep is posted again (every point a cache hit) and the keys are removed.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import redis

from _checkout import ROOT  # this checkout's solvers, not the installed ones

URL = os.environ.get("STAIRCASE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
C = [0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 4]
MODEL = {"family": "deep_attention", "layers": 2, "tokens": 2, "skip": 1.0, "beta": 1.0, "noise": 0.0}


def worker_env(prefix: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STAIRCASE_")}
    env.update(STAIRCASE_REDIS_URL=URL, STAIRCASE_REDIS_PREFIX=prefix, STAIRCASE_QUEUE="redis",
               STAIRCASE_WORKERS="1", OMP_NUM_THREADS="1")  # one point at a time per worker
    return env


def start_workers(n: int, prefix: str) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-m", "service.worker"],
                             cwd=ROOT, env=worker_env(prefix), stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True) for _ in range(n)]


def wait_ready(procs, prefix: str, timeout=900) -> None:
    """An arq worker writes its health-check key once its startup (kernel warm-up) is done."""
    r = redis.Redis.from_url(URL)
    key = prefix + "computations:health-check"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if r.exists(key):
            return
        for p in procs:
            assert p.poll() is None, p.stderr.read()
        time.sleep(0.2)
    raise RuntimeError("the workers did not start")


async def run_sweep(prefix: str, precision: str, seed: int, model: dict) -> tuple[float, dict, object]:
    from service.config import Settings
    from service.main import create_app

    s = Settings(_env_file=None, redis_url=URL, redis_prefix=prefix, queue="redis", workers=1,
                 warm_up=False)
    app = create_app(s)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://b",
                                     timeout=60) as c:
            body = {"model": model, "compute": "thresholds",
                    "grid": {"parameter": "skip", "values": C}, "precision": precision, "seed": seed}
            t0 = time.perf_counter()
            r = await c.post("/v1/sweeps", json=body)
            assert r.status_code == 202, r.text
            loc = r.headers["location"]
            while True:
                job = (await c.get(loc)).json()
                if job["status"] in ("done", "failed", "cancelled"):
                    break
                await asyncio.sleep(0.2)
            wall = time.perf_counter() - t0
            png = (await c.get(loc + "/plot.png")).content
            t1 = time.perf_counter()
            r2 = await c.post("/v1/sweeps", json=body)
            loc2 = r2.headers["location"]
            while (again := (await c.get(loc2)).json())["status"] not in ("done", "failed", "cancelled"):
                await asyncio.sleep(0.05)
            repeat = (time.perf_counter() - t1, [p["cache"] for p in again["result"]["points"]])
    return wall, job, (png, repeat)


def drop(prefix: str) -> None:
    r = redis.Redis.from_url(URL)
    keys = list(r.scan_iter(prefix + "*"))
    if keys:
        r.delete(*keys)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--precision", default="fast")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--png", default=None, help="save the phase diagram of the last run here")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--layers", type=int, default=2)
    args = ap.parse_args()
    model = {**MODEL, "layers": args.layers}
    print(f"model {model}, precision {args.precision}, c in {C}")
    walls = {}
    for n in args.workers:
        prefix = f"staircase-bench:{uuid.uuid4().hex[:8]}:"
        procs = start_workers(n, prefix)
        try:
            wait_ready(procs, prefix)
            wall, job, (png, repeat) = asyncio.run(run_sweep(prefix, args.precision, args.seed, model))
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                p.wait(30)
            drop(prefix)
        walls[n] = wall
        pts = job["result"]["points"]
        per_worker: dict = {}
        for p in pts:
            per_worker[p.get("worker")] = per_worker.get(p.get("worker"), 0) + 1
        print(f"{n} worker(s): {wall:.1f} s for {len(pts)} points, status {job['status']}, "
              f"point seconds {[round(p.get('seconds') or 0, 1) for p in pts]}, points per worker "
              f"{sorted(per_worker.values())}", flush=True)
        for p in pts:
            th = ", ".join(f"L{t.get('layer')}: {t['alpha']:.4f}" if t["alpha"] is not None else
                           f"L{t.get('layer')}: never" for t in (p["result"] or {}).get("thresholds", []))
            print(f"   c = {p['value']:<5g} {th}", flush=True)
        print(f"   repeated sweep: {repeat[0] * 1000:.0f} ms, caches {sorted(set(repeat[1]))}")
        if args.png:
            Path(args.png).parent.mkdir(parents=True, exist_ok=True)
            Path(args.png).write_bytes(png)
    if len(walls) >= 2:
        a, b = sorted(walls)[:2]
        print(f"speed-up {a} -> {b} workers: {walls[a] / walls[b]:.2f}x "
              f"(machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
