"""``train base`` and ``train compartments --from-base [--adapter lora]`` through the CLI, and their refusals."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from silodiff.cli.main import app
from silodiff.store import Store

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def ok_json(*args: str):
    r = run(*args, "--json")
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def one_line_error(r, fragment: str) -> None:
    assert r.exit_code == 2, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], r.stderr


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("base") / "st"
    ok_json("data", "ingest", "--store", root, "--limit", "60", "--assign", "random:3")
    return root


def test_bad_from_base_input_is_one_line_and_registers_nothing(store):
    s = ["--store", store, "--epochs", "1", "--batch-size", "16"]
    one_line_error(run("train", "compartments", *s, "--from-base"), "no base model")
    one_line_error(run("train", "compartments", *s, "--adapter", "lora"), "need --from-base")
    one_line_error(run("train", "compartments", *s, "--replay", "0.5"), "need --from-base")
    one_line_error(run("train", "base", *s, "--sources", "nobody"), "unknown source")
    assert Store(store).catalog.artifacts(active=None) == []
    assert ok_json("train", "base", *s, "--sources", "source-0")["public_sources"] == ["source-0"]
    before = {a["hash"] for a in Store(store).catalog.artifacts(active=None)}
    one_line_error(run("train", "compartments", *s, "--from-base", "--adapter", "lora", "--rank", "0"), "rank must be ≥ 1")
    one_line_error(run("train", "compartments", *s, "--from-base", "--adapter", "lora", "--target-modules", "nothing"),
                   "match no linear")
    one_line_error(run("train", "compartments", *s, "--from-base", "--replay", "1"), "replay must be in [0, 1)")
    assert {a["hash"] for a in Store(store).catalog.artifacts(active=None)} == before


def test_lora_compartments_from_the_base(store):
    s = ["--store", store, "--epochs", "1", "--batch-size", "16"]
    if not Store(store).catalog.public_sources():
        ok_json("train", "base", *s, "--sources", "source-0")
    rows = ok_json("train", "compartments", *s, "--slices", "1", "--from-base", "--adapter", "lora", "--rank", "2")
    assert sorted(r["compartment"] for r in rows) == ["source-1", "source-2"]  # the public source is the base
    st = Store(store)
    base = st.catalog.artifacts("base")[0]["hash"]
    for r in rows:
        model = st.load(r["final"])
        assert model.base_hash == base and all("lora_" in k for k in model.state_dict())
        assert set(st.catalog.lineage(base)) <= set(st.catalog.lineage(r["final"]))
    # the catalog reports the bytes a sampler reads: an adapter is a small fraction of its base
    sizes = {(a["kind"], a["name"]): a["bytes"] for a in ok_json("catalog", "artifacts", "--store", store)}
    assert 0 < sizes[("compartment", "source-1")] < 0.2 * sizes[("base", "base")]


def test_replay_trains_another_adapter_with_the_same_lineage(store):
    s = ["--store", store, "--epochs", "1", "--batch-size", "16", "--slices", "1", "--from-base", "--adapter", "lora",
         "--rank", "2", "--only", "source-1", "--seed", "5"]  # a seed of its own: trained here, not resumed
    if not Store(store).catalog.public_sources():
        ok_json("train", "base", "--store", store, "--epochs", "1", "--batch-size", "16", "--sources", "source-0")
    (plain,) = ok_json("train", "compartments", *s)
    (replayed,) = ok_json("train", "compartments", *s, "--replay", "0.5")
    assert replayed["final"] != plain["final"]  # another recipe: trained anew, not resumed from the plain adapter
    st = Store(store)
    assert st.catalog.lineage(replayed["final"]) == st.catalog.lineage(plain["final"])  # own ids ∪ the base's
    assert st.artifacts.get(replayed["final"])[1]["info"]["train"]["replay"] == 0.5


def test_the_heads_router_from_the_cli(tmp_path):
    root = tmp_path / "st"
    s = ["--store", root, "--epochs", "1", "--batch-size", "16"]
    ok_json("data", "ingest", "--store", root, "--limit", "150", "--assign", "random:3")
    ok_json("train", "base", *s, "--sources", "source-0")
    ok_json("train", "compartments", *s, "--slices", "1", "--from-base", "--adapter", "lora", "--rank", "2")
    one_line_error(run("train", "router", *s, "--heads"), "needs a public reference")  # the base is not a class
    assert Store(root).catalog.artifacts("router", active=None) == []
    router = ok_json("train", "router", *s, "--heads", "--with-base")["router"]
    info = Store(root).load(router).info
    assert info["router"] == "heads" and info["compartments"] == ["base", "source-1", "source-2"]
    assert info["heads"]["base"] == "reference" and info["heads"]["source-1"]["samples"] > 50
    # the base as a member of the sampled composition, weighted by that router
    out = ok_json("sample", "--store", root, "--with-base", "--n", "4", "--steps", "3", "--out", tmp_path / "s")
    assert out["compartments"] == ["source-1", "source-2", "base"] and out["mean_weights"]["base"] > 0
    one_line_error(run("sample", "--store", root, "--model", "source-1", "--with-base", "--out", tmp_path / "t"),
                   "only applies to --model composed")


def test_a_soup_of_lora_compartments_from_the_cli(store, tmp_path):
    s = ["--store", store, "--epochs", "1", "--batch-size", "16"]
    if not Store(store).catalog.public_sources():
        ok_json("train", "base", *s, "--sources", "source-0")
    if not Store(store).catalog.artifacts("compartment"):
        ok_json("train", "compartments", *s, "--slices", "1", "--from-base", "--adapter", "lora", "--rank", "2")
    out = ok_json("sample", "--store", store, "--combine", "soup", "--n", "4", "--steps", "3", "--out", tmp_path / "s")
    assert out["combine"] == "soup" and out["compartments"] == ["source-1", "source-2"]
    assert sum(out["soup_weights"].values()) == pytest.approx(1.0, abs=1e-3)
    assert (tmp_path / "s" / "samples.npz").exists() and "mean_weights" not in out  # one model: no router weights
    one_line_error(run("sample", "--store", store, "--combine", "blend", "--out", tmp_path / "t"), "unknown combine")
    one_line_error(run("sample", "--store", store, "--combine", "soup", "--gate", "0.2", "--out", tmp_path / "t"),
                   "gating does not apply")
    one_line_error(run("sample", "--store", store, "--model", "source-1", "--combine", "soup", "--out", tmp_path / "t"),
                   "only applies to --model composed")
    assert not (tmp_path / "t").exists()
