"""Rights over compartments built on a base: the effective lineage (own ids ∪ the base's) is what a key's
rights must cover, and sources declared public count for every key."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from silodiff.store import Store
from silodiff.store.artifacts import ArtifactStore

GEN = {"n": 2, "steps": 4, "compartments": ["source-1"]}
TINY = {"kind": "mlp-denoiser", "image_shape": [1, 8, 8], "num_classes": 10, "hidden": 32, "depth": 1}


def _store(root, public: bool) -> Store:
    from silodiff.data import load_digits
    from silodiff.jobs import plan_compartments, train_base, train_compartments
    from silodiff.training import TrainConfig

    store = Store(root)
    store.ingest(load_digits("random:3", limit=90), "digits")
    config = TrainConfig(epochs=1, batch_size=32)
    train_base(store, ["source-0"], config=config, model=TINY, progress=False, public=public)
    plan_compartments(store, by="source")
    train_compartments(store, ["source-1", "source-2"], config=config, from_base=True, adapter="lora",
                       lora={"rank": 2}, progress=False)
    return store


@pytest.mark.parametrize("public", [True, False], ids=["public-base", "licensed-base"])
def test_a_compartment_on_a_base_needs_rights_on_the_bases_sources_unless_public(tmp_path, monkeypatch, app_factory,
                                                                                 public):
    from silodiff.service.keys import create_key

    store = _store(tmp_path / "store", public)
    carol = create_key(store, "carol", ["source-1"])[1]      # rights on the compartment's own source only
    dave = create_key(store, "dave", ["source-0", "source-1"])[1]  # and on the base's
    final = max(store.catalog.artifacts("compartment", name="source-1"), key=lambda a: a["slice"])["hash"]
    loaded = []
    load = ArtifactStore.load_module
    monkeypatch.setattr(ArtifactStore, "load_module", lambda self, d: (loaded.append(d), load(self, d))[1])
    client = TestClient(app_factory(store))
    r = client.post("/v1/generate", json=GEN, headers={"X-API-Key": carol})
    if public:
        assert r.status_code == 200, r.text
        assert final in loaded
    else:
        assert r.status_code == 403 and "detail" in r.json(), r.text
        assert final not in loaded  # refused before any weight is read
        assert client.post("/v1/generate", json=GEN, headers={"X-API-Key": dave}).status_code == 200
        assert final in loaded


def test_the_base_as_a_member_of_a_generation(tmp_path, app_factory):
    from silodiff.composition import train_router
    from silodiff.store.lineage import active_base
    from silodiff.service.keys import create_key
    from silodiff.training import TrainConfig

    store = _store(tmp_path / "store", public=True)
    train_router(store, config=TrainConfig(epochs=1, batch_size=32), progress=False, with_base=True)
    carol = {"X-API-Key": create_key(store, "carol", ["source-1"])[1]}
    client = TestClient(app_factory(store))
    r = client.post("/v1/generate", json=GEN | {"with_base": True}, headers=carol)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["compartments"] == ["source-1", "base"] and body["artifacts"]["base"] == active_base(store)["hash"]
    assert set(body["images"][0]["weights"]) == {"source-1", "base"}
    assert body["router"] == "trajectory"  # auto: the router saw source-2, outside carol's rights
    erin = {"X-API-Key": create_key(store, "erin", ["source-1", "source-2"])[1]}
    r = client.post("/v1/generate", json=GEN | {"with_base": True}, headers=erin)
    assert r.status_code == 200 and r.json()["router"] == "classifier", r.text  # it knows the base as a class
    r = client.post("/v1/generate", json=GEN | {"with_base": True, "cpsample": {"alpha": 0.2, "scale": 10.0}},
                    headers=carol)
    assert r.status_code == 422 and "do not combine" in r.json()["detail"], r.text


def test_with_base_needs_a_base_and_rights_on_its_sources(tmp_path, app_factory):
    from silodiff.data import load_digits
    from silodiff.jobs import plan_compartments, train_base, train_compartments
    from silodiff.service.keys import create_key
    from silodiff.training import TrainConfig

    store = Store(tmp_path / "store")
    store.ingest(load_digits("random:3", limit=90), "digits")
    config = TrainConfig(epochs=1, batch_size=32)
    plan_compartments(store, by="source")
    train_compartments(store, ["source-1"], config=config, model=TINY, progress=False)  # from scratch
    carol = {"X-API-Key": create_key(store, "carol", ["source-1"])[1]}
    client = TestClient(app_factory(store))
    r = client.post("/v1/generate", json=GEN | {"with_base": True}, headers=carol)
    assert r.status_code == 422 and "no base model" in r.json()["detail"], r.text
    train_base(store, ["source-0"], config=config, model=TINY, progress=False, public=False)  # a licensed base
    r = client.post("/v1/generate", json=GEN | {"with_base": True}, headers=carol)
    assert r.status_code == 403 and "base model" in r.json()["detail"], r.text
    assert client.post("/v1/generate", json=GEN, headers=carol).status_code == 200  # without it: served


def test_a_soup_is_averaged_from_the_keys_own_adapters_only(tmp_path, monkeypatch, app_factory):
    from silodiff.composition import train_router
    from silodiff.service.keys import create_key
    from silodiff.training import TrainConfig

    store = _store(tmp_path / "store", public=True)
    router = train_router(store, config=TrainConfig(epochs=1, batch_size=32), progress=False, with_base=True)
    finals = {n: max(store.catalog.artifacts("compartment", name=n), key=lambda a: a["slice"])["hash"]
              for n in ("source-1", "source-2")}
    loaded = []
    load = ArtifactStore.load_module
    monkeypatch.setattr(ArtifactStore, "load_module", lambda self, d: (loaded.append(d), load(self, d))[1])
    client = TestClient(app_factory(store))
    carol = {"X-API-Key": create_key(store, "carol", ["source-1"])[1]}
    r = client.post("/v1/generate", json={"n": 2, "steps": 3, "combine": "soup"}, headers=carol)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["combine"] == "soup" and body["router"] == "none" and body["compartments"] == ["source-1"]
    assert body["images"][0]["weights"] == {"source-1": 1.0} and set(body["artifacts"]) == {"source-1"}
    assert finals["source-1"] in loaded and finals["source-2"] not in loaded and router not in loaded
    erin = {"X-API-Key": create_key(store, "erin", ["source-1", "source-2"])[1]}
    body = client.post("/v1/generate", json={"n": 2, "steps": 3, "combine": "soup"}, headers=erin).json()
    assert body["compartments"] == ["source-1", "source-2"] and finals["source-2"] in loaded
    # a soup is built once per set of adapters and then served from memory, the same one for a second request
    cache = client.app.state.silodiff.active.cache
    soups = [k for k in cache.loads if k.startswith("soup:")]
    assert len(soups) == 2  # carol's and erin's
    again = client.post("/v1/generate", json={"n": 2, "steps": 3, "combine": "soup"}, headers=erin).json()
    assert [k for k in cache.loads if k.startswith("soup:")] == soups and again["artifacts"] == body["artifacts"]
    assert sum(body["images"][1]["weights"].values()) == pytest.approx(1.0, abs=1e-5)
    for bad, message in [({"gate": 0.3}, "gating does not apply"),
                         ({"cpsample": {"alpha": 0.2, "scale": 10.0}}, "do not combine")]:
        r = client.post("/v1/generate", json={"n": 2, "steps": 3, "combine": "soup", **bad}, headers=erin)
        assert r.status_code == 422 and message in r.json()["detail"], r.text
    assert client.post("/v1/generate", json={"n": 1, "combine": "blend"}, headers=erin).status_code == 422
