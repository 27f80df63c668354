"""The service on a pool with a test hook (``tests/slow_model.py``), as a uvicorn factory, for
tests and ``benchmarks/load_test.py --slow-model`` only:

    PYTHONPATH=.:tests uvicorn --factory slow_app:create

The pool hook (``Pool(..., hook="module:function")``) has no setting, deliberately: a
deployment must never run a fake model.  This factory is the one way a uvicorn process gets
one: the app of ``service.main`` with its settings from the environment, on a pool built with
the hook named by SLOW_APP_HOOK (default ``slow_model:hook``: deep attention L = 3 thresholds
sleep instead of computing; ``slow_model:hang``: every computation waits until cancelled).
"""
from __future__ import annotations

import os

from service.main import create_app
from service.pool import Pool
from service.settings import get_settings


def create():
    s = get_settings()
    pool = Pool(s.workers, warm=s.warm_up, cheap_workers=s.cheap_workers,
                hook=os.environ.get("SLOW_APP_HOOK", "slow_model:hook"))
    return create_app(s, pool=pool)
