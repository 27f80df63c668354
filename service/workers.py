"""Both workers in one process: ``python -m service.workers`` (docker-compose's ``worker``).

* the arq sweep worker (``service.sweep_worker``: one sweep point at a time, in a thread), and
* the single-computation queue worker (``service.worker``: cold ``/v1/thresholds`` etc. when
  the API runs with ``STAIRCASE_QUEUE=redis``), unless ``--sweeps-only``.

So ``docker compose up --scale worker=4`` scales both.  Either can also run alone:
``arq service.sweep_worker.WorkerSettings`` or ``python -m service.worker``.
SIGTERM/SIGINT stop both.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys


async def amain(sweeps_only: bool) -> int:
    from arq.worker import create_worker

    from .config import get_settings
    from .sweep_worker import WorkerSettings

    settings = get_settings()
    if not settings.redis_url:
        raise SystemExit("service.workers needs STAIRCASE_REDIS_URL (the queues live in Redis)")
    arq_worker = create_worker(WorkerSettings, handle_signals=False)
    legacy = None
    if not sweeps_only:
        from .worker import Worker

        legacy = Worker(settings)
    tasks = [asyncio.create_task(arq_worker.async_run())]
    if legacy is not None:
        tasks.append(asyncio.create_task(legacy.serve()))

    def stop():
        if legacy is not None:
            legacy.stop.set()
        tasks[0].cancel()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
    try:
        await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        await arq_worker.close()
        if legacy is not None:
            await legacy.close()
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m service.workers", description=__doc__.split("\n")[0])
    ap.add_argument("--sweeps-only", action="store_true", help="run only the arq sweep worker")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s",
                        stream=sys.stderr)
    return asyncio.run(amain(args.sweeps_only))


if __name__ == "__main__":
    raise SystemExit(main())
