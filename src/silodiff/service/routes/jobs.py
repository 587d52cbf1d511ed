"""``GET /v1/jobs[/{id}]`` (admin): service jobs and their results (a forget's certificate).

A scoped admin sees only the jobs whose scope lies within its sources; any other id is a 404, like an unknown one.
"""

from fastapi import APIRouter

from ..deps import Admin, State
from ..schemas import JobOut

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


@router.get("", response_model=list[JobOut])
def list_jobs(caller: Admin, state: State) -> list[dict]:
    return [j.to_dict() for j in state.jobs.list(caller)]


@router.get("/{job_id}", response_model=JobOut)
def get_job(job_id: str, caller: Admin, state: State) -> dict:
    return state.jobs.get(job_id, caller).to_dict()
