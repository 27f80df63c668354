from fastapi import APIRouter, Depends, Path

from .. import examples
from ..jobs import Engine
from ..problems import problem
from ..schemas import JobOut
from .common import problem_response
from .deps import engine, job_body, json, require_api_key

router = APIRouter(tags=["jobs"], dependencies=[Depends(require_api_key)])

JobId = Path(pattern="^[0-9a-f]{32}$", description="job id (32 hex digits)")
RESPONSES = {200: {"description": "The job", "content": {"application/json": {"examples": {
    "thresholds": {"summary": "a running thresholds job", "value": examples.JOB},
    "amp_simulation": {"summary": "a finished amp simulation", "value": examples.AMP_JOB}}}}},
             401: problem_response("Missing or wrong X-API-Key (only when a key is configured)"),
             404: problem_response("No such job"),
             422: problem_response("Malformed job id", examples.PROBLEM)}


@router.get("/jobs/{job_id}", response_model=JobOut, responses=RESPONSES)
async def get_job(job_id: str = JobId, eng: Engine = Depends(engine)):
    """Status (queued, running, done, failed, cancelled), progress and, when done, the result."""
    job = await eng.get(job_id)
    if job is None:
        return problem(404, f"no job {job_id}", type_="/problems/not-found", field="job_id")
    return json(job_body(job))


@router.delete("/jobs/{job_id}", response_model=JobOut, responses=RESPONSES)
async def cancel_job(job_id: str = JobId, eng: Engine = Depends(engine)):
    """Cancel a queued or running job (a finished one is returned unchanged)."""
    job = await eng.cancel(job_id)
    if job is None:
        return problem(404, f"no job {job_id}", type_="/problems/not-found", field="job_id")
    return json(job_body(job))
