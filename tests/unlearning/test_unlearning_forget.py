"""forget: the invariant (no active artifact saw the ids), what is kept, deleted and retrained, batching, idempotence."""

from __future__ import annotations

import importlib

from unlearning_helpers import active_lineages, pick

from silodiff.composition import compose
from silodiff.store.lineage import final_checkpoint
from silodiff.sampling import generate
from silodiff.unlearning import forget, verify_certificate

forget_module = importlib.import_module("silodiff.unlearning.forgetting")  # the module, not the function


def test_forget_one_sample_keeps_the_invariant(fstore):
    sid = pick(fstore, "source-1", 1)
    slice0 = final_checkpoint(fstore, "compartment", "source-0")["hash"]
    keep = fstore.catalog.artifacts("compartment", name="source-1")[0]  # slice 0 never saw sid
    hit = {a["hash"] for a in fstore.catalog.artifacts_that_saw([sid], active=None)}
    cert = forget(fstore, sample_ids=[sid])
    # 1. no active artifact has the id in its lineage (checked through Catalog.lineage)
    assert all(sid not in ids for ids in active_lineages(fstore).values())
    # 2. untouched: the other compartments and the slice before the first affected one
    assert final_checkpoint(fstore, "compartment", "source-0")["hash"] == slice0
    assert fstore.catalog.artifacts("compartment", name="source-1")[0]["hash"] == keep["hash"]
    # 3. retrained: slice 1 of source-1 and the router; dropped: paragon and FLD net; their files deleted
    assert [(a["kind"], a["slice"]) for a in cert["new_artifacts"]] == [("compartment", 1), ("router", None)]
    assert fstore.catalog.artifacts("feature-net") == []
    assert all(not fstore.artifacts.path(h).exists() for h in hit)
    # 4. the stored pixels are gone, the sample is forgotten, the composition still samples
    assert sid not in fstore.dataset().sample_ids
    assert fstore.catalog.sample(sid)["forgotten_at"] is not None
    images, _ = generate(compose(fstore), 2, steps=2, seed=0)
    assert images.shape == (2, 1, 8, 8)
    assert verify_certificate(fstore, cert) == (True, [])


def test_forgetting_again_is_a_noop(fstore):
    sid = pick(fstore, "source-0", 1)
    forget(fstore, sample_ids=[sid])
    n_events = len(fstore.catalog.events())
    again = forget(fstore, sample_ids=[sid])
    assert again["status"] == "noop" and "already forgotten" in again["message"]
    assert len(fstore.catalog.events()) == n_events


def test_batched_request_retrains_each_compartment_once(fstore, monkeypatch):
    ids = [pick(fstore, "source-0", 1), pick(fstore, "source-0", 0), pick(fstore, "source-2", 1)]
    calls = []
    real = forget_module.run_jobs
    monkeypatch.setattr(forget_module, "run_jobs", lambda jobs, backend: calls.extend(j.name for j in jobs) or real(jobs, backend))
    cert = forget(fstore, sample_ids=ids)
    assert sorted(calls) == ["source-0", "source-2"]
    first = {c["name"]: c["first_slice"] for c in cert["compartments"]}
    assert first == {"source-0": 0, "source-2": 1}  # the earliest slice hit in each
    assert all(not set(ids) & lineage for lineage in active_lineages(fstore).values())
    assert verify_certificate(fstore, cert)[0]


def test_forget_a_source_drops_its_compartment(fstore):
    members = [r["sample_id"] for r in fstore.catalog.sample_rows("source-2")]
    old = {a["hash"] for a in fstore.catalog.artifacts("compartment", name="source-2")}
    cert = forget(fstore, sources=["source-2"])
    status = {c["name"]: c["status"] for c in fstore.catalog.compartments()}
    assert status == {"source-0": "trained", "source-1": "trained", "source-2": "dropped"}
    assert fstore.catalog.artifacts("compartment", name="source-2") == []
    assert all(not fstore.artifacts.path(h).exists() for h in old)
    assert "source-2" not in fstore.source_names()
    router = fstore.load(fstore.active("router")[0]["hash"])
    assert router.info["compartments"] == ["source-0", "source-1"] and router.num_outputs == 2
    assert all(not set(members) & lineage for lineage in active_lineages(fstore).values())
    assert verify_certificate(fstore, cert)[0]


def test_certificate_fails_after_tampering(fstore, tmp_path):
    import json

    cert = forget(fstore, sample_ids=[pick(fstore, "source-1", 0)])
    assert verify_certificate(fstore, cert) == (True, [])
    db = fstore.catalog.db
    # 1. the catalog: an old artifact re-activated
    old = cert["old_artifacts"][0]["hash"]
    db.execute("UPDATE artifacts SET active = 1 WHERE hash = ?", (old,))
    ok, problems = verify_certificate(fstore, cert)
    assert not ok and any("active" in p for p in problems)
    db.execute("UPDATE artifacts SET active = 0 WHERE hash = ?", (old,))
    assert verify_certificate(fstore, cert)[0]
    # 2. the event log: one earlier event's payload rewritten
    seq, payload = db.execute("SELECT seq, payload FROM events WHERE kind = 'ingest' ORDER BY seq LIMIT 1").fetchone()
    db.execute("UPDATE events SET payload = ? WHERE seq = ?", (payload.replace("digits", "other"), seq))
    ok, problems = verify_certificate(fstore, cert)
    assert not ok and any("chain" in p for p in problems)
    db.execute("UPDATE events SET payload = ? WHERE seq = ?", (payload, seq))
    # 3. a weight file of a new artifact
    weights = fstore.artifacts.path(cert["new_artifacts"][0]["hash"]) / "model.safetensors"
    blob = weights.read_bytes()
    weights.write_bytes(blob[:-1] + bytes([blob[-1] ^ 1]))
    ok, problems = verify_certificate(fstore, cert)
    assert not ok and any("hash check" in p for p in problems)
    weights.write_bytes(blob)
    # 4. the certificate itself (a forgotten id removed from it)
    edited = json.loads(json.dumps(cert))
    edited["forgotten"]["sample_ids"] = edited["forgotten"]["sample_ids"][1:] or ["x"]
    assert not verify_certificate(fstore, edited)[0]
    assert verify_certificate(fstore, cert) == (True, [])


def test_forget_retrains_with_the_training_hooks_it_was_trained_with(tmp_path):
    """A compartment trained with AGC is retrained with AGC, not silently without it."""
    from silodiff.data import load_digits
    from silodiff.defences.agc import agc_hooks
    from silodiff.jobs import plan_compartments, train_compartments
    from silodiff.nn import MLPDenoiser
    from silodiff.store import Store
    from silodiff.training import TrainConfig
    from silodiff.unlearning import forget

    store = Store(tmp_path / "st")
    store.ingest(load_digits("random:2", limit=60), "digits")
    plan_compartments(store, by="source", slices=2)
    model = MLPDenoiser(image_shape=(1, 8, 8), num_classes=10, hidden=16, depth=1).config
    train_compartments(store, config=TrainConfig(epochs=1, batch_size=16), model=model, hooks=agc_hooks(), progress=False)
    victim = store.catalog.slices("source-0")[1][0]
    forget(store, sample_ids=[victim])
    for row in store.catalog.artifacts("compartment", name="source-0"):
        _, config = store.artifacts.get(row["hash"])
        assert config["info"]["hook_specs"] == agc_hooks(), row["slice"]
