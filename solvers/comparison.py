"""A measured learning curve against the theory's: pure numerics on given curves, no solving.

The theory curve of an estimator is its prediction error e(alpha) at a set of sample ratios
alpha = N / D (state-evolution fixed points: the Bayes-optimal one, the larger free entropy,
and AMP's, the uninformed start; THEORY.md section 3), each with the layer overlaps q_p and
their 95% half-widths.  Given the user's points (N_i, e_i) this module answers, per point,
the theory's errors at alpha_i = N_i / D, the alpha (hence N = ceil(alpha D)) at which each
estimator first reaches e_i, the layers learned at alpha_i; and, for the whole curve, the
interval with the sharpest drop of the user's error per log-sample and the thresholds near it.

The metric is the plug-in prediction error E ||g(Z) - g(omega)||_F^2 of the state-evolution
fixed point (``prediction_error_plugin``: the test error of the predictor g(W_hat x), what a
trained model's test MSE on noiseless labels measures and what the paper plots).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Optional, Sequence

from .limits import MAX_ALPHA, MAX_PREDICTION_ERROR
from .results import _plain
from .sample_size import samples_for

# error metric name -> the largest value a user's point may carry (the scale is the one of
# /v1/state-evolution's prediction_error_plugin, which is not bounded by 1: a sign link's is up to 4)
METRICS = {"prediction_error": MAX_PREDICTION_ERROR}

GRID_PER_OCTAVE = 4  # theory grid: alpha = 2^(k / 4), shared by every comparison (and its cache)
GRID_SPAN = 4.0      # the grid reaches a factor 4 below the smallest and above the largest alpha


def theory_alphas(alphas: Sequence[float], per_octave: int = GRID_PER_OCTAVE, span: float = GRID_SPAN,
                  max_alpha: float = MAX_ALPHA) -> list[float]:
    """The canonical grid alpha = 2^(k / per_octave) covering [min / span, max * span] (clipped to
    (0, max_alpha]), merged with the alphas themselves, sorted.  Canonical, so two comparisons
    with overlapping ranges ask for the same grid points."""
    lo, hi = min(alphas) / span, min(max(alphas) * span, max_alpha)
    k0 = math.floor(per_octave * math.log2(lo))
    k1 = math.ceil(per_octave * math.log2(hi))
    grid = {2.0 ** (k / per_octave) for k in range(k0, k1 + 1)}
    grid = {a for a in grid if a <= max_alpha}
    return sorted(grid | {float(a) for a in alphas})


@dataclass(frozen=True)
class TheoryCurve:
    """An estimator's error at increasing alphas: errors[i] at alphas[i] with the 95% half-width
    of its QMC average (error_ci95, empty: 0), the layer overlaps (one row per alpha) and their
    95% half-widths."""

    alphas: tuple[float, ...]
    errors: tuple[float, ...]
    overlaps: tuple[tuple[float, ...], ...]
    overlap_ci95: tuple[tuple[float, ...], ...]
    error_ci95: tuple[float, ...] = ()

    def shifted(self, sign: float) -> "TheoryCurve":
        """The curve moved by sign x its errors' full half-widths (error_halfwidth)."""
        h = [error_halfwidth(self, i) for i in range(len(self.alphas))]
        return TheoryCurve(self.alphas, tuple(e + sign * d for e, d in zip(self.errors, h)), self.overlaps,
                           self.overlap_ci95)

    def index(self, alpha: float) -> int:
        for i, a in enumerate(self.alphas):
            if math.isclose(a, alpha, rel_tol=1e-12):
                return i
        raise KeyError(alpha)


def error_halfwidth(curve: TheoryCurve, i: int) -> float:
    """95% half-width of curve.errors[i]: its QMC average's (error_ci95[i]) plus the overlaps'
    carried to the error (delta method along the curve, below); a sum, so conservative.

    With a neighbour j on either side, the error moves by |e_j - e_i| while layer p's overlap
    moves by |q_jp - q_ip|; the overlap's half-width dq_p is worth dq_p |e_j - e_i| / |q_jp - q_ip|
    of error (exact for one layer with e a smooth function of q).  The half-width is the largest
    over the layers that move, on the smoother side (the smaller of the two: across a jump the
    chord is no derivative).  0 where no layer moves (a plateau: the overlap is pinned)."""
    sides = []
    for j in (i - 1, i + 1):
        if not 0 <= j < len(curve.alphas):
            continue
        de = abs(curve.errors[j] - curve.errors[i])
        worth = [dq * de / abs(qj - qi)
                 for qi, qj, dq in zip(curve.overlaps[i], curve.overlaps[j], curve.overlap_ci95[i])
                 if abs(qj - qi) > 1e-9 and dq is not None and math.isfinite(dq)]
        sides.append(max(worth, default=0.0))
    qmc = curve.error_ci95[i] if curve.error_ci95 else 0.0
    return qmc + min(sides, default=0.0)


