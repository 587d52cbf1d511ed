"""Key redaction for every log line the service writes (uvicorn's access and error logs, ``silodiff.service``).

Keys travel in headers only, which no log line prints; but a client may still
put one in a URL (``/v1/me?api_key=sdk_…``), and uvicorn's access log prints the
path with its query string.  ``RedactKeys`` is a ``logging.Filter`` that rewrites
a record before any handler formats it:

- anything shaped like a key (``sdk_`` + URL-safe base64) → ``sdk_[redacted]``;
- the value of a key-like query parameter (``api_key``, ``key``, ``token``,
  ``access_token``, ``apikey``, ``auth``, ``authorization``, ``x-api-key``) → ``[redacted]``,
  whatever it looks like.

It redacts the message, each string argument (uvicorn's access formatter needs
its argument tuple intact, so arguments are rewritten one by one, never merged)
and the formatted traceback.  ``install()`` puts it on the loggers and
``log_config`` (server.py) on the handlers, so it holds under ``silodiff serve``,
a background server, or another ASGI server that keeps Python logging.
"""

from __future__ import annotations

import logging
import re
from typing import Any

KEY = re.compile(r"sdk_[A-Za-z0-9_\-]+")
PARAM = re.compile(r"(?i)([?&;](?:api[_-]?key|x-api-key|key|token|access[_-]?token|auth|authorization)=)[^&;#\s\"]*")
REDACTED = "[redacted]"
LOGGERS = ("uvicorn", "uvicorn.access", "uvicorn.error", "silodiff", "silodiff.service")


def redact(text: str) -> str:
    """``text`` with every key-shaped token and every key-like query value replaced."""
    return PARAM.sub(r"\1" + REDACTED, KEY.sub("sdk_" + REDACTED, text))


def _redact_arg(arg: Any) -> Any:
    return redact(arg) if isinstance(arg, str) else arg


class RedactKeys(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(_redact_arg(a) for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: _redact_arg(v) for k, v in record.args.items()}
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


def install() -> None:
    """Put one ``RedactKeys`` on each logger the service writes through (idempotent)."""
    for name in LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactKeys) for f in logger.filters):
            logger.addFilter(RedactKeys())
