"""``GET /v1/events`` (admin): the catalog's hash-chained event log, newest last.

``GET /v1/events/verify`` re-checks the chain.
"""

from typing import Annotated

from fastapi import APIRouter, Query

from ..deps import Admin, State

router = APIRouter(prefix="/v1/events", tags=["events"])


@router.get("")
def events(caller: Admin, state: State, limit: Annotated[int, Query(ge=1)] = 100, kind: str | None = None) -> dict:
    rows = state.store.catalog.events(kind, min(limit, state.settings.events_limit))
    return {"events": rows}


@router.get("/verify")
def verify(caller: Admin, state: State) -> dict:
    ok, head = state.store.catalog.verify_chain()
    return {"ok": ok, "head": head}
