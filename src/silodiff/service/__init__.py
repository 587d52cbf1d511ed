"""The HTTP service (FastAPI + uvicorn): access-controlled generation, attribution, forgetting, audit log.

Each API key carries rights over sources; a request is served by a composition
of only the compartments whose training lineage lies within those rights
(Golatkar et al. 2023, arXiv 2308.01937, §"access control"), from one consistent
snapshot of the active artifacts.  fastapi / uvicorn are imported only here.

    from silodiff.service import Settings, create_app
    app = create_app(Settings(store="st"))
"""

from __future__ import annotations

from typing import Any

__all__ = ["Settings", "create_app", "background_server", "serve", "create_key", "list_keys", "revoke_key"]


def __getattr__(name: str) -> Any:  # lazy: `silodiff keys` needs no web framework
    if name == "create_app":
        from .app import create_app

        return create_app
    if name == "Settings":
        from .settings import Settings

        return Settings
    if name in ("background_server", "serve"):
        from . import server

        return getattr(server, name)
    if name in ("create_key", "list_keys", "revoke_key"):
        from . import keys

        return getattr(keys, name)
    raise AttributeError(f"module 'silodiff.service' has no attribute {name!r}")
