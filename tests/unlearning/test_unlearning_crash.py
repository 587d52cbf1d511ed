"""Crash safety: a forget killed with SIGKILL at named points, then run again, completes consistently.

The kill is real (``SILODIFF_CRASH_AT`` makes the subprocess SIGKILL itself at
that point).  Right after the kill, every active artifact must have intact
weights and the active set must be wholly old (before the switch) or wholly new
(after); the next ``forget`` call resumes and yields a verifying certificate.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
from unlearning_helpers import pick

from silodiff.store import Store
from silodiff.unlearning import forget, verify_certificate
from silodiff.unlearning.journal import Journal

RUN = "import sys; from silodiff import Store; from silodiff.unlearning import forget; forget(Store(sys.argv[1]), sample_ids=sys.argv[2:])"
# one kill before the switch and one after it by default (each costs a fresh interpreter); the rest with --runslow
POINTS = ["mid-retrain", "mid-delete"] + [pytest.param(p, marks=pytest.mark.slow)
                                          for p in ("after-plan", "before-switch", "after-switch", "before-certificate")]


@pytest.mark.parametrize("point", POINTS)
def test_killed_forget_resumes_to_a_consistent_store(fstore, point):
    ids = [pick(fstore, "source-0", 1), pick(fstore, "source-1", 0)]  # two compartments: a crash can land between them
    old_active = {a["hash"] for a in fstore.catalog.artifacts_that_saw(ids)}
    env = {**os.environ, "SILODIFF_CRASH_AT": point, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", RUN, str(fstore.root), *ids], env=env, capture_output=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]

    store = Store(fstore.root, create=False)  # a fresh connection, as after a restart
    (pending,) = Journal(store).pending()
    # 1. no active artifact points at missing or modified weights
    for a in store.catalog.artifacts(None, active=True):
        store.artifacts.get(a["hash"])
    # 2. the active set is wholly old or wholly new
    saw = {a["hash"] for a in store.catalog.artifacts_that_saw(ids)}
    if pending["phase"] in ("planned", "staged"):
        assert saw == old_active and all(store.catalog.sample(s)["forgotten_at"] is None for s in ids)
    else:
        assert saw == set() and all(store.catalog.sample(s)["forgotten_at"] is not None for s in ids)
    # 3. running it again completes the same request
    cert = forget(store, sample_ids=ids)
    assert cert["request_id"] == pending["id"]
    assert cert["timing"]["attempts"] == (1 if point == "after-plan" else 2)  # killed before its first attempt began
    assert Journal(store).pending() == []
    assert verify_certificate(store, cert) == (True, [])
    assert all(not store.artifacts.path(h).exists() for h in old_active)
