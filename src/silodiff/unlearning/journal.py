"""The forget journal: one catalog row per forget request, recording its phase.

A forget is a resumable, journaled operation (write-ahead, like a database
recovery log).  Its phases, in order:

    planned  → the plan is recorded; nothing else has changed
    staged   → new checkpoints (and router) are trained and registered *inactive*
    switched → one transaction made them active, the old ones inactive, the samples forgotten
    deleted  → the old weight files and the stored pixels of the forgotten samples are gone
    done     → the certificate is written

A process killed in any phase leaves the active set either wholly old (before
``switched``) or wholly new (after), never a mix, and never an active artifact
whose files are missing.  The next ``forget`` call resumes the pending request
from its phase.  ``SILODIFF_CRASH_AT=<point>`` kills the process with SIGKILL at
a named point, so tests can check exactly that.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..store import Store
from ..store.catalog import now
from ..store.forget_requests import ForgetRequestTable
from ..store.locks import file_lock

PHASES = ("planned", "staged", "switched", "deleted", "done")
CRASH_ENV = "SILODIFF_CRASH_AT"

def crash_point(name: str) -> None:
    """Die here (SIGKILL, no clean-up) when ``SILODIFF_CRASH_AT`` names this point (crash-safety tests)."""
    if os.environ.get(CRASH_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


@contextmanager
def store_lock(store: Store) -> Iterator[None]:
    """One forget / add-source at a time per store (an OS file lock, released even by SIGKILL; re-entrant)."""
    with file_lock(store.root / "unlearning.lock"):
        yield


class Journal:
    """The forget requests of one store's catalog (``store.forget_requests``), moved through ``PHASES``."""

    def __init__(self, store: Store):
        self.catalog = store.catalog
        self.requests = ForgetRequestTable(store.catalog)

    def open(self, request_id: str, plan: dict[str, Any]) -> None:
        """Record a planned request and its ``forget-request`` event, in one transaction."""
        with self.catalog.transaction():
            self.requests.add(request_id, now(), PHASES[0], plan)
            self.catalog.log_event("forget-request", {"request": request_id, "n_samples": len(plan["forget_ids"]),
                                                      "ids_hash": plan["ids_hash"],
                                                      "compartments": [c["name"] for c in plan["compartments"]]})

    def set_phase(self, request_id: str, phase: str, state: dict[str, Any] | None = None) -> None:
        """Advance a request (joins the caller's transaction, if any)."""
        with self.catalog.transaction():
            if state is not None:
                self.requests.set_state(request_id, state)
            self.requests.set_phase(request_id, phase)

    def finish(self, request_id: str, certificate: dict[str, Any]) -> None:
        self.requests.finish(request_id, PHASES[-1], certificate, now())

    def get(self, request_id: str) -> dict[str, Any] | None:
        return self.requests.get(request_id)

    def pending(self) -> list[dict[str, Any]]:
        return self.requests.in_phase(PHASES[-1], negate=True)

    def done(self) -> list[dict[str, Any]]:
        return self.requests.in_phase(PHASES[-1])


def certificate_path(store: Store, request_id: str) -> Path:
    return store.root / "certificates" / f"{request_id}.json"
