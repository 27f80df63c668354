"""Start-up: seconds from starting the service (the README's command) to `/readyz` saying ready,
to a cheap cold question asked then being answered, and to the kernels' background compile done.

Two cases: numba's on-disk cache filled (a machine where the service has run before), and
empty (a fresh install: every kernel compiles; NUMBA_CACHE_DIR points at an empty directory).
The embedded cache lives in a temporary directory, so no answer is reused.

    python benchmarks/bench_startup.py [--fresh] [--repeat 3]
"""
from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# one layer's thresholds: about 0.6 s warm, and kernels of their own (8 s to compile alone)
QUESTION = {"model": {"family": "deep_attention", "layers": 1}, "precision": "fast", "seed": 1}


def start_up(numba_cache: str | None, ask: bool = True, timeout: float = 900.0) -> dict:
    """Seconds from the start command to: `/readyz` ready; a cheap cold question (one attention
    layer's thresholds at fast) asked at that moment answered; the background compile of
    the kernels done (`solvers.kernels` "compiled"; a server without that field compiled before
    it was ready)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    out: dict = {}
    with tempfile.TemporaryDirectory() as cache_dir:
        env = {**os.environ, "STAIRCASE_CACHE_DIR": cache_dir}
        env.pop("STAIRCASE_REDIS_URL", None)  # the embedded default
        if numba_cache is not None:
            env["NUMBA_CACHE_DIR"] = numba_cache
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "service.main:app", "--host", "127.0.0.1",
                                 "--port", str(port)], cwd=ROOT, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            while time.perf_counter() - t0 < timeout:
                try:
                    body = httpx.get(f"{url}/readyz", timeout=1.0).json()
                except (httpx.HTTPError, ValueError):
                    body = {}
                if body.get("status") == "ready":
                    out.setdefault("ready", time.perf_counter() - t0)
                    if ask and "answered" not in out:
                        r = httpx.post(f"{url}/v1/thresholds", json=QUESTION, timeout=timeout)
                        assert r.status_code == 200, r.text
                        out["answered"] = time.perf_counter() - t0
                    if body["solvers"].get("kernels", "compiled") in ("compiled", "failed", "lazy"):
                        out["compiled"] = time.perf_counter() - t0
                        return out
                time.sleep(0.1)
            raise RuntimeError(f"not ready within {timeout} s")
        finally:
            proc.terminate()
            proc.wait(30)


def summary(runs: list[dict]) -> str:
    return ", ".join(f"{k} {statistics.median(r[k] for r in runs):.1f} s ({' / '.join(f'{r[k]:.1f}' for r in runs)})"
                     for k in ("ready", "answered", "compiled") if k in runs[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fresh", action="store_true", help="also time starts with an empty numba cache")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.1f}")
    start_up(None, ask=False)  # fills the on-disk numba cache if it is not yet
    warm = [start_up(None) for _ in range(args.repeat)]
    print(f"numba cache filled: {summary(warm)}")
    if args.fresh:
        fresh = []
        for _ in range(args.repeat):
            with tempfile.TemporaryDirectory() as empty:
                fresh.append(start_up(empty))
        print(f"fresh (empty numba cache): {summary(fresh)}")
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
