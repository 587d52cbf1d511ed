"""Small helpers shared by the unlearning tests (read the catalog directly)."""

from __future__ import annotations


def slice_of(store, sample_id: str) -> tuple[str, int]:
    """(compartment, slice) holding a sample, read straight from the catalog."""
    row = store.catalog.db.execute("SELECT compartment, slice FROM slice_members WHERE sample_id = ?", (sample_id,)).fetchone()
    return row[0], row[1]


def pick(store, compartment: str, slice_: int) -> str:
    """A sample id of a compartment's slice."""
    return store.catalog.slices(compartment)[slice_][0]


def active_lineages(store) -> dict[str, set[str]]:
    """Every active artifact's lineage, via ``Catalog.lineage`` (independent of ``artifacts_that_saw``)."""
    return {a["hash"]: set(store.catalog.lineage(a["hash"])) for a in store.catalog.artifacts(None, active=True)}
