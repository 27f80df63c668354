"""The service with the tests' model made slow on purpose (``tests/slow_model.py``), for
``benchmarks/load_test.py --slow-model`` only:

    PYTHONPATH=.:tests uvicorn --factory load_app:create --app-dir benchmarks

The pool hook (``Pool(..., hook="slow_model:hook")``) has no setting, deliberately: a
deployment must never run a fake model.  This factory is the one way a uvicorn process gets it:
the app of ``service.main`` with its settings from the environment, on a pool built with the
hook (deep attention L = 3 thresholds then sleep instead of computing).
"""
from __future__ import annotations

from service.main import create_app
from service.pool import Pool
from service.settings import get_settings


def create():
    s = get_settings()
    pool = Pool(s.workers, warm=s.warm_up, cheap_workers=s.cheap_workers, hook="slow_model:hook")
    return create_app(s, pool=pool)
