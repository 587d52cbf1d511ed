"""Deterministic assignment of samples to sources (owners) for built-in data sets.

- ``by-class``: source ``class-<label>`` (compartments that hold disjoint classes).
- ``random:K``: source ``source-<k>`` with ``k`` from the sample id's hash, so the
  assignment is stable across runs, machines and subsets.
- ``single`` / ``single:NAME``: every sample in one source (default ``public``).
"""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import SilodiffError


def assign_sources(scheme: str, labels: Sequence[int], ids: Sequence[str]) -> list[str]:
    if scheme == "by-class":
        return [f"class-{int(y)}" for y in labels]
    if scheme.startswith("random:"):
        try:
            k = int(scheme.split(":", 1)[1])
        except ValueError:
            k = 0
        if k < 1:
            raise SilodiffError(f"bad source scheme {scheme!r}: use random:K with K ≥ 1")
        return [f"source-{int(sid[:8], 16) % k}" for sid in ids]
    if scheme == "single" or scheme.startswith("single:"):
        name = scheme.split(":", 1)[1] if ":" in scheme else "public"
        return [name] * len(labels)
    raise SilodiffError(f"unknown source scheme {scheme!r}: use by-class, random:K or single[:NAME]")
