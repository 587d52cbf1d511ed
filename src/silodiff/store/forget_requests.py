"""The ``forget_requests`` table of the catalog: one row per forget request, its plan, phase, state and certificate.

Only storage lives here; the phases and what each means are ``silodiff.unlearning.journal``.
"""

from __future__ import annotations

import json
from typing import Any

from .catalog import Catalog

SCHEMA = """
CREATE TABLE IF NOT EXISTS forget_requests (
    id TEXT PRIMARY KEY, created_at TEXT NOT NULL, phase TEXT NOT NULL, plan TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT '{}', certificate TEXT, finished_at TEXT);
"""


class ForgetRequestTable:
    """Rows of ``forget_requests`` (created on first use); every write joins the caller's catalog transaction."""

    def __init__(self, catalog: Catalog):
        self.catalog = catalog
        self.catalog.db.executescript(SCHEMA)

    def add(self, request_id: str, created_at: str, phase: str, plan: dict[str, Any]) -> None:
        with self.catalog.transaction() as db:
            db.execute("INSERT INTO forget_requests(id, created_at, phase, plan) VALUES (?,?,?,?)",
                       (request_id, created_at, phase, json.dumps(plan)))

    def set_state(self, request_id: str, state: dict[str, Any]) -> None:
        with self.catalog.transaction() as db:
            db.execute("UPDATE forget_requests SET state = ? WHERE id = ?", (json.dumps(state), request_id))

    def set_phase(self, request_id: str, phase: str) -> None:
        with self.catalog.transaction() as db:
            db.execute("UPDATE forget_requests SET phase = ? WHERE id = ?", (phase, request_id))

    def finish(self, request_id: str, phase: str, certificate: dict[str, Any], finished_at: str) -> None:
        with self.catalog.transaction() as db:
            db.execute("UPDATE forget_requests SET phase = ?, certificate = ?, finished_at = ? WHERE id = ?",
                       (phase, json.dumps(certificate), finished_at, request_id))

    def get(self, request_id: str) -> dict[str, Any] | None:
        row = self.catalog.db.execute("SELECT * FROM forget_requests WHERE id = ?", (request_id,)).fetchone()
        return _request(row) if row else None

    def in_phase(self, phase: str, *, negate: bool = False) -> list[dict[str, Any]]:
        """The requests in ``phase`` (``negate``: in any other), oldest first."""
        op = "!=" if negate else "="
        rows = self.catalog.db.execute(f"SELECT * FROM forget_requests WHERE phase {op} ? ORDER BY created_at", (phase,))
        return [_request(r) for r in rows]


def _request(row) -> dict[str, Any]:
    d = dict(row)
    d["plan"], d["state"] = json.loads(d["plan"]), json.loads(d["state"])
    d["certificate"] = json.loads(d["certificate"]) if d["certificate"] else None
    return d
