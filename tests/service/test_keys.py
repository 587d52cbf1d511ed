"""API keys: hashed at rest, shown once, revocable; the `silodiff keys` CLI."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from silodiff.cli.main import app as cli
from silodiff.service.keys import create_key, hash_key, list_keys, lookup, revoke_key


def test_keys_are_stored_hashed_and_never_listed(fresh_store):
    record, key = create_key(fresh_store, "carol", ["source-1"])
    assert record == {"name": "carol", "sources": ["source-1"], "admin": False}
    rows = [dict(r) for r in fresh_store.catalog.db.execute("SELECT * FROM api_keys WHERE name = 'carol'")]
    assert rows[0]["key_hash"] == hash_key(key) and key not in json.dumps(rows)
    fresh_store.catalog.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    assert key.encode() not in (fresh_store.root / "catalog.sqlite").read_bytes()
    listed = json.dumps(list_keys(fresh_store))
    assert "carol" in listed and key not in listed and hash_key(key) not in listed
    events = json.dumps(fresh_store.catalog.events("api-key"))
    assert "carol" in events and key not in events and hash_key(key) not in events
    assert lookup(fresh_store, key).sources == frozenset({"source-1"})
    assert lookup(fresh_store, key + "x") is None and lookup(fresh_store, "not-a-key") is None


def test_revoked_key_gets_401(client, service_store):
    _, key = create_key(service_store, "temp-revoked", ["source-0"])
    assert client.get("/v1/me", headers={"X-API-Key": key}).status_code == 200
    revoke_key(service_store, "temp-revoked")
    r = client.get("/v1/compartments", headers={"X-API-Key": key})
    assert r.status_code == 401 and r.json()["detail"] == "invalid or revoked API key"
    assert client.post("/v1/generate", headers={"X-API-Key": key}, json={"n": 1, "steps": 2}).status_code == 401


def test_cli_create_list_revoke(fresh_store):
    runner = CliRunner()
    store = str(fresh_store.root)
    out = runner.invoke(
        cli, ["keys", "create", "--store", store, "--name", "dave", "--sources", "source-0,source-2", "--json"]
    )
    assert out.exit_code == 0, out.output
    created = json.loads(out.stdout)
    assert created["sources"] == ["source-0", "source-2"] and lookup(fresh_store, created["key"]).name == "dave"
    listed = runner.invoke(cli, ["keys", "list", "--store", store, "--json"])
    assert "dave" in listed.stdout and created["key"] not in listed.stdout
    assert runner.invoke(cli, ["keys", "revoke", "--store", store, "dave"]).exit_code == 0
    assert lookup(fresh_store, created["key"]) is None
    again = runner.invoke(cli, ["keys", "revoke", "--store", store, "dave"])
    assert again.exit_code == 2 and again.output.startswith("error: ") and len(again.output.strip().splitlines()) == 1


def test_cli_rejects_bad_input_with_one_line(fresh_store):
    runner = CliRunner()
    store = str(fresh_store.root)
    for args in (
        ["--name", "x", "--sources", "no-such-source"],
        ["--name", "x"],
        ["--name", "bad name!", "--sources", "*"],
        ["--name", "alice", "--sources", "source-0"],
    ):
        out = runner.invoke(cli, ["keys", "create", "--store", store, *args])
        assert out.exit_code == 2 and out.output.startswith("error: "), (args, out.output)
