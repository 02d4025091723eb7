"""The connector SDK: everything a connector author imports, and nothing else.

    from hub.sdk import Connector, ConnectorConfig, Page, RawRecord, StreamSpec, build_client
"""

from hub.sdk.activity import ActivityEvent, Participant
from hub.sdk.connector import Connector, ConnectorConfig, ConnectorContext
from hub.sdk.errors import (
    AuthError,
    ConnectorError,
    CursorExpired,
    FatalError,
    RateLimited,
    RetriableError,
    SkippableRecord,
)
from hub.sdk.http import RateLimitHeaders, RetryPolicy, build_client, raise_for_status
from hub.sdk.ratelimit import RateBudget, TokenBucket
from hub.sdk.redact import RedactingFilter, Redactor
from hub.sdk.types import Cursor, CursorKind, Page, RawRecord, RejectedRecord, StreamSpec, WriteResult

__all__ = [
    "ActivityEvent",
    "AuthError",
    "Connector",
    "ConnectorConfig",
    "ConnectorContext",
    "ConnectorError",
    "Cursor",
    "CursorExpired",
    "CursorKind",
    "FatalError",
    "Page",
    "Participant",
    "RateBudget",
    "RateLimitHeaders",
    "RateLimited",
    "RawRecord",
    "RedactingFilter",
    "Redactor",
    "RejectedRecord",
    "RetriableError",
    "RetryPolicy",
    "SkippableRecord",
    "StreamSpec",
    "TokenBucket",
    "WriteResult",
    "build_client",
    "raise_for_status",
]
