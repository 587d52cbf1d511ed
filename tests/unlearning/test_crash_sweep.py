"""Crash-safety sweep (slow, ``--runslow``): SIGKILL at random points of ingest, training and forget.

One script ingests 40 digits from two sources, plans two compartments of two
slices, trains them and forgets two samples; run again, it completes whatever a
kill interrupted (every step resumes or is a no-op).  The reference run is never
killed; it times each phase (ingest, train, forget).  Sweep run k is SIGKILLed at
a random moment (seeded: ``SILODIFF_SWEEP_SEED``) of phase k mod 3, measured from
the moment the run reports that phase, then rerun, and then every invariant is
checked on the raw files, before anything reopens the store:

1. nothing under ``tmp/``; every folder under ``artifacts/`` is an artifact of the catalog;
2. no file under the store holds the bytes of a forgotten image;
3. every certificate verifies;
4. active artifact hashes, live sample ids and data shard bytes equal the reference run's.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from silodiff.data import load_digits

SCRIPT = """
import sys
from silodiff import Store
from silodiff.data import load_digits
from silodiff.jobs import plan_compartments, train_compartments
from silodiff.nn import MLPDenoiser
from silodiff.training import TrainConfig
from silodiff.unlearning import forget
data = load_digits("random:2", limit=40)
print("phase ingest", flush=True)
store = Store(sys.argv[1])
store.ingest(data, "digits")
print("phase train", flush=True)
if not store.catalog.compartments():
    plan_compartments(store, by="source", slices=2)
model = MLPDenoiser(image_shape=(1, 8, 8), num_classes=10, hidden=16, depth=1).config
train_compartments(store, config=TrainConfig(epochs=6, batch_size=8), model=model, progress=False)
print("phase forget", flush=True)
forget(store, sample_ids=sys.argv[2:])
print("phase done", flush=True)
"""
KILLS = int(os.environ.get("SILODIFF_SWEEP_KILLS", "9"))  # each kill costs two interpreters (~1 min on a busy CPU)


PHASES = ("ingest", "train", "forget")


def _run(script: Path, root: Path, ids: list[str], kill: tuple[str, float] | None = None) -> tuple[int, dict[str, float]]:
    """Run the script; with ``kill=(phase, s)``, SIGKILL it s seconds after it reports that phase.

    Returns the exit code and the time each phase began (seconds since the first)."""
    proc = subprocess.Popen([sys.executable, str(script), str(root), *ids], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, text=True)
    marks: dict[str, float] = {}
    for line in proc.stdout:
        if line.startswith("phase "):
            marks[line.split()[1]] = time.monotonic()
            if kill is not None and line.split()[1] == kill[0]:
                try:
                    proc.wait(timeout=kill[1])
                except subprocess.TimeoutExpired:
                    proc.send_signal(signal.SIGKILL)
                break
    _, err = proc.communicate(timeout=600)
    if kill is None:
        assert proc.returncode == 0, err[-3000:]
    t0 = min(marks.values(), default=0.0)
    return proc.returncode, {k: v - t0 for k, v in marks.items()}


def _snapshot(root: Path) -> dict:
    db = sqlite3.connect(root / "catalog.sqlite")
    try:
        active = sorted(r[0] for r in db.execute("SELECT hash FROM artifacts WHERE active = 1"))
        live = sorted(r[0] for r in db.execute("SELECT sample_id FROM samples WHERE forgotten_at IS NULL"))
        registered = {r[0] for r in db.execute("SELECT hash FROM artifacts")}
    finally:
        db.close()
    shards = {str(p.relative_to(root / "data")): hashlib.sha256(p.read_bytes()).hexdigest()
              for p in sorted((root / "data").rglob("*.safetensors"))}
    return {"active": active, "live": live, "shards": shards, "registered": registered}


@pytest.mark.slow
def test_random_kills_then_rerun_keep_every_invariant(tmp_path):
    from silodiff.store import Store
    from silodiff.unlearning import verify_certificate

    data = load_digits("random:2", limit=40)
    patterns = [bytes(p.numpy().tobytes()) for p in data.pixels]
    # two samples of distinct sources whose pixels no other sample shares
    unique = [i for i, b in enumerate(patterns) if patterns.count(b) == 1]
    first = next(i for i in unique if data.sources[i] == "source-0")
    second = next(i for i in unique if data.sources[i] == "source-1")
    ids, forgotten = [data.sample_ids[first], data.sample_ids[second]], [patterns[first], patterns[second]]
    script = tmp_path / "scenario.py"
    script.write_text(SCRIPT)

    _, marks = _run(script, tmp_path / "reference", ids)
    spans = {p: marks[n] - marks[p] for p, n in zip(PHASES, (*PHASES[1:], "done"))}
    reference = _snapshot(tmp_path / "reference")
    assert not set(ids) & set(reference["live"])
    rng = random.Random(int(os.environ.get("SILODIFF_SWEEP_SEED", "0")))
    killed = 0
    for k in range(KILLS):
        root = tmp_path / f"run-{k}"
        phase = PHASES[k % len(PHASES)]
        code, _ = _run(script, root, ids, kill=(phase, rng.uniform(0, spans[phase])))
        killed += code == -signal.SIGKILL
        _run(script, root, ids)  # the rerun completes
        # 1. no leftovers: tmp/ empty, artifacts/ only what the catalog records
        snap = _snapshot(root)
        assert list((root / "tmp").iterdir()) == [], f"run {k}: tmp/ holds leftovers"
        assert {p.name for p in (root / "artifacts").iterdir()} <= snap["registered"], f"run {k}: unregistered artifacts"
        # 2. no bytes of a forgotten image anywhere under the store
        for path in (p for p in root.rglob("*") if p.is_file()):
            blob = path.read_bytes()
            assert not any(b in blob for b in forgotten), f"run {k}: {path.relative_to(root)} holds a forgotten image"
        # 4. the same store as an unkilled run
        assert {key: snap[key] for key in ("active", "live", "shards")} == \
            {key: reference[key] for key in ("active", "live", "shards")}, f"run {k}: differs from the unkilled run"
        # 3. every certificate verifies
        store = Store(root, create=False)
        certificates = sorted((root / "certificates").glob("*.json"))
        assert len(certificates) == 1
        for cert in certificates:
            assert verify_certificate(store, cert) == (True, []), f"run {k}"
        store.catalog.close()
    assert killed >= KILLS // 2, f"only {killed} of {KILLS} runs were killed before they finished"
    print(f"{killed} of {KILLS} runs killed; phase spans (s): {spans}")
