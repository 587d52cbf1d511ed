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

import json
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..store import Store
from ..store.catalog import now
from ..store.locks import file_lock

PHASES = ("planned", "staged", "switched", "deleted", "done")
CRASH_ENV = "SILODIFF_CRASH_AT"

SCHEMA = """
CREATE TABLE IF NOT EXISTS forget_requests (
    id TEXT PRIMARY KEY, created_at TEXT NOT NULL, phase TEXT NOT NULL, plan TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT '{}', certificate TEXT, finished_at TEXT);
"""


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
    """The ``forget_requests`` table of one store's catalog."""

    def __init__(self, store: Store):
        self.catalog = store.catalog
        self.catalog.db.executescript(SCHEMA)

    def open(self, request_id: str, plan: dict[str, Any]) -> None:
        with self.catalog.transaction() as db:
            db.execute("INSERT INTO forget_requests(id, created_at, phase, plan) VALUES (?,?,?,?)",
                       (request_id, now(), "planned", json.dumps(plan)))
            self.catalog.log_event("forget-request", {"request": request_id, "n_samples": len(plan["forget_ids"]),
                                                      "ids_hash": plan["ids_hash"],
                                                      "compartments": [c["name"] for c in plan["compartments"]]})

    def set_phase(self, request_id: str, phase: str, state: dict[str, Any] | None = None) -> None:
        """Advance a request (joins the caller's transaction, if any)."""
        with self.catalog.transaction() as db:
            if state is not None:
                db.execute("UPDATE forget_requests SET state = ? WHERE id = ?", (json.dumps(state), request_id))
            db.execute("UPDATE forget_requests SET phase = ? WHERE id = ?", (phase, request_id))

    def finish(self, request_id: str, certificate: dict[str, Any]) -> None:
        with self.catalog.transaction() as db:
            db.execute("UPDATE forget_requests SET phase = 'done', certificate = ?, finished_at = ? WHERE id = ?",
                       (json.dumps(certificate), now(), request_id))

    def get(self, request_id: str) -> dict[str, Any] | None:
        row = self.catalog.db.execute("SELECT * FROM forget_requests WHERE id = ?", (request_id,)).fetchone()
        return _row(row) if row else None

    def pending(self) -> list[dict[str, Any]]:
        rows = self.catalog.db.execute("SELECT * FROM forget_requests WHERE phase != 'done' ORDER BY created_at")
        return [_row(r) for r in rows]

    def done(self) -> list[dict[str, Any]]:
        rows = self.catalog.db.execute("SELECT * FROM forget_requests WHERE phase = 'done' ORDER BY created_at")
        return [_row(r) for r in rows]


def _row(row) -> dict[str, Any]:
    d = dict(row)
    d["plan"], d["state"] = json.loads(d["plan"]), json.loads(d["state"])
    d["certificate"] = json.loads(d["certificate"]) if d["certificate"] else None
    return d


def certificate_path(store: Store, request_id: str) -> Path:
    return store.root / "certificates" / f"{request_id}.json"
