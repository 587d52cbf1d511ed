"""Service errors, each mapped to one HTTP status with a JSON body ``{"detail": …}`` by ``app.py``.

Any other ``SilodiffError`` (bad labels, unknown router, …) becomes 422.
"""

from __future__ import annotations

from ..errors import SilodiffError


class Forbidden(SilodiffError):
    """403: the key may not use this compartment / source / route."""


class NotFound(SilodiffError):
    """404: no such job or compartment."""


class LimitExceeded(SilodiffError):
    """422: a request over one of the server's configured limits."""

    def __init__(self, limit: str, allowed: int, got: int):
        super().__init__(f"{limit} = {got} is over this server's limit of {allowed}")
        self.limit, self.allowed, self.got = limit, allowed, got


class RateLimited(SilodiffError):
    """429: too many requests from one key in the last minute."""

    def __init__(self, per_minute: int, retry_after: float):
        super().__init__(f"more than {per_minute} requests in a minute from this key; retry in {retry_after:.0f} s")
        self.per_minute, self.retry_after = per_minute, retry_after


class Unavailable(SilodiffError):
    """501/503: a feature this build lacks, or a snapshot that kept changing under a request."""
