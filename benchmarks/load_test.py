"""Load test (issue 11): locust against the service, for cached answers and for cheap cold
answers while two expensive jobs run.

    pip install -e '.[bench]'                        # locust
    python benchmarks/load_test.py                   # starts uvicorn on the embedded disk cache
    python benchmarks/load_test.py --redis redis://127.0.0.1:6379/0   # on Redis, a unique prefix
    python benchmarks/load_test.py --url http://127.0.0.1:8000        # a running service
    python benchmarks/load_test.py --dry-run         # print the locust commands, run nothing

Steps: start the service (STAIRCASE_WORKERS=2: two expensive slots; STAIRCASE_CHEAP_WORKERS=1),
answer one question so it is cached (phase retrieval, precision fast), submit --expensive jobs
(deep attention L = 3 thresholds at precision standard, ``Prefer: respond-async``: minutes each)
and wait until they run, then run locust headless twice, --seconds each:

  (a) ``CachedUser`` x --cached-users: the cached question, back to back;
  (b) ``ColdUser`` x --cold-users: a new cheap question per request (a multi-index link, seed
      counting up: a cache miss computed in the cheap lane).

and print, for each, requests, failures, throughput and the latency p50/p99 (exact, from every
request's time; cold answers also the solver's own seconds), with the machine's load average
before and after.  The expensive jobs are cancelled at the end.

``--slow-model`` makes the expensive jobs sleep instead of computing (the tests' model made slow
on purpose, ``tests/slow_model.py``, through the uvicorn factory ``tests/slow_app.py``): it
measures the scheduling without the two jobs taking the CPU from the rest.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
CACHED = {"model": {"family": "multi_index", "link": "square", "noise": 0.0}, "precision": "fast",
          "seed": 0, "dimension": 768}
EXPENSIVE = {"family": "deep_attention", "layers": 3, "tokens": 2}  # L = 3: expensive (minutes)


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", help="a running service (default: start one)")
    ap.add_argument("--redis", help="start the service on this Redis URL (keys under a unique "
                                    "STAIRCASE_REDIS_PREFIX, deleted afterwards)")
    ap.add_argument("--seconds", type=float, default=20.0, help="duration of each locust run")
    ap.add_argument("--cached-users", type=int, default=20)
    ap.add_argument("--cold-users", type=int, default=2)
    ap.add_argument("--expensive", type=int, default=2, help="expensive jobs running meanwhile")
    ap.add_argument("--slow-model", action="store_true",
                    help="expensive jobs sleep instead of computing (tests/slow_model.py)")
    ap.add_argument("--seed-base", type=int, default=None,
                    help="first seed of the cold questions (default: from the clock)")
    ap.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    args = ap.parse_args(argv)
    if args.seed_base is None:
        args.seed_base = 1000 + int(time.time()) % 1_000_000 * 100
    return args


def locust_command(host: str, user_class: str, users: int, seconds: float, csv_prefix: str) -> list[str]:
    """The headless locust run: all users at once, for ``seconds``, stats to ``csv_prefix``."""
    exe = shutil.which("locust") or "locust"
    return [exe, "-f", str(HERE / "locustfile.py"), user_class, "--headless", "--host", host,
            "-u", str(users), "-r", str(users), "-t", f"{int(round(seconds))}s",
            "--csv", csv_prefix, "--only-summary", "--stop-timeout", "60", "--loglevel", "WARNING"]


def server_command(port: int, slow_model: bool) -> list[str]:
    app = ["--factory", "slow_app:create"] if slow_model else ["service.main:app"]
    return [sys.executable, "-m", "uvicorn", *app, "--host", "127.0.0.1", "--port", str(port),
            "--no-access-log", "--log-level", "warning"]


def server_env(args, prefix: str, cache_dir: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STAIRCASE_")}
    env.update({"STAIRCASE_WORKERS": "2", "STAIRCASE_CHEAP_WORKERS": "1",
                "STAIRCASE_MAX_PENDING_JOBS": "1000"})
    if args.redis:
        env.update({"STAIRCASE_REDIS_URL": args.redis, "STAIRCASE_REDIS_PREFIX": prefix})
    else:
        env.update({"STAIRCASE_REDIS_URL": "", "STAIRCASE_CACHE_DIR": cache_dir})
    if args.slow_model:  # tests/slow_app.py, with the hook tests/slow_model.py:hook
        env["SLOW_APP_HOOK"] = "slow_model:hook"
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "tests"), env.get("PYTHONPATH", "")])
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(url: str, body: Optional[dict] = None, method: Optional[str] = None,
            headers: Optional[dict] = None, timeout: float = 600) -> tuple[int, dict, dict]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method or ("POST" if data else "GET"),
                                 headers={"content-type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"{}"), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}"), dict(e.headers)


def wait_ready(base: str, proc: subprocess.Popen, timeout: float = 900) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit("the service exited")
        try:
            if request(base + "/readyz", timeout=2)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit("the service did not become ready")


def start_expensive(base: str, n: int, seed_base: int) -> list[str]:
    """Submit n expensive jobs and wait until each is running; their Locations."""
    locations = []
    for i in range(n):
        status, body, headers = request(base + "/v1/thresholds",
                                        {"model": EXPENSIVE, "precision": "standard", "seed": seed_base + i},
                                        headers={"Prefer": "respond-async"})
        if status != 202:
            raise SystemExit(f"expensive job {i}: {status} {body}")
        locations.append(body["location"])
    for loc in locations:
        deadline = time.monotonic() + 120
        while True:
            job = request(base + loc)[1]
            if job["status"] == "running":
                print(f"expensive job {loc}: running in lane {job['lane']}, "
                      f"estimated {job['estimated_seconds']:.0f} s")
                break
            if job["status"] in ("done", "failed", "cancelled") or time.monotonic() > deadline:
                raise SystemExit(f"expensive job {loc} is not running: {job}")
            time.sleep(0.2)
    return locations


def still_running(base: str, locations: list[str]) -> list[str]:
    return [request(base + loc)[1]["status"] for loc in locations]


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


def summarise(label: str, record: str, name: str) -> dict:
    """Counts, throughput (requests that ended between the first and the last end) and exact
    latency percentiles from the locustfile's record of every request."""
    recs = [json.loads(line) for line in open(record)] if os.path.exists(record) else []
    ok = [r for r in recs if r["name"] == name and r["ok"]]
    failed = [r for r in recs if r["name"] == name and not r["ok"]]
    lat = [r["seconds"] for r in ok]
    solver = [r["seconds"] for r in recs if r["name"] == "cold-solver"]
    ends = sorted(r["end"] for r in ok)
    span = (ends[-1] - ends[0]) if len(ends) > 1 else float("nan")
    out = {"label": label, "requests": len(ok) + len(failed), "failures": len(failed),
           "rps": (len(ends) - 1) / span if len(ends) > 1 else 0.0,
           "p50_ms": 1000 * pct(lat, 0.5), "p99_ms": 1000 * pct(lat, 0.99)}
    line = (f"{label}: {out['requests']} requests, {out['failures']} failures, {out['rps']:.1f} req/s, "
            f"p50 {out['p50_ms']:.1f} ms, p99 {out['p99_ms']:.1f} ms")
    if solver:
        out["solver_p50_ms"], out["solver_p99_ms"] = 1000 * pct(solver, 0.5), 1000 * pct(solver, 0.99)
        line += f" (the solver alone: p50 {out['solver_p50_ms']:.1f} ms, p99 {out['solver_p99_ms']:.1f} ms)"
    print(line)
    return out


