"""Measured coverage of the 95% half-widths: does a `fast` interval contain the `precise` value?

A half-width is a promise about the estimator's spread.  This module measures it on a
representative set of quantities (:data:`QUANTITIES`): each is computed at ``fast`` for many
seeds (the seed picks the outer QMC scrambles), and the coverage is the fraction of seeds whose
interval [alpha - ci95, alpha + ci95] contains the ``precise`` value (seed 0), or an independent
value where one exists (:data:`REFERENCES`).  The reference's own half-width is reported beside
it; it must be small against the fast ones for the count to mean anything.

Used by the calibration tests (the cheap quantities) and by ``benchmarks/calibration_coverage.py``
(all of them; the README's table).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .linear_stability import staircase_after_trivial
from .models import DeepAttentionSpec, MultiIndexSpec
from .thresholds import layer_thresholds, rates_at_zero, staircase


@dataclass(frozen=True)
class Estimate:
    alpha: float
    ci95: float


def _rate_at_zero(spec, index: int) -> Callable[[str, int], Estimate]:
    def compute(precision: str, seed: int) -> Estimate:
        zero = rates_at_zero(spec.channel(), precision, seed)
        return Estimate(float(zero.alpha[index]), float(zero.ci95[index]))
    return compute


def _staircase_layer(spec, layer: int) -> Callable[[str, int], Estimate]:
    def compute(precision: str, seed: int) -> Estimate:
        found = {t.layer: t for t in staircase(spec.channel(), precision, seed)[0]}
        return Estimate(found[layer].alpha, found[layer].ci95)
    return compute


def _first_threshold(spec) -> Callable[[str, int], Estimate]:
    def compute(precision: str, seed: int) -> Estimate:
        t = layer_thresholds(spec, precision, seed).thresholds[0]
        return Estimate(t.alpha, t.ci95)
    return compute


def _staircase_after_trivial(spec) -> Callable[[str, int], Estimate]:
    def compute(precision: str, seed: int) -> Estimate:
        step = staircase_after_trivial(spec.channel(), precision, seed)
        return Estimate(step.alpha, step.ci95)
    return compute


PAPER = DeepAttentionSpec()
COMMITTEE_FORMULA = "sign(sign(z1) + sign(z2) + sign(z3))"  # committee_sign, written out
# name -> (how to compute it at (precision, seed), True when cheap enough for the test suite)
QUANTITIES: dict[str, tuple[Callable[[str, int], Estimate], bool]] = {
    "paper model, layer 2 (L = 2, M = 2)": (_rate_at_zero(PAPER, 1), True),
    "paper model, layer 1 (staircase)": (_staircase_layer(PAPER, 1), False),
    "M = 3, layer 2": (_rate_at_zero(DeepAttentionSpec(tokens=3), 1), True),  # about 3 min (solver 0.5.0)
    "L = 3, layer 3": (_rate_at_zero(DeepAttentionSpec(layers=3), 2), True),  # about 3 min
    "phase retrieval (square)": (_first_threshold(MultiIndexSpec(link="square")), True),
    "product": (_first_threshold(MultiIndexSpec(link="product")), True),
    "one layer, M = 3 (observing +-z)": (_rate_at_zero(DeepAttentionSpec(layers=1, tokens=3), 0), True),
    "L = 3, layer 2 (staircase on a learned layer)": (_staircase_layer(DeepAttentionSpec(layers=3), 2), False),
    "committee_sign, staircase after the trivial direction":
        (_staircase_after_trivial(MultiIndexSpec(link="committee_sign")), True),  # named: ~5 s per fast run
    # (solver 0.5.10's closed-form orthants; before, ~7 min).  The same model through the formula
    # path (a symmetric Sobol bank): ~1 min per fast run, so 20 seeds fit a benchmark, not the suite
    "committee_sign as a formula, staircase after the trivial direction":
        (_staircase_after_trivial(MultiIndexSpec(link={"formula": COMMITTEE_FORMULA})), False),
}


# Independent references, used instead of the `precise` run where one exists.  committee_sign's
# staircase step: a symmetry reduction to one-dimensional quadratures, independent of the
# solvers' code (tests/test_linear_stability.py, test_committee_reduced_reference_value:
# alpha_c = 19.2326 at q* = 0.94915, converged to ~3e-5 relative under refinement of all three
# quadratures).  `precise` is no reference there: its 128-point cap leaves a few % half-width.
COMMITTEE_STAIRCASE = Estimate(19.2326, 3e-5 * 19.2326)
REFERENCES: dict[str, Estimate] = {
    "committee_sign, staircase after the trivial direction": COMMITTEE_STAIRCASE,
    "committee_sign as a formula, staircase after the trivial direction": COMMITTEE_STAIRCASE,
}


@dataclass(frozen=True)
class Coverage:
    """Coverage of one quantity: ``covered`` of ``seeds`` fast intervals contain the reference.

    ``estimates``: the fast (alpha, ci95) per seed; ``reference``: the precise one (seed 0);
    ``seconds``: time of the fast runs."""

    name: str
    covered: int
    seeds: int
    reference: Estimate
    estimates: tuple[Estimate, ...]
    seconds: float

    @property
    def fraction(self) -> float:
        return self.covered / self.seeds

    @property
    def median_relative_ci95(self) -> float:
        return float(np.median([e.ci95 / e.alpha for e in self.estimates]))


def coverage(name: str, seeds: int = 20, reference: Estimate | None = None, precision: str = "fast",
             reference_precision: str = "precise",
             on_estimate: Callable[[int, Estimate], None] | None = None) -> Coverage:
    """Run quantity ``name`` at ``precision`` for seeds 1..seeds and count the intervals that
    contain the reference (given, else the independent one in :data:`REFERENCES`, else
    computed at ``reference_precision``, seed 0).  ``on_estimate(seed, estimate)`` is called
    after each run (a long benchmark's progress)."""
    compute, _ = QUANTITIES[name]
    if reference is None:
        reference = REFERENCES.get(name) or compute(reference_precision, 0)
    t0 = time.perf_counter()
    estimates = []
    for seed in range(1, seeds + 1):
        estimates.append(compute(precision, seed))
        if on_estimate is not None:
            on_estimate(seed, estimates[-1])
    covered = sum(abs(e.alpha - reference.alpha) <= e.ci95 for e in estimates)
    return Coverage(name, int(covered), seeds, reference, tuple(estimates), time.perf_counter() - t0)
