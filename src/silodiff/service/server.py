"""Run the app under uvicorn: in the foreground (``silodiff serve``) or in a background thread.

``background_server`` binds a socket first (port 0 = a free port chosen by the
OS, no race), runs uvicorn on it in a daemon thread and yields the base URL;
the demo, the tests and the benchmark use it to talk to a real server.
"""

from __future__ import annotations

import copy
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from fastapi import FastAPI

from ..errors import SilodiffError
from .app import create_app
from .settings import Settings


def serve(settings: Settings) -> None:
    """Serve ``settings.store`` on ``settings.host:settings.port`` until interrupted."""
    app = create_app(settings)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        log_config=log_config(settings.log_level),
    )


def log_config(level: str) -> dict:
    """uvicorn's logging config plus the ``silodiff`` logger (one line per request: key name, never the key).

    Every handler carries the key-redaction filter (``logs.RedactKeys``).
    """
    config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    config.setdefault("filters", {})["redact_keys"] = {"()": "silodiff.service.logs.RedactKeys"}
    for handler in config["handlers"].values():
        handler["filters"] = [*handler.get("filters", []), "redact_keys"]
    config["loggers"]["silodiff"] = {"handlers": ["default"], "level": level.upper(), "propagate": False}
    return config


@contextmanager
def background_server(
    app: FastAPI, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning", timeout: float = 30.0
) -> Iterator[str]:
    """A real uvicorn server for ``app`` on ``host:port`` in a thread; yields ``http://host:port``."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    server = uvicorn.Server(uvicorn.Config(app, log_level=log_level, lifespan="on", log_config=log_config(log_level)))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="silodiff-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            sock.close()
            raise SilodiffError(f"the server on {host}:{port} did not start")
        time.sleep(0.02)
    try:
        yield f"http://{host}:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout)
        sock.close()
