"""Service settings (pydantic-settings): flags of ``silodiff serve`` or ``SILODIFF_*`` environment variables.

Every limit is configurable; a request over a limit gets 413 (body bytes), 422
(images, steps) or 429 (rate) with a JSON body that names the limit.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SILODIFF_", extra="ignore")

    store: Path = Field(Path("store"), description="Store directory (catalog + artifacts + data).")
    host: str = Field("127.0.0.1", description="Interface to bind; loopback by default.")
    port: int = Field(8000, ge=0, le=65535, description="TCP port (0 = any free port).")
    max_n: int = Field(64, ge=1, description="Most images per request (generate, attribute).")
    max_steps: int = Field(250, ge=1, le=1000, description="Most sampling steps per request.")
    max_image_steps: int = Field(
        64 * 100, ge=1, description="Most images × steps per request (× (K+1) for leave-one-out attribution)."
    )
    max_body_bytes: int = Field(
        1 << 20, ge=64, description="Largest request body in bytes (413 above it, checked before the key)."
    )
    max_concurrent: int = Field(
        default_factory=lambda: os.cpu_count() or 1,
        ge=1,
        description="Requests sampling at once (default: the CPU count); others wait for a slot, not for a lock.",
    )
    rate_per_minute: int = Field(60, ge=0, description="Requests per key per minute (0 = unlimited).")
    cache_size: int = Field(32, ge=1, description="Loaded models kept in memory, by artifact hash.")
    events_limit: int = Field(500, ge=1, description="Most events one /v1/events call returns.")
    log_level: str = Field("info", description="uvicorn log level.")
    device: str = Field("auto", description="Where models run: auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps.")
