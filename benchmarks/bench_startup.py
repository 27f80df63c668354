"""Start-up: seconds from starting the service (the README's command) to `/readyz` saying ready.

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


def seconds_to_ready(numba_cache: str | None, timeout: float = 900.0) -> float:
    port = free_port()
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
                    if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1.0).json().get("status") == "ready":
                        return time.perf_counter() - t0
                except (httpx.HTTPError, ValueError):
                    pass
                time.sleep(0.1)
            raise RuntimeError(f"not ready within {timeout} s")
        finally:
            proc.terminate()
            proc.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fresh", action="store_true", help="also time a start with an empty numba cache")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.1f}")
    seconds_to_ready(None)  # fills the on-disk numba cache if it is not yet
    warm = [seconds_to_ready(None) for _ in range(args.repeat)]
    print(f"numba cache filled: median {statistics.median(warm):.1f} s ({', '.join(f'{t:.1f}' for t in warm)})")
    if args.fresh:
        with tempfile.TemporaryDirectory() as empty:
            print(f"fresh (empty numba cache): {seconds_to_ready(empty):.1f} s")
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
