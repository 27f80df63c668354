"""How many samples reach a target: N = ceil(alpha * D).  Pure numerics, no I/O.

Targets:
* ``{"kind": "weak_recovery", "layers": "all" | k}``: the k-th smallest weak-recovery threshold
  (all: the largest), from :func:`solvers.layer_thresholds`;
* ``{"kind": "prediction_error", "max": e}``: the smallest alpha at which the Bayes-optimal
  fixed point's plug-in prediction error is <= e, by bisection on
  :func:`solvers.state_evolution` (the bracket is grown by doubling from alpha = 1).
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Callable, Optional

from .errors import SpecError
from .limits import MAX_DIMENSION, MAX_PREDICTION_ERROR
from .precision import PRECISION_TARGETS, check_precision
from . import checks
from .results import Check, _plain
from .state_evolution import state_evolution
from .thresholds import layer_thresholds
from .version import __version__

ALPHA_MAX = 256.0  # the bracket is not grown beyond this
ALPHA_MIN = 1e-3  # nor shrunk below this (the target is met at any alpha above it)


@dataclass(frozen=True)
class SampleSizeResult:
    """alpha meeting the target, its uncertainty, and N = ceil(alpha * D) (at least 1).

    ci95: the threshold's 95% half-width (weak recovery), or the final bisection bracket
    width (prediction error: the crossing lies in [alpha - ci95, alpha]).
    """

    model: dict
    dimension: int
    target: dict
    alpha: float
    ci95: float
    samples: int
    method: str
    evaluations: int
    precision: str
    seed: int
    seconds: float
    solver_version: str
    checks: tuple[Check, ...] = ()

    def to_dict(self) -> dict:
        return _plain(asdict(self))


def samples_for(alpha: float, dimension: int) -> int:
    return max(1, int(math.ceil(alpha * dimension - 1e-9)))


def check_target(spec, target: dict) -> dict:
    """Validate a target against a spec; returns it canonical, raises SpecError."""
    if not isinstance(target, dict):
        raise SpecError("target", target, "an object with a kind")
    kind = target.get("kind")
    if kind == "weak_recovery":
        layers = target.get("layers", "all")
        n = spec.n_indices - len(spec.known_layers)  # known layers have no threshold
        if layers != "all" and (isinstance(layers, bool) or not isinstance(layers, int)
                                or not 1 <= layers <= n):
            raise SpecError("target.layers", layers, f"'all' or an integer in [1, {n}]")
        return {"kind": kind, "layers": layers}
    if kind == "prediction_error":
        m = target.get("max")
        if (isinstance(m, bool) or not isinstance(m, (int, float))
                or not (math.isfinite(m) and 0 < m <= MAX_PREDICTION_ERROR)):
            raise SpecError("target.max", m, f"a number in (0, {MAX_PREDICTION_ERROR:g}]")
        return {"kind": kind, "max": float(m)}
    raise SpecError("target.kind", kind, "one of weak_recovery, prediction_error")


def weak_recovery(thresholds, target: dict) -> tuple[float, float, str]:
    """(alpha, ci95, method) for a weak-recovery target from thresholds (objects or dicts
    with alpha, ci95, kind): the k-th smallest threshold, the largest for "all"."""
    def get(t, name):
        return t[name] if isinstance(t, dict) else getattr(t, name)

    ths = sorted(thresholds, key=lambda t: math.inf if get(t, "alpha") is None else get(t, "alpha"))
    k = len(ths) if target.get("layers", "all") == "all" else int(target["layers"])
    if not 1 <= k <= len(ths):
        raise SpecError("target.layers", target.get("layers"), f"'all' or an integer in [1, {len(ths)}]")
    th = ths[k - 1]
    alpha = get(th, "alpha")
    ci95 = get(th, "ci95")
    return (math.inf if alpha is None else float(alpha), math.inf if ci95 is None else float(ci95),
            f"weak-recovery threshold ({get(th, 'kind')})")


def _plugin_error(spec, alpha: float, precision: str, seed: int) -> float:
    point = state_evolution(spec, [alpha], precision=precision, seed=seed).points[0]
    return float(getattr(point, point.bayes_optimal).prediction_error_plugin)


def sample_size(spec, dimension: int, target: dict, precision: str = "standard", seed: int = 0,
                progress: Optional[Callable[[int, int], None]] = None) -> SampleSizeResult:
    t0 = time.perf_counter()
    if isinstance(dimension, bool) or not isinstance(dimension, int) or not 1 <= dimension <= MAX_DIMENSION:
        raise SpecError("dimension", dimension, f"an integer in [1, {MAX_DIMENSION}]")
    check_precision(precision)
    target = check_target(spec, target)

    if target["kind"] == "weak_recovery":
        res = layer_thresholds(spec, precision=precision, seed=seed, progress=progress)
        alpha, ci95, method = weak_recovery(res.thresholds, target)
        evaluations = 1
        result_checks = res.checks
    else:
        emax = target["max"]
        rel = PRECISION_TARGETS[precision][1]
        # upper end: double from alpha = 1 until the error is small enough
        steps_guess = 8 + int(math.ceil(math.log2(1 / rel)))
        evaluations = 0

        def f(a):
            nonlocal evaluations
            evaluations += 1
            if progress is not None:
                progress(min(evaluations, steps_guess - 1), steps_guess)
            return _plugin_error(spec, a, precision, seed)

        lo, hi = 0.0, 1.0
        while f(hi) > emax:
            lo, hi = hi, 2 * hi
            if hi > ALPHA_MAX:
                raise SpecError("target.max", emax,
                                f"a prediction error reached for some alpha <= {ALPHA_MAX:g} "
                                f"(at alpha = {lo:g} it is still above)")
        while hi - lo > rel * hi and hi > ALPHA_MIN:
            mid = 0.5 * (lo + hi)
            if f(mid) <= emax:
                hi = mid
            else:
                lo = mid
        alpha, ci95, method = hi, hi - lo, "bisection on Bayes-optimal state evolution"
        result_checks = (checks.bracket_target(alpha, ci95, precision),)
        if progress is not None:
            progress(steps_guess, steps_guess)
    return SampleSizeResult(model=spec.to_dict(), dimension=dimension, target=target, alpha=alpha,
                            ci95=ci95, samples=samples_for(alpha, dimension), method=method,
                            evaluations=evaluations, precision=precision, seed=seed,
                            seconds=time.perf_counter() - t0, solver_version=__version__,
                            checks=tuple(result_checks))
