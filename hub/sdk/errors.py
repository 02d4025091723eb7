"""Errors a connector raises; the recovery lives in the type.

    ConnectorError                 base; never raised as such
    ├── FatalError                 stop this stream, keep its cursor, mark the run failed
    │   └── AuthError              credentials rejected (401/403 after refresh): needs re-authorisation
    ├── RetriableError             transient: back off (honouring retry_after) and try again
    │   └── RateLimited            the vendor said 429 or its budget header reached zero
    ├── CursorExpired              the vendor rejected the stored cursor: the engine records a
    │                              full resync and reads the stream again from the start
    └── SkippableRecord            one record cannot be used: it goes to the retry queue with its
                                   payload and reason, and the sync goes on

The HTTP client raises RetriableError subclasses only after its own retries are
spent, so an engine that sees one knows the request was already retried.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AuthError",
    "ConnectorError",
    "CursorExpired",
    "FatalError",
    "RateLimited",
    "RetriableError",
    "SkippableRecord",
]


class ConnectorError(Exception):
    """Base of every error a connector raises."""


class FatalError(ConnectorError):
    """The stream cannot go on; the cursor stays where the last committed page left it."""


class AuthError(FatalError):
    """The vendor rejected the credentials; a person must re-authorise the connector."""


class RetriableError(ConnectorError):
    """A transient failure; `retry_after` (seconds) is the vendor's hint when it gave one."""

    def __init__(self, message: str, *, retry_after: float | None = None, status: int | None = None):
        super().__init__(message)
        self.retry_after = retry_after
        self.status = status


class RateLimited(RetriableError):
    """The vendor's rate limit was hit (429) or its remaining budget reached zero."""


class CursorExpired(ConnectorError):
    """The vendor no longer accepts the stored cursor (Gmail 404, Calendar 410, Graph 410 ...)."""


class SkippableRecord(ConnectorError):
    """One record is unusable; it carries its payload so nothing is lost."""

    def __init__(self, reason: str, *, external_id: str | None = None, payload: Any = None):
        super().__init__(reason)
        self.reason = reason
        self.external_id = external_id
        self.payload = payload
