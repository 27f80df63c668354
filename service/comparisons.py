"""A measured learning curve against the theory's (``POST /v1/comparisons``).

A comparison is a sweep of its theory points: the state-evolution questions of
``/v1/state-evolution`` with ``alphas: [alpha]`` at every alpha of the canonical grid
(:func:`solvers.comparison.theory_alphas`: 2^(k/4) around the user's alphas, the user's alphas
among them) and the ``/v1/thresholds`` question, asked through the one cache-or-compute path
like any sweep point.  So a point another comparison, sweep or request computed is read from
the cache, never computed twice.  When every point is done, ``service.sweeps.comparison_view``
renders the comparison (``render.comparison``, the arithmetic in ``solvers.comparison``).
"""
from __future__ import annotations

from solvers.comparison import theory_alphas
from solvers.limits import MAX_ALPHA, MAX_SWEEP_POINTS

from .computations import solver_spec
from .problems import InvalidParameter
from .schemas import COMPARISON_ALLOWED, ComparisonRequest
from .sweeps import SweepRequest


def plan(body: ComparisonRequest) -> tuple[SweepRequest, dict]:
    """(the sweep of the theory points, the canonical request echoed in the job).  Raises
    InvalidParameter naming the field."""
    spec = solver_spec(body.model)
    for i, p in enumerate(body.points):
        if p.samples / body.dimension > MAX_ALPHA:
            raise InvalidParameter(f"points[{i}].samples",
                                   f"samples / dimension = {p.samples / body.dimension:g} is above {MAX_ALPHA:g}",
                                   COMPARISON_ALLOWED["points"])
    request = {"model": spec.to_dict(), "dimension": body.dimension,
               "points": [p.model_dump() for p in body.points], "metric": body.metric,
               "precision": body.precision, "seed": body.seed}
    alphas = theory_alphas([p.samples / body.dimension for p in body.points])
    if len(alphas) + 1 > MAX_SWEEP_POINTS:  # not reachable within the limits (about 380 at most)
        raise InvalidParameter("points", f"{len(alphas) + 1} theory points needed",
                               f"points whose alphas span less (at most {MAX_SWEEP_POINTS} theory points)")
    sweep = SweepRequest.model_validate({"model": body.model.model_dump(exclude_none=True),
                                         "compute": "state_evolution", "grid": {"alpha": alphas},
                                         "precision": body.precision, "seed": body.seed})
    return sweep, request
