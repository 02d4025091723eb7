"""The data a connector hands to the engine: stream declarations, pages, records."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hub.sdk.activity import ActivityEvent

__all__ = ["Cursor", "CursorKind", "Page", "RawRecord", "RejectedRecord", "StreamSpec", "WriteResult"]

#: A cursor is opaque JSON owned by the connector; the engine only stores it.
Cursor = dict[str, Any]


class CursorKind(StrEnum):
    TIMESTAMP = "timestamp"  # high-water mark plus tie-breaker id
    PAGE_TOKEN = "page_token"
    HISTORY_ID = "history_id"
    SYNC_TOKEN = "sync_token"
    DELTA_LINK = "delta_link"
    EVENT_ID = "event_id"
    KEY = "key"  # keyset on a primary key (legacy databases)


@dataclass(frozen=True, slots=True)
class StreamSpec:
    """A stream is a declaration: what it is called, where it lands, how it moves."""

    name: str
    target: str  # contact, account, lead, opportunity, activity, or a custom object name
    primary_key: str = "id"
    cursor_kind: CursorKind = CursorKind.TIMESTAMP
    reports_deletes: bool = False
    accepts_writes: bool = False


@dataclass(slots=True)
class RawRecord:
    """One vendor record as read: its id, the vendor's last-change time, and the raw body.

    For a stream whose target is `activity`, a connector may build the activity itself
    (`activity`: hub.sdk.activity.ActivityEvent) instead of leaving it to a YAML mapping.
    """

    external_id: str
    updated_at: str | None  # ISO-8601 UTC, as the vendor dates the change
    data: dict[str, Any]
    activity: ActivityEvent | None = None


@dataclass(slots=True)
class RejectedRecord:
    """A record the connector could not even parse; it goes to the retry queue as is."""

    external_id: str | None
    payload: Any
    reason: str


@dataclass(slots=True)
class Page:
    """A unit of work and of commit: once stored, `next_cursor` is where a resume starts.

    `full_resync` tells the engine this page starts over from the beginning because
    the vendor rejected the old cursor (the engine records it on the run).
    """

    records: list[RawRecord] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    next_cursor: Cursor | None = None
    rejected: list[RejectedRecord] = field(default_factory=list)
    requests: int = 1


@dataclass(frozen=True, slots=True)
class WriteResult:
    """Per-record outcome of a vendor write; failures come back here, never as exceptions."""

    external_id: str | None
    ok: bool
    created: bool = False
    error: str | None = None
    key: str | None = None  # the caller's idempotency/correlation key
