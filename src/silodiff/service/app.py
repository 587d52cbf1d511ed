"""The FastAPI app factory: ``create_app(settings, store)``.

Routes (OpenAPI at ``/docs``): ``/healthz``, ``/v1/me``, ``/v1/compartments``,
``/v1/generate``, ``/v1/attribute``, admin ``/v1/forget``, ``/v1/jobs``,
``/v1/events``; the web page at ``/``.  Errors are JSON ``{"detail": …}``:
401 (no / bad key), 403 (outside the key's rights), 404, 413 (body over
``max_body_bytes``), 422 (bad body, one nested over ``body.MAX_DEPTH`` levels, or over
a limit), 429 (rate), 501/503; both body limits are checked by ``body.BodyLimit``
before any route runs.

No input may produce a 500: Python's JSON reader accepts ``NaN``, ``Infinity``
and overflowing literals (``1e999`` → inf); the request models refuse
non-finite floats, and the 422 handler writes the offending input as a string
("NaN", "Infinity", "-Infinity"), since strict JSON has no such numbers.
Every log line goes through key redaction (``logs.py``).
"""

from __future__ import annotations

import logging
import math
import threading
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from .. import __version__
from ..errors import SilodiffError
from ..store import Store
from . import logs
from .active import ActiveSet
from .body import BodyLimit
from .deps import RateLimiter, ServiceState
from .errors import Forbidden, LimitExceeded, NotFound, RateLimited, Unavailable
from .jobs import JobRunner
from .keys import ensure_table
from .routes import ROUTERS
from .schemas import ERRORS, ErrorOut
from .settings import Settings

STATIC = Path(__file__).parent / "static"
log = logging.getLogger("silodiff.service")


def finite(value):
    """``value`` with every non-finite float written as the string JSON would need ("NaN", "Infinity", …)."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def create_app(settings: Settings | None = None, store: Store | None = None) -> FastAPI:
    """An app serving ``store`` (default: ``settings.store``, which must exist)."""
    settings = settings or Settings()
    store = store or Store(settings.store, create=False)
    logs.install()
    ensure_table(store)
    active = ActiveSet(store, settings.cache_size, settings.device)
    state = ServiceState(
        settings,
        store,
        active,
        JobRunner(store, active),
        RateLimiter(settings.rate_per_minute),
        threading.BoundedSemaphore(settings.max_concurrent),
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        state.jobs.shutdown()

    app = FastAPI(
        title="silodiff",
        version=__version__,
        lifespan=lifespan,
        description="Access-controlled generation from compartmentalised diffusion models.",
        responses={status: {"model": ErrorOut, "description": text} for status, text in ERRORS.items()},
    )
    app.state.silodiff = state
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    for router in ROUTERS:
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": finite(jsonable_encoder(exc.errors()))}, status_code=422)

    @app.exception_handler(SilodiffError)
    async def silodiff_error(request: Request, exc: SilodiffError) -> JSONResponse:
        status, body, headers = 422, {"detail": str(exc)}, None
        if isinstance(exc, Forbidden):
            status = 403
        elif isinstance(exc, NotFound):
            status = 404
        elif isinstance(exc, LimitExceeded):
            body.update(limit=exc.limit, allowed=exc.allowed, got=exc.got)
        elif isinstance(exc, RateLimited):
            status, headers = 429, {"Retry-After": str(max(1, round(exc.retry_after)))}
        elif isinstance(exc, Unavailable):
            status = 501 if "not available" in str(exc) else 503
        caller = getattr(request.state, "caller", "-")
        log.info("%s %s -> %d for key %s: %s", request.method, request.url.path, status, caller, exc)
        return JSONResponse(body, status_code=status, headers=headers)

    return app
