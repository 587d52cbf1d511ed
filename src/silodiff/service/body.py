"""The request-body limit: an ASGI middleware that answers 413 before a body is parsed or a key is checked.

Two checks, both before any route code runs:

1. a ``Content-Length`` over ``max_bytes`` → 413 at once; the body is never read;
2. a body without one (chunked) is counted as it streams in; the chunk that
   takes it over ``max_bytes`` raises ``BodyTooLarge`` from ``receive``, which
   FastAPI re-raises and ``app.py`` answers as 413.

FastAPI reads and parses a route's body before it resolves the route's
dependencies (the key among them), so an unauthenticated client can make the
server read at most ``max_bytes``.  The 413 body names the limit like a 422 over
a configured limit: ``{"detail", "limit": "body bytes", "allowed", "got"}``.
"""

from __future__ import annotations

from fastapi import HTTPException
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LIMIT = "body bytes"


class BodyTooLarge(HTTPException):
    def __init__(self, allowed: int, got: int):
        super().__init__(413, f"the request body ({got} bytes or more) is over this server's limit of {allowed} bytes")
        self.allowed, self.got = allowed, got

    def body(self) -> dict:
        return {"detail": self.detail, "limit": LIMIT, "allowed": self.allowed, "got": self.got}


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.strip().isdigit() and int(length) > self.max_bytes:
            too_large = BodyTooLarge(self.max_bytes, int(length))
            await JSONResponse(too_large.body(), status_code=413, headers={"Connection": "close"})(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes, seen)
            return message

        await self.app(scope, counted, send)
