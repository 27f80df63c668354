"""A model made slow on purpose, for the scheduling tests only: a pool hook
(``service.pool.Pool(..., hook="slow_model:hook")``) that every pool process of a test's own pool
calls before the solvers.

Deep attention with L = 3 thresholds (estimated expensive by ``service.cost``: minutes) sleeps
instead of computing, reporting progress once a second and ignoring the cancel flag, so only
killing its process stops it; every other question is computed by the solvers as usual.  The
expensive jobs then hold their slots without taking the CPU from the cheap requests measured
beside them.
"""
from __future__ import annotations

import time

SECONDS = 120  # how long the slow model "computes" before it fails (tests cancel it first)


def is_slow(kind: str, model: dict) -> bool:
    return kind == "thresholds" and model.get("family") == "deep_attention" and model.get("layers") == 3


def hook(kind, spec, params, progress):
    model = spec if isinstance(spec, dict) else spec.to_dict()
    if not is_slow(kind, model):
        return None
    for i in range(SECONDS):
        try:
            progress(i, SECONDS)
        except Exception:  # the cancel flag: ignored on purpose (a solver deep in a kernel)
            pass
        time.sleep(1.0)
    raise RuntimeError("the slow test model never finishes")


def hang(kind, spec, params, progress):
    """Every computation waits until it is cancelled (the progress callback raises then), so no
    answer is ever cached and every valid cold request is a 202: the schemathesis stateful run
    sees the same responses whatever the timing."""
    while True:
        progress(0, 1)
        time.sleep(0.05)
