"""A heads router is served head by head: a key with rights on some compartments gets a learned router built
from their heads and the public reference alone, over real HTTP; the other heads are never read."""

from __future__ import annotations

import httpx
import pytest

from silodiff.store import Store
from silodiff.store.artifacts import ArtifactStore

TINY = {"kind": "mlp-denoiser", "image_shape": [1, 8, 8], "num_classes": 10, "hidden": 32, "depth": 1}


@pytest.fixture(scope="module")
def heads_store(tmp_path_factory) -> tuple[Store, str]:
    from silodiff.composition import train_router
    from silodiff.data import load_digits
    from silodiff.jobs import plan_compartments, train_base, train_compartments
    from silodiff.training import TrainConfig

    store = Store(tmp_path_factory.mktemp("heads") / "store")
    store.ingest(load_digits("random:4", limit=160), "digits")
    config = TrainConfig(epochs=1, batch_size=32)
    train_base(store, ["source-0"], config=config, model=TINY, progress=False, public=True)
    plan_compartments(store, by="source")
    train_compartments(store, ["source-1", "source-2", "source-3"], config=config, from_base=True, adapter="lora",
                       lora={"rank": 2}, progress=False)
    digest = train_router(store, config=config, progress=False, with_base=True, heads=True)
    return store, digest


def _heads_read(monkeypatch) -> list[set[int]]:
    """Per read of a heads router's file, the head indices whose tensors became tensors."""
    reads: list[set[int]] = []
    get_some = ArtifactStore.get_some

    def spy(self, digest, keep):
        tensors, config = get_some(self, digest, keep)
        reads.append({int(k.split(".")[1]) for k in tensors})
        return tensors, config

    monkeypatch.setattr(ArtifactStore, "get_some", spy)
    return reads


def test_a_key_with_rights_on_one_compartment_gets_its_head_only(heads_store, app_factory, monkeypatch):
    from silodiff.service.keys import create_key
    from silodiff.service.server import background_server

    store, digest = heads_store
    carol = {"X-API-Key": create_key(store, "carol-heads", ["source-1"])[1]}
    learned = [n for n in store.load(digest).info["compartments"] if n != "base"]  # the heads' order
    loaded: list[str] = []
    load = ArtifactStore.load_module
    monkeypatch.setattr(ArtifactStore, "load_module", lambda self, d: (loaded.append(d), load(self, d))[1])
    reads = _heads_read(monkeypatch)
    with background_server(app_factory(store)) as url, httpx.Client(base_url=url, timeout=60) as http:
        for with_base in (True, False):
            r = http.post("/v1/generate", json={"n": 2, "steps": 4, "with_base": with_base}, headers=carol)
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["router"] == "classifier" and body["artifacts"]["router"] == digest
            assert body["compartments"] == ["source-1"] + (["base"] if with_base else [])
            assert set(body["images"][0]["weights"]) == set(body["compartments"])
        r = http.post("/v1/generate", json={"n": 2, "steps": 4, "router": "classifier"}, headers=carol)
        assert r.status_code == 200 and r.json()["router"] == "classifier", r.text
    assert digest not in loaded  # the router's file is never loaded whole …
    assert reads and all(heads == {learned.index("source-1")} for heads in reads)  # … only source-1's head is read
    events = [e for e in store.catalog.events("generate") if e["payload"]["key"] == "carol-heads"]
    assert events and all(e["payload"]["scope"] == ["source-1"] for e in events)  # the scope stays in the rights


def test_a_router_without_the_members_head_or_with_a_licensed_reference_is_not_served(tmp_path, app_factory):
    from fastapi.testclient import TestClient

    from silodiff.composition import train_router
    from silodiff.store.lineage import final_checkpoint
    from silodiff.data import load_digits
    from silodiff.jobs import plan_compartments, train_compartments
    from silodiff.service.keys import create_key
    from silodiff.training import TrainConfig

    store = Store(tmp_path / "store")  # compartments from scratch; source-0 public, the heads' reference
    store.ingest(load_digits("random:4", limit=160), "digits")
    store.catalog.declare_public(["source-0"])
    plan_compartments(store, by="source")
    config = TrainConfig(epochs=1, batch_size=32)
    train_compartments(store, config=config, model=TINY, progress=False)
    members = {n: final_checkpoint(store, "compartment", n)["hash"] for n in ("source-0", "source-1", "source-2")}
    train_router(store, config=config, progress=False, heads=True, members=members)  # source-3 has no head
    frank = {"X-API-Key": create_key(store, "frank", ["source-1"])[1]}
    gina = {"X-API-Key": create_key(store, "gina", ["source-3"])[1]}
    client = TestClient(app_factory(store))
    assert client.post("/v1/generate", json={"n": 2, "steps": 4}, headers=frank).json()["router"] == "classifier"
    assert client.post("/v1/generate", json={"n": 2, "steps": 4}, headers=gina).json()["router"] == "trajectory"
    r = client.post("/v1/generate", json={"n": 2, "steps": 4, "router": "classifier"}, headers=gina)
    assert r.status_code == 403 and "detail" in r.json(), r.text  # not a 503: the head is missing, nothing moved
    store.catalog.db.execute("DELETE FROM public_sources")  # the reference becomes licensed data
    store.catalog.db.commit()
    assert client.post("/v1/generate", json={"n": 2, "steps": 4}, headers=frank).json()["router"] == "trajectory"
    r = client.post("/v1/generate", json={"n": 2, "steps": 4, "router": "classifier"}, headers=frank)
    assert r.status_code == 403, r.text
