"""The catalog: SQLite record of samples, sources, compartments, slices, artifacts,
lineage and an append-only, hash-chained event log.

Lineage is kept compact as immutable, content-addressed *sample sets* (one per
trained slice); an artifact's lineage is the union of the sets it links to.
"Which active artifacts saw sample X" is then a single indexed join.
Every change runs inside one transaction (``with catalog.transaction():``).
All of silodiff's SQL is here and in the table classes beside it (``api_keys``,
``forget_requests``), which keep their tables in the same SQLite file.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..errors import SilodiffError

SCHEMA = """
CREATE TABLE IF NOT EXISTS samples (
    sample_id TEXT PRIMARY KEY, source TEXT NOT NULL, label INTEGER NOT NULL,
    dataset TEXT NOT NULL, added_at TEXT NOT NULL, forgotten_at TEXT);
CREATE INDEX IF NOT EXISTS samples_source ON samples(source);
CREATE TABLE IF NOT EXISTS sources (name TEXT PRIMARY KEY, created_at TEXT NOT NULL, forgotten_at TEXT);
CREATE TABLE IF NOT EXISTS public_sources (name TEXT PRIMARY KEY REFERENCES sources(name), declared_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS compartments (
    name TEXT PRIMARY KEY, n_slices INTEGER NOT NULL, created_at TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'planned');
CREATE TABLE IF NOT EXISTS slice_members (
    compartment TEXT NOT NULL REFERENCES compartments(name), slice INTEGER NOT NULL, sample_id TEXT NOT NULL,
    PRIMARY KEY (compartment, sample_id));
CREATE INDEX IF NOT EXISTS slice_members_sample ON slice_members(sample_id);
CREATE TABLE IF NOT EXISTS sample_sets (set_id TEXT NOT NULL, sample_id TEXT NOT NULL, PRIMARY KEY (set_id, sample_id));
CREATE INDEX IF NOT EXISTS sample_sets_sample ON sample_sets(sample_id);
CREATE TABLE IF NOT EXISTS artifacts (
    hash TEXT PRIMARY KEY, kind TEXT NOT NULL, name TEXT NOT NULL, compartment TEXT, slice INTEGER,
    lineage_hash TEXT NOT NULL, config TEXT NOT NULL, metrics TEXT NOT NULL DEFAULT '{}',
    active INTEGER NOT NULL DEFAULT 1, created_at TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS artifacts_kind ON artifacts(kind, active);
CREATE TABLE IF NOT EXISTS lineage (artifact TEXT NOT NULL REFERENCES artifacts(hash), set_id TEXT NOT NULL,
    PRIMARY KEY (artifact, set_id));
CREATE INDEX IF NOT EXISTS lineage_set ON lineage(set_id);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS chunks (
    chunk TEXT PRIMARY KEY, source TEXT NOT NULL, n INTEGER NOT NULL, bytes INTEGER NOT NULL, sha256 TEXT NOT NULL,
    created_at TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS chunks_source ON chunks(source);
CREATE TABLE IF NOT EXISTS sample_chunks (sample_id TEXT PRIMARY KEY, chunk TEXT NOT NULL, row INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS sample_chunks_chunk ON sample_chunks(chunk);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, ts TEXT NOT NULL, kind TEXT NOT NULL, payload TEXT NOT NULL,
    prev_hash TEXT NOT NULL, hash TEXT NOT NULL);
"""

GENESIS = "0" * 64


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def ids_hash(ids: Iterable[str]) -> str:
    """The name of a set of sample ids: sha256 over the sorted ids."""
    h = hashlib.sha256()
    for sid in sorted(ids):
        h.update(sid.encode())
    return h.hexdigest()


def event_hash(prev_hash: str, ts: str, kind: str, payload: str) -> str:
    return hashlib.sha256("\n".join([prev_hash, ts, kind, payload]).encode()).hexdigest()


class Catalog:
    """A thin, transactional layer over one SQLite file."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._local = threading.local()
        self.db.executescript(SCHEMA)

    @property
    def db(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            self._local.conn = conn
            self._local.depth = 0
        return conn

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE … COMMIT, or ROLLBACK on any error; nests as one transaction."""
        db = self.db
        if self._local.depth:
            self._local.depth += 1
            try:
                yield db
            finally:
                self._local.depth -= 1
            return
        try:
            db.execute("BEGIN IMMEDIATE")
            self._local.depth = 1
            yield db
            db.execute("COMMIT")
        finally:
            self._local.depth = 0
            # an error, or an interrupt at any point above (Ray cancels a task with a KeyboardInterrupt, which
            # may land between BEGIN and the body): never leave this connection holding the write lock
            if db.in_transaction:
                db.execute("ROLLBACK")

    @contextmanager
    def read_snapshot(self) -> Iterator[None]:
        """One consistent read: ``BEGIN DEFERRED`` … ``COMMIT`` on this thread's connection.

        In WAL mode a read transaction sees the database as of its first read and
        holds no lock that a writer or another reader waits for (unlike the
        ``BEGIN IMMEDIATE`` of ``transaction``).  Inside a transaction already open
        on this thread, it reads in that one.
        """
        db = self.db
        if db.in_transaction:
            yield
            return
        db.execute("BEGIN DEFERRED")
        try:
            yield
        finally:
            if db.in_transaction:
                db.execute("COMMIT")  # nothing was written: ends the read

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # -- store-wide properties ---------------------------------------------------
    def meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    @property
    def num_classes(self) -> int | None:
        """The store's class count: fixed by its first ingest and never changed by forgetting.

        A store from before it was recorded gets max(label) + 1 over every sample ever
        registered, forgotten ones included (recorded on first read).
        """
        value = self.meta("num_classes")
        if value is not None:
            return int(value)
        row = self.db.execute("SELECT MAX(label) FROM samples").fetchone()
        if row[0] is None:
            return None
        with self.transaction() as db:
            db.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('num_classes', ?)", (str(int(row[0]) + 1),))
        return int(self.meta("num_classes"))

    def set_num_classes(self, n: int) -> None:
        """Record the class count (once: a store's class count never changes)."""
        with self.transaction() as db:
            current = self.meta("num_classes")
            if current is not None and int(current) != n:
                raise SilodiffError(f"the store's class count is fixed at {current}")
            db.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('num_classes', ?)", (str(int(n)),))
            if current is None:
                self.log_event("num-classes", {"num_classes": int(n)})

    # -- samples and sources -------------------------------------------------
    def add_samples(self, ids: Sequence[str], labels: Sequence[int], sources: Sequence[str], dataset: str) -> int:
        """Register samples (already known ids are skipped); returns how many were new."""
        ts = now()
        with self.transaction() as db:
            before = db.execute("SELECT COUNT(*) FROM samples").fetchone()[0]
            db.executemany(
                "INSERT OR IGNORE INTO samples(sample_id, source, label, dataset, added_at) VALUES (?,?,?,?,?)",
                [(s, src, int(y), dataset, ts) for s, y, src in zip(ids, labels, sources)],
            )
            self._live_sources(sources, ts)
            added = db.execute("SELECT COUNT(*) FROM samples").fetchone()[0] - before
            self.log_event("ingest", {"dataset": dataset, "added": added, "sources": sorted(set(sources))})
        return added

    def _live_sources(self, sources: Iterable[str], ts: str) -> None:
        """Register sources that receive live samples (a source emptied by a forget is live again)."""
        names = sorted(set(sources))
        self.db.executemany("INSERT OR IGNORE INTO sources(name, created_at) VALUES (?,?)", [(s, ts) for s in names])
        self.db.executemany("UPDATE sources SET forgotten_at = NULL WHERE name = ?", [(s,) for s in names])

    def readmit(self, ids: Sequence[str], sources: Sequence[str], dataset: str) -> None:
        """Make forgotten samples live again under ``sources``: new consent, recorded as a ``readmit`` event.

        The event lists the ids, so a certificate issued before it still verifies (``verify_certificate``
        exempts samples re-admitted after it).
        """
        if not ids:
            return
        ts = now()
        with self.transaction() as db:
            db.executemany(
                "UPDATE samples SET forgotten_at = NULL, source = ?, dataset = ?, added_at = ? "
                "WHERE sample_id = ? AND forgotten_at IS NOT NULL",
                [(src, dataset, ts, s) for s, src in zip(ids, sources)],
            )
            self._live_sources(sources, ts)
            self.log_event("readmit", {"dataset": dataset, "n": len(ids), "sample_ids": sorted(ids),
                                       "sources": sorted(set(sources))})

    def forget_samples(self, ids: Sequence[str], sources: Sequence[str], ts: str) -> None:
        """Mark live samples, and sources left empty, forgotten at ``ts`` (inside the caller's transaction)."""
        with self.transaction() as db:
            db.executemany("UPDATE samples SET forgotten_at = ? WHERE sample_id = ? AND forgotten_at IS NULL",
                           [(ts, s) for s in ids])
            db.executemany("UPDATE sources SET forgotten_at = ? WHERE name = ?", [(ts, s) for s in sources])

    def source_samples(self, source: str) -> list[tuple[str, str | None]] | None:
        """(sample_id, forgotten_at) of every sample ever registered under ``source``, forgotten ones included;
        None for a source the catalog has never known."""
        if self.db.execute("SELECT 1 FROM sources WHERE name = ?", (source,)).fetchone() is None:
            return None
        return [(r[0], r[1]) for r in self.db.execute(
            "SELECT sample_id, forgotten_at FROM samples WHERE source = ?", (source,))]

    def sources_of(self, ids: Sequence[str]) -> list[str]:
        """The sources the samples ``ids`` are registered under, sorted."""
        if not ids:
            return []
        rows = self.db.execute(f"SELECT DISTINCT source FROM samples WHERE sample_id IN ({','.join('?' * len(ids))})",
                               tuple(ids))
        return sorted(r[0] for r in rows)

    def sample_rows(self, source: str | None = None) -> list[sqlite3.Row]:
        """Live (not forgotten) samples, optionally of one source, ordered by id."""
        q = "SELECT sample_id, source, label FROM samples WHERE forgotten_at IS NULL"
        args: tuple = ()
        if source is not None:
            q, args = q + " AND source = ?", (source,)
        return self.db.execute(q + " ORDER BY sample_id", args).fetchall()

    # -- chunks: where the pixels of each sample lie (``data/<source>/<chunk>``) ------------------------
    def add_chunk(self, chunk: str, source: str, sample_ids: Sequence[str], nbytes: int, sha256: str) -> None:
        """Register one chunk file and the rows of its samples (inside the caller's transaction)."""
        with self.transaction() as db:
            db.execute("INSERT INTO chunks(chunk, source, n, bytes, sha256, created_at) VALUES (?,?,?,?,?,?)",
                       (chunk, source, len(sample_ids), int(nbytes), sha256, now()))
            db.executemany("INSERT OR REPLACE INTO sample_chunks(sample_id, chunk, row) VALUES (?,?,?)",
                           [(sid, chunk, r) for r, sid in enumerate(sample_ids)])

    def drop_chunk(self, chunk: str) -> None:
        """Unregister a chunk (its rows too)."""
        with self.transaction() as db:
            db.execute("DELETE FROM sample_chunks WHERE chunk = ?", (chunk,))
            db.execute("DELETE FROM chunks WHERE chunk = ?", (chunk,))

    def chunks(self, source: str | None = None) -> list[dict[str, Any]]:
        q, args = "SELECT * FROM chunks", ()
        if source is not None:
            q, args = q + " WHERE source = ?", (source,)
        return [dict(r) for r in self.db.execute(q + " ORDER BY chunk", args)]

    def chunks_holding_dead(self) -> list[str]:
        """Chunks that store a sample which is not live there any more (forgotten, or stored again elsewhere)."""
        rows = self.db.execute(
            "SELECT c.chunk FROM chunks c WHERE c.n > (SELECT COUNT(*) FROM sample_chunks m JOIN samples s "
            "ON s.sample_id = m.sample_id AND s.forgotten_at IS NULL WHERE m.chunk = c.chunk) ORDER BY c.chunk")
        return [r[0] for r in rows]

    def live_in_chunk(self, chunk: str) -> set[str]:
        """The live samples whose pixels the catalog places in ``chunk``."""
        return {r[0] for r in self.db.execute(
            "SELECT m.sample_id FROM sample_chunks m JOIN samples s ON s.sample_id = m.sample_id "
            "AND s.forgotten_at IS NULL WHERE m.chunk = ?", (chunk,))}

    def live_positions(self, ids: Sequence[str] | None = None, source: str | None = None) -> Iterator[tuple]:
        """(position, sample_id, label, chunk, row) of live samples: all (by id), of one source, or exactly
        ``ids`` in that order (chunk None for an id that is not live or has no stored pixels).  Streamed."""
        db = self.db
        if ids is None:
            q = ("SELECT s.sample_id, s.label, m.chunk, m.row FROM samples s LEFT JOIN sample_chunks m "
                 "ON m.sample_id = s.sample_id WHERE s.forgotten_at IS NULL")
            args: tuple = ()
            if source is not None:
                q, args = q + " AND s.source = ?", (source,)
            cur = db.execute(q + " ORDER BY s.sample_id", args)
            cur.row_factory = None
            for k, r in enumerate(cur):
                yield (k, *r)
            return
        db.execute("CREATE TEMP TABLE IF NOT EXISTS wanted_ids (pos INTEGER PRIMARY KEY, sample_id TEXT NOT NULL)")
        db.execute("DELETE FROM wanted_ids")
        db.executemany("INSERT INTO wanted_ids(pos, sample_id) VALUES (?,?)", enumerate(ids))
        cur = db.execute(
            "SELECT w.pos, w.sample_id, s.label, m.chunk, m.row FROM wanted_ids w "
            "LEFT JOIN samples s ON s.sample_id = w.sample_id AND s.forgotten_at IS NULL "
            "LEFT JOIN sample_chunks m ON m.sample_id = s.sample_id ORDER BY w.pos")
        cur.row_factory = None
        try:
            for r in cur:
                yield r if r[2] is not None else (r[0], r[1], None, None, None)
        finally:
            cur.close()
            db.execute("DELETE FROM wanted_ids")

    def sources(self) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "SELECT s.name, COUNT(m.sample_id) AS n FROM sources s LEFT JOIN samples m "
            "ON m.source = s.name AND m.forgotten_at IS NULL WHERE s.forgotten_at IS NULL GROUP BY s.name ORDER BY s.name"
        ).fetchall()
        return [dict(r) for r in rows]

    def declare_public(self, names: Sequence[str]) -> None:
        """Mark sources as usable by every key (a base model trains on these only)."""
        known = {r["name"] for r in self.sources()}
        unknown = sorted(set(names) - known)
        if unknown:
            raise SilodiffError(f"unknown source(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        with self.transaction() as db:
            db.executemany("INSERT OR IGNORE INTO public_sources(name, declared_at) VALUES (?,?)",
                           [(n, now()) for n in sorted(set(names))])
            self.log_event("public-sources", {"names": sorted(set(names))})

    def public_sources(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT name FROM public_sources ORDER BY name")]

    def sample(self, sample_id: str) -> dict[str, Any] | None:
        row = self.db.execute("SELECT * FROM samples WHERE sample_id = ?", (sample_id,)).fetchone()
        return dict(row) if row else None

    # -- compartments and slices --------------------------------------------
    def plan_compartment(self, name: str, slices: Sequence[Sequence[str]]) -> None:
        """(Re)define a compartment as R slices of sample ids."""
        with self.transaction() as db:
            db.execute(
                "INSERT INTO compartments(name, n_slices, created_at, status) VALUES (?,?,?, 'planned') "
                "ON CONFLICT(name) DO UPDATE SET n_slices = excluded.n_slices",
                (name, len(slices), now()),
            )
            db.execute("DELETE FROM slice_members WHERE compartment = ?", (name,))
            db.executemany(
                "INSERT INTO slice_members(compartment, slice, sample_id) VALUES (?,?,?)",
                [(name, r, sid) for r, ids in enumerate(slices) for sid in ids],
            )
            self.log_event("plan", {"compartment": name, "slices": [len(s) for s in slices]})

    def compartments(self, status: str | None = None) -> list[dict[str, Any]]:
        q = (
            "SELECT c.name, c.n_slices, c.status, COUNT(m.sample_id) AS n FROM compartments c "
            "LEFT JOIN slice_members m ON m.compartment = c.name"
        )
        args: tuple = ()
        if status:
            q, args = q + " WHERE c.status = ?", (status,)
        return [dict(r) for r in self.db.execute(q + " GROUP BY c.name ORDER BY c.name", args)]

    def set_compartment_status(self, name: str, status: str) -> None:
        with self.transaction() as db:
            db.execute("UPDATE compartments SET status = ? WHERE name = ?", (status, name))

    def drop_compartment(self, name: str) -> None:
        """A compartment left with no sample: its plan emptied, its status ``dropped``."""
        with self.transaction() as db:
            db.execute("DELETE FROM slice_members WHERE compartment = ?", (name,))
            db.execute("UPDATE compartments SET status = 'dropped' WHERE name = ?", (name,))

    def slices(self, compartment: str) -> list[list[str]]:
        """The current sample ids of each slice, ordered."""
        row = self.db.execute("SELECT n_slices FROM compartments WHERE name = ?", (compartment,)).fetchone()
        if row is None:
            raise SilodiffError(f"unknown compartment {compartment!r}")
        out: list[list[str]] = [[] for _ in range(row[0])]
        for r in self.db.execute(
            "SELECT slice, sample_id FROM slice_members WHERE compartment = ? ORDER BY slice, sample_id", (compartment,)
        ):
            out[r[0]].append(r[1])
        return out

    def planned_sources(self, compartment: str) -> set[str]:
        """The sources of the samples a compartment's plan holds (before it is trained: its lineage is empty)."""
        rows = self.db.execute("SELECT DISTINCT s.source FROM slice_members m JOIN samples s "
                               "ON s.sample_id = m.sample_id WHERE m.compartment = ?", (compartment,))
        return {r[0] for r in rows}

    def label_counts(self, compartment: str) -> dict[int, int]:
        rows = self.db.execute(
            "SELECT s.label, COUNT(*) FROM slice_members m JOIN samples s ON s.sample_id = m.sample_id "
            "WHERE m.compartment = ? GROUP BY s.label",
            (compartment,),
        )
        return {int(y): int(n) for y, n in rows}

    # -- lineage ---------------------------------------------------------------
    def add_sample_set(self, ids: Iterable[str]) -> str:
        ids = sorted(set(ids))
        set_id = ids_hash(ids)
        with self.transaction() as db:
            if db.execute("SELECT 1 FROM sample_sets WHERE set_id = ? LIMIT 1", (set_id,)).fetchone() is None:
                db.executemany("INSERT INTO sample_sets(set_id, sample_id) VALUES (?,?)", [(set_id, s) for s in ids])
        return set_id

    def sample_set(self, set_id: str) -> list[str]:
        """The sample ids of one content-addressed sample set, sorted."""
        rows = self.db.execute("SELECT sample_id FROM sample_sets WHERE set_id = ? ORDER BY sample_id", (set_id,))
        return [r[0] for r in rows]

    def add_artifact(
        self,
        digest: str,
        kind: str,
        name: str,
        config: dict[str, Any],
        lineage_sets: Sequence[str],
        *,
        compartment: str | None = None,
        slice: int | None = None,
        metrics: dict[str, Any] | None = None,
        active: bool = True,
    ) -> None:
        """Record an artifact and its lineage (a list of sample-set ids)."""
        with self.transaction() as db:
            members = db.execute(
                f"SELECT DISTINCT sample_id FROM sample_sets WHERE set_id IN ({','.join('?' * len(lineage_sets))})",
                tuple(lineage_sets),
            ).fetchall() if lineage_sets else []
            db.execute(
                "INSERT OR REPLACE INTO artifacts(hash, kind, name, compartment, slice, lineage_hash, config, metrics, "
                "active, created_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (digest, kind, name, compartment, slice, ids_hash(r[0] for r in members), json.dumps(config),
                 json.dumps(metrics or {}), int(active), now()),
            )
            db.execute("DELETE FROM lineage WHERE artifact = ?", (digest,))
            db.executemany("INSERT INTO lineage(artifact, set_id) VALUES (?,?)", [(digest, s) for s in set(lineage_sets)])
            self.log_event("artifact", {"hash": digest, "kind": kind, "name": name, "slice": slice, "n": len(members)})

    def artifacts(self, kind: str | None = None, *, active: bool | None = True, name: str | None = None) -> list[dict[str, Any]]:
        q, args = "SELECT * FROM artifacts WHERE 1=1", []
        if kind is not None:
            q += " AND kind = ?"
            args.append(kind)
        if active is not None:
            q += " AND active = ?"
            args.append(int(active))
        if name is not None:
            q += " AND name = ?"
            args.append(name)
        rows = self.db.execute(q + " ORDER BY kind, name, slice", args).fetchall()
        return [_artifact_dict(r) for r in rows]

    def artifact(self, digest: str) -> dict[str, Any]:
        rows = self.db.execute("SELECT * FROM artifacts WHERE hash = ? OR hash LIKE ?", (digest, digest + "%")).fetchall()
        if len(rows) != 1:
            raise SilodiffError(f"{'no' if not rows else 'ambiguous'} artifact {digest!r}")
        return _artifact_dict(rows[0])

    def artifact_hashes(self) -> set[str]:
        """The hash of every artifact the catalog records, active or not."""
        return {r[0] for r in self.db.execute("SELECT hash FROM artifacts")}

    def is_active(self, digest: str) -> bool | None:
        """Whether the artifact with exactly this hash is active; None when the catalog has no such artifact."""
        row = self.db.execute("SELECT active FROM artifacts WHERE hash = ?", (digest,)).fetchone()
        return None if row is None else bool(row[0])

    def checkpoints(self, kind: str, name: str, slice: int, lineage_hash: str, *, active: bool) -> list[dict[str, Any]]:
        """The checkpoints (hash, metrics) of ``kind``/``name`` after ``slice`` whose lineage is exactly the sample set
        named ``lineage_hash``, active or staged as asked, newest first."""
        rows = self.db.execute(
            "SELECT hash, metrics FROM artifacts WHERE kind = ? AND name = ? AND slice = ? AND lineage_hash = ? "
            "AND active = ? ORDER BY created_at DESC", (kind, name, slice, lineage_hash, int(active)))
        return [{"hash": r[0], "metrics": json.loads(r[1])} for r in rows]

    def retire_slices(self, kind: str, names: Sequence[str], first: int) -> None:
        """Deactivate the checkpoints of ``kind``/``names`` after slice ``first`` and every later slice."""
        with self.transaction() as db:
            db.executemany("UPDATE artifacts SET active = 0 WHERE kind = ? AND name = ? AND slice >= ?",
                           [(kind, n, first) for n in names])

    def supersede(self, kind: str, name: str, slice: int, digest: str) -> None:
        """Deactivate every checkpoint of ``kind``/``name`` after ``slice`` but ``digest`` (the one replacing them)."""
        with self.transaction() as db:
            db.execute("UPDATE artifacts SET active = 0 WHERE kind = ? AND name = ? AND slice = ? AND hash != ?",
                       (kind, name, slice, digest))

    def set_active(self, digests: Iterable[str], active: bool) -> None:
        with self.transaction() as db:
            db.executemany("UPDATE artifacts SET active = ? WHERE hash = ?", [(int(active), d) for d in digests])

    def lineage(self, digest: str) -> list[str]:
        """Every sample id artifact ``digest`` was trained on."""
        digest = self.artifact(digest)["hash"]
        rows = self.db.execute(
            "SELECT DISTINCT s.sample_id FROM lineage l JOIN sample_sets s ON s.set_id = l.set_id "
            "WHERE l.artifact = ? ORDER BY s.sample_id",
            (digest,),
        )
        return [r[0] for r in rows]

    def lineage_sets(self, digest: str) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT set_id FROM lineage WHERE artifact = ?", (digest,))]

    def lineage_sources(self, digest: str) -> set[str]:
        """Every source of a sample artifact ``digest`` was trained on."""
        rows = self.db.execute(
            "SELECT DISTINCT s.source FROM lineage l JOIN sample_sets m ON m.set_id = l.set_id "
            "JOIN samples s ON s.sample_id = m.sample_id WHERE l.artifact = ?",
            (digest,),
        )
        return {r[0] for r in rows}

    def artifacts_that_saw(self, sample_ids: Sequence[str], *, active: bool | None = True) -> list[dict[str, Any]]:
        """Artifacts with any of ``sample_ids`` in their lineage."""
        if not sample_ids:
            return []
        with self.transaction() as db:
            db.execute("CREATE TEMP TABLE IF NOT EXISTS query_ids (sample_id TEXT PRIMARY KEY)")
            db.execute("DELETE FROM query_ids")
            db.executemany("INSERT OR IGNORE INTO query_ids VALUES (?)", [(s,) for s in sample_ids])
            q = (
                "SELECT DISTINCT a.* FROM query_ids q JOIN sample_sets s ON s.sample_id = q.sample_id "
                "JOIN lineage l ON l.set_id = s.set_id JOIN artifacts a ON a.hash = l.artifact"
            )
            if active is not None:
                q += f" WHERE a.active = {int(active)}"
            rows = db.execute(q + " ORDER BY a.kind, a.name, a.slice").fetchall()
        return [_artifact_dict(r) for r in rows]

    # -- events ----------------------------------------------------------------
    def log_event(self, kind: str, payload: dict[str, Any]) -> str:
        """Append one event to the hash chain; returns its hash."""
        with self.transaction() as db:
            last = db.execute("SELECT hash FROM events ORDER BY seq DESC LIMIT 1").fetchone()
            prev = last[0] if last else GENESIS
            ts, body = now(), json.dumps(payload, sort_keys=True)
            digest = event_hash(prev, ts, kind, body)
            db.execute("INSERT INTO events(ts, kind, payload, prev_hash, hash) VALUES (?,?,?,?,?)", (ts, kind, body, prev, digest))
        return digest

    def events(self, kind: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        q, args = "SELECT * FROM events", []
        if kind:
            q += " WHERE kind = ?"
            args.append(kind)
        q += " ORDER BY seq DESC" + (f" LIMIT {int(limit)}" if limit else "")
        return [dict(r, payload=json.loads(r["payload"])) for r in self.db.execute(q, args)][::-1]

    def newest_events(self, kind: str | None = None) -> Iterator[dict[str, Any]]:
        """Every event (of ``kind``), newest first, read as the caller iterates (stop early to read no more)."""
        q, args = "SELECT * FROM events", []
        if kind:
            q += " WHERE kind = ?"
            args.append(kind)
        rows = self.db.execute(q + " ORDER BY seq DESC", args)
        try:
            for r in rows:
                yield dict(r, payload=json.loads(r["payload"]))
        finally:
            rows.close()

    def event(self, *, seq: int | None = None, digest: str | None = None) -> dict[str, Any] | None:
        """The event with sequence number ``seq`` or hash ``digest`` (its payload parsed), or None."""
        key, value = ("seq", seq) if digest is None else ("hash", digest)
        row = self.db.execute(f"SELECT * FROM events WHERE {key} = ?", (value,)).fetchone()
        return dict(row, payload=json.loads(row["payload"])) if row is not None else None

    def readmitted_after(self, seq: int) -> set[str]:
        """Sample ids re-admitted (new consent, ``readmit`` events) after event ``seq``."""
        out: set[str] = set()
        for r in self.db.execute("SELECT payload FROM events WHERE kind = 'readmit' AND seq > ?", (seq,)):
            out |= set(json.loads(r[0]).get("sample_ids", []))
        return out

    def verify_chain(self) -> tuple[bool, str]:
        """Recompute the event hash chain; returns (ok, head hash or the first broken seq)."""
        prev = GENESIS
        for r in self.db.execute("SELECT * FROM events ORDER BY seq"):
            if r["prev_hash"] != prev or event_hash(prev, r["ts"], r["kind"], r["payload"]) != r["hash"]:
                return False, f"event {r['seq']} does not chain"
            prev = r["hash"]
        return True, prev


def _artifact_dict(row: sqlite3.Row) -> dict[str, Any]:
    d = dict(row)
    d["config"] = json.loads(d["config"])
    d["metrics"] = json.loads(d["metrics"])
    d["active"] = bool(d["active"])
    return d
