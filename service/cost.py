"""The cost of a computation before it starts: one estimate, in seconds on one pool process.

:func:`estimate` reads a question's kind, its canonical model (family, layers L and tokens M, or
the link's number of indices P, noise), its precision and how many alphas it asks for; the lane
it runs in follows from it (:func:`lane`: ``cheap`` at most ``STAIRCASE_CHEAP_SECONDS``, else
``expensive``).  Jobs report it as ``estimated_seconds``; queue positions' ETAs add it up.

The constants are wall times at precision ``fast`` on the 2-CPU development machine, measured
once (2026-11-30, ``solvers.layer_thresholds`` / ``solvers.state_evolution`` called directly
after ``solvers.warm_up()``, the machine shared with other work), or taken from the README's
benchmarks where a measurement takes minutes:

* thresholds, multi-index P = 1: square 0.04 s, sign 0.03 s (fast and standard alike);
  P = 2: product 1.3 s (the calibration table: 2.5 s per run on a busier machine);
* thresholds, deep attention L = 1: M = 2 0.22 s (standard 0.30 s, precise 2.2 s), M = 3
  0.21 s, M = 4 0.37 s; sign at precise 0.50 s; solver 0.5.0 (``benchmarks/bench_catalogue.py``,
  fast, on a machine loaded about 2x): L = 2, M = 2 31 s, M = 3 28 s, M = 4 63 s; L = 3, M = 2
  136 s; L = 4 extrapolated;
* state evolution per alpha: phase retrieval 0.17 s, sign 0.05 s, product 5.6 s, deep attention
  L = 1 4.4 to 7.5 s, the paper's model 1.7 s (README: 30 alphas, both starts, 51 s);
* a noiseless continuous formula (solved on the roots of g(z1) = y): ``z1**2`` thresholds 1.0 s
  at fast and 3.9 s at standard against 0.18 s and 0.36 s for ``square`` (2026-12-01, warm,
  load average 7 on the 2 cores): about 8x the named link's constants.

* a noisy multi-index model (P <= 3): thresholds by quadrature in y, SE by sampling
  (``NOISY_THRESHOLDS_MULTI_INDEX``, ``NOISY_SE_MULTI_INDEX``; 2026-12-01, idle).

Estimates err on the expensive side where nothing was measured (L >= 3, noisy deep attention):
misfiling a cheap question as expensive costs it a wait, the other way round makes the cheap
lane wait behind it.
"""
from __future__ import annotations

from typing import Optional

from solvers.channels.formula import parse_formula

# seconds at precision fast, thresholds of one model (see the module docstring)
THRESHOLDS_MULTI_INDEX = {1: 0.05, 2: 2.0, 3: 30.0}          # by the link's indices P
THRESHOLDS_DEEP_ATTENTION = {1: 0.3, 2: 20.0, 3: 120.0, 4: 1200.0}  # by layers L, at M = 2
# state evolution, seconds per alpha (both starts) at fast
# (P = 3: the formula sign(sign(z1)+sign(z2)+sign(z3)) at alpha = 2 took 8.7 s and 30.2 s,
# seeds 0 and 1, 2026-12-01, idle; 20 s before)
SE_MULTI_INDEX = {1: 0.2, 2: 6.0, 3: 30.0}
SE_DEEP_ATTENTION = {1: 6.0, 2: 2.0, 3: 20.0, 4: 60.0}
# more tokens: the inner integrals grow (L = 1 has a closed-form posterior: no growth)
TOKENS = {2: 1.0, 3: 1.5, 4: 3.0}
# a noisy channel uses the generic importance sampler (not measured: a guess on the safe side)
NOISY = 3.0
# a noisy scalar output without known rows (multi-index): the thresholds at Q = 0 by quadrature
# in y (solver 0.5.6); fast, idle, warm (2026-12-01): square and relu 0.1 s, product and z1*z2
# 0.2 s, z1*z2*z3 0.4 s (standard: 0.2 s, 0.4 s, 1.8 s)
NOISY_THRESHOLDS_MULTI_INDEX = {1: 0.2, 2: 0.3, 3: 0.8}  # x PRECISION: standard 0.6, 0.9, 2.4 s
# their SE still samples y and importance-samples each outer point's posterior: per alpha at
# fast, the same run: square 6.3 s, relu 3.4 s, z1**2 3.1 s, product 7.8 s, z1*z2 4.5 s, z1*z2*z3
# 121 s (the NOISY guess had 0.6 s, 18 s and 60 s: P = 1 and 3 filed as cheaper than they are)
NOISY_SE_MULTI_INDEX = {1: 8.0, 2: 10.0, 3: 150.0}
# a noiseless formula with a continuous output: a root search per sample (module docstring)
INVERTED_FORMULA = 8.0
# relative to fast (L = 1: standard 1.4x, precise 10x; sign: precise 15x; the paper's
# staircase step: standard about 2x)
PRECISION = {"fast": 1.0, "standard": 3.0, "precise": 20.0}
# sample size to a prediction error: a bisection over SE fixed points
SAMPLE_SIZE_FIXED_POINTS = 12
# GAMP: seconds per (sample x dimension x iteration x token x layer), plus its SE fixed point
AMP_PER_ENTRY = 1e-8

