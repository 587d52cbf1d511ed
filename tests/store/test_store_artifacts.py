"""Store: artifact round trip for every kind, hash verification, atomic writes,
lineage queries, the event hash chain and transactions."""

from __future__ import annotations

import json

import pytest
import torch

from silodiff.errors import SilodiffError
from silodiff.nn import FeatureCNN, NoisyClassifier
from silodiff.store import Store, ids_hash
from silodiff.store.artifacts import CONFIG, WEIGHTS
from silodiff.training import TrainConfig, new_state, train


def _outputs(module: torch.nn.Module, kind: str) -> torch.Tensor:
    """A fixed batch through the module's main entry point."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 1, 8, 8, generator=g)
    t = torch.tensor([0, 10, 500, 999])
    labels = torch.tensor([0, 3, 9, 10])
    with torch.no_grad():
        if kind == "feature-cnn":
            return torch.cat([module(x), module.features(x)], 1)
        if kind == "noisy-classifier":
            return module(x, t, labels)
        return module(x, t, labels)


@pytest.fixture
def modules(tiny_mlp, tiny_unet):
    torch.manual_seed(1)
    return {
        "mlp-denoiser": tiny_mlp,
        "unet-denoiser": tiny_unet,
        "noisy-classifier": NoisyClassifier(image_shape=(1, 8, 8), num_outputs=3, num_classes=10, width=8),
        "feature-cnn": FeatureCNN(image_shape=(1, 8, 8), num_classes=10, width=8, feature_dim=16),
    }


@pytest.mark.parametrize("kind", ["mlp-denoiser", "unet-denoiser", "noisy-classifier", "feature-cnn"])
def test_round_trip_every_model_kind(tmp_store, modules, kind):
    module = modules[kind].eval()
    for p in module.parameters():  # make sure no parameter is left at its init value by accident
        p.data.add_(0.01 * torch.randn_like(p))
    set_id = tmp_store.catalog.add_sample_set(tmp_store.dataset().sample_ids)
    digest = tmp_store.save(module, kind, f"test-{kind}", [set_id])
    loaded = tmp_store.load(digest)
    assert type(loaded) is type(module) and loaded.config == json.loads(json.dumps(module.config))
    assert loaded.artifact_hash == digest
    assert torch.equal(_outputs(loaded, kind), _outputs(module, kind))
    # saving the same module again is idempotent (content-addressed)
    assert tmp_store.save(module, kind, f"test-{kind}", [set_id]) == digest
    assert list((tmp_store.root / "tmp").iterdir()) == []


def test_round_trip_slice_checkpoint_with_train_state(tmp_store, tiny_mlp):
    """A checkpoint holds EMA weights (for sampling) and train/ state (for exact resume)."""
    config = TrainConfig(epochs=1, batch_size=8, seed=3)
    data = tmp_store.dataset()
    state = train(new_state(tiny_mlp, config), data, config, steps=3, progress=False)
    tensors = {k: v.detach().clone() for k, v in state.ema.model.state_dict().items()}
    tensors.update(state.to_tensors())
    digest = tmp_store.artifacts.put(tensors, {"model": tiny_mlp.config, "info": {"kind": "compartment", "slice": 0}})
    tmp_store.catalog.add_artifact(digest, "compartment", "c", tiny_mlp.config, [], compartment="c", slice=0)
    loaded = tmp_store.load(digest)
    assert torch.equal(_outputs(loaded, "mlp"), _outputs(state.ema.model, "mlp"))
    assert not torch.equal(_outputs(loaded, "mlp"), _outputs(state.model, "mlp"))  # EMA, not raw weights
    raw, _ = tmp_store.artifacts.get(digest)
    assert any(k.startswith("train/opt.") for k in raw) and int(raw["train/step"][0]) == 3
    fresh = new_state(type(tiny_mlp)(**{k: v for k, v in tiny_mlp.config.items() if k != "kind"}), config)
    fresh.load_tensors(raw)
    assert fresh.step == 3
    assert torch.equal(_outputs(fresh.model, "mlp"), _outputs(state.model, "mlp"))
    assert torch.equal(fresh.generator.get_state(), state.generator.get_state())


def test_trained_checkpoints_load(trained_store):
    for row in trained_store.catalog.artifacts():
        module = trained_store.load(row["hash"])
        assert module.artifact_hash == row["hash"]
        tensors, config = trained_store.artifacts.get(row["hash"])
        if row["kind"] in ("compartment", "paragon"):
            assert "train/step" in tensors and config["info"]["slice"] == row["slice"]


@pytest.mark.parametrize("target", [WEIGHTS, CONFIG])
def test_tampering_is_detected(tmp_store, tiny_mlp, target):
    digest = tmp_store.save(tiny_mlp, "mlp-denoiser", "m", [])
    path = tmp_store.artifacts.path(digest) / target
    blob = bytearray(path.read_bytes())
    blob[-2] ^= 0x01  # one flipped bit, file still parses
    path.write_bytes(bytes(blob))
    with pytest.raises(SilodiffError, match="failed its hash check"):
        tmp_store.load(digest)


def test_missing_artifact_is_an_error(tmp_store, tiny_mlp):
    digest = tmp_store.save(tiny_mlp, "mlp-denoiser", "m", [])
    tmp_store.artifacts.delete(digest)
    with pytest.raises(SilodiffError, match="missing"):
        tmp_store.load(digest)
    with pytest.raises(SilodiffError, match="no artifact"):
        tmp_store.load("f" * 64)


def test_store_open_errors(tmp_path):
    with pytest.raises(SilodiffError, match="does not exist"):
        Store(tmp_path / "nope", create=False)
    (tmp_path / "file").write_text("x")
    with pytest.raises(SilodiffError, match="not a directory"):
        Store(tmp_path / "file")


# ----------------------------------------------------------------------------- lineage
def test_lineage_queries(tmp_store):
    cat = tmp_store.catalog
    ids = tmp_store.dataset().sample_ids
    a, b = ids[:10], ids[10:20]
    set_a, set_b = cat.add_sample_set(a), cat.add_sample_set(b)
    assert set_a == ids_hash(a) and cat.add_sample_set(reversed(a)) == set_a  # content-addressed
    cat.add_artifact("h1" + "0" * 62, "compartment", "A", {}, [set_a], compartment="A", slice=0)
    cat.add_artifact("h2" + "0" * 62, "compartment", "A", {}, [set_a, set_b], compartment="A", slice=1)
    cat.add_artifact("h3" + "0" * 62, "router", "r", {}, [set_b], active=False)
    assert cat.lineage("h1") == sorted(a)  # prefix lookup
    assert cat.lineage("h2" + "0" * 62) == sorted(a + b)
    assert cat.artifact("h2")["lineage_hash"] == ids_hash(a + b)
    saw_a = {r["hash"][:2] for r in cat.artifacts_that_saw([a[0]])}
    saw_b = {r["hash"][:2] for r in cat.artifacts_that_saw([b[0]])}
    assert saw_a == {"h1", "h2"} and saw_b == {"h2"}  # h3 is inactive
    assert {r["hash"][:2] for r in cat.artifacts_that_saw([b[0]], active=None)} == {"h2", "h3"}
    assert {r["hash"][:2] for r in cat.artifacts_that_saw([b[0]], active=False)} == {"h3"}
    assert cat.artifacts_that_saw([ids[25]]) == [] and cat.artifacts_that_saw([]) == []
    cat.set_active(["h1" + "0" * 62], False)
    assert {r["hash"][:2] for r in cat.artifacts_that_saw([a[0]])} == {"h2"}
    assert [r["hash"][:2] for r in cat.artifacts("compartment")] == ["h2"]
    assert [r["hash"][:2] for r in cat.artifacts("compartment", active=None)] == ["h1", "h2"]
    with pytest.raises(SilodiffError, match="ambiguous"):
        cat.artifact("h")


# ----------------------------------------------------------------------------- events and transactions
def test_event_chain_verifies_and_detects_tampering(tmp_store):
    cat = tmp_store.catalog
    for k in range(3):
        cat.log_event("note", {"k": k})
    ok, head = cat.verify_chain()
    assert ok and head == cat.events()[-1]["hash"]
    events = cat.events()
    assert events[0]["prev_hash"] == "0" * 64
    assert all(e["prev_hash"] == p["hash"] for p, e in zip(events, events[1:]))
    seq = events[1]["seq"]
    cat.db.execute("UPDATE events SET payload = ? WHERE seq = ?", (json.dumps({"k": 99}), seq))
    ok, where = cat.verify_chain()
    assert not ok and where == f"event {seq} does not chain"


def test_deleting_an_event_breaks_the_chain(tmp_store):
    cat = tmp_store.catalog
    cat.log_event("a", {})
    cat.log_event("b", {})
    seq = cat.events()[-2]["seq"]
    cat.db.execute("DELETE FROM events WHERE seq = ?", (seq,))
    assert cat.verify_chain() == (False, f"event {seq + 1} does not chain")


def test_failing_transaction_rolls_back(tmp_store):
    cat = tmp_store.catalog
    n_samples, n_events = len(cat.sample_rows()), len(cat.events())
    with pytest.raises(RuntimeError):
        with cat.transaction():
            cat.add_samples(["new-id"], [1], ["mallory"], "x")  # nests inside the outer transaction
            cat.plan_compartment("mallory", [["new-id"]])
            assert len(cat.sample_rows()) == n_samples + 1  # visible inside
            raise RuntimeError("crash")
    assert len(cat.sample_rows()) == n_samples
    assert "mallory" not in {s["name"] for s in cat.sources()}
    assert cat.compartments() == [] and len(cat.events()) == n_events
    assert cat.verify_chain()[0]
    with cat.transaction():  # the connection is usable again
        cat.log_event("after", {})
    assert cat.events()[-1]["kind"] == "after"


def test_catalog_is_shared_between_store_handles(tmp_store):
    other = Store(tmp_store.root, create=False)
    assert {r["sample_id"] for r in other.catalog.sample_rows()} == set(tmp_store.dataset().sample_ids)


def test_failed_ingest_leaves_no_pixels_on_disk(tmp_path):
    """A bad source name anywhere in the data: nothing registered, no shard file written."""
    from silodiff.data import SampleSet, load_digits
    from silodiff.errors import SilodiffError
    from silodiff.store import Store

    data = load_digits("random:2", limit=20)
    sources = ["good"] * 10 + ["bad name/.."] * (len(data) - 10)
    bad = SampleSet(data.pixels, data.labels, data.sample_ids, sources)
    store = Store(tmp_path / "st")
    with pytest.raises(SilodiffError, match="bad source name"):
        store.ingest(bad, "digits")
    assert store.catalog.sample_rows() == []
    assert list((tmp_path / "st" / "data").iterdir()) == []


def test_damaged_data_shard_is_a_clear_error(tmp_path):
    from silodiff.data import load_digits
    from silodiff.errors import SilodiffError
    from silodiff.store import Store

    store = Store(tmp_path / "st")
    store.ingest(load_digits("single:owner", limit=10), "digits")
    chunk = next((tmp_path / "st" / "data" / "owner").glob("*.safetensors"))
    chunk.write_bytes(b"not a safetensors file")
    with pytest.raises(SilodiffError, match=f"owner/{chunk.name}: damaged data shard"):
        store.dataset()


def test_an_interrupt_right_after_begin_does_not_keep_the_write_lock(tmp_store):
    """Ray cancels a task with a KeyboardInterrupt, which can land between BEGIN IMMEDIATE and the body."""
    import threading

    from silodiff.store.catalog import Catalog

    cat = tmp_store.catalog

    class InterruptOnEnter(threading.local):
        def __setattr__(self, name, value):
            if name == "depth" and value == 1:
                raise KeyboardInterrupt
            super().__setattr__(name, value)

    local = InterruptOnEnter()
    local.conn, local.depth = cat.db, 0
    cat._local = local
    with pytest.raises(KeyboardInterrupt):
        with cat.transaction():
            pass
    assert not local.conn.in_transaction
    other = Catalog(cat.path)  # another connection can write at once (its busy timeout would be 30 s)
    other.db.execute("PRAGMA busy_timeout = 100")
    with other.transaction():
        other.log_event("after", {})
    assert other.events()[-1]["kind"] == "after"
