"""API keys, stored hashed in the catalog (table ``api_keys``: ``silodiff.store.api_keys``), and the rights they carry.

A key is ``sdk_`` + 32 random bytes (URL-safe base64).  Only ``sha256(key)`` is
stored: a key has 256 bits of entropy, so a fast hash is as strong as a slow one
and lookups stay O(1).  The plain key is returned once, by ``create_key``, and is
never written to the catalog, the event log or any log line.

Rights are a set of sources (``*`` = every source); a compartment may be used
by a key when every source in its trained lineage is in the key's sources.
``admin`` keys may also forget data, read the event log and the service's jobs,
each within the same sources: an admin over ``*`` sees everything; a scoped
admin forgets only its sources' data and sees only the events and jobs whose
scope lies within its sources (docs/guides/service-security.md).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Any

from ..errors import SilodiffError
from ..store import Store, check_name
from ..store.api_keys import ApiKeyTable
from ..store.catalog import now

ALL_SOURCES = "*"
PREFIX = "sdk_"


@dataclass(frozen=True)
class Caller:
    """Who is calling: a key's name (never the key) and its rights."""

    name: str
    sources: frozenset[str]
    admin: bool = False

    @property
    def all_sources(self) -> bool:
        """True for a key over every source (``*``), present and future."""
        return ALL_SOURCES in self.sources

    def may_use(self, sources: set[str] | frozenset[str] | list[str]) -> bool:
        """True when every source in ``sources`` is within this key's rights."""
        return self.all_sources or set(sources) <= self.sources

    def may_see(self, scope: list[str] | set[str] | None) -> bool:
        """True when a record (event, job) with this scope may be shown: all-source keys see everything;
        a scoped key sees only records whose scope is known, not empty, and within its sources."""
        return self.all_sources or (bool(scope) and self.may_use(scope))

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "sources": sorted(self.sources), "admin": self.admin}


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def ensure_table(store: Store) -> None:
    ApiKeyTable(store.catalog).ensure()


def create_key(
    store: Store, name: str, sources: list[str] | None, *, admin: bool = False
) -> tuple[dict[str, Any], str]:
    """Create key ``name`` with rights over ``sources`` (``["*"]`` = all).

    Returns (record, the plain key); the key is never stored, so this is the only time it is seen.
    """
    check_name(name, "key name")
    sources = sorted(set(sources or ([ALL_SOURCES] if admin else [])))
    if not sources:
        raise SilodiffError("give the sources this key may use (--sources a,b, or '*' for all)")
    known = set(store.source_names())
    unknown = [s for s in sources if s != ALL_SOURCES and s not in known]
    if unknown:
        raise SilodiffError(
            f"unknown source(s) {', '.join(unknown)}: the store has {', '.join(sorted(known)) or 'none'}"
        )
    key = PREFIX + secrets.token_urlsafe(32)
    keys = ApiKeyTable(store.catalog)
    keys.ensure()
    with store.catalog.transaction():
        if keys.exists(name):
            raise SilodiffError(f"a key named {name!r} exists (revoke it or pick another name)")
        keys.add(name, hash_key(key), sources, admin, now())
        store.catalog.log_event("api-key", {"action": "create", "name": name, "sources": sources, "admin": admin})
    return {"name": name, "sources": sources, "admin": admin}, key


def list_keys(store: Store) -> list[dict[str, Any]]:
    """Every key's name, rights and dates (never the key or its hash)."""
    keys = ApiKeyTable(store.catalog)
    keys.ensure()
    return keys.rows()


def revoke_key(store: Store, name: str) -> dict[str, Any]:
    keys = ApiKeyTable(store.catalog)
    keys.ensure()
    with store.catalog.transaction():
        known, revoked_at = keys.revoked_at(name)
        if not known:
            raise SilodiffError(f"no key named {name!r}")
        if revoked_at is not None:
            raise SilodiffError(f"key {name!r} was already revoked at {revoked_at}")
        keys.revoke(name, now())
        store.catalog.log_event("api-key", {"action": "revoke", "name": name})
    return {"name": name, "revoked": True}


def lookup(store: Store, key: str) -> Caller | None:
    """The live (not revoked) key with this plain text, or None."""
    if not key.startswith(PREFIX):
        return None
    row = ApiKeyTable(store.catalog).live(hash_key(key))
    if row is None:
        return None
    return Caller(row["name"], frozenset(row["sources"]), row["admin"])
