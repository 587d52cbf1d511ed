"""Exact unlearning: forget samples and sources, certify it, add sources (CDM §1 + SISA §5).

- ``plan_forget(store, sample_ids, sources)``: what a forget touches and costs;
- ``forget(store, sample_ids=…, sources=…)``: retrain only what saw the data, switch
  atomically, delete, and return a certificate (journaled, crash-safe);
- ``verify_certificate(store, cert_or_path) -> (ok, problems)``;
- ``add_source(store, data, dataset)``: continual learning, a new compartment.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {"add_source": ".continual", "forget": ".forgetting", "load_certificate": ".certificate",
            "plan_forget": ".plan", "verify_certificate": ".certificate"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:  # lazy: checking a certificate needs no torch
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    raise AttributeError(f"module 'silodiff.unlearning' has no attribute {name!r}")


if TYPE_CHECKING:  # for type checkers and the docs: the same names, eagerly
    from .certificate import load_certificate, verify_certificate
    from .continual import add_source
    from .forgetting import forget
    from .plan import plan_forget
