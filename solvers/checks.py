"""Self-checks a result carries (``checks``), so a pipeline can trust or reject a number
without reading the code.  Each function compares a result with something it must obey and
returns a :class:`~solvers.results.Check`:

* :func:`counting_bound`: perfect recovery cannot beat P / K (P D unknowns, K numbers revealed
  per sample; L / M for deep attention), and for the Bayes-optimal SE it equals it;
* :func:`precision_target`: every half-width meets the relative target its precision promises
  (:data:`solvers.precision.PRECISION_TARGETS`);
* :func:`staircase_order`: each staircase step comes after the step it builds on;
* :func:`se_bracket`: state evolution from the uninformed start at 0.95x and 1.05x of each
  threshold shows that layer's overlap at 0 and above 0, the others as reported;
* :func:`fixed_points_converged` and :func:`branch_order`: every SE fixed point converged,
  and the informed branch lies at or above the uninformed one (the Bayes-optimal SE map is
  monotone, so a start above stays above).

The checks are pure: the callers pass what they computed.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

from .precision import PRECISION_TARGETS
from .results import Check, StateEvolutionPoint, Threshold

# Floating-point allowance of an exact identity (the counting bound holds to rounding).
ROUNDING = 1e-9
SE_BRACKET = (0.95, 1.05)  # multiples of a threshold where SE must show the layer off and on


def counting_bound(alpha: float, ci95: float, bound: float) -> Check:
    """alpha_PR equals P / K within its half-width and is never below it by more (THEORY.md
    section 2: a noiseless sample reveals K numbers, the weights hold P D unknowns, (P - k) D
    with k known rows: the caller's ``bound`` counts only those)."""
    slack = ci95 + ROUNDING * bound
    passed = bool(abs(alpha - bound) <= slack)
    return Check("counting bound", passed,
                 f"perfect recovery {alpha:.6g} +- {ci95:.2g} vs the counting bound {bound:.6g}")


def precision_target(thresholds: Sequence[Threshold], precision: str,
                     perfect_recovery: tuple[float, float] | None = None) -> Check:
    """Every finite threshold's half-width is within its precision's relative target:
    the first target for thresholds at Q = 0 and perfect recovery, the second for staircase
    steps.  A failure names each value that misses (the number is still reported)."""
    at_zero, staircase = PRECISION_TARGETS[precision]
    misses = []
    items = [(t, staircase if t.kind == "staircase" else at_zero) for t in thresholds]
    for t, target in items:
        if t.kind == "trivial" or not math.isfinite(t.alpha) or t.alpha <= 0:
            continue
        if not t.ci95 <= target * t.alpha:
            name = f"layer {t.layer}" if t.layer is not None else f"direction {list(t.direction or ())}"
            misses.append(f"{name}: {t.ci95 / t.alpha:.2%} > {target:.1%}")
    if perfect_recovery is not None:
        alpha, ci95 = perfect_recovery
        if not ci95 <= at_zero * alpha:
            misses.append(f"perfect recovery: {ci95 / alpha:.2%} > {at_zero:.1%}")
    if misses:
        return Check("precision target", False, f"half-widths over {precision}'s target: " + "; ".join(misses))
    return Check("precision target", True,
                 f"every half-width within {precision}'s {at_zero:.1%} (at Q = 0) / {staircase:.1%} (staircase)")


def bracket_target(alpha: float, width: float, precision: str) -> Check:
    """A bisection bracket [alpha - width, alpha] is within the staircase target of its
    precision (relative to alpha)."""
    target = PRECISION_TARGETS[precision][1]
    passed = bool(width <= target * alpha)
    return Check("precision target", passed,
                 f"bracket width {width / alpha:.2%} of alpha {'within' if passed else 'over'} {precision}'s {target:.1%}")


def staircase_order(learned_order: Sequence[Threshold]) -> Check:
    """In the order the staircase learned them, no step lies below the one before it by more
    than their combined half-widths (a step is a root above its predecessor's fixed point)."""
    bad = []
    for before, after in zip(learned_order, learned_order[1:]):
        if not (math.isfinite(after.alpha) and math.isfinite(before.alpha)):
            continue
        if after.alpha + after.ci95 < before.alpha - before.ci95:
            bad.append(f"{after.alpha:.6g} after {before.alpha:.6g}")
    if bad:
        return Check("staircase order", False, "a step below its predecessor: " + "; ".join(bad))
    return Check("staircase order", True, f"{len(learned_order)} thresholds in learned order, each at or above the last")


def _learned_by_threshold(thresholds: Sequence[Threshold], P: int) -> list[list[int]]:
    """The index each threshold learns: its layer, or its direction when that is a coordinate
    axis; [] for other directions (the diagonal overlaps cannot tell them apart)."""
    out = []
    for t in thresholds:
        support = [p for p in range(P) if t.direction is not None and abs(t.direction[p]) > 1e-6]
        if t.layer is not None:
            out.append([t.layer - 1])
        elif len(support) == 1:
            out.append(support)
        else:
            out.append([])
    return out


def se_bracket(thresholds: Sequence[Threshold], n_indices: int,
               uninformed_overlaps: Callable[[float], tuple[np.ndarray, np.ndarray]],
               start_overlap: float = 0.0) -> Check:
    """State evolution from the uninformed start at 0.95x and 1.05x of each positive finite
    threshold: the indices it names are off below and on above, and every other threshold's
    indices are on iff that threshold is lower.  Off: at 0 within the half-width, or not grown
    beyond the uninformed start ``start_overlap`` (where the map's step is below its
    statistical error, SE stops at the start: L = 3 at fast reports 0.001 +- 0.0003 there).
    On: grown beyond the start (strictly positive when the start is 0); near a continuous
    transition the half-width of a small overlap is wide (it propagates through
    (I - J)^-1), so it is not asked to exclude 0.  If SE cannot confirm a growth just above a
    threshold at this precision, the check fails and says so.  Only
    thresholds that name coordinate directions (layers, or unit directions) are checked;
    thresholds within 5% of each other are not compared at the shared alpha.

    ``uninformed_overlaps(alpha)`` returns the diagonal overlaps of the uninformed SE fixed
    point and their 95% half-widths."""
    learns = _learned_by_threshold(thresholds, n_indices)
    failures, checked = [], 0
    for t, idx in zip(thresholds, learns):
        if not (math.isfinite(t.alpha) and t.alpha > 0 and idx):
            continue
        for factor in SE_BRACKET:
            alpha = factor * t.alpha
            q, ci = (np.asarray(x, dtype=float) for x in uninformed_overlaps(alpha))
            for other, oidx in zip(thresholds, learns):
                if not oidx or (other is not t and abs(other.alpha - alpha) <= 0.05 * alpha):
                    continue
                expected = factor > 1 if other is t else other.alpha < alpha  # inf: never on
                on = bool(np.all(q[oidx] > start_overlap))
                off = bool(np.all(q[oidx] <= np.maximum(ci[oidx], start_overlap)))
                checked += 1
                if (expected and not on) or (not expected and not off):
                    failures.append(f"at alpha = {alpha:.4g} ({factor:g} x {t.alpha:.4g}) index {[i + 1 for i in oidx]} "
                                    f"has overlap {np.round(q[oidx], 4).tolist()} +- {np.round(ci[oidx], 4).tolist()}, "
                                    f"expected {'above 0' if expected else '0'}")
    if failures:
        return Check("SE bracket", False, "; ".join(failures))
    if not checked:
        return Check("SE bracket", True, "no positive threshold names a layer or coordinate direction: "
                                         "nothing to compare")
    return Check("SE bracket", True, f"uninformed SE at {SE_BRACKET[0]:g}x and {SE_BRACKET[1]:g}x of each threshold "
                                     f"agrees with the reported order ({checked} overlaps compared)")


def fixed_points_converged(points: Sequence[StateEvolutionPoint]) -> Check:
    """Every fixed point of a state-evolution curve met its stopping rule."""
    bad = [f"{fp.start} at alpha = {p.alpha:.6g}" for p in points for fp in (p.uninformed, p.informed)
           if not fp.converged]
    if bad:
        return Check("converged", False, "not converged: " + "; ".join(bad))
    return Check("converged", True, f"all {2 * len(points)} fixed points met the stopping rule")


def branch_order(points: Sequence[StateEvolutionPoint]) -> Check:
    """The informed fixed point's overlaps are at or above the uninformed one's, within their
    combined half-widths, at every alpha and index (the SE map is monotone in Q)."""
    bad = []
    for p in points:
        qu, qi = np.asarray(p.uninformed.layer_overlaps), np.asarray(p.informed.layer_overlaps)
        slack = np.asarray(p.uninformed.overlap_ci95, dtype=float) + np.asarray(p.informed.overlap_ci95, dtype=float)
        below = np.nonzero(qi + np.nan_to_num(slack, nan=np.inf) < qu)[0]
        bad += [f"index {k + 1} at alpha = {p.alpha:.6g}: informed {qi[k]:.4g} < uninformed {qu[k]:.4g}" for k in below]
    if bad:
        return Check("branch order", False, "; ".join(bad))
    return Check("branch order", True, "the informed branch lies at or above the uninformed one everywhere")
