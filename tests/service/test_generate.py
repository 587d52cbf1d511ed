"""Generation and attribution: only the key's compartments are loaded and evaluated; events; caching; determinism."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image

from silodiff.nn.denoisers import MLPDenoiser
from silodiff.store.artifacts import ArtifactStore


def hashes_that_saw(store, source: str) -> set[str]:
    """Every artifact whose lineage holds a sample of ``source`` (compartment checkpoints and the router)."""
    ids = [r["sample_id"] for r in store.catalog.sample_rows(source)]
    return {a["hash"] for a in store.catalog.artifacts_that_saw(ids, active=None)}


@pytest.fixture
def instrumented(monkeypatch):
    """Record every artifact read from disk and every denoiser evaluated (by artifact hash)."""
    loaded, evaluated = [], []
    load, forward = ArtifactStore.load_module, MLPDenoiser.forward

    def spy_load(self, digest):
        loaded.append(digest)
        return load(self, digest)

    def spy_forward(self, x, t, labels=None):
        evaluated.append(getattr(self, "artifact_hash", None))
        return forward(self, x, t, labels)

    monkeypatch.setattr(ArtifactStore, "load_module", spy_load)
    monkeypatch.setattr(MLPDenoiser, "forward", spy_forward)
    return loaded, evaluated


def test_a_compartment_outside_the_rights_is_never_loaded_or_evaluated(service_store, instrumented, auth, app_factory):
    from fastapi.testclient import TestClient

    loaded, evaluated = instrumented
    client = TestClient(app_factory(service_store))  # a fresh app: an empty model cache
    forbidden = hashes_that_saw(service_store, "source-2")
    assert forbidden  # source-2's checkpoints and the router
    for path, extra in (("/v1/generate", {}), ("/v1/attribute", {"leave_one_out": True})):
        r = client.post(path, json={"n": 3, "steps": 5, "seed": 1, **extra}, headers=auth("alice"))
        assert r.status_code == 200, r.text
        assert r.json()["compartments"] == ["source-0", "source-1"]
    assert loaded and evaluated
    assert not forbidden & set(loaded), "an artifact that saw source-2 was read from disk"
    assert not forbidden & set(evaluated), "a model that saw source-2 was evaluated"
    allowed = hashes_that_saw(service_store, "source-0") | hashes_that_saw(service_store, "source-1")
    assert set(loaded) <= allowed


def test_generate_returns_pngs_and_weights_over_the_keys_compartments(client, auth):
    r = client.post("/v1/generate", json={"n": 5, "labels": [1, 7], "steps": 8, "seed": 3}, headers=auth("alice"))
    body = r.json()
    assert r.status_code == 200 and body["key"] == "alice" and body["router"] == "trajectory"
    assert set(body["artifacts"]) == {"source-0", "source-1"}
    assert [im["label"] for im in body["images"]] == [1, 7, 1, 7, 1]
    for im in body["images"]:
        png = Image.open(io.BytesIO(base64.b64decode(im["png"])))
        assert png.size == (8, 8) and png.mode == "L"
        for w in (im["weights"], im["weights_last"]):
            assert set(w) == {"source-0", "source-1"} and sum(w.values()) == pytest.approx(1, abs=1e-4)


def test_same_request_same_images_and_subset_changes_weights(client, auth):
    req = {"n": 3, "steps": 6, "seed": 11, "sampler": "ddim"}
    a = client.post("/v1/generate", json=req, headers=auth("admin")).json()
    b = client.post("/v1/generate", json=req, headers=auth("admin")).json()
    assert [im["png"] for im in a["images"]] == [im["png"] for im in b["images"]]
    assert a["router"] == "classifier" and "router" in a["artifacts"]  # the admin may use the router's training data
    one = client.post("/v1/generate", json={**req, "compartments": ["source-2"]}, headers=auth("admin")).json()
    assert one["compartments"] == ["source-2"] and all(im["weights"] == {"source-2": 1.0} for im in one["images"])


def test_models_are_cached_by_hash(service_store, instrumented, auth, app_factory):
    from fastapi.testclient import TestClient

    loaded, _ = instrumented
    client = TestClient(app_factory(service_store))
    for _ in range(3):
        assert client.post("/v1/generate", json={"n": 1, "steps": 2}, headers=auth("bob")).status_code == 200
    assert len(loaded) == len(set(loaded)) == 1  # bob: one compartment, trajectory router, read once


def test_every_generation_writes_an_event_without_the_key(client, keys, service_store, auth):
    r = client.post("/v1/generate", json={"n": 2, "steps": 3, "seed": 42}, headers=auth("bob"))
    assert r.status_code == 200
    event = service_store.catalog.events("generate")[-1]
    p = event["payload"]
    assert p["key"] == "bob" and p["compartments"] == ["source-2"] and p["seed"] == 42 and event["ts"]
    assert p["artifacts"] == r.json()["artifacts"]
    from silodiff.service.keys import hash_key

    log = json.dumps(service_store.catalog.events())
    for key in keys.values():
        assert key not in log and hash_key(key) not in log


def test_events_route_is_the_catalog_log(client, service_store, auth):
    client.post("/v1/generate", json={"n": 1, "steps": 2, "seed": 5}, headers=auth("alice"))
    events = client.get("/v1/events", params={"limit": 5, "kind": "generate"}, headers=auth("admin")).json()["events"]
    assert len(events) <= 5 and events[-1]["payload"]["key"] == "alice" and events[-1]["payload"]["seed"] == 5
    assert events[-1]["hash"] == service_store.catalog.events("generate")[-1]["hash"]
    assert client.get("/v1/events/verify", headers=auth("admin")).json()["ok"] is True


def test_attribute_reports_weights_for_the_allowed_compartments(client, auth):
    r = client.post("/v1/attribute", json={"n": 2, "steps": 5, "seed": 2, "leave_one_out": True}, headers=auth("alice"))
    body = r.json()
    assert r.status_code == 200 and body["compartments"] == ["source-0", "source-1"]
    assert body["method"] == "leave-one-out" and set(body["artifacts"]) == {"source-0", "source-1"}
    for im in body["images"]:
        assert set(im["weights_mean"]) == {"source-0", "source-1"}
        assert sum(im["weights_mean"].values()) == pytest.approx(1, abs=1e-4)
    # same request, same router weights as /v1/generate's
    gen = client.post("/v1/generate", json={"n": 2, "steps": 5, "seed": 2}, headers=auth("alice")).json()
    np.testing.assert_allclose(
        [list(im["weights"].values()) for im in gen["images"]],
        [list(im["weights_mean"].values()) for im in body["images"]],
        atol=1e-4,
    )
    # leave-one-out multiplies the work by K + 1: 3 × 5 × 100 > 800
    r = client.post("/v1/attribute", json={"n": 5, "steps": 100, "leave_one_out": True}, headers=auth("alice"))
    assert r.status_code == 422 and r.json()["limit"].endswith("× 3 runs")


def test_cpsample_guides_with_the_allowed_compartments_classifiers_only(fresh_store, auth, app_factory, instrumented):
    from fastapi.testclient import TestClient

    from silodiff.defences.cpsample import train_protection_classifier
    from silodiff.training import TrainConfig

    client = TestClient(app_factory(fresh_store))
    req = {"n": 2, "steps": 4, "seed": 1, "cpsample": {"alpha": 0.5, "scale": 500}}
    r = client.post("/v1/generate", json=req, headers=auth("alice"))
    assert r.status_code == 422 and "protection classifier" in r.json()["detail"]
    for name in ("source-0", "source-1", "source-2"):
        train_protection_classifier(
            fresh_store, compartment=name, config=TrainConfig(epochs=1, batch_size=32), max_epochs=1, progress=False
        )
    loaded, _ = instrumented
    loaded.clear()
    body = client.post("/v1/generate", json=req, headers=auth("alice")).json()
    assert 0 <= body["guided_fraction"] <= 1
    protection = {k: v for k, v in body["artifacts"].items() if k.startswith("protection:")}
    assert set(protection) == {"protection:source-0", "protection:source-1"}
    assert not hashes_that_saw(fresh_store, "source-2") & set(loaded)  # source-2's classifier never read
    plain = client.post(
        "/v1/generate", json={k: v for k, v in req.items() if k != "cpsample"}, headers=auth("alice")
    ).json()
    assert plain["guided_fraction"] is None and not any(k.startswith("protection:") for k in plain["artifacts"])
    bad = client.post("/v1/generate", json={**req, "cpsample": {"alpha": 0}}, headers=auth("alice"))
    assert bad.status_code == 422
    assert client.post("/v1/attribute", json=req, headers=auth("alice")).status_code == 422  # not an attribute option
    # a classifier calibrated on a source outside the key's rights is refused, not used
    train_protection_classifier(fresh_store, compartment="source-0", config=TrainConfig(epochs=1, batch_size=32), max_epochs=1,
                                calibration=["source-2"], progress=False)
    loaded.clear()
    r = client.post("/v1/generate", json=req, headers=auth("alice"))
    assert r.status_code == 403 and "outside this key's rights" in r.json()["detail"]
    assert not hashes_that_saw(fresh_store, "source-2") & set(loaded)


def test_omitted_labels_are_balanced_over_the_labels_the_allowed_compartments_hold(tiny_model_config):
    import torch

    from silodiff.composition.composed import ComposedDenoiser
    from silodiff.composition.routers import UniformRouter
    from silodiff.config import build
    from silodiff.service.image_requests import request_labels
    from silodiff.service.schemas import GenerateRequest

    counts = torch.zeros(2, 10)
    counts[0, [0, 1, 2]] = 5  # non-IID owners: one holds 0-2, the other 7
    counts[1, 7] = 3
    model = ComposedDenoiser({"a": build(tiny_model_config), "b": build(tiny_model_config)}, UniformRouter(), counts)
    assert model.held_labels() == [0, 1, 2, 7]
    labels = request_labels(GenerateRequest(n=8, steps=5), 10, model.held_labels()).tolist()
    assert labels == [0, 1, 2, 7, 0, 1, 2, 7]
    assert request_labels(GenerateRequest(n=3, steps=5), 10).tolist() == [0, 1, 2]  # every label held: as before
    assert request_labels(GenerateRequest(n=2, labels=[5], steps=5), 10, [0]).tolist() == [5, 5]  # asked: kept
