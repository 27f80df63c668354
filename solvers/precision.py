"""Precision levels and the sizing of the randomised-QMC runs of every engine.

A precision names target relative 95% half-widths (:data:`PRECISION_TARGETS`).  Every
outer expectation is averaged over :data:`SCRAMBLES` independent scrambles of a Sobol
sequence (the Student-t interval over scrambles is the statistical error); the tables
below give the outer points per scramble each engine starts from and the caps of its
adaptive growth.
"""
from __future__ import annotations

import math

import numpy as np

from .errors import SpecError

PRECISIONS = ("fast", "standard", "precise")
# target 95% half-widths relative to the value: (thresholds at Q = 0, staircase thresholds)
PRECISION_TARGETS = {"fast": (0.02, 0.02), "standard": (0.005, 0.01), "precise": (0.001, 0.003)}

SCRAMBLES = 16  # independent Sobol scrambles of every outer expectation

# State evolution: outer points per scramble (fixed).
SE_POINTS = {"fast": 64, "standard": 128, "precise": 512}
# ... and those on which SE decides a layer at 0 whose linear rate is within its half-width of 1
# (SE's own points leave the rate ~5-10% uncertain at fast: 0.95x and 1.05x a threshold look alike)
SE_DECISION_POINTS = {"fast": 1024, "standard": 2048, "precise": 8192}

# Layer-wise thresholds at Q = 0 (doubled until the target, at most the cap) and the
# staircase step with several learned layers.
THRESHOLD_POINTS = {"fast": 128, "standard": 256, "precise": 1024}
THRESHOLD_MAX_POINTS = 16384
# ... doubled per step (nested points: a re-measurement is free) and settled on no fewer than
# these per scramble: the Student-t interval over scrambles misses the rare large deviations of
# heavy-tailed rates on fewer points.  L = 3, M = 2's layer 3 at fast over seeds 0-19 against
# precise 0.207022 +- 0.00039: settled on 512 points 17/20 covered (mean +0.37%), 1024 18/20
# (+0.42%), 2048 20/20 (+0.14%); on 4096 (solver 0.5.14) 19/20 (+0.09%).  Not for closed-form
# posteriors: phase retrieval on at least 2048 covered 16/20 (17/20 without the floor; on 16384
# 19/20, mean +0.2% -> -0.02%), but there fast then matches precise's own points, and the one-layer
# M = 3 quantity's fast intervals (3e-5) no longer contain its precise reference (4/20).
THRESHOLD_SETTLED_POINTS = 2048
# The cap bounds the time of expensive channels; a channel with a closed-form posterior (such as
# phase retrieval's, whose estimator is heavy-tailed) may quadruple up to this larger cap to keep
# its promise (2^20 points: under a second for phase retrieval).
CLOSED_FORM_MAX_POINTS = 1 << 20

# Linear stability of Q = 0 for any channel (doubled until the target, at most the cap).
LINEAR_STABILITY_POINTS = {"fast": 1 << 10, "standard": 1 << 12, "precise": 1 << 14}
LINEAR_STABILITY_MAX_POINTS = {"fast": 1 << 13, "standard": 1 << 15, "precise": 1 << 17}

# ... and on its quadrature-in-y path (scalar noisy observations): bank vectors per scramble.
Y_QUADRATURE_POINTS = {"fast": 1 << 14, "standard": 1 << 16, "precise": 1 << 18}
Y_QUADRATURE_MAX_POINTS = {"fast": 1 << 16, "standard": 1 << 18, "precise": 1 << 20}

# Staircase after one learned layer: a pilot run brackets the root, points_for sizes the rest.
PILOT_POINTS = 64  # per scramble: enough to bracket the root and size the final run
MAX_STAIRCASE_POINTS = 2048  # per scramble; beyond, the CI is reported as reached
# ... with several learned layers, a root's last Newton step is taken on the linearisation once
# it moves alpha by at most this fraction of the precision's target (added to the half-width)
ROOT_TOLERANCE = 0.1

# Staircase after a trivial direction: points per scramble of the pilot (bracketing) run and cap
# of the final run.  With an exact posterior (the closed-form orthants of committee_sign since
# solver 0.5.10) a point costs microseconds, and the caps let the final run reach the precision's
# target (committee_sign, seed 0: fast 19.146 +- 0.171 on 256 points in 1.5 s, standard 19.252
# +- 0.047 on 1024 in 3.9 s, precise 19.2317 +- 0.0138 in 15 s; against 19.2326).  A posterior
# on an inner bank (formulas, noisy links: the region or importance sampler per point, 20-40 ms
# per sample on one core for the committee as a formula) keeps the small budgets, and reports
# the target it misses (the committee as a formula at fast: half-widths of 7-20%).
TRIVIAL_STAIRCASE_PILOT_POINTS = 16
TRIVIAL_STAIRCASE_MAX_POINTS = {"fast": 512, "standard": 2048, "precise": 4096}
TRIVIAL_STAIRCASE_MAX_POINTS_INNER_BANK = {"fast": 16, "standard": 32, "precise": 128}


def check_precision(precision: str) -> None:
    """Raise :class:`SpecError` unless ``precision`` is one of :data:`PRECISIONS`."""
    if precision not in PRECISIONS:
        raise SpecError("precision", precision, "one of " + ", ".join(PRECISIONS))


INNER_BIAS_FACTOR = 2.0  # resolution 1's bias over its change at double resolution: inner_bias_bound


def inner_bias_bound(change):
    """The inner sampler's term of a half-width from an estimate's change at double inner
    resolution: 2 |change|.  A self-normalised importance sampler's bias falls like 1 / K
    (K its bank size), so resolution 1 is off by b and resolution 2 by b / 2: the change is
    b / 2 and the bias twice it (Richardson).  The change alone fell short of the bias: at
    Q = 0 of L = 2, M = 3 layer 2 moved 1.8e-5 at double resolution and 2.6e-5 at resolution 4
    (slow test ``test_resolution_term_at_zero_bounds_the_inner_bias``).  For a deterministic
    inner grid, whose error falls faster, the factor is conservative."""
    bound = INNER_BIAS_FACTOR * np.abs(change)
    return float(bound) if np.ndim(bound) == 0 else bound


def points_for(n: int, relative_ci: float, target: float, cap: int = MAX_STAIRCASE_POINTS) -> int:
    """Points per scramble for a relative half-width ``target`` (with a 20% margin), from
    ``relative_ci`` measured at n points, assuming the n^-1/2 rate (QMC does better):
    n (relative_ci / (0.8 target))^2 rounded up to a power of two, never below n, at most ``cap``."""
    wanted = n * (relative_ci / (0.8 * target)) ** 2
    return int(min(cap, max(n, 2 ** math.ceil(math.log2(max(wanted, 1.0))))))
