"""Forget jobs and the switch: every request is served by a wholly old or wholly new active set, never a mix,
and once a job reads ``done`` no request uses the old weights."""

from __future__ import annotations

import threading
import time

import httpx
import pytest
import torch

from silodiff.service.server import background_server
from silodiff.store.lineage import final_checkpoint


def stage_and_switch(store, names: list[str], pause: float) -> dict[str, str]:
    """A stand-in for a retrain: stage perturbed copies of ``names``' final checkpoints inactive,
    wait ``pause`` s (requests keep coming), then switch all of them in ONE transaction."""
    new = {}
    for name in names:
        old = final_checkpoint(store, "compartment", name)
        module = store.load(old["hash"])
        with torch.no_grad():
            for p in module.parameters():
                p.add_(1e-3)
        new[name] = store.save(
            module,
            "compartment",
            name,
            store.catalog.lineage_sets(old["hash"]),
            compartment=name,
            slice=old["slice"],
            active=False,
        )
        time.sleep(pause / len(names))
    with store.catalog.transaction():
        for name in names:
            store.catalog.set_active([final_checkpoint(store, "compartment", name)["hash"]], False)
        store.catalog.set_active(new.values(), True)
    time.sleep(pause)
    return new


def hammer(base: str, key: str, stop: threading.Event, out: list) -> None:
    with httpx.Client(base_url=base, headers={"X-API-Key": key}, timeout=60) as http:
        while not stop.is_set():
            t0 = time.monotonic()
            r = http.post("/v1/generate", json={"n": 2, "steps": 4, "compartments": ["source-0", "source-1"]})
            out.append((t0, r.status_code, r.json().get("artifacts") if r.status_code == 200 else r.text))


def test_requests_see_a_wholly_old_or_wholly_new_set_across_a_switch(fresh_store, keys, app_factory):
    app = app_factory(fresh_store)
    state = app.state.silodiff
    names = ["source-0", "source-1"]
    old = {n: final_checkpoint(fresh_store, "compartment", n)["hash"] for n in names}
    results, stop = [], threading.Event()
    with background_server(app) as base:
        clients = [threading.Thread(target=hammer, args=(base, keys["alice"], stop, results)) for _ in range(3)]
        for c in clients:
            c.start()
        while len(results) < 3:
            time.sleep(0.01)
        job = state.jobs.submit("switch", "test", {}, lambda: stage_and_switch(fresh_store, names, 0.4))
        done = state.jobs.wait(job.id, 120)
        done_at = time.monotonic()
        time.sleep(0.3)
        stop.set()
        for c in clients:
            c.join()
    new = done.result
    assert done.status == "done" and set(new.values()).isdisjoint(old.values())
    assert all(code == 200 for _, code, _ in results), [r for r in results if r[1] != 200][:3]
    served = [arts for _, _, arts in results]
    assert all(arts in (old, new) for arts in served), "a request was served by a mix of old and new checkpoints"
    assert old in served and new in served  # requests ran on both sides of the switch
    assert all(arts == new for t0, _, arts in results if t0 >= done_at)
    assert state.active.generation == 1 and not set(old.values()) & set(state.active.cache._models)


def test_a_failed_job_reports_its_error(fresh_store, app_factory):
    state = app_factory(fresh_store).state.silodiff
    job = state.jobs.submit("switch", "test", {}, lambda: 1 / 0)
    done = state.jobs.wait(job.id, 30)
    assert done.status == "failed" and "ZeroDivisionError" in done.error and state.active.generation == 0
    assert [e["payload"]["status"] for e in fresh_store.catalog.events("service-job")][-2:] == ["queued", "failed"]


def test_forget_job_lifecycle(fresh_store, auth, app_factory):
    pytest.importorskip("silodiff.unlearning")
    from fastapi.testclient import TestClient

    client = TestClient(app_factory(fresh_store))
    admin = auth("admin")
    before = client.post("/v1/generate", json={"n": 2, "steps": 3}, headers=admin).json()["artifacts"]
    sid = fresh_store.catalog.sample_rows("source-1")[0]["sample_id"]
    r = client.post("/v1/forget", json={"sample_ids": [sid]}, headers=admin)
    assert r.status_code == 202 and r.json()["status"] in ("queued", "running") and r.json()["owner"] == "admin"
    job_id = r.json()["id"]
    for _ in range(1200):
        job = client.get(f"/v1/jobs/{job_id}", headers=admin).json()
        if job["status"] not in ("queued", "running"):
            break
        time.sleep(0.1)
    assert job["status"] == "done", job
    certificate = job["result"]
    assert sid in str(certificate)
    # the forgotten sample is in no active artifact, and requests now use the new checkpoints
    assert fresh_store.catalog.artifacts_that_saw([sid]) == []
    after = client.post("/v1/generate", json={"n": 2, "steps": 3}, headers=admin).json()["artifacts"]
    assert after["source-1"] != before["source-1"] and after["router"] != before["router"]
    assert after["source-0"] == before["source-0"] and after["source-2"] == before["source-2"]
    assert job_id in [j["id"] for j in client.get("/v1/jobs", headers=admin).json()]
    assert client.get("/v1/jobs/nope", headers=admin).status_code == 404
    kinds = [e["kind"] for e in client.get("/v1/events", params={"limit": 200}, headers=admin).json()["events"]]
    assert "service-job" in kinds
