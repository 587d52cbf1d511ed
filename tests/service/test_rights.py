"""Rights on every route: 401 without / with a bad key, 403 outside the key's rights, 422 bad bodies, 429 rate."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

GEN = {"n": 2, "steps": 4}
SID = "0" * 64
# every route that needs a key: (method, path, body)
ROUTES = [
    ("GET", "/v1/me", None),
    ("GET", "/v1/compartments", None),
    ("GET", "/v1/compartments/source-0", None),
    ("POST", "/v1/generate", GEN),
    ("POST", "/v1/attribute", GEN),
    ("POST", "/v1/forget", {"sources": ["source-2"]}),
    ("GET", "/v1/jobs", None),
    ("GET", "/v1/jobs/nope", None),
    ("GET", "/v1/events", None),
    ("GET", "/v1/events/verify", None),
]


@pytest.mark.parametrize("method,path,body", ROUTES)
@pytest.mark.parametrize(
    "headers", [{}, {"X-API-Key": "sdk_not-a-key"}, {"Authorization": "Bearer nope"}, {"X-API-Key": ""}]
)
def test_401_without_or_with_a_bad_key(client, method, path, body, headers):
    r = client.request(method, path, json=body, headers=headers)
    assert r.status_code == 401 and "API key" in r.json()["detail"]
    assert r.headers["www-authenticate"] == "Bearer"


def test_bearer_header_works(client, keys):
    assert client.get("/v1/me", headers={"Authorization": f"Bearer {keys['bob']}"}).json()["name"] == "bob"


@pytest.mark.parametrize(
    "method,path,body",
    [
        ("GET", "/v1/compartments/source-2", None),
        ("POST", "/v1/generate", {**GEN, "compartments": ["source-2"]}),
        ("POST", "/v1/generate", {**GEN, "compartments": ["source-0", "source-2"]}),
        ("POST", "/v1/generate", {**GEN, "router": "classifier"}),  # the router saw source-2's data
        ("POST", "/v1/attribute", {**GEN, "compartments": ["source-2"]}),
        (
            "POST",
            "/v1/attribute",
            {**GEN, "compartments": ["no-such-compartment"]},
        ),  # unknown names leak nothing either
        ("POST", "/v1/forget", {"sources": ["source-0"]}),  # not an admin
        ("GET", "/v1/jobs", None),
        ("GET", "/v1/jobs/some-id", None),
        ("GET", "/v1/events", None),
        ("GET", "/v1/events/verify", None),
    ],
)
def test_403_outside_rights_on_every_route(client, method, path, body, auth):
    r = client.request(method, path, json=body, headers=auth("alice"))
    assert r.status_code == 403, r.text
    assert isinstance(r.json()["detail"], str)


def test_403_for_a_limited_admin_outside_its_sources(client, service_store, auth):
    r = client.post("/v1/forget", json={"sources": ["source-0"]}, headers=auth("ops"))
    assert r.status_code == 403 and "source-0" in r.json()["detail"]
    sid = service_store.catalog.sample_rows("source-1")[0]["sample_id"]
    r = client.post("/v1/forget", json={"sample_ids": [sid]}, headers=auth("ops"))
    assert r.status_code == 422 and "not a live sample of the sources key 'ops' may forget" in r.json()["detail"]
    assert client.get("/v1/compartments/source-0", headers=auth("ops")).status_code == 403


def test_compartment_listing_is_filtered_by_rights(client, auth):
    names = lambda k: [c["name"] for c in client.get("/v1/compartments", headers=auth(k)).json()["compartments"]]  # noqa: E731
    assert names("alice") == ["source-0", "source-1"]
    assert names("bob") == ["source-2"]
    assert names("admin") == ["source-0", "source-1", "source-2"]
    one = client.get("/v1/compartments/source-1", headers=auth("alice")).json()
    assert one["sources"] == ["source-1"] and one["trained"] and len(one["artifact"]) == 64
    assert client.get("/v1/compartments/nope", headers=auth("admin")).status_code == 404


@pytest.mark.parametrize(
    "body,where",
    [
        ({"n": -3}, "n"),
        ({"n": 0}, "n"),
        ({"n": "4"}, "n"),
        ({"n": 2.5}, "n"),
        ({"steps": 0}, "steps"),
        ({"steps": 5000}, "steps"),
        ({"labels": [1, -1]}, "labels"),
        ({"labels": "3"}, "labels"),
        ({"labels": []}, "labels"),
        ({"sampler": "euler"}, "sampler"),
        ({"router": "oracle"}, "router"),
        ({"seed": -1}, "seed"),
        ({"compartments": []}, "compartments"),
        ({"compartments": "source-0"}, "compartments"),
        ({"temperature": 2}, "temperature"),
        ({"gate": 1.5}, "gate"),
    ],
)
def test_422_on_bad_bodies(client, body, where, auth):
    for path in ("/v1/generate", "/v1/attribute"):
        r = client.post(path, json={**GEN, **body}, headers=auth("alice"))
        assert r.status_code == 422, (path, body, r.text)
        assert any(where in d["loc"] for d in r.json()["detail"])


@pytest.mark.parametrize(
    "body,limit", [({"n": 17}, "n"), ({"steps": 101}, "steps"), ({"n": 16, "steps": 60}, "images × steps")]
)
def test_422_over_the_configured_limits(client, body, limit, auth):
    r = client.post("/v1/generate", json={**GEN, **body}, headers=auth("alice"))
    assert r.status_code == 422 and r.json()["limit"] == limit and r.json()["got"] > r.json()["allowed"]


def test_422_on_an_unknown_label_and_bad_forget_bodies(client, auth):
    r = client.post("/v1/generate", json={**GEN, "labels": [3, 10]}, headers=auth("alice"))
    assert r.status_code == 422 and "unknown label 10" in r.json()["detail"]
    admin = auth("admin")
    assert client.post("/v1/forget", json={}, headers=admin).status_code == 422
    assert client.post("/v1/forget", json={"sample_ids": ["xyz"]}, headers=admin).status_code == 422
    assert client.post("/v1/forget", json={"sample_ids": [SID]}, headers=admin).status_code == 422  # not in the store
    assert client.post("/v1/forget", json={"sources": ["nobody"]}, headers=admin).status_code == 422
    assert client.post("/v1/forget", json={"sources": "source-0"}, headers=admin).status_code == 422


def test_429_over_the_rate_with_a_json_body(service_store, auth, app_factory):
    client = TestClient(app_factory(service_store, rate_per_minute=3))
    codes = [client.get("/v1/me", headers=auth("bob")).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    r = client.get("/v1/compartments", headers=auth("bob"))
    assert r.status_code == 429 and "3 requests" in r.json()["detail"] and int(r.headers["retry-after"]) >= 1
    assert client.get("/v1/me", headers=auth("alice")).status_code == 200  # per key
