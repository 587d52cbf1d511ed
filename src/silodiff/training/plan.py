"""Compartment plans: which samples each compartment holds, split into R slices (SISA).

Slices are deterministic: samples are ordered by ``sha256(seed:sample_id)`` and
dealt round-robin into R slices, so the same data and seed always give the
same slices on any machine.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from ..errors import SilodiffError


def split_slices(ids: Sequence[str], n_slices: int, seed: int = 0) -> list[list[str]]:
    if n_slices < 1:
        raise SilodiffError(f"slices must be ≥ 1, got {n_slices}")
    if len(ids) < n_slices:
        raise SilodiffError(f"cannot split {len(ids)} samples into {n_slices} slices")
    order = sorted(ids, key=lambda s: hashlib.sha256(f"{seed}:{s}".encode()).hexdigest())
    return [sorted(order[r::n_slices]) for r in range(n_slices)]


def derive_seed(seed: int, name: str) -> int:
    """A per-job seed from the run seed and a name (stable across processes)."""
    return int(hashlib.sha256(f"{seed}:{name}".encode()).hexdigest()[:8], 16)


def group_compartments(rows: Sequence, by: str) -> dict[str, list[str]]:
    """Group catalog sample rows into compartments: ``source`` (default) or ``shards:K``."""
    groups: dict[str, list[str]] = {}
    if by == "source":
        for r in rows:
            groups.setdefault(r["source"], []).append(r["sample_id"])
        return groups
    if by.startswith("shards:"):
        try:
            k = int(by.split(":", 1)[1])
        except ValueError:
            k = 0
        if k < 1:
            raise SilodiffError(f"bad plan {by!r}: use shards:K with K ≥ 1")
        for r in rows:
            groups.setdefault(f"shard-{int(r['sample_id'][:8], 16) % k}", []).append(r["sample_id"])
        return groups
    raise SilodiffError(f"unknown compartment plan {by!r}: use source or shards:K")
