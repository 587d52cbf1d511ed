"""``silodiff serve``: the HTTP service (FastAPI + uvicorn) over one store; fastapi is imported only when it runs."""

from __future__ import annotations

from typing import Annotated

import typer

from .common import DeviceOpt, StoreOpt, _open, cli_errors, device_arg


@cli_errors
def serve_cmd(
    store: StoreOpt,
    host: Annotated[
        str, typer.Option(help="Interface to bind (loopback by default).", envvar="SILODIFF_HOST")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.", envvar="SILODIFF_PORT")] = 8000,
    max_n: Annotated[int, typer.Option(help="Most images per request.", envvar="SILODIFF_MAX_N")] = 64,
    max_steps: Annotated[int, typer.Option(help="Most sampling steps per request.", envvar="SILODIFF_MAX_STEPS")] = 250,
    max_image_steps: Annotated[
        int, typer.Option(help="Most images × steps per request.", envvar="SILODIFF_MAX_IMAGE_STEPS")
    ] = 6400,
    rate: Annotated[
        int, typer.Option(help="Requests per key per minute (0 = unlimited).", envvar="SILODIFF_RATE_PER_MINUTE")
    ] = 60,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
    device: DeviceOpt = "auto",
) -> None:
    """Serve generation, attribution and forgetting over HTTP, with API keys (`silodiff keys create`)."""
    from ..service.server import serve
    from ..service.settings import Settings

    _open(store)  # fail with one line if the store does not exist
    serve(
        Settings(
            store=store,
            host=host,
            port=port,
            max_n=max_n,
            max_steps=max_steps,
            max_image_steps=max_image_steps,
            rate_per_minute=rate,
            log_level=log_level,
            device=device_arg(device),
        )
    )
