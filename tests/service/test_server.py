"""A real uvicorn server on 127.0.0.1 answered over HTTP (httpx): in a thread, and `silodiff serve` as a process."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from silodiff.service.keys import hash_key
from silodiff.service.server import background_server

SILODIFF = str(Path(sys.executable).parent / "silodiff")  # the console script of this environment


def test_background_server_answers_over_real_http_and_never_logs_keys(service_store, keys, app_factory, capfd):
    with background_server(app_factory(service_store), log_level="info") as base:
        assert base.startswith("http://127.0.0.1:")
        with httpx.Client(base_url=base, timeout=60) as http:
            assert http.get("/healthz").json()["status"] == "ok"
            page = http.get("/")
            assert page.status_code == 200 and "<title>silodiff</title>" in page.text
            assert http.get("/static/app.js").status_code == 200
            paths = http.get("/openapi.json").json()["paths"]
            assert {
                "/v1/generate",
                "/v1/attribute",
                "/v1/forget",
                "/v1/jobs/{job_id}",
                "/v1/events",
                "/healthz",
            } <= set(paths)
            r = http.post("/v1/generate", json={"n": 2, "steps": 3}, headers={"X-API-Key": keys["bob"]})
            assert r.status_code == 200 and r.json()["compartments"] == ["source-2"]
            assert http.get("/v1/me", headers={"Authorization": f"Bearer {keys['alice']}"}).status_code == 200
            assert http.get("/v1/events", headers={"X-API-Key": keys["alice"]}).status_code == 403
            assert http.get("/v1/me", headers={"X-API-Key": keys["alice"] + "x"}).status_code == 401
    out = capfd.readouterr()
    logs = out.out + out.err
    assert "POST /v1/generate" in logs and "generate for key bob" in logs  # the logs are there …
    for key in keys.values():  # … and hold neither keys nor their hashes
        assert key not in logs and hash_key(key) not in logs


def test_serve_flags_become_settings(service_store, monkeypatch):
    from typer.testing import CliRunner

    from silodiff.cli.main import app as cli
    from silodiff.service import server

    seen = []
    monkeypatch.setattr(server, "serve", seen.append)
    out = CliRunner().invoke(
        cli,
        [
            "serve",
            "--store",
            str(service_store.root),
            "--port",
            "9123",
            "--max-n",
            "5",
            "--max-steps",
            "7",
            "--rate",
            "11",
        ],
    )
    assert out.exit_code == 0, out.output
    (settings,) = seen
    assert (settings.store, settings.host, settings.port) == (service_store.root, "127.0.0.1", 9123)
    assert (settings.max_n, settings.max_steps, settings.rate_per_minute) == (5, 7, 11)


def test_serve_rejects_a_missing_store_with_one_line(tmp_path):
    from typer.testing import CliRunner

    from silodiff.cli.main import app as cli

    out = CliRunner().invoke(cli, ["serve", "--store", str(tmp_path / "none")])
    assert out.exit_code == 2 and out.output.startswith("error: ") and len(out.output.strip().splitlines()) == 1


@pytest.mark.slow
def test_silodiff_serve_process(service_store, keys, tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [SILODIFF, "serve", "--store", str(service_store.root), "--port", str(port), "--rate", "2", "--max-n", "3"]
    log = open(tmp_path / "serve.log", "w+")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(600):
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
            assert proc.poll() is None, open(tmp_path / "serve.log").read()
        h = {"X-API-Key": keys["alice"]}
        r = httpx.post(f"{base}/v1/generate", json={"n": 4, "steps": 2}, headers=h, timeout=60)
        assert r.status_code == 422 and r.json()["limit"] == "n"  # --max-n 3
        assert httpx.get(f"{base}/v1/me", headers=h, timeout=60).status_code == 200
        assert httpx.get(f"{base}/v1/me", headers=h, timeout=60).status_code == 429  # --rate 2
    finally:
        proc.terminate()
        proc.wait(30)
    log.seek(0)
    text = log.read()
    assert f"127.0.0.1:{port}" in text and keys["alice"] not in text


@pytest.mark.slow
def test_cli_without_the_service_imports_no_web_framework():
    code = (
        "import sys, silodiff, silodiff.cli.main, silodiff.service.keys; "
        "print('fastapi' in sys.modules, 'uvicorn' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
