"""The routes: ``v1`` (computations from the registry, models, sweeps, comparisons, jobs) and
``operations``."""
from fastapi import APIRouter

from . import comparisons, computations, health, jobs, models, sweeps

v1 = APIRouter(prefix="/v1")
for _router in (computations.router, models.router, sweeps.router, comparisons.router, jobs.router,
                jobs.sweep_plots):
    v1.include_router(_router)

operations = health.router

__all__ = ["v1", "operations"]
