"""Results that several slow tests check from different sides, computed once per test session.

The solvers are pure and seeded (the same call gives the same numbers bit for bit), so sharing
a result changes no check; it only keeps CI's slow-test time within its limit.
"""
from __future__ import annotations

import functools

from solvers import layer_thresholds


@functools.lru_cache(maxsize=None)
def thresholds(spec, precision: str, seed: int = 0):
    """:func:`solvers.layer_thresholds` of ``spec`` (a hashable model spec), memoised."""
    return layer_thresholds(spec, precision, seed=seed)
