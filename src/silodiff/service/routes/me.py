"""``GET /v1/me``: the calling key's name and rights (never the key)."""

from fastapi import APIRouter

from ..deps import Principal

router = APIRouter(prefix="/v1", tags=["keys"])


@router.get("/me")
def me(caller: Principal) -> dict:
    return caller.to_dict()
