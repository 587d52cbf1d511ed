"""add_source: a new compartment is trained; only the router (its output set changed) is retrained."""

from __future__ import annotations

import pytest

from silodiff.data import load_digits
from silodiff.errors import SilodiffError
from silodiff.unlearning import add_source


def _new_data(source: str):
    data = load_digits(f"single:{source}", limit=190)
    return data.subset(data.sample_ids[150:])  # 40 digits the store has never seen


def test_add_source_trains_only_the_new_compartment_and_the_router(fstore):
    before = {a["hash"] for a in fstore.catalog.artifacts(None, active=True) if a["kind"] != "router"}
    old_router = fstore.active("router")[0]["hash"]
    result = add_source(fstore, _new_data("museum-b"), "digits")
    after = {a["hash"] for a in fstore.catalog.artifacts(None, active=True)}
    assert before <= after  # every other compartment checkpoint, the paragon, the FLD net: same hashes
    new = fstore.catalog.artifacts("compartment", name="museum-b")
    assert [a["slice"] for a in new] == [0, 1]  # same slice count as the others
    assert set(fstore.catalog.lineage(new[-1]["hash"])) == set(_new_data("museum-b").sample_ids)
    router = fstore.active("router")[0]["hash"]
    assert router != old_router and router == result["router"]
    assert fstore.load(router).info["compartments"] == ["museum-b", "source-0", "source-1", "source-2"]
    assert after - before == {a["hash"] for a in new} | {router}


def test_add_source_refuses_existing_sources(fstore):
    with pytest.raises(SilodiffError, match="already exist"):
        add_source(fstore, _new_data("source-1"), "digits")


def test_add_source_resumes_after_an_interruption(fstore):
    from silodiff.training.plan import split_slices

    data = _new_data("museum-d")
    with fstore.catalog.transaction():  # what a call killed before training leaves behind
        fstore.ingest(data, "digits")
        fstore.catalog.plan_compartment("museum-d", split_slices(data.sample_ids, 2))
    result = add_source(fstore, data, "digits")
    assert list(result["compartments"]) == ["museum-d"] and len(result["compartments"]["museum-d"]) == 2
    assert {c["name"]: c["status"] for c in fstore.catalog.compartments()}["museum-d"] == "trained"
