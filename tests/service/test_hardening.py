"""Issue 19, service half: hostile and careless requests get a 4xx JSON answer, never a 500 or more than the key's due.

- non-finite numbers (NaN, Infinity, 1e999) in a body → 422 with a JSON body; nothing non-standard in the event log;
- a scoped admin sees only its sources' events and jobs, never other keys' names and rights;
- ``/v1/forget`` answers alike for another source's sample and an unknown id (no membership oracle);
- an API key in a query string never reaches a log line;
- a body over ``max_body_bytes`` → 413 JSON, before authentication;
- a body nested deeper than 32 arrays / objects → 422 JSON on every route, before authentication, never a
  ``RecursionError``; 32 deep still parses and is validated as usual;
- a snapshot is resolved under a read transaction and models load outside any database lock.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time

import httpx
import pytest
from fastapi.testclient import TestClient

from silodiff.service.server import background_server

GEN = '{"n": 2, "steps": 3%s}'


def strict_json(text: str):
    """json.loads that refuses NaN / Infinity (what a standard JSON reader does)."""

    def refuse(token):
        raise ValueError(f"non-standard JSON constant {token}")

    return json.loads(text, parse_constant=refuse)


@pytest.mark.parametrize(
    "path,body",
    [
        ("/v1/generate", GEN % ', "gate": NaN'),
        ("/v1/generate", GEN % ', "seed": Infinity'),
        ("/v1/generate", GEN % ', "seed": 1e999'),
        ("/v1/generate", '{"n": -Infinity}'),
        ("/v1/generate", GEN % ', "labels": [NaN]'),
        ("/v1/generate", GEN % ', "cpsample": {"alpha": NaN}'),
        ("/v1/generate", GEN % ', "cpsample": {"scale": Infinity}'),
        ("/v1/generate", GEN % ', "cpsample": {"scale": 1e999}'),
        ("/v1/attribute", GEN % ', "gate": -1e400'),
        ("/v1/attribute", GEN % ', "leave_one_out": NaN'),
        ("/v1/forget", '{"sample_ids": [NaN]}'),
        ("/v1/forget", '{"sources": [Infinity], "sample_ids": 1e999}'),
        ("/v1/forget", "NaN"),
    ],
)
def test_non_finite_numbers_are_a_422_with_a_json_body(app, auth, path, body):
    client = TestClient(app, raise_server_exceptions=False)
    r = client.post(path, content=body, headers={**auth("admin"), "Content-Type": "application/json"})
    assert r.status_code == 422, r.text
    detail = strict_json(r.text)["detail"]
    assert isinstance(detail, list) and detail and all("loc" in d and "msg" in d for d in detail)


def test_cpsample_scale_refuses_infinity_and_the_event_log_stays_standard_json(fresh_store, auth, app_factory):
    client = TestClient(app_factory(fresh_store), raise_server_exceptions=False)
    for scale in ("Infinity", "1e999", "NaN"):
        body = GEN % (', "cpsample": {"scale": %s}' % scale)
        r = client.post("/v1/generate", content=body, headers={**auth("alice"), "Content-Type": "application/json"})
        assert r.status_code == 422, r.text
        assert any("scale" in d["loc"] for d in strict_json(r.text)["detail"])
    for (payload,) in fresh_store.catalog.db.execute("SELECT payload FROM events"):
        strict_json(payload)


# -- a scoped admin ------------------------------------------------------------------------------------------
def test_a_scoped_admin_sees_only_events_of_its_sources(fresh_store, auth, app_factory):
    client = TestClient(app_factory(fresh_store))
    gen = {"n": 1, "steps": 2}
    assert client.post("/v1/generate", json=gen, headers=auth("alice")).status_code == 200  # source-0, source-1
    assert client.post("/v1/generate", json=gen, headers=auth("bob")).status_code == 200  # source-2
    seen = client.get("/v1/events", params={"limit": 500}, headers=auth("ops")).json()["events"]
    assert seen, "a scoped admin sees the events of its own sources"
    assert any(e["kind"] == "generate" and e["payload"]["key"] == "bob" for e in seen)
    for e in seen:
        assert e["kind"] != "api-key", e
        assert set(e["payload"].get("scope", e["payload"].get("sources"))) == {"source-2"}, e
    text = json.dumps(seen)
    assert "alice" not in text and "source-0" not in text and '"admin"' not in text
    everything = client.get("/v1/events", params={"limit": 500}, headers=auth("admin")).json()["events"]
    assert {"api-key", "generate", "ingest"} <= {e["kind"] for e in everything}
    assert any(e["kind"] == "generate" and e["payload"]["key"] == "alice" for e in everything)
    # the limit counts what the key may see: the newest visible events, not the newest events filtered
    assert client.get("/v1/events", params={"limit": 1}, headers=auth("ops")).json()["events"] == seen[-1:]


def test_a_scoped_admin_sees_only_jobs_within_its_sources(fresh_store, auth, app_factory, monkeypatch):
    import silodiff.unlearning

    monkeypatch.setattr(silodiff.unlearning, "forget", lambda store, **kw: {"certificate": sorted(kw["sample_ids"])})
    app = app_factory(fresh_store)
    client = TestClient(app)
    theirs = fresh_store.catalog.sample_rows("source-0")[0]["sample_id"]
    mine = fresh_store.catalog.sample_rows("source-2")[0]["sample_id"]
    admin_job = client.post("/v1/forget", json={"sample_ids": [theirs]}, headers=auth("admin")).json()["id"]
    ops_job = client.post("/v1/forget", json={"sample_ids": [mine]}, headers=auth("ops")).json()["id"]
    for job in (admin_job, ops_job):
        assert app.state.silodiff.jobs.wait(job, 30).status == "done"
    assert [j["id"] for j in client.get("/v1/jobs", headers=auth("ops")).json()] == [ops_job]
    assert {j["id"] for j in client.get("/v1/jobs", headers=auth("admin")).json()} == {admin_job, ops_job}
    hidden = client.get(f"/v1/jobs/{admin_job}", headers=auth("ops"))
    unknown = client.get(f"/v1/jobs/{'f' * 32}", headers=auth("ops"))
    assert hidden.status_code == unknown.status_code == 404
    assert theirs not in hidden.text
    assert client.get(f"/v1/jobs/{ops_job}", headers=auth("ops")).json()["result"] == {"certificate": [mine]}


def test_forget_is_no_membership_oracle(client, service_store, auth):
    other = service_store.catalog.sample_rows("source-1")[0]["sample_id"]
    answers = []
    for sid in (other, "0" * 64, "a" * 64):
        r = client.post("/v1/forget", json={"sample_ids": [sid]}, headers=auth("ops"))
        answers.append((r.status_code, r.content))
    assert answers[0] == answers[1] == answers[2] and answers[0][0] == 422
    by_source = [
        client.post("/v1/forget", json={"sources": [s]}, headers=auth("ops")) for s in ("source-1", "no-such-source")
    ]
    assert by_source[0].status_code == by_source[1].status_code == 403
    assert by_source[0].json()["detail"].replace("source-1", "X") == by_source[1].json()["detail"].replace(
        "no-such-source", "X"
    )


# -- logs ----------------------------------------------------------------------------------------------------
def test_a_key_in_a_query_string_never_reaches_the_logs(service_store, keys, app_factory, capfd):
    key = keys["bob"]
    with background_server(app_factory(service_store), log_level="info") as base:
        with httpx.Client(base_url=base, timeout=60) as http:
            assert http.get(f"/v1/me?api_key={key}").status_code == 401  # keys travel in headers only
            assert http.get("/v1/compartments", params={"key": key, "x": "1"}).status_code == 401
            assert http.get(f"/v1/nope/{key}").status_code == 404
            r = http.post(f"/v1/generate?token={key}", content=b'{"n": 1e999}', headers={"X-API-Key": keys["alice"], "Content-Type": "application/json"})
            assert r.status_code == 422 and r.json()["detail"][0]["input"] == "Infinity"
    out = capfd.readouterr()
    logs = out.out + out.err
    assert "GET /v1/me?api_key=" in logs and "/v1/nope/" in logs  # the lines are logged …
    assert key not in logs and key[4:20] not in logs  # … without the key


def test_the_redaction_filter_hides_keys_in_messages_and_arguments():
    import logging

    from silodiff.service.logs import RedactKeys

    key = "sdk_" + "A1b-_" * 8
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "%s %s", (f"/p?api_key={key}", 3), None)
    record.msg = f"msg {key} %s %s"
    assert RedactKeys().filter(record)
    assert key not in record.getMessage() and "sdk_[redacted]" in record.getMessage() and record.args[1] == 3


# -- body size -----------------------------------------------------------------------------------------------
def test_a_body_over_the_limit_is_a_413_before_authentication(service_store, auth, app_factory):
    client = TestClient(app_factory(service_store, max_body_bytes=1024))
    big = json.dumps({"n": 1, "steps": 2, "labels": [1] * 600})
    assert len(big) > 1024
    r = client.post("/v1/generate", content=big, headers={"Content-Type": "application/json"})  # no key
    assert r.status_code == 413 and "1024" in r.json()["detail"]

    def chunks():  # no Content-Length: counted while streaming
        for _ in range(40):
            yield b" " * 100
        yield big.encode()

    r = client.post("/v1/generate", content=chunks(), headers={**auth("alice"), "Content-Type": "application/json"})
    assert r.status_code == 413 and r.json()["limit"] == "body bytes"
    small = client.post("/v1/generate", json={"n": 1, "steps": 2}, headers=auth("alice"))
    assert small.status_code == 200


def test_413_over_real_http(service_store, auth, app_factory):
    with background_server(app_factory(service_store, max_body_bytes=2048)) as base:
        r = httpx.post(f"{base}/v1/forget", content=b"[" + b"1," * 5000 + b"1]", headers=auth("admin"), timeout=30)
    assert r.status_code == 413 and r.json()["allowed"] == 2048


# -- nesting -------------------------------------------------------------------------------------------------
def nested(depth: int, kind: str) -> str:
    """JSON text ``depth`` arrays or objects deep (built as text: Python's own encoder would recurse)."""
    if kind == "array":
        return "[" * depth + "]" * depth
    return '{"a": ' * depth + "1" + "}" * depth


DEEP = {  # name → (body text, its depth)
    **{f"n {d}": ('{"n": %s, "steps": 2}' % nested(d, "array"), d + 1) for d in (500, 900)},
    **{f"unknown field {d}": ('{"n": 1, "zz": %s}' % nested(d, "array"), d + 1) for d in (500, 900)},
    **{f"objects {d}": (nested(d, "object"), d) for d in (500, 900)},
}
ROUTES = [("POST", "/v1/generate"), ("POST", "/v1/attribute"), ("POST", "/v1/forget"), ("GET", "/v1/me"),
          ("GET", "/v1/compartments"), ("GET", "/v1/jobs"), ("GET", "/v1/events"), ("POST", "/v1/nope")]


@pytest.fixture(scope="module")
def live_app(app):
    with background_server(app, log_level="info") as base:
        yield base


@pytest.mark.parametrize("method,path", ROUTES)
def test_a_deeply_nested_body_is_a_422_on_every_route_before_the_key(live_app, keys, capfd, method, path):
    with httpx.Client(base_url=live_app, timeout=60) as http:
        for name, (body, depth) in DEEP.items():
            for key in (None, "alice", "admin", "sdk_not-a-key"):
                headers = {"Content-Type": "application/json", **({"X-API-Key": keys.get(key, key)} if key else {})}
                r = http.request(method, path, content=body, headers=headers)
                assert r.status_code == 422, (name, key, r.status_code, r.text[:200])
                assert r.json() == {
                    "detail": f"the request body nests {depth} arrays / objects deep; this server reads at most 32",
                    "limit": "body depth",
                    "allowed": 32,
                    "got": depth,
                }
    logs = capfd.readouterr()
    assert "RecursionError" not in logs.out + logs.err and "Traceback" not in logs.out + logs.err


def test_a_deep_body_is_refused_however_it_arrives(live_app, keys):
    """Chunked, in UTF-16, or with brackets hidden in strings: the depth counted is what the JSON reader sees."""
    deep = '{"n": %s}' % nested(600, "array")
    headers = {"Content-Type": "application/json", "X-API-Key": keys["alice"]}

    def chunks():
        for i in range(0, len(deep), 100):
            yield deep[i : i + 100].encode()

    with httpx.Client(base_url=live_app, timeout=60) as http:
        for content in (chunks(), deep.encode("utf-16"), deep.encode("utf-32-le")):
            r = http.post("/v1/generate", content=content, headers=headers)
            assert r.status_code == 422 and r.json()["got"] == 601, r.text[:200]
        # brackets inside strings (escaped quotes too) do not nest: an ordinary 422 for the bad label
        quoted = '{"n": 1, "steps": 2, "labels": ["%s\\\"%s"]}' % ("[" * 100, "{" * 100)
        r = http.post("/v1/generate", content=quoted, headers=headers)
        assert r.status_code == 422 and isinstance(r.json()["detail"], list), r.text[:200]
        assert r.json()["detail"][0]["loc"] == ["body", "labels", 0]


@pytest.mark.parametrize("kind", ["n", "unknown field", "objects"])
def test_a_body_32_deep_is_read_and_validated_as_usual(live_app, keys, kind):
    body = {
        "n": '{"n": %s, "steps": 2}' % nested(31, "array"),
        "unknown field": '{"n": 1, "steps": 2, "zz": %s}' % nested(31, "array"),
        "objects": nested(32, "object"),
    }[kind]
    json_type = {"Content-Type": "application/json"}
    with httpx.Client(base_url=live_app, timeout=60, headers=json_type) as http:
        r = http.post("/v1/generate", content=body, headers={"X-API-Key": keys["alice"]})
        assert r.status_code == 422 and isinstance(r.json()["detail"], list), r.text[:300]
        loc = {"n": ["body", "n"], "unknown field": ["body", "zz"], "objects": ["body", "a"]}[kind]
        assert [d["loc"] for d in r.json()["detail"]] == [loc]
        assert http.post("/v1/generate", content=body).status_code == 401  # the key is looked up as usual
        ok = '{"n": 1, "steps": 2, "labels": [3], "cpsample": null}'
        assert http.post("/v1/generate", content=ok, headers={"X-API-Key": keys["alice"]}).status_code == 200


# -- locks ---------------------------------------------------------------------------------------------------
def test_requests_resolve_their_snapshot_while_another_connection_writes(service_store, keys, app_factory):
    """A writer holding the catalog's write lock does not stop a request from resolving and loading its models."""
    from silodiff.service.keys import lookup

    state = app_factory(service_store).state.silodiff
    caller = lookup(service_store, keys["alice"])
    writer = sqlite3.connect(service_store.catalog.path, timeout=1, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    done = {}

    def request():
        t0 = time.monotonic()
        with state.active.serve(caller) as served:
            done["names"], done["s"] = served.compartments, time.monotonic() - t0
        done["listed"] = [c["name"] for c in state.active.compartments(caller)]

    try:
        thread = threading.Thread(target=request)
        thread.start()
        thread.join(10)
        assert done.get("names") == ["source-0", "source-1"] and done["s"] < 10
        assert done.get("listed") == ["source-0", "source-1"]
    finally:
        writer.execute("ROLLBACK")
        writer.close()
        thread.join(60)


def test_models_load_outside_any_database_lock(service_store, keys, app_factory):
    """While a cold model loads, another connection can take the write lock at once."""
    from silodiff.service.keys import lookup

    state = app_factory(service_store).state.silodiff
    caller = lookup(service_store, keys["bob"])
    artifacts = state.active.cache.store.artifacts
    real = artifacts.load_module
    free = []

    def load_module(digest):
        other = sqlite3.connect(service_store.catalog.path, timeout=0.2, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            other.execute("ROLLBACK")
            free.append(True)
        except sqlite3.OperationalError:
            free.append(False)
        finally:
            other.close()
        return real(digest)

    artifacts.load_module = load_module
    try:
        with state.active.serve(caller, router="trajectory") as served:
            assert served.compartments == ["source-2"]
    finally:
        del artifacts.load_module
    assert free and all(free)


def test_at_most_max_concurrent_requests_sample_at_once(service_store, keys, app_factory, monkeypatch):
    from silodiff.service import image_requests

    real, running, peak, lock = image_requests.generate, [0], [0], threading.Lock()

    def counted(*args, **kwargs):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        try:
            time.sleep(0.05)
            return real(*args, **kwargs)
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(image_requests, "generate", counted)
    codes = []
    with background_server(app_factory(service_store, max_concurrent=1)) as base:

        def one():
            r = httpx.post(f"{base}/v1/generate", json={"n": 1, "steps": 2}, headers={"X-API-Key": keys["bob"]})
            codes.append(r.status_code)

        threads = [threading.Thread(target=one) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert codes == [200] * 6 and peak[0] == 1
