"""``POST /v1/generate``: images from the composition of the key's compartments, with per-image weights."""

from fastapi import APIRouter

from ..deps import Principal, State
from ..image_requests import run_generation
from ..schemas import GenerateRequest, GenerateResponse

router = APIRouter(prefix="/v1", tags=["generate"])


@router.post("/generate", response_model=GenerateResponse)
def generate(req: GenerateRequest, caller: Principal, state: State) -> dict:
    return run_generation(state, caller, req)
