"""Typed results of the solvers.  Each carries its uncertainty and the settings used.

All are frozen dataclasses with ``to_dict()`` giving plain JSON-ready Python objects.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal, Optional




def _plain(obj):
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, float) and obj != obj:  # NaN is not JSON
        return None
    return obj


@dataclass(frozen=True)
class Settings:
    """Numerical settings of a computation (enough to reproduce it bit for bit)."""

    precision: str
    seed: int
    method: str
    outer_points: int = 0
    scrambles: int = 0
    inner_resolution: int = 1
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Check:
    """One self-check of a result, so a pipeline can trust or reject a number without
    reading the code (:mod:`solvers.checks` defines them).

    name: what was checked ("counting bound", "precision target", "staircase order",
    "SE bracket"); passed: its verdict; detail: the numbers it compared."""

    name: str
    passed: bool
    detail: str


@dataclass(frozen=True)
class Threshold:
    """One weak-recovery threshold alpha_c with its 95% confidence half-width.

    ``layer`` (1-based) for deep attention; ``direction`` (unit vector in R^P, the top
    eigenvector of the Perron eigenmatrix) for multi-index models.
    kind: "trivial" (learned for every alpha > 0), "linear_stability" (instability of
    Q = 0), "staircase" (instability around the fixed point of the layers already learned).
    reason: when alpha is infinite, what the search found (a threshold is never a bare null); when
    a staircase threshold is reached by a first-order jump rather than a root, how; when F's top
    eigenspace is isotropic on a subspace (every direction of it is learned at this alpha, as for
    y = z1 z2 z3 + noise), that the directions listed with this alpha are one basis of it.
    """

    alpha: float
    ci95: float
    kind: Literal["trivial", "linear_stability", "staircase"]
    layer: Optional[int] = None
    direction: Optional[tuple[float, ...]] = None
    reason: Optional[str] = None  # why alpha is infinite (not found), how it was reached, or a basis's note


@dataclass(frozen=True)
class Transition:
    """A perfect-recovery threshold of one kind, with its 95% half-width (THEORY.md section 7).

    transition: what is recovered ("perfect_recovery"); kind: "information_theoretic" (the
    Bayes-optimal estimator, where the free entropies of the informed and uninformed branches
    cross) or "algorithmic" (AMP, where the uninformed branch jumps); coincide: whether the two
    kinds agree within their half-widths (no statistical-to-computational gap); note: why.
    """

    transition: Literal["perfect_recovery"]
    kind: Literal["information_theoretic", "algorithmic"]
    alpha: float
    ci95: float
    coincide: bool
    note: str


@dataclass(frozen=True)
class ThresholdsResult:
    """Thresholds sorted by alpha, the order in which the layers/directions are learned.

    ``perfect_recovery_alpha``: alpha above which Q = Q_0 is a stable SE fixed point
    (None for noisy channels), with its 95% half-width.
    """

    model: dict
    thresholds: tuple[Threshold, ...]
    perfect_recovery_alpha: Optional[float]
    perfect_recovery_ci95: Optional[float]
    settings: Settings
    seconds: float
    solver_version: str
    checks: tuple[Check, ...] = ()
    transitions: tuple[Transition, ...] = ()  # information-theoretic vs algorithmic (one index)

    def to_dict(self) -> dict:
        return _plain(asdict(self))


@dataclass(frozen=True)
class FixedPoint:
    """A state-evolution fixed point at one alpha from one start.

    overlap: P x P matrix Q; layer_overlaps: its diagonal (per layer / index);
    overlap_ci95: 95% half-width per diagonal entry (Monte-Carlo + quadrature);
    mse = Tr(Q_0 - Q); prediction errors per THEORY.md section 5; free_entropy Phi;
    prediction_error_plugin_ci95: the 95% half-width of the plug-in error's outer QMC average
    (over scrambles; the overlaps' own uncertainty not included).
    """

    alpha: float
    start: Literal["uninformed", "informed"]
    overlap: tuple[tuple[float, ...], ...]
    layer_overlaps: tuple[float, ...]
    overlap_ci95: tuple[float, ...]
    mse: float
    prediction_error_bayes: float
    prediction_error_plugin: float
    free_entropy: float
    converged: bool
    iterations: int
    residual: float
    prediction_error_plugin_ci95: float = float("nan")


@dataclass(frozen=True)
class StateEvolutionPoint:
    """Both fixed points at one alpha and which one is Bayes-optimal (larger free entropy).

    ``gap`` is True when the starts disagree: AMP (uninformed) is then suboptimal where
    the informed fixed point has the larger free entropy.
    """

    alpha: float
    uninformed: FixedPoint
    informed: FixedPoint
    bayes_optimal: Literal["uninformed", "informed"]
    gap: bool


@dataclass(frozen=True)
class StateEvolutionResult:
    model: dict
    points: tuple[StateEvolutionPoint, ...]
    settings: Settings
    seconds: float
    solver_version: str
    checks: tuple[Check, ...] = ()

    def to_dict(self) -> dict:
        return _plain(asdict(self))
