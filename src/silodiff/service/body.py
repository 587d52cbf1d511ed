"""The request-body limits: an ASGI middleware that reads the body first and refuses one too big or too deeply
nested, before a route parses it or looks a key up.

For every HTTP request, before any route code runs:

1. a ``Content-Length`` over ``max_bytes`` → 413 at once; the body is never read;
2. the body is read and counted as it streams in (chunked bodies too); the chunk
   that takes it over ``max_bytes`` ends the request with a 413;
3. a body nested more than ``MAX_DEPTH`` arrays / objects deep → 422.  Python's
   JSON reader, pydantic and the error encoders all recurse once per level, so a
   body nested ~1,000 deep would otherwise end in a ``RecursionError`` (a 500);
   ``json_depth`` counts the depth without recursion and without parsing.

A body that passes is handed to the app unchanged.  Every body is checked, on
every route (a ``GET`` that ignores its body too), so an unauthenticated client
can make the server read at most ``max_bytes`` and never parse a deep body.  The
answers name the limit like a 422 over a configured limit:
``{"detail", "limit": "body bytes" | "body depth", "allowed", "got"}``.
"""

from __future__ import annotations

import json
import logging
import re

import numpy as np
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_DEPTH = 32
log = logging.getLogger("silodiff.service")

# a JSON string: its quotes and all between, escapes included; unclosed: to the end (linear: every quote matches)
_STRING = re.compile(r'"(?:[^"\\]++|\\.)*+"?', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]++")
_STEP = np.zeros(128, np.int8)
_STEP[[ord("["), ord("{")]], _STEP[[ord("]"), ord("}")]] = 1, -1


def json_depth(body: bytes) -> int:
    """How deeply ``body`` nests arrays and objects, read as JSON text: ``{"n": [[1]]}`` → 3.

    1. decode as Python's JSON reader would (UTF-8, or UTF-16/32 by its first bytes);
    2. drop every string (a bracket in a string does not nest);
    3. depth = the largest running sum of +1 per ``[``/``{`` and −1 per ``]``/``}``.

    No recursion and no parsing; a body that does not decode counts 0 (the JSON
    reader refuses it before it nests anything).  Past the first place where the
    text stops being JSON the count may over-estimate, never under-estimate what
    the reader would have nested before refusing it.
    """
    try:
        text = body.decode(json.detect_encoding(body), "surrogatepass")
    except UnicodeDecodeError:
        return 0
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text)).encode("ascii")
    if not brackets:
        return 0
    return int(np.cumsum(_STEP[np.frombuffer(brackets, np.uint8)], dtype=np.int64).max())


def refusal(status: int, limit: str, allowed: int, got: int, detail: str, close: bool) -> JSONResponse:
    body = {"detail": detail, "limit": limit, "allowed": allowed, "got": got}
    return JSONResponse(body, status_code=status, headers={"Connection": "close"} if close else None)


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int, max_depth: int = MAX_DEPTH):
        self.app, self.max_bytes, self.max_depth = app, max_bytes, max_depth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.strip().isdigit() and int(length) > self.max_bytes:
            answer, message = self.too_large(int(length)), None
        else:
            answer, message = await self.read(receive)
        if answer is None and message["type"] == "http.request":
            answer = self.too_deep(message["body"])
        if answer is not None:
            log.info("%s %s -> %d: %s", scope["method"], scope["path"], answer.status_code, answer.body.decode())
            await answer(scope, receive, send)
            return
        replay = [message]

        async def replayed() -> Message:
            return replay.pop() if replay else await receive()

        await self.app(scope, replayed, send)

    async def read(self, receive: Receive) -> tuple[JSONResponse | None, Message]:
        """(a 413 or None, the one message the app gets first: the whole body, or the client's disconnect)."""
        chunks, seen = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return None, message
            chunks.append(message.get("body", b""))
            seen += len(chunks[-1])
            if seen > self.max_bytes:
                return self.too_large(seen), message
            if not message.get("more_body", False):
                return None, {"type": "http.request", "body": b"".join(chunks), "more_body": False}

    def too_large(self, got: int) -> JSONResponse:
        detail = f"the request body ({got} bytes or more) is over this server's limit of {self.max_bytes} bytes"
        return refusal(413, "body bytes", self.max_bytes, got, detail, close=True)

    def too_deep(self, body: bytes) -> JSONResponse | None:
        depth = json_depth(body)
        if depth <= self.max_depth:
            return None
        detail = f"the request body nests {depth} arrays / objects deep; this server reads at most {self.max_depth}"
        return refusal(422, "body depth", self.max_depth, depth, detail, close=False)
