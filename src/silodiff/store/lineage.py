"""Lineage questions about a store, answered in one place: what is active, what saw what, what a model is built on,
and what shape and classes the store's data has.

Every package above the store asks these here instead of reading the catalog
its own way:

- ``final_checkpoint``, ``trained_compartments``: the active checkpoint after a
  compartment's (or the paragon's, an ensemble member's) last slice;
- ``seen_by``: the samples any of some artifacts was trained on;
- ``base_checkpoints``, ``active_base``, ``base_ref``, ``base_of``, ``built_on``: the shared base model, and
  which checkpoints start from it;
- ``own_ids``, ``own_sets``: a checkpoint's effective lineage less its base's (what
  only that compartment saw);
- ``num_classes``, ``store_image_shape``, ``sample_label_counts``, ``member_label_counts``:
  the store's data, as models and routers are built for it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import SilodiffError
from .external import artifact_info

if TYPE_CHECKING:
    from .store import Store

BASE = "base"  # the kind and the name of the shared base model's artifacts


@dataclass(frozen=True)
class BaseRef:
    """The base checkpoint a model starts from: its hash, its lineage sets (part of the model's effective lineage)
    and its sample ids (resume matching, replay)."""

    hash: str
    sets: tuple[str, ...] = ()
    ids: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BaseRef:
        """From its JSON form (a journaled forget plan; ``active_base``'s extra keys are ignored)."""
        return cls(d["hash"], tuple(d["sets"]), tuple(d["ids"]))

    def to_dict(self) -> dict[str, Any]:
        return {"hash": self.hash, "sets": list(self.sets), "ids": list(self.ids)}


# -- what is active -----------------------------------------------------------------------------------------------
def trained_compartments(store: Store) -> list[str]:
    """The names of the compartments whose training finished (status ``trained``)."""
    return [c["name"] for c in store.catalog.compartments("trained")]


def final_checkpoint(store: Store, kind: str, name: str) -> dict[str, Any]:
    """The active checkpoint after the last slice of a compartment (or the paragon, an ensemble member)."""
    rows = store.catalog.artifacts(kind, name=name)
    if not rows:
        what = "the paragon" if kind == "paragon" else f"compartment {name!r}"
        raise SilodiffError(f"{what} has no trained model in {store.root}")
    n_slices = max(r["slice"] or 0 for r in rows) + 1
    if kind == "compartment":
        n_slices = next(c["n_slices"] for c in store.catalog.compartments() if c["name"] == name)
    final = [r for r in rows if r["slice"] == n_slices - 1]
    if not final:
        raise SilodiffError(f"{name!r} is not fully trained (no checkpoint after its last slice)")
    return final[-1]


def seen_by(store: Store, digests: Iterable[str]) -> list[str]:
    """Every sample id any of the artifacts ``digests`` was trained on (the union of their lineages), sorted."""
    return sorted({sid for digest in digests for sid in store.catalog.lineage(digest)})


# -- the base, and what is built on it ----------------------------------------------------------------------------
def base_checkpoints(store: Store) -> list[dict[str, Any]]:
    """The active base's checkpoints, in slice order ([] when the store has no base)."""
    return sorted(store.catalog.artifacts(BASE, name=BASE), key=lambda a: a["slice"] or 0)


def active_base(store: Store) -> dict[str, Any]:
    """The active base's final checkpoint: hash, model config, lineage sets and ids."""
    rows = base_checkpoints(store)
    if not rows:
        raise SilodiffError("no base model: train one first (`silodiff train base --sources public`)")
    return {"model": rows[-1]["config"], **base_ref(store, rows[-1]["hash"]).to_dict()}


def base_ref(store: Store, digest: str) -> BaseRef:
    """What a job built on base checkpoint ``digest`` carries (``SliceJob.base``)."""
    return BaseRef(digest, tuple(sorted(store.catalog.lineage_sets(digest))), tuple(store.catalog.lineage(digest)))


def base_of(store: Store, digest: str) -> str | None:
    """The base artifact a checkpoint was built on (``info["base"]`` in its config.json), or None."""
    return artifact_info(store, digest).get("base")


def built_on(store: Store, base_hashes: Sequence[str]) -> set[str]:
    """Compartments whose active checkpoints start from one of ``base_hashes``."""
    bases = set(base_hashes)
    return {a["name"] for a in store.catalog.artifacts("compartment") if base_of(store, a["hash"]) in bases}


# -- what a checkpoint saw on its own -----------------------------------------------------------------------------
def own_ids(store: Store, digest: str) -> list[str]:
    """A checkpoint's own sample ids: its effective lineage less its base's (what only this compartment saw)."""
    lineage = store.catalog.lineage(digest)
    base = base_of(store, digest)
    if base is None:
        return lineage
    inherited = set(store.catalog.lineage(base))
    return [s for s in lineage if s not in inherited]


def own_sets(store: Store, digest: str) -> set[str]:
    """The sample sets a checkpoint links, less its base's (a router trains on these ids only)."""
    base = base_of(store, digest)
    inherited = set(store.catalog.lineage_sets(base)) if base else set()
    return set(store.catalog.lineage_sets(digest)) - inherited


# -- the store's data -----------------------------------------------------------------------------------------------
def num_classes(store: Store) -> int:
    """The store's fixed class count (recorded at its first ingest; forgetting never changes it), 0 when empty."""
    return store.num_classes or 0


def store_image_shape(store: Store) -> tuple[int, int, int]:
    """(channels, height, width) of the store's images."""
    rows = store.catalog.sample_rows()
    if not rows:
        raise SilodiffError("the store holds no samples: ingest data first")
    return store.dataset([rows[0]["sample_id"]]).image_shape


def sample_label_counts(store: Store, ids: Sequence[str]) -> dict[int, int]:
    """label → how many of the samples ``ids`` carry it."""
    labels = store.dataset(list(ids)).labels
    return {int(y): int(n) for y, n in zip(*labels.unique(return_counts=True))}


def member_label_counts(store: Store, name: str) -> dict[int, int]:
    """label → count over a composition member's data: a compartment's planned samples, or the active base's."""
    return sample_label_counts(store, active_base(store)["ids"]) if name == BASE else store.catalog.label_counts(name)
