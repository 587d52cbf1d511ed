"""Schema fuzzing: schemathesis drives every route of the OpenAPI schema against the real app (uvicorn on
127.0.0.1), with a valid key of each role; a 500, a body outside the documented schema, an undocumented status
or a wrong content type fails.

A second strategy nests arrays or objects up to 1,000 deep inside a generated body (in a known field, in an
unknown field, or as the whole body): past 32 levels every route answers 422 ``body depth`` (413 when the body is
also over the size limit, which is checked first), never a 500.

Bounded: a private copy of the test store (forgets may run on it), small server limits, a few examples per route
and generation mode (valid bodies, and bodies that break the schema), derandomised so a run is repeatable.
"""

from __future__ import annotations

import shutil

import json

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from silodiff.service.body import MAX_DEPTH
from silodiff.service.server import background_server
from silodiff.store import Store

EXAMPLES = 3
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
BODY_BYTES = 4096
ROLES = ["admin", "ops", "alice"]  # admin over every source, admin over one source, a customer key


@pytest.fixture(scope="module")
def live(service_store, keys, app_factory, tmp_path_factory):
    service_store.catalog.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    root = tmp_path_factory.mktemp("fuzz") / "store"
    shutil.copytree(service_store.root, root)
    app = app_factory(Store(root, create=False), max_n=2, max_steps=4, max_image_steps=8, max_body_bytes=BODY_BYTES)
    with background_server(app) as base:
        yield base, schemathesis.openapi.from_url(f"{base}/openapi.json")


def operations(schema) -> list:
    return [result.ok() for result in schema.get_all_operations()]


def test_the_schema_covers_every_route(live):
    _, schema = live
    paths = {op.path for op in operations(schema)}
    assert {
        "/healthz",
        "/v1/me",
        "/v1/compartments",
        "/v1/compartments/{name}",
        "/v1/generate",
        "/v1/attribute",
        "/v1/forget",
        "/v1/jobs",
        "/v1/jobs/{job_id}",
        "/v1/events",
        "/v1/events/verify",
    } <= paths


@pytest.mark.parametrize("role", ROLES)
def test_fuzz_every_route(live, keys, role):
    base, schema = live
    headers = {"X-API-Key": keys[role]}
    session = requests.Session()
    for op in operations(schema):
        breakable = len(op.body) > 0 or len(op.query) > 0  # a string header or path name cannot break the schema
        for mode in [GenerationMode.POSITIVE] + [GenerationMode.NEGATIVE] * breakable:

            @given(case=op.as_strategy(generation_mode=mode, headers=headers))
            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                derandomize=True,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            def run(case):
                case.call_and_validate(base_url=base, session=session, headers=headers, checks=CHECKS)

            run()


# -- deep nesting ---------------------------------------------------------------------------------------------
DEPTHS = st.one_of(st.sampled_from([MAX_DEPTH - 1, MAX_DEPTH, MAX_DEPTH + 1, 500, 900]), st.integers(1, 1000))
PLACES = st.sampled_from(["a field", "an unknown field", "the body"])
HOLE = "\x00deep"


def nested(depth: int, kind: str) -> str:
    """JSON text ``depth`` arrays or objects deep, built as text (Python's encoder would recurse)."""
    if kind == "array":
        return "[" * depth + "1" + "]" * depth
    return '{"a": ' * depth + "1" + "}" * depth


def deep_body(body, depth: int, kind: str, place: str, field: str) -> tuple[str, int]:
    """(``body`` with ``depth`` levels of nesting put in ``place``, its total depth)."""
    if place == "the body" or not isinstance(body, dict):
        return nested(depth, kind), depth
    body = {**body, (field if place == "a field" else "zz-unknown"): HOLE}
    return json.dumps(body).replace(json.dumps(HOLE), nested(depth, kind)), depth + 1


@pytest.mark.parametrize("role", ROLES + [None])
def test_fuzz_deep_nesting_in_every_body(live, keys, role):
    base, schema = live
    headers = {"X-API-Key": keys[role]} if role else {}
    session = requests.Session()
    for op in operations(schema):
        if not op.body:
            continue

        @given(
            case=op.as_strategy(generation_mode=GenerationMode.POSITIVE, headers=headers),
            depth=DEPTHS,
            kind=st.sampled_from(["array", "object"]),
            place=PLACES,
            data=st.data(),
        )
        @settings(
            max_examples=4 * EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def run(case, depth, kind, place, data):
            keys = sorted(case.body) if isinstance(case.body, dict) and case.body else ["n"]
            field = data.draw(st.sampled_from(keys))
            text, total = deep_body(case.body, depth, kind, place, field)
            r = case.call_and_validate(base_url=base, session=session, headers=headers, checks=CHECKS, data=text)
            if len(text.encode()) > BODY_BYTES:
                assert r.status_code == 413, r.text
            elif total > MAX_DEPTH:  # up to the limit: read and validated as usual (the checks above)
                assert r.status_code == 422 and r.json()["limit"] == "body depth" and r.json()["got"] == total, r.text

        run()
