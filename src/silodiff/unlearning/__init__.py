"""Exact unlearning: forget samples and sources, certify it, add sources (CDM §1 + SISA §5).

- ``plan_forget(store, sample_ids, sources)``: what a forget touches and costs;
- ``forget(store, sample_ids=…, sources=…)``: retrain only what saw the data, switch
  atomically, delete, and return a certificate (journaled, crash-safe);
- ``verify_certificate(store, cert_or_path) -> (ok, problems)``;
- ``add_source(store, data, dataset)``: continual learning, a new compartment.
"""

from .certificate import load_certificate, verify_certificate
from .continual import add_source
from .forget import forget
from .plan import plan_forget

__all__ = ["add_source", "forget", "load_certificate", "plan_forget", "verify_certificate"]
