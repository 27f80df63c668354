"""Pydantic v2 models of the requests and responses (they are the OpenAPI document).

The limits come from ``solvers.limits`` (defined once, for the solvers and the service): the
models enforce them and ``ALLOWED`` describes them in the problem+json errors.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal, Optional, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

import solvers
from solvers.comparison import METRICS
from solvers.limits import (AMP_MAX_ALPHA, AMP_MAX_DAMPING, AMP_MAX_DIMENSION, AMP_MAX_INPUT_ENTRIES,
                            AMP_MAX_ITERATIONS, AMP_MAX_SEEDS, AMP_MIN_DIMENSION, MAX_ALPHA,
                            MAX_ALPHAS, MAX_BETA, MAX_COMPARISON_POINTS, MAX_DENSITY, MAX_DIMENSION,
                            MAX_FORMULA_INDICES, MAX_FORMULA_LENGTH, MAX_LAYERS, MAX_NOISE,
                            MAX_PREDICTION_ERROR, MAX_SEED, MAX_SKIP, MAX_TOKENS, MIN_DENSITY)
from solvers.precision import PRECISIONS

_LINKS = solvers.catalogue()["multi_index"]["links"]  # the solvers' channel registry
LINKS = tuple(_LINKS)


def _indices_in_words() -> str:
    """'1 for square, abs, sign, relu; 2 for product, sign_product; ...', from the registry."""
    by_count: dict[int, list[str]] = {}
    for name, facts in _LINKS.items():
        by_count.setdefault(int(facts["indices"]), []).append(name)
    return "; ".join(f"{n} for {', '.join(names)}" for n, names in sorted(by_count.items()))


# field name -> the allowed values, in words (used by the problem+json errors)
ALLOWED: dict[str, str] = {
    "family": "one of: deep_attention, multi_index",
    "layers": f"an integer in [1, {MAX_LAYERS}]",
    "tokens": f"an integer in [2, {MAX_TOKENS}]",
    "skip": f"a number in [0, {MAX_SKIP:g}] or a list of one such number per layer",
    "beta": f"a number in (0, {MAX_BETA:g}] or a list of one such number per layer",
    "noise": f"a number in [0, {MAX_NOISE:g}]",
    "link": "one of: " + ", ".join(LINKS) + ', or {"formula": "<expression in z1 .. z4>"}',
    "formula": f"an expression in z1 .. z{MAX_FORMULA_INDICES} of at most {MAX_FORMULA_LENGTH} "
               "characters (grammar: GET /v1/models)",
    "indices": f"the number of indices of the link ({_indices_in_words()}; a formula: from its "
               f"largest variable to {MAX_FORMULA_INDICES}), or null",
    "precision": "one of: " + ", ".join(PRECISIONS),
    "seed": f"an integer in [0, {MAX_SEED}]",
    "dimension": f"an integer in [1, {MAX_DIMENSION}]",
    "alphas": f"a list of 1 to {MAX_ALPHAS} numbers, each in (0, {MAX_ALPHA:g}]",
    "target": "{\"kind\": \"weak_recovery\", \"layers\": \"all\" | k} or "
              "{\"kind\": \"prediction_error\", \"max\": x}",
    "kind": "one of: weak_recovery, prediction_error",
    "max": f"a number in (0, {MAX_PREDICTION_ERROR:g}]",
    "model": "an object with family deep_attention or multi_index",
    "se_bracket": "true or false",
    "prior": "{\"kind\": \"gaussian\"} (the default), {\"kind\": \"binary\"} or "
             f"{{\"kind\": \"sparse\", \"density\": rho}} with rho in ({MIN_DENSITY:g}, {MAX_DENSITY:g}]",
    "density": f"a number in ({MIN_DENSITY:g}, {MAX_DENSITY:g}]",
    "known_layers": f"a list of distinct layer (multi-index: index) numbers in [1, L], not all L "
                    f"(L <= {MAX_LAYERS}), or null",
}

# the same for POST /v1/amp-simulations, whose fields have their own ranges
AMP_ALLOWED: dict[str, str] = {
    "dimension": f"an integer in [{AMP_MIN_DIMENSION}, {AMP_MAX_DIMENSION}] "
                 f"(and alpha * dimension^2 * tokens <= {AMP_MAX_INPUT_ENTRIES / 1e7:g}e7)",
    "alpha": f"a number in (0, {AMP_MAX_ALPHA:g}]",
    "seeds": f"an integer in [1, {AMP_MAX_SEEDS}] (runs on seeds 0 .. seeds - 1)",
    "iterations": f"an integer in [1, {AMP_MAX_ITERATIONS}]",
    "damping": f"a number in [0, {AMP_MAX_DAMPING:g}], or null (0)",
}

# the same for POST /v1/comparisons
COMPARISON_ALLOWED: dict[str, str] = {
    "points": f"a list of 1 to {MAX_COMPARISON_POINTS} objects {{samples: an integer >= 1 with "
              f"samples / dimension <= {MAX_ALPHA:g}, test_error: a number in [0, "
              f"{MAX_PREDICTION_ERROR:g}], error_bar: a number >= 0 or null}}",
    "metric": "one of: " + ", ".join(METRICS),
}


def request_config(**extra) -> ConfigDict:
    """The config of every request model: no unknown fields, no NaN or infinity, and strict
    types, because a boolean or a string is not a number ("layers": true ran L = 1,
    "alphas": [true] was alpha = 1.0, "dimension": "768" was read as 768).  Strict floats still
    take JSON integers ("skip": 1); integer fields (``Int``) take a JSON number with no fraction
    (2.0 is the integer 2 in JSON Schema, so in the OpenAPI document) and refuse 2.5."""
    return ConfigDict(extra="forbid", allow_inf_nan=False, strict=True, **extra)


def _integral(value: Any) -> Any:
    """2.0 -> 2 (JSON has one number type; JSON Schema's integer is a number with no fraction);
    anything else, booleans and strings included, goes to the strict int check unchanged."""
    if type(value) is float and value.is_integer():
        return int(value)
    return value


Int = Annotated[int, BeforeValidator(_integral)]  # a request's integer field


Skip = Annotated[float, Field(ge=0.0, le=MAX_SKIP)]
Beta = Annotated[float, Field(gt=0.0, le=MAX_BETA)]
Alpha = Annotated[float, Field(gt=0.0, le=MAX_ALPHA)]
KnownLayers = Annotated[list[Annotated[int, Field(ge=1, le=MAX_LAYERS), BeforeValidator(_integral)]],
                        Field(max_length=MAX_LAYERS - 1)]


class GaussianPriorModel(BaseModel):
    """N(0, 1) weights (the default)."""

    model_config = request_config()
    kind: Literal["gaussian"]


class BinaryPriorModel(BaseModel):
    """+-1 weights, each with probability 1/2."""

    model_config = request_config()
    kind: Literal["binary"]


class SparsePriorModel(BaseModel):
    """Gauss-Bernoulli weights: 0 with probability 1 - density, else N(0, 1 / density)."""

    model_config = request_config()
    kind: Literal["sparse"]
    density: float = Field(gt=MIN_DENSITY, le=MAX_DENSITY, description="fraction of nonzero weights rho")


WeightPrior = Annotated[Union[GaussianPriorModel, BinaryPriorModel, SparsePriorModel], Field(
    discriminator="kind", description="the weights' prior (THEORY.md section 7); omitted: Gaussian")]


class DeepAttentionModel(BaseModel):
    """Deep tied rank-1 attention: L layers on M tokens (THEORY.md section 2)."""

    model_config = request_config(json_schema_extra={
        "example": {"family": "deep_attention", "layers": 2, "tokens": 2, "skip": 1.0, "beta": 1.0,
                    "noise": 0.0}})

    family: Literal["deep_attention"]
    layers: Int = Field(2, ge=1, le=MAX_LAYERS, description="number of attention layers L")
    tokens: Int = Field(2, ge=2, le=MAX_TOKENS, description="sequence length M")
    skip: Union[Skip, Annotated[list[Skip], Field(min_length=1, max_length=MAX_LAYERS)]] = Field(
        1.0, description="skip strength c, one value or one per layer")
    beta: Union[Beta, Annotated[list[Beta], Field(min_length=1, max_length=MAX_LAYERS)]] = Field(
        1.0, description="inverse temperature, one value or one per layer")
    noise: float = Field(0.0, ge=0.0, le=MAX_NOISE, description="variance of Gaussian output noise")
    prior: Optional[WeightPrior] = None
    known_layers: Optional[KnownLayers] = Field(
        None, description="layers (1-based) given exactly, e.g. pretrained: held at overlap 1, not learned "
                          "(the last layer only for layers = 2, tokens = 2, noise = 0)")


class FormulaLink(BaseModel):
    """A link given by a formula in z1 .. zP (P <= 4), checked against a whitelist grammar
    (listed by GET /v1/models); its canonical form is the cache key."""

    model_config = request_config(json_schema_extra={"example": {"formula": "sign(z1*z2) + 0.5*tanh(z3)"}})

    formula: str = Field(description="e.g. sign(z1*z2) + 0.5*tanh(z3); noiseless only with "
                                     "finitely many values (numbers, sign, comparisons) or in z1 "
                                     "alone and invertible (continuous, nowhere flat: z1**2, tanh(z1))")


class MultiIndexModel(BaseModel):
    """A multi-index model y = g(W x / sqrt(D)) (+ noise) with a named link or a formula."""

    model_config = request_config(json_schema_extra={
        "example": {"family": "multi_index", "link": "square", "indices": 1, "noise": 0.0}})

    family: Literal["multi_index"]
    link: Union[Literal[LINKS], FormulaLink] = "square"  # type: ignore[valid-type]
    indices: Optional[Annotated[int, Field(ge=1, le=MAX_FORMULA_INDICES), BeforeValidator(_integral)]] = Field(
        None, description="set by the link when omitted")
    noise: float = Field(0.0, ge=0.0, le=MAX_NOISE)
    prior: Optional[WeightPrior] = None
    known_layers: Optional[KnownLayers] = Field(
        None, description="indices (1-based rows of W) given exactly: held at overlap 1, not learned")


Model = Annotated[Union[DeepAttentionModel, MultiIndexModel], Field(discriminator="family")]
Precision = Literal[PRECISIONS]  # type: ignore[valid-type]

PAPER_MODEL = {"family": "deep_attention", "layers": 2, "tokens": 2, "skip": 1.0, "beta": 1.0,
               "noise": 0.0}


class ThresholdsRequest(BaseModel):
    model_config = request_config(json_schema_extra={
        "examples": [{"model": PAPER_MODEL, "precision": "fast", "dimension": 768}]})

    model: Model
    precision: Precision = "standard"
    seed: Int = Field(0, ge=0, le=MAX_SEED)
    dimension: Optional[Annotated[int, Field(ge=1, le=MAX_DIMENSION), BeforeValidator(_integral)]] = Field(
        None, description="input dimension D; adds samples_needed")
    se_bracket: bool = Field(False, description="also check each threshold by state evolution from "
                                                "the uninformed start at 0.95x and 1.05x of it (two "
                                                "SE fixed points per threshold: slower), and AMP's "
                                                "perfect recovery (transitions) of noiseless deep "
                                                "attention and of multi-index links with several "
                                                "indices likewise")


class StateEvolutionRequest(BaseModel):
    model_config = request_config(json_schema_extra={
        "examples": [{"model": PAPER_MODEL, "alphas": [0.1, 0.5, 1.0], "precision": "fast"}]})

    model: Model
    alphas: list[Alpha] = Field(min_length=1, max_length=MAX_ALPHAS,
                                description="sample ratios alpha = N / D")
    precision: Precision = "standard"
    seed: Int = Field(0, ge=0, le=MAX_SEED)


class AmpSimulationRequest(BaseModel):
    model_config = request_config(json_schema_extra={
        "examples": [{"model": {"family": "multi_index", "link": "square"}, "dimension": 1000,
                      "alpha": 1.5, "seeds": 5, "iterations": 50}]})

    model: Model
    dimension: Int = Field(ge=AMP_MIN_DIMENSION, le=AMP_MAX_DIMENSION,
                           description="input dimension D of the synthetic instances")
    alpha: float = Field(gt=0.0, le=AMP_MAX_ALPHA, description="sample ratio alpha = N / D")
    seeds: Int = Field(ge=1, le=AMP_MAX_SEEDS, description="number of independent instances "
                                                           "(teacher, data and start: seeds 0 .. seeds - 1)")
    iterations: Int = Field(ge=1, le=AMP_MAX_ITERATIONS, description="maximum GAMP iterations per seed")
    damping: Optional[float] = Field(None, ge=0.0, le=AMP_MAX_DAMPING,
                                     description="message damping d (new = d old + (1 - d) update); "
                                                 "default 0")


class WeakRecoveryTarget(BaseModel):
    model_config = request_config()

    kind: Literal["weak_recovery"]
    layers: Union[Literal["all"], Annotated[int, Field(ge=1, le=MAX_LAYERS), BeforeValidator(_integral)]] = Field(
        "all", description="'all', or k: the first k layers (directions) learned")


class PredictionErrorTarget(BaseModel):
    model_config = request_config()

    kind: Literal["prediction_error"]
    max: float = Field(gt=0.0, le=MAX_PREDICTION_ERROR,
                       description="largest acceptable plug-in prediction error")


Target = Annotated[Union[WeakRecoveryTarget, PredictionErrorTarget], Field(discriminator="kind")]


class SampleSizeRequest(BaseModel):
    model_config = request_config(json_schema_extra={
        "examples": [{"model": PAPER_MODEL, "dimension": 768,
                      "target": {"kind": "weak_recovery", "layers": "all"}, "precision": "fast"}]})

    model: Model
    dimension: Int = Field(ge=1, le=MAX_DIMENSION, description="input dimension D")
    target: Target
    precision: Precision = "standard"
    seed: Int = Field(0, ge=0, le=MAX_SEED)


class MeasuredPoint(BaseModel):
    """One point of the user's learning curve."""

    model_config = request_config()

    samples: Int = Field(ge=1, description="training samples N (alpha = N / dimension)")
    test_error: float = Field(ge=0.0, le=MAX_PREDICTION_ERROR,
                              description="the measured test error at N, on the metric's scale")
    error_bar: Optional[float] = Field(None, ge=0.0, description="its error bar (drawn, not used)")


class ComparisonRequest(BaseModel):
    model_config = request_config(json_schema_extra={
        "examples": [{"model": {"family": "multi_index", "link": "sign"}, "dimension": 1000,
                      "points": [{"samples": 500, "test_error": 1.6}, {"samples": 1000, "test_error": 1.2},
                                 {"samples": 2000, "test_error": 0.75, "error_bar": 0.05}],
                      "precision": "fast"}]})

    model: Model
    dimension: Int = Field(ge=1, le=MAX_DIMENSION, description="input dimension D")
    points: list[MeasuredPoint] = Field(min_length=1, max_length=MAX_COMPARISON_POINTS,
                                        description="the measured (samples, test error) points")
    metric: Literal[tuple(METRICS)] = Field(  # type: ignore[valid-type]
        "prediction_error",
        description="prediction_error: the plug-in prediction error E||g(Z) - g(omega)||^2, the "
                    "scale of /v1/state-evolution's prediction_error_plugin (the test MSE of "
                    "g(W_hat x) on noiseless labels; a sign link's is in [0, 4])")
    precision: Precision = "standard"
    seed: Int = Field(0, ge=0, le=MAX_SEED)


# ---------------------------------------------------------------- responses

class SolverInfo(BaseModel):
    version: str
    method: str
    seconds: float


class CheckOut(BaseModel):
    """A self-check of the result (solvers.checks): trust or reject a number by its verdicts."""

    name: str = Field(description='what was checked: "counting bound", "precision target", '
                                  '"staircase order", "SE bracket", "converged", "branch order"')
    passed: bool
    detail: str = Field(description="the numbers compared")


CHECKS_DESCRIPTION = ("self-checks this result passed or failed (a failed one names the numbers "
                      "that missed); SE bracket only when asked for with se_bracket")


class ThresholdEntry(BaseModel):
    layer: Optional[int] = Field(None, description="1-based layer (deep attention)")
    direction: Optional[list[float]] = Field(None, description="unit vector (multi-index)")
    alpha: Optional[float] = Field(description="threshold alpha_c; null if never learned")
    ci95: Optional[float] = Field(description="95% half-width of alpha")
    kind: Literal["trivial", "linear_stability", "staircase"]
    samples_needed: Optional[int] = Field(None, description="ceil(alpha * dimension)")
    reason: Optional[str] = Field(None, description="why alpha is null (what the search found), how a staircase "
                                  "threshold is reached (a first-order jump), or that every direction in the span "
                                  "of the directions listed with this alpha is learned at it")


class TransitionEntry(BaseModel):
    """A perfect-recovery threshold of one kind (noiseless: one index, symmetric multi-index, deep attention)."""

    transition: Literal["perfect_recovery"]
    kind: Literal["information_theoretic", "algorithmic"] = Field(
        description="information_theoretic: the Bayes-optimal estimator (free entropies of the informed "
                    "and uninformed SE branches cross); algorithmic: AMP (the uninformed branch jumps)")
    alpha: Optional[float]
    ci95: Optional[float] = Field(description="95% half-width of alpha")
    coincide: bool = Field(description="the two kinds agree within their half-widths (no gap)")
    note: str = Field(description="which case, and why the two kinds coincide or not")
    samples_needed: Optional[int] = Field(None, description="ceil(alpha * dimension)")


class ThresholdsResponse(BaseModel):
    model: dict[str, Any]
    precision: Precision
    seed: int
    dimension: Optional[int] = None
    thresholds: list[ThresholdEntry]
    perfect_recovery_alpha: Optional[float] = None
    perfect_recovery_ci95: Optional[float] = None
    transitions: list[TransitionEntry] = Field(
        default_factory=list, description="information-theoretic and algorithmic perfect-recovery thresholds")
    checks: list[CheckOut] = Field(default_factory=list, description=CHECKS_DESCRIPTION)
    solver: SolverInfo
    cache: Literal["hit", "miss"]


class FixedPointOut(BaseModel):
    start: Literal["uninformed", "informed"]
    overlap: list[list[float]]
    layer_overlaps: list[float]
    overlap_ci95: list[Optional[float]]
    mse: Optional[float]
    prediction_error_bayes: Optional[float]
    prediction_error_plugin: Optional[float]
    prediction_error_plugin_ci95: Optional[float] = Field(
        None, description="95% half-width of prediction_error_plugin's QMC average (null in results "
                          "cached before it was reported)")
    free_entropy: Optional[float]
    converged: bool
    iterations: int
    residual: Optional[float]


class StateEvolutionPointOut(BaseModel):
    alpha: float
    uninformed: FixedPointOut
    informed: FixedPointOut
    bayes_optimal: Literal["uninformed", "informed"]
    gap: bool


class StateEvolutionResponse(BaseModel):
    model: dict[str, Any]
    precision: Precision
    seed: int
    points: list[StateEvolutionPointOut]
    checks: list[CheckOut] = Field(default_factory=list, description=CHECKS_DESCRIPTION)
    solver: SolverInfo
    cache: Literal["hit", "miss"]


class SampleSizeResponse(BaseModel):
    model: dict[str, Any]
    precision: Precision
    seed: int
    dimension: int
    target: dict[str, Any]
    alpha: Optional[float] = Field(description="sample ratio alpha = N / D meeting the target "
                                               "(null: never reached)")
    ci95: Optional[float] = Field(description="95% half-width (or bracket width) of alpha")
    samples: Optional[int] = Field(description="N = ceil(alpha * D), at least 1")
    checks: list[CheckOut] = Field(default_factory=list, description=CHECKS_DESCRIPTION)
    solver: SolverInfo
    cache: Literal["hit", "miss"]


class AmpRun(BaseModel):
    seed: int
    layer_overlaps: list[list[Optional[float]]] = Field(
        description="(iterations + 1) x P: overlap per layer / index after each iteration (row 0: start)")
    iterations: int = Field(description="iterations run (fewer when converged; later rows repeat the last)")
    converged: bool
    prediction_error: Optional[float] = Field(description="test error E||y - g(W_hat x)||^2 on fresh inputs")
    seconds: float


class AmpStateEvolution(BaseModel):
    """The state-evolution prediction at the same alpha, from the uninformed start (what AMP
    follows as D -> infinity)."""

    alpha: float
    start: Literal["uninformed"]
    precision: Precision
    layer_overlaps: list[float]
    overlap_ci95: list[Optional[float]]
    converged: bool
    iterations: int


class AmpSimulationResponse(BaseModel):
    """The result of an amp-simulation job (GET /v1/jobs/{id}, field result)."""

    model: dict[str, Any]
    dimension: int
    alpha: float
    samples: int = Field(description="N = round(alpha * D) training samples per instance")
    seeds: int
    iterations: int
    damping: float
    index_names: list[str] = Field(description="the P layers / indices, in the order of the columns")
    runs: list[AmpRun]
    layer_overlaps_mean: list[list[Optional[float]]] = Field(description="(iterations + 1) x P, over seeds")
    layer_overlaps_std: list[list[Optional[float]]]
    layer_overlaps_min: list[list[Optional[float]]]
    layer_overlaps_max: list[list[Optional[float]]]
    final_layer_overlaps_mean: list[Optional[float]]
    final_layer_overlaps_std: list[Optional[float]]
    learned_level: float
    first_learned: list[list[int]] = Field(
        description="seeds x P: first iteration with overlap >= learned_level (-1: never)")
    prediction_error_mean: Optional[float]
    prediction_error_std: Optional[float]
    state_evolution: AmpStateEvolution
    solver: SolverInfo


class EstimatorAtPoint(BaseModel):
    """One estimator (Bayes-optimal or AMP) at one of the user's points."""

    error: float = Field(description="its prediction error at the point's alpha (/v1/state-evolution's "
                                     "prediction_error_plugin of that fixed point)")
    ci95: Optional[float] = Field(description="95% half-width of error: its QMC average's plus the overlaps' "
                                              "carried along the theory curve (null: unknown)")
    alpha_needed: Optional[float] = Field(description="the smallest alpha at which its error is <= the "
                                                      "user's (null: not reached on the theory grid)")
    alpha_needed_range: list[Optional[float]] = Field(
        description="[lower, upper]: where the theory's error band (error +- ci95) first reaches the "
                    "user's error, to grid points (upper null: not reached on the grid)")
    reached: Literal["bracketed", "at_most", "not_reached"] = Field(
        description="bracketed: between two grid points; at_most: already at the grid's smallest alpha "
                    "(alpha_needed is an upper bound); not_reached: not up to the grid's largest alpha")
    samples_needed: Optional[int] = Field(description="ceil(alpha_needed * dimension) (reached at_most: an "
                                                      "upper bound)")
    samples_ratio: Optional[float] = Field(description="the user's samples / samples_needed: the user's "
                                                       "training needs this many times the estimator's samples "
                                                       "(reached at_most: a lower bound)")


class PointComparisonOut(BaseModel):
    samples: int
    alpha: float
    test_error: float
    error_bar: Optional[float]
    bayes_optimal: EstimatorAtPoint
    amp: EstimatorAtPoint = Field(description="AMP: the fixed point from the uninformed start")
    learned_layers: list[str] = Field(description="layers (directions) whose threshold is <= alpha")
    undecided_layers: list[str] = Field(description="layers whose threshold is within its 95% half-width "
                                                    "of alpha: learned or not is not decided")


class DropOut(BaseModel):
    samples_from: int
    samples_to: int
    error_from: float
    error_to: float
    rate: float = Field(description="(error_from - error_to) / ln(samples_to / samples_from)")


class CurveSummaryOut(BaseModel):
    sharpest_drop: Optional[DropOut] = Field(
        description="consecutive sample sizes with the steepest error fall per log-sample (null: fewer "
                    "than two sample sizes, or the error never falls)")
    alpha_from: Optional[float]
    alpha_to: Optional[float]
    thresholds_inside: list[str] = Field(description="theory thresholds (weak recovery per layer, perfect "
                                                     "recovery) inside [alpha_from, alpha_to]")
    nearest_threshold: Optional[str]
    nearest_threshold_factor: Optional[float] = Field(
        description="how far the nearest threshold lies from the interval, as a factor in alpha (1: inside)")
    bayes_optimal_sharpest_drop: Optional[DropOut] = Field(
        description="the Bayes-optimal curve's own sharpest drop between neighbouring grid points")
    amp_sharpest_drop: Optional[DropOut] = Field(description="AMP's, likewise")


class TheoryCurveOut(BaseModel):
    alphas: list[float]
    samples: list[int]
    bayes_optimal: list[float]
    bayes_optimal_ci95: list[Optional[float]]
    amp: list[float]
    amp_ci95: list[Optional[float]]


class ComparisonThreshold(BaseModel):
    label: str
    kind: Literal["weak_recovery", "perfect_recovery"] = Field(
        description="a layer's weak-recovery threshold, or perfect recovery (the error reaches 0)")
    alpha: Optional[float]
    ci95: Optional[float]
    samples: Optional[int]


class ComparisonResponse(BaseModel):
    """The comparison (also the `result` of its job)."""

    id: str = Field(description="its job: GET /v1/jobs/{id}, plots at /v1/jobs/{id}/plot.png|svg")
    model: dict[str, Any]
    dimension: int
    metric: str
    precision: Precision
    seed: int
    points: list[PointComparisonOut]
    summary: CurveSummaryOut
    theory: TheoryCurveOut
    thresholds: list[ComparisonThreshold]
    theory_points: dict[str, int] = Field(description="total: the theory points (state-evolution alphas "
                                                      "and the thresholds); from_cache: those read from "
                                                      "the cache")
    plot: dict[str, str]
    solver: SolverInfo


class JobProgress(BaseModel):
    done: int
    total: int
    failed: Optional[int] = Field(None, description="sweeps and comparisons: points that failed")


class JobOut(BaseModel):
    id: str
    kind: Literal["thresholds", "state_evolution", "sample_size", "sweep", "amp_simulation", "comparison"]
    status: Literal["queued", "running", "done", "failed", "cancelled"]
    progress: JobProgress
    estimated_seconds: Optional[float] = Field(
        None, description="the cost estimate made before it started (seconds on one pool process; "
                          "from the kind, model size, precision and number of alphas)")
    lane: Optional[Literal["cheap", "expensive"]] = Field(
        None, description="where it runs: cheap work (estimate at most STAIRCASE_CHEAP_SECONDS) "
                          "has its own processes and never waits behind expensive work")
    queue_position: Optional[int] = Field(
        None, ge=1, description="while queued: 1 for the next job of its lane to start")
    eta_seconds: Optional[float] = Field(
        None, description="while queued or running: seconds until it is expected to be done "
                          "(null when unknown, e.g. once a computation has overrun its estimate)")
    created_at: float
    updated_at: float
    request: dict[str, Any]
    result: Optional[Union[AmpSimulationResponse, dict[str, Any]]] = Field(
        None, description="when done: the body the endpoint answers (for amp_simulation: "
                          "AmpSimulationResponse)")
    error: Optional[dict[str, Any]] = None


class JobAccepted(BaseModel):
    id: str
    status: Literal["queued", "running", "done", "failed", "cancelled"]
    location: str


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str
    title: str
    status: int
    detail: str
    field: Optional[str] = None
    allowed: Optional[str] = None
    errors: list[dict[str, Any]] = []


class Health(BaseModel):
    status: Literal["ok"]


class Ready(BaseModel):
    status: Literal["ready", "degraded", "starting"]
    cache: dict[str, Any]
    solvers: dict[str, Any]
