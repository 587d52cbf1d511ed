"""``GET /v1/events`` (admin): the catalog's hash-chained event log, newest last.

An admin over every source (``*``) reads every event.  A scoped admin reads
only the events whose scope lies within its sources (``Caller.may_see``): an
event's scope is its payload's ``scope`` (the service's own events: generate,
attribute, service-job) or else its ``sources`` (ingest, add-source).  Events
with no scope (training, artifacts, plans, forgets, certificates) and API-key
events (every key's name and rights) are for all-source admins only.  ``limit``
counts the events the key may see: the newest ``limit`` of those.

``GET /v1/events/verify`` re-checks the chain (the head hash says nothing of the contents).
"""

from typing import Annotated, Any

from fastapi import APIRouter, Query

from ..deps import Admin, State
from ..keys import Caller

router = APIRouter(prefix="/v1/events", tags=["events"])
PRIVATE = {"api-key"}


def event_scope(kind: str, payload: dict[str, Any]) -> list[str] | None:
    """The sources an event concerns, or None when it names none (or is never shown to a scoped key)."""
    if kind in PRIVATE:
        return None
    scope = payload.get("scope", payload.get("sources"))
    if not isinstance(scope, list) or not all(isinstance(s, str) for s in scope):
        return None
    return scope


def visible_events(state, caller: Caller, kind: str | None, limit: int) -> list[dict[str, Any]]:
    if caller.all_sources:
        return state.store.catalog.events(kind, limit)
    out = []
    events = state.store.catalog.newest_events(kind)
    try:
        for event in events:  # newest first, stop at limit
            if caller.may_see(event_scope(event["kind"], event["payload"])):
                out.append(event)
                if len(out) >= limit:
                    break
    finally:
        events.close()  # the catalog's cursor, now
    return out[::-1]


@router.get("")
def events(caller: Admin, state: State, limit: Annotated[int, Query(ge=1)] = 100, kind: str | None = None) -> dict:
    return {"events": visible_events(state, caller, kind, min(limit, state.settings.events_limit))}


@router.get("/verify")
def verify(caller: Admin, state: State) -> dict:
    ok, head = state.store.catalog.verify_chain()
    return {"ok": ok, "head": head}
