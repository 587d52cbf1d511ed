"""The FastAPI app factory: ``create_app(settings, store)``.

Routes (OpenAPI at ``/docs``): ``/healthz``, ``/v1/me``, ``/v1/compartments``,
``/v1/generate``, ``/v1/attribute``, admin ``/v1/forget``, ``/v1/jobs``,
``/v1/events``; the web page at ``/``.  Errors are JSON ``{"detail": …}``:
401 (no / bad key), 403 (outside the key's rights), 404, 422 (bad body or over
a limit), 429 (rate), 501/503.
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from .. import __version__
from ..errors import SilodiffError
from ..store import Store
from .active import ActiveSet
from .deps import RateLimiter, ServiceState
from .errors import Forbidden, LimitExceeded, NotFound, RateLimited, Unavailable
from .jobs import JobRunner
from .keys import ensure_table
from .routes import ROUTERS
from .settings import Settings

STATIC = Path(__file__).parent / "static"
log = logging.getLogger("silodiff.service")


def create_app(settings: Settings | None = None, store: Store | None = None) -> FastAPI:
    """An app serving ``store`` (default: ``settings.store``, which must exist)."""
    settings = settings or Settings()
    store = store or Store(settings.store, create=False)
    ensure_table(store)
    active = ActiveSet(store, settings.cache_size, settings.device)
    state = ServiceState(settings, store, active, JobRunner(store, active), RateLimiter(settings.rate_per_minute))

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        state.jobs.shutdown()

    app = FastAPI(
        title="silodiff",
        version=__version__,
        lifespan=lifespan,
        description="Access-controlled generation from compartmentalised diffusion models.",
    )
    app.state.silodiff = state
    for router in ROUTERS:
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

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