LANES = ("cheap", "expensive")


# se_bracket on noiseless deep attention with Gaussian weights (L >= 2) also runs uninformed SE at
# 0.95x and 1.05x of alpha_PR (solvers.transitions): slow fixed points next to perfect recovery,
# 90 s and 103 s at L = 2, M = 2, fast (2026-12-01, the 2-core box loaded about 2.5x), scaled
# with L and M like SE_DEEP_ATTENTION
SE_PERFECT_RECOVERY_BRACKET = 190.0

# the named committee_sign (P = 3) with Gaussian weights: its posteriors are closed-form orthant
# moments (solver 0.5.10): thresholds at fast 2.3 s and 0.5 s (seeds 0, 1; 2026-12-01, idle,
# warm), where a P = 3 formula built from signs takes 25 s and 22 s (THRESHOLDS_MULTI_INDEX[3]).
# Solver 0.5.14 (2026-12-02, beside a nice-19 job): thresholds 1.5 / 3.9 / 15.0 s at fast /
# standard / precise (the staircase step now reaches each precision's target), and SE sums y:
# 1.1 s and 1.8 s per alpha at fast (alpha = 2, 6), 1.4 s and 3.0 s at standard (it took up
# to 20.7 s with y sampled)
COMMITTEE_SIGN_THRESHOLDS = 3.0
COMMITTEE_SIGN_SE = 2.0

# extra seconds of a thresholds question with a non-Gaussian prior, by P (measured 2026-11-30 on
# the loaded 2-core box: the one-index transitions curve 5-11 s; the binary paper model's jump
# search 69 s in all; 2026-12-01, the symmetric-line transitions of P = 2 multi-index links with
# +-1 or sparse weights: product 10 s, sign_product 12 s, the formula sign(z1*z2) 34 s)
PRIOR_THRESHOLDS = {1: 12.0, 2: 70.0}
# the noiseless product with Gaussian weights, the one P >= 2 link with transitions (on the line
# Q = q I) under a Gaussian prior (finitely many outputs need a discrete one): 5.4 s (2026-12-01,
# loaded); with se_bracket two more uninformed SE fixed points check them (1.4 s and 1.8 s)
GAUSSIAN_PRODUCT_TRANSITIONS = 6.0


def _size(model: dict) -> tuple[float, float]:
    """(thresholds seconds, state-evolution seconds per alpha) at fast for ``model``."""
    noiseless = float(model.get("noise") or 0.0) == 0.0
    noisy = NOISY if not noiseless else (INVERTED_FORMULA if _continuous_formula(model) else 1.0)
    prior = model.get("prior") or {}
    if model.get("family") == "multi_index":
        P = int(model.get("indices") or 1)
        extra = PRIOR_THRESHOLDS.get(P, 60.0 * P) if prior.get("kind", "gaussian") != "gaussian" else 0.0
        thresholds, se = THRESHOLDS_MULTI_INDEX.get(P, 60.0 * P) * noisy, SE_MULTI_INDEX.get(P, 20.0 * P) * noisy
        if noiseless and model.get("link") == "product" and prior.get("kind", "gaussian") == "gaussian":
            thresholds += GAUSSIAN_PRODUCT_TRANSITIONS
        if noiseless and model.get("link") == "committee_sign":
            thresholds, se = COMMITTEE_SIGN_THRESHOLDS, COMMITTEE_SIGN_SE
        if not noiseless and P in NOISY_SE_MULTI_INDEX:  # measured
            se = NOISY_SE_MULTI_INDEX[P]
            if not model.get("known_layers"):  # the quadrature in y (known rows: outer sampling of y)
                thresholds = NOISY_THRESHOLDS_MULTI_INDEX[P]
        return thresholds + extra, se
    L, M = int(model.get("layers") or 2), int(model.get("tokens") or 2)
    tokens = 1.0 if L == 1 else TOKENS.get(M, 10.0 * M)
    extra = PRIOR_THRESHOLDS.get(L, 60.0 * L) if prior.get("kind", "gaussian") != "gaussian" else 0.0
    return (THRESHOLDS_DEEP_ATTENTION.get(L, 3600.0 * L) * tokens * noisy + extra,
            SE_DEEP_ATTENTION.get(L, 60.0 * L) * tokens * noisy)


