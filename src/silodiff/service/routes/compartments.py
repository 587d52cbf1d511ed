"""``GET /v1/compartments[/{name}]``: only the compartments the key may use (403 for any other name)."""

from fastapi import APIRouter

from ..deps import Principal, State

router = APIRouter(prefix="/v1/compartments", tags=["compartments"])


@router.get("")
def list_compartments(caller: Principal, state: State) -> dict:
    return {"key": caller.name, "compartments": state.active.compartments(caller)}


@router.get("/{name}")
def get_compartment(name: str, caller: Principal, state: State) -> dict:
    return state.active.compartment(caller, name)
