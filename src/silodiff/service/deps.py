"""Access rights as typed dependencies (FastAPI): ``Principal`` for any live key, ``Admin`` for admin keys.

The key arrives as ``X-API-Key: sdk_…`` or ``Authorization: Bearer sdk_…``.
Missing, unknown or revoked → 401; a key over its rate → 429; a non-admin on an
admin route → 403.  Rights over compartments are checked where a compartment is
named (``ActiveSet``), always against the caller resolved here.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Request

from ..store import Store
from .active import ActiveSet
from .errors import Forbidden, RateLimited
from .jobs import JobRunner
from .keys import Caller, lookup
from .settings import Settings


class RateLimiter:
    """A sliding one-minute window of request times per key name."""

    def __init__(self, per_minute: int):
        self.per_minute = per_minute
        self._hits: dict[str, deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    def hit(self, name: str) -> None:
        if self.per_minute <= 0:
            return
        now = time.monotonic()
        with self._lock:
            hits = self._hits[name]
            while hits and hits[0] <= now - 60.0:
                hits.popleft()
            if len(hits) >= self.per_minute:
                raise RateLimited(self.per_minute, 60.0 - (now - hits[0]))
            hits.append(now)


@dataclass
class ServiceState:
    """Everything a route needs, held on ``app.state.silodiff``."""

    settings: Settings
    store: Store
    active: ActiveSet
    jobs: JobRunner
    limiter: RateLimiter
    slots: threading.BoundedSemaphore  # ``max_concurrent`` requests sample at once (compute, not a lock)


def get_state(request: Request) -> ServiceState:
    return request.app.state.silodiff


State = Annotated[ServiceState, Depends(get_state)]


def get_principal(
    request: Request,
    state: State,
    x_api_key: Annotated[str | None, Header(description="The API key (or send 'Authorization: Bearer <key>').")] = None,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> Caller:
    key = x_api_key
    if key is None and authorization and authorization.lower().startswith("bearer "):
        key = authorization[7:].strip()
    if not key:
        raise HTTPException(
            401,
            "missing API key: send 'X-API-Key: <key>' or 'Authorization: Bearer <key>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    caller = lookup(state.store, key)
    if caller is None:
        raise HTTPException(401, "invalid or revoked API key", headers={"WWW-Authenticate": "Bearer"})
    state.limiter.hit(caller.name)
    request.state.caller = caller.name  # for the access log: the key's name, never the key
    return caller


Principal = Annotated[Caller, Depends(get_principal)]


def require_admin(caller: Principal) -> Caller:
    if not caller.admin:
        raise Forbidden(f"key {caller.name!r} is not an admin key")
    return caller


Admin = Annotated[Caller, Depends(require_admin)]