def estimate(kind: str, model: dict, params: dict) -> float:
    """Estimated seconds of one computation of ``kind`` (the registry's name) on ``model`` (its
    canonical dict) with the solve function's ``params``."""
    thresholds, se_per_alpha = _size(model)
    factor = PRECISION.get(str(params.get("precision", "standard")), PRECISION["precise"])
    if kind == "thresholds":
        seconds = thresholds * factor
        if params.get("se_bracket"):  # two SE fixed points per threshold
            seconds += factor * se_per_alpha * _indices(model)
            if _brackets_perfect_recovery(model):
                seconds += factor * SE_PERFECT_RECOVERY_BRACKET * se_per_alpha / SE_DEEP_ATTENTION[2]
            elif model.get("family") == "multi_index" and _indices(model) > 1 and not float(model.get("noise") or 0.0):
                seconds += factor * se_per_alpha  # the transitions' two uninformed fixed points
        return seconds
    if kind == "state_evolution":
        return factor * se_per_alpha * max(1, len(params.get("alphas") or ()))
    if kind == "sample_size":
        return factor * se_per_alpha * SAMPLE_SIZE_FIXED_POINTS / 2
    if kind == "amp_simulation":
        dim, alpha = float(params.get("dimension", 1000)), float(params.get("alpha", 1.0))
        work = float(params.get("seeds", 1)) * float(params.get("iterations", 50)) * alpha * dim * dim
        layers = _indices(model) * int(model.get("tokens") or 1)
        se = se_per_alpha * PRECISION.get(str(params.get("se_precision", "fast")), 1.0)
        return AMP_PER_ENTRY * work * layers + se
    return 60.0  # a kind without an estimate yet: not cheap


def _continuous_formula(model: dict) -> bool:
    """A formula link with a continuous output (not built from numbers, sign and comparisons
    alone: the parsed formula's ``finite_valued``, memoised by its text)."""
    link = model.get("link")
    if not isinstance(link, dict) or not isinstance(link.get("formula"), str):
        return False
    return not parse_formula(link["formula"]).finite_valued


def _brackets_perfect_recovery(model: dict) -> bool:
    """Whether se_bracket also checks AMP's perfect recovery at alpha_PR (Gaussian weights,
    noiseless deep attention with several layers; +-1 weights reuse the staircase's SE points)."""
    return (model.get("family") == "deep_attention" and int(model.get("layers") or 2) > 1
            and not float(model.get("noise") or 0.0) > 0.0
            and (model.get("prior") or {}).get("kind", "gaussian") == "gaussian")


def _indices(model: dict) -> int:
    if model.get("family") == "multi_index":
        return int(model.get("indices") or 1)
    return int(model.get("layers") or 2)


def lane(seconds: float, cheap_seconds: float) -> str:
    """The lane of a computation estimated at ``seconds``."""
    return "cheap" if seconds <= cheap_seconds else "expensive"


def remaining(estimated: float, elapsed: float, done: int = 0, total: int = 0) -> Optional[float]:
    """Seconds a running computation still needs: its estimate less the time spent; once it
    has overrun its estimate, extrapolated from its progress (its steps are not equal: the
    first threshold is the quick one), else None (unknown)."""
    left = estimated - elapsed
    if left > 0:
        return left
    if total > 0 and 0 < done < total and elapsed > 0:
        return elapsed * (total - done) / done
    return None
