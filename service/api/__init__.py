"""HTTP routes: thin functions that validate, call the engine and render."""
from fastapi import APIRouter

from . import amp, health, jobs, models, sample_size, state_evolution, sweeps, thresholds

v1 = APIRouter(prefix="/v1")
for _m in (thresholds, state_evolution, sample_size, amp, models, sweeps, jobs):  # sweeps: before jobs
    v1.include_router(_m.router)

__all__ = ["v1", "health"]
