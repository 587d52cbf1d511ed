"""``silodiff attribute --method ensemble|dtrak|trak`` and ``/v1/attribute`` with a method."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from silodiff.cli.main import app

runner = CliRunner()
FAST = ("--steps", 3, "--timesteps", 2, "--proj-dim", 32)


def _run(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_dtrak_on_the_composition_and_on_one_compartment(comp_store, tmp_path):
    out = tmp_path / "d"
    r = _run("attribute", "--store", comp_store.root, "--method", "dtrak", "--seed", 1, "--n", 2, "--top-k", 3,
             *FAST, "--out", out, "--json")
    assert r.exit_code == 0, r.output
    result = json.loads((out / "influence.json").read_text())
    assert result["method"] == "dtrak" and result["model"].startswith("composition of")
    assert result["training_samples"] == 90 and result["units"] == 90 and (out / "topk.png").stat().st_size > 0
    scores = [t["score"] for t in result["images"][0]["top"]]
    assert len(scores) == 3 and scores == sorted(scores, reverse=True)
    # one compartment: only its own samples, grouped by source → one unit
    name = comp_store.catalog.sample_rows()[0]["source"]
    r = _run("attribute", "--store", comp_store.root, "--method", "trak", "--allowed", name, "--unit", "source",
             "--seed", 1, *FAST, "--out", tmp_path / "t", "--json")
    assert r.exit_code == 0, r.output
    one = json.loads((tmp_path / "t" / "influence.json").read_text())
    assert one["model"] == f"compartment {name}" and one["units"] == 1 and one["per_sample_gradients"] == "vmap"
    assert one["images"][0]["top"][0]["unit"] == name
    assert one["training_samples"] == len(comp_store.catalog.sample_rows(name))


def test_dtrak_on_an_image_file_and_ensemble_signed(enc_store, tmp_path):
    path = tmp_path / "x.png"
    Image.fromarray(enc_store.dataset().pixels[3, 0].numpy()).save(path)
    r = _run("attribute", "--store", enc_store.root, "--method", "dtrak", "--image", path, *FAST, "--out", tmp_path / "f")
    assert r.exit_code == 0, r.output
    result = json.loads((tmp_path / "f" / "influence.json").read_text())
    assert result["model"].startswith("encoded ensemble") and result["image"] == str(path)
    r = _run("attribute", "--store", enc_store.root, "--method", "dtrak", "--models", "ensemble", "--seed", 2,
             *FAST, "--out", tmp_path / "m", "--json")
    assert r.exit_code == 0, r.output
    result = json.loads((tmp_path / "m" / "influence.json").read_text())
    assert result["models"] == "ensemble" and result["members"] == 8 and result["units"] == 30
    assert "members of the encoded ensemble" in result["model"] and result["per_sample_gradients"] == "vmap"
    r = _run("attribute", "--store", enc_store.root, "--method", "ensemble", "--contrast", "signed", "--seed", 2,
             "--n", 2, "--steps", 3, "--out", tmp_path / "e")
    assert r.exit_code == 0, r.output
    result = json.loads((tmp_path / "e" / "influence.json").read_text())
    assert result["contrast"] == "signed" and (tmp_path / "e" / "topk.png").exists()


def test_bad_method_input_is_one_line_and_exit_2(comp_store, tmp_path):
    base = ("attribute", "--store", comp_store.root, "--seed", 1, "--out", tmp_path)
    cases = [
        ((*base, "--method", "tracin"), "unknown method"),
        ((*base, "--method", "dtrak", "--proj-dim", 0), "projection dimension"),
        ((*base, "--method", "dtrak", "--proj-dim", -3), "projection dimension"),
        ((*base, "--method", "trak", "--unit", "colour"), "unknown unit"),
        ((*base, "--method", "dtrak", "--unit", "column:owner"), "--groups"),
        ((*base, "--method", "dtrak", "--allowed", "nobody"), "not a trained compartment"),
        ((*base, "--method", "dtrak", "--ensemble"), "disagree"),
        ((*base, "--method", "dtrak", "--models", "ensemble"), "no encoded ensemble"),
        ((*base, "--method", "dtrak", "--models", "ensemble", "--proj-dim", 0), "projection dimension"),
        ((*base, "--method", "trak", "--models", "all"), "unknown models"),
        ((*base, "--models", "compartments"), "applies to --method dtrak or trak"),
    ]
    for args, message in cases:
        r = _run(*args)
        assert r.exit_code == 2, (args, r.output)
        line = r.output.strip()
        assert line.startswith("error:") and len(line.splitlines()) == 1 and message in line, (args, line)


@pytest.fixture
def client(comp_store, tmp_path):
    import shutil

    from fastapi.testclient import TestClient

    from silodiff.service import Settings, create_app
    from silodiff.service.keys import create_key
    from silodiff.store import Store

    root = tmp_path / "store"
    shutil.copytree(comp_store.root, root)
    store = Store(root)
    sources = sorted({r["source"] for r in store.catalog.sample_rows()})
    keys = {"all": create_key(store, "all", ["*"])[1], "one": create_key(store, "one", sources[:1])[1]}
    app = create_app(Settings(store=root, max_n=8, max_steps=50, max_image_steps=400, rate_per_minute=0), store)
    return TestClient(app), keys, sources


def test_http_attribute_with_a_method_stays_within_the_keys_rights(client):
    http, keys, sources = client
    req = {"n": 2, "steps": 3, "seed": 1, "method": "dtrak", "unit": "source", "proj_dim": 16, "top_k": 5}
    r = http.post("/v1/attribute", json=req, headers={"X-API-Key": keys["one"]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["method"] == "dtrak" and set(body["artifacts"]) == {sources[0]}
    assert {t["unit"] for im in body["images"] for t in im["top"]} == {sources[0]}  # only its own data
    r = http.post("/v1/attribute", json=req, headers={"X-API-Key": keys["all"]})
    assert r.status_code == 200 and {t["unit"] for t in r.json()["images"][0]["top"]} == set(sources)
    assert http.post("/v1/attribute", json={**req, "method": "tracin"}, headers={"X-API-Key": keys["all"]}).status_code == 422
    assert http.post("/v1/attribute", json={**req, "proj_dim": 0}, headers={"X-API-Key": keys["all"]}).status_code == 422
    r = http.post("/v1/attribute", json={**req, "compartments": [sources[1]]}, headers={"X-API-Key": keys["one"]})
    assert r.status_code == 403
    # no encoded ensemble in this store: a clear 4xx, not a 500
    r = http.post("/v1/attribute", json={**req, "method": "ensemble"}, headers={"X-API-Key": keys["all"]})
    assert r.status_code == 422 and "encoded ensemble" in r.json()["detail"]
    r = http.post("/v1/attribute", json={**req, "models": "ensemble"}, headers={"X-API-Key": keys["all"]})
    assert r.status_code == 422 and "encoded ensemble" in r.json()["detail"]
    bad = {**req, "method": "compartments", "models": "compartments"}
    assert http.post("/v1/attribute", json=bad, headers={"X-API-Key": keys["all"]}).status_code == 422
    assert np.isfinite([t["score"] for t in body["images"][0]["top"]]).all()


def test_http_models_compartments_averages_only_the_compartments_within_the_keys_rights(client):
    http, keys, sources = client
    req = {"n": 1, "steps": 3, "seed": 1, "method": "trak", "models": "compartments", "unit": "source", "proj_dim": 16,
           "top_k": 5}
    r = http.post("/v1/attribute", json=req, headers={"X-API-Key": keys["one"]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["members"] == 1 and body["units"] == 1 and set(body["artifacts"]) == {sources[0]}
    assert {t["unit"] for t in body["images"][0]["top"]} == {sources[0]}
    r = http.post("/v1/attribute", json=req, headers={"X-API-Key": keys["all"]})
    assert r.status_code == 200 and r.json()["members"] == 3 and r.json()["units"] == 3
    r = http.post("/v1/attribute", json={**req, "compartments": sources[1:]}, headers={"X-API-Key": keys["one"]})
    assert r.status_code == 403


def test_http_ensemble_method_needs_rights_over_every_source(enc_store, tmp_path):
    import shutil

    from fastapi.testclient import TestClient

    from silodiff.service import Settings, create_app
    from silodiff.service.keys import create_key
    from silodiff.store import Store

    root = tmp_path / "store"
    shutil.copytree(enc_store.root, root)
    store = Store(root)
    sources = sorted({r["source"] for r in store.catalog.sample_rows()})
    every, one = create_key(store, "every", sources)[1], create_key(store, "one", sources[:1])[1]
    http = TestClient(create_app(Settings(store=root, max_n=8, max_steps=50, max_image_steps=400, rate_per_minute=0), store))
    req = {"n": 2, "steps": 3, "seed": 1, "method": "ensemble", "top_k": 2}
    r = http.post("/v1/attribute", json=req, headers={"X-API-Key": every})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["contrast"] == "signed" and len(body["images"][0]["top"]) == 2 and len(body["artifacts"]) == 8
    assert http.post("/v1/attribute", json=req, headers={"X-API-Key": one}).status_code == 403
    dtrak = {"n": 1, "steps": 3, "seed": 1, "method": "dtrak", "models": "ensemble", "proj_dim": 16, "top_k": 2}
    r = http.post("/v1/attribute", json=dtrak, headers={"X-API-Key": every})
    assert r.status_code == 200, r.text
    assert r.json()["members"] == 8 and len(r.json()["artifacts"]) == 8
    assert http.post("/v1/attribute", json=dtrak, headers={"X-API-Key": one}).status_code == 403
