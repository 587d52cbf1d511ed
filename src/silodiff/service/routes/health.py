"""``GET /healthz``: liveness, no key needed (and nothing about the store's contents)."""

from fastapi import APIRouter

from ... import __version__
from ..deps import State

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz(state: State) -> dict:
    return {"status": "ok", "version": __version__, "generation": state.active.generation}
