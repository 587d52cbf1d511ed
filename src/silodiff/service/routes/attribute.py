"""``POST /v1/attribute``: which of the key's compartments each image of a generation request drew on."""

from fastapi import APIRouter

from ..deps import Principal, State
from ..image_requests import run_attribution
from ..schemas import AttributeRequest

router = APIRouter(prefix="/v1", tags=["attribute"])


@router.post("/attribute")
def attribute(req: AttributeRequest, caller: Principal, state: State) -> dict:
    if req.method != "compartments":  # training units: service.unit_attribution
        from ..unit_attribution import run_unit_attribution

        return run_unit_attribution(state, caller, req)
    return run_attribution(state, caller, req)