@dataclass(frozen=True)
class Inversion:
    """The smallest alpha at which a curve's error is <= target.

    status: "bracketed" (the crossing lies in [lower, upper], two neighbouring curve points;
    alpha interpolates the error linearly in log alpha between them), "at_most" (already
    reached at the curve's first alpha: alpha = upper = that alpha, lower = 0), or
    "not_reached" (above the target on the whole curve: alpha None, lower = the last alpha)."""

    target: float
    alpha: Optional[float]
    lower: float
    upper: Optional[float]
    status: str


def alpha_for_error(curve: TheoryCurve, target: float) -> Inversion:
    a, e = curve.alphas, curve.errors
    if e[0] <= target:
        return Inversion(target, a[0], 0.0, a[0], "at_most")
    for i in range(1, len(a)):
        if e[i] <= target:
            t = (e[i - 1] - target) / (e[i - 1] - e[i])
            alpha = math.exp(math.log(a[i - 1]) + t * (math.log(a[i]) - math.log(a[i - 1])))
            return Inversion(target, alpha, a[i - 1], a[i], "bracketed")
    return Inversion(target, None, a[-1], None, "not_reached")


@dataclass(frozen=True)
class Threshold:
    """A layer's (direction's) weak-recovery threshold: alpha None if never learned."""

    label: str
    alpha: Optional[float]
    ci95: Optional[float]


def learned_layers(alpha: float, thresholds: Sequence[Threshold]) -> tuple[list[str], list[str]]:
    """(labels learned at alpha: threshold <= alpha, labels within the threshold's half-width
    of alpha: learned or not is not decided at this precision)."""
    learned = [t.label for t in thresholds if t.alpha is not None and t.alpha <= alpha]
    unsure = [t.label for t in thresholds if t.alpha is not None and t.ci95 is not None
              and abs(t.alpha - alpha) <= t.ci95]
    return learned, unsure


@dataclass(frozen=True)
class Drop:
    """The interval between consecutive distinct sample sizes where the error falls fastest:
    rate = (e_from - e_to) / ln(N_to / N_from) (errors of repeated N averaged)."""

    samples_from: int
    samples_to: int
    error_from: float
    error_to: float
    rate: float


def sharpest_drop(samples: Sequence[int], errors: Sequence[float]) -> Optional[Drop]:
    """The steepest fall of the error per log-sample between consecutive distinct N (None with
    fewer than two distinct N or when the error never falls)."""
    by_n: dict[int, list[float]] = {}
    for n, e in zip(samples, errors):
        by_n.setdefault(int(n), []).append(float(e))
    ns = sorted(by_n)
    mean = {n: sum(v) / len(v) for n, v in by_n.items()}
    best = None
    for n0, n1 in zip(ns, ns[1:]):
        rate = (mean[n0] - mean[n1]) / math.log(n1 / n0)
        if rate > 0 and (best is None or rate > best.rate):
            best = Drop(n0, n1, mean[n0], mean[n1], rate)
    return best


def thresholds_near(alpha_from: float, alpha_to: float,
                    thresholds: Sequence[Threshold]) -> tuple[list[str], Optional[str], Optional[float]]:
    """(labels of the thresholds inside [alpha_from, alpha_to], the label of the nearest one in
    log alpha (0 inside), that distance as a factor >= 1 in alpha)."""
    inside = [t.label for t in thresholds if t.alpha is not None and alpha_from <= t.alpha <= alpha_to]
    nearest, factor = None, None
    for t in thresholds:
        if t.alpha is None or t.alpha <= 0:
            continue
        f = 1.0 if alpha_from <= t.alpha <= alpha_to else max(alpha_from / t.alpha, t.alpha / alpha_to)
        if factor is None or f < factor:
            nearest, factor = t.label, f
    return inside, nearest, factor