def run_locust(args, base: str, user_class: str, users: int, workdir: str, name: str, label: str) -> dict:
    prefix = os.path.join(workdir, user_class)
    record = prefix + ".jsonl"
    env = {**os.environ, "LOAD_CACHED_BODY": json.dumps(CACHED), "LOAD_SEED_BASE": str(args.seed_base),
           "LOAD_RECORD": record}
    before = os.getloadavg()
    with open(prefix + ".log", "w") as log:
        rc = subprocess.run(locust_command(base, user_class, users, args.seconds, prefix), env=env,
                            stdout=log, stderr=subprocess.STDOUT).returncode
    after = os.getloadavg()
    if rc not in (0, 1):  # 1: some requests failed (counted below)
        print(open(prefix + ".log").read()[-3000:])
        raise SystemExit(f"locust exited with {rc}")
    out = summarise(label, record, name)
    out["load_before"], out["load_after"] = before[0], after[0]
    print(f"  load average (1 min) {before[0]:.2f} before, {after[0]:.2f} after")
    return out


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    if args.dry_run:
        print(" ".join(server_command(8000, args.slow_model)))
        for cls, users in (("CachedUser", args.cached_users), ("ColdUser", args.cold_users)):
            print(" ".join(locust_command("http://127.0.0.1:8000", cls, users, args.seconds, cls)))
        return 0
    if shutil.which("locust") is None:
        raise SystemExit("locust is not installed: pip install -e '.[bench]'")
    workdir = tempfile.mkdtemp(prefix="staircase-load-")
    prefix = f"staircase-load:{uuid.uuid4().hex[:12]}:"
    proc, base = None, args.url
    locations: list[str] = []
    try:
        if base is None:
            port = free_port()
            proc = subprocess.Popen(server_command(port, args.slow_model), cwd=ROOT,
                                    env=server_env(args, prefix, os.path.join(workdir, "cache")),
                                    start_new_session=True)
            base = f"http://127.0.0.1:{port}"
            t0 = time.perf_counter()
            wait_ready(base, proc)
            print(f"service ready in {time.perf_counter() - t0:.1f} s ({'redis ' + prefix if args.redis else 'disk cache'}"
                  f"{', slow model' if args.slow_model else ''})")
        print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at the start")
        status, first, _ = request(base + "/v1/thresholds", CACHED)
        status2, second, _ = request(base + "/v1/thresholds", CACHED)
        print(f"cached question: {status} cache={first.get('cache')}, then {status2} cache={second.get('cache')}")
        locations = start_expensive(base, args.expensive, args.seed_base)
        results = [run_locust(args, base, "CachedUser", args.cached_users, workdir, "cached",
                              f"(a) cached, {args.cached_users} users"),
                   run_locust(args, base, "ColdUser", args.cold_users, workdir, "cold",
                              f"(b) cheap cold, {args.cold_users} users")]
        states = still_running(base, locations)
        print(f"expensive jobs at the end: {states}")
        print(json.dumps({"results": results, "expensive": states}))
        return 0 if all(r["failures"] == 0 for r in results) and all(s == "running" for s in states) else 1
    finally:
        for loc in locations:
            try:
                request(base + loc, method="DELETE")
            except OSError:
                pass
        if proc is not None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        if args.redis and args.url is None:  # leave nothing behind in a shared Redis
            import redis

            r = redis.Redis.from_url(args.redis)
            keys = list(r.scan_iter(prefix + "*"))
            if keys:
                r.delete(*keys)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
