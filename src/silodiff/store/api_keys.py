"""The ``api_keys`` table of the catalog: one row per API key, its hash (never the key) and the sources it may use.

Only storage lives here; what a key may do, and how a key is made, is ``silodiff.service.keys``.
"""

from __future__ import annotations

import json
from typing import Any

from .catalog import Catalog

SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    name TEXT PRIMARY KEY, key_hash TEXT NOT NULL UNIQUE, sources TEXT NOT NULL, admin INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL, revoked_at TEXT);
"""


class ApiKeyTable:
    """Rows of ``api_keys``; every write joins the caller's catalog transaction, if one is open."""

    def __init__(self, catalog: Catalog):
        self.catalog = catalog

    def ensure(self) -> None:
        """Create the table if the catalog has none (an older store, or one that never served)."""
        with self.catalog.transaction() as db:
            db.execute(SCHEMA)  # one statement: executescript would commit the open transaction

    def exists(self, name: str) -> bool:
        return self.catalog.db.execute("SELECT 1 FROM api_keys WHERE name = ?", (name,)).fetchone() is not None

    def add(self, name: str, key_hash: str, sources: list[str], admin: bool, created_at: str) -> None:
        with self.catalog.transaction() as db:
            db.execute("INSERT INTO api_keys(name, key_hash, sources, admin, created_at) VALUES (?,?,?,?,?)",
                       (name, key_hash, json.dumps(sources), int(admin), created_at))

    def rows(self) -> list[dict[str, Any]]:
        """Every key's name, sources, admin flag and dates, by name (never its hash)."""
        rows = self.catalog.db.execute("SELECT name, sources, admin, created_at, revoked_at FROM api_keys ORDER BY name")
        return [_key(r) for r in rows]

    def revoked_at(self, name: str) -> tuple[bool, str | None]:
        """(whether key ``name`` exists, when it was revoked or None)."""
        row = self.catalog.db.execute("SELECT revoked_at FROM api_keys WHERE name = ?", (name,)).fetchone()
        return (False, None) if row is None else (True, row["revoked_at"])

    def revoke(self, name: str, at: str) -> None:
        with self.catalog.transaction() as db:
            db.execute("UPDATE api_keys SET revoked_at = ? WHERE name = ?", (at, name))

    def live(self, key_hash: str) -> dict[str, Any] | None:
        """The name, sources and admin flag of the key with this hash, unless it is revoked."""
        row = self.catalog.db.execute(
            "SELECT name, sources, admin FROM api_keys WHERE key_hash = ? AND revoked_at IS NULL", (key_hash,)
        ).fetchone()
        return _key(row) if row is not None else None


def _key(row) -> dict[str, Any]:
    return dict(row, sources=json.loads(row["sources"]), admin=bool(row["admin"]))