@dataclass(frozen=True)
class Estimate:
    """One estimator at one user point: its error at the point's alpha, and how many samples
    it needs to reach the user's error (ratio = user's N / needed N: above 1, the user needs
    that many times the estimator's samples)."""

    error: float
    ci95: float
    alpha_needed: Optional[float]
    alpha_needed_range: tuple[float, Optional[float]]  # with the grid and the errors' half-widths
    reached: str
    samples_needed: Optional[int]
    samples_ratio: Optional[float]


@dataclass(frozen=True)
class PointComparison:
    samples: int
    alpha: float
    test_error: float
    error_bar: Optional[float]
    bayes_optimal: Estimate
    amp: Estimate
    learned_layers: tuple[str, ...]
    undecided_layers: tuple[str, ...]


@dataclass(frozen=True)
class CurveSummary:
    """The user's sharpest drop and the theory's thresholds near it, and the sharpest drops of
    the theory's own curves on the grid (samples = ceil(alpha D))."""

    sharpest_drop: Optional[Drop]
    alpha_from: Optional[float]
    alpha_to: Optional[float]
    thresholds_inside: tuple[str, ...]
    nearest_threshold: Optional[str]
    nearest_threshold_factor: Optional[float]
    bayes_optimal_sharpest_drop: Optional[Drop] = None
    amp_sharpest_drop: Optional[Drop] = None


@dataclass(frozen=True)
class Comparison:
    dimension: int
    points: tuple[PointComparison, ...]
    summary: CurveSummary

    def to_dict(self) -> dict:
        return _plain(asdict(self))


def _estimate(curve: TheoryCurve, alpha: float, samples: int, target: float, dimension: int) -> Estimate:
    i = curve.index(alpha)
    inv = alpha_for_error(curve, target)
    # the range: where the curve's lower band first reaches the target, to where its upper one does
    lower = alpha_for_error(curve.shifted(-1.0), target).lower
    upper = alpha_for_error(curve.shifted(+1.0), target).upper
    needed = None if inv.alpha is None else samples_for(inv.alpha, dimension)
    return Estimate(error=curve.errors[i], ci95=error_halfwidth(curve, i), alpha_needed=inv.alpha,
                    alpha_needed_range=(lower, upper), reached=inv.status,
                    samples_needed=needed, samples_ratio=None if needed is None else samples / needed)


def compare(dimension: int, samples: Sequence[int], errors: Sequence[float],
            error_bars: Sequence[Optional[float]], bayes_optimal: TheoryCurve, amp: TheoryCurve,
            thresholds: Sequence[Threshold], transitions: Sequence[Threshold] = ()) -> Comparison:
    """The user's points (samples[i], errors[i]) against the two theory curves, which must hold
    every alpha_i = samples[i] / dimension among their alphas.  thresholds: the layers'
    (learned layers, and the summary); transitions: other marks of the theory for the summary
    only (perfect recovery)."""
    points = []
    for n, e, bar in zip(samples, errors, error_bars):
        alpha = n / dimension
        learned, unsure = learned_layers(alpha, thresholds)
        points.append(PointComparison(samples=int(n), alpha=alpha, test_error=float(e), error_bar=bar,
                                      bayes_optimal=_estimate(bayes_optimal, alpha, n, e, dimension),
                                      amp=_estimate(amp, alpha, n, e, dimension),
                                      learned_layers=tuple(learned), undecided_layers=tuple(unsure)))
    theirs = [sharpest_drop([samples_for(a, dimension) for a in c.alphas], c.errors)
              for c in (bayes_optimal, amp)]
    drop = sharpest_drop(samples, errors)
    if drop is None:
        summary = CurveSummary(None, None, None, (), None, None, *theirs)
    else:
        a0, a1 = drop.samples_from / dimension, drop.samples_to / dimension
        inside, nearest, factor = thresholds_near(a0, a1, list(thresholds) + list(transitions))
        summary = CurveSummary(drop, a0, a1, tuple(inside), nearest, factor, *theirs)
    return Comparison(dimension=dimension, points=tuple(points), summary=summary)
