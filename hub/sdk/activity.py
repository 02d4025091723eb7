"""The shared activity-ingest interface: what a mail, calendar or calling connector yields.

A connector builds an `ActivityEvent` per vendor item (a message, a meeting, a call) and
hands it to the hub on a `RawRecord` (`RawRecord(external_id, updated_at, data=raw,
activity=event)`) of a stream whose target is `activity`. The hub does the rest, the same
way for every vendor (hub.activities): it normalises the participants' addresses and
numbers, resolves them to contacts, their accounts and an unambiguous open opportunity,
appends the activity idempotently on (source, external_id), and stores a vendor-side change
to the same item as a new version. Swapping Gmail for Microsoft 365 is then a change of
config: both yield the same events for the same mail.

Participants are given as the vendor wrote them (`"Ann Lee" <Ann@Example.com>`, `(415)
555-0100`); normalising them is the hub's job, so every connector agrees.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from hub.sdk.connector import ConnectorConfig

__all__ = ["DIRECTIONS", "ROLES", "STATUSES", "ActivityConnectorConfig", "ActivityEvent", "Participant"]

ROLES = frozenset({"from", "to", "cc", "bcc", "organizer", "attendee", "caller", "callee", "agent"})
DIRECTIONS = frozenset({"inbound", "outbound", "internal"})
#: the usual statuses; a connector may use another word where its vendor has one
STATUSES = frozenset({"sent", "received", "scheduled", "cancelled", "missed", "completed", "failed",
                      "succeeded", "refunded", "active"})


@dataclass(slots=True)
class Participant:
    """Someone an activity involves: at least one of email, phone, user_id."""

    role: str
    email: str | None = None
    phone: str | None = None
    user_id: str | None = None  # the vendor's user id (an Aircall agent, a Graph user)
    name: str | None = None
    response: str | None = None  # an attendee's answer: accepted, declined, tentative, needsAction

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"participant role {self.role!r} is not one of {', '.join(sorted(ROLES))}")


@dataclass(slots=True)
class ActivityEvent:
    """One email, meeting, call, payment ... as the hub stores it on the timeline.

    `occurred_at`/`ended_at` are ISO-8601 UTC. `updated_at` is the vendor-side time of this
    version of the item (a meeting's `updated`, a call's end); the hub keeps the latest by it,
    so versions arriving out of order never roll the activity back. `refs` names records of
    the same connector instance by their external ids (`{"account": "cus_123"}`), for
    activities whose vendor says whom they belong to rather than who took part.

    A status-only change (the vendor says no more than the item's new status, as Google does of a
    cancelled meeting): `occurred_at=""` and the `status`; the hub keeps everything else of the
    stored activity and records a new version. It is a no-op for an item the hub does not hold.
    """

    type: str  # email, meeting, call, note, task, payment, refund, subscription_change, ...
    external_id: str
    occurred_at: str
    participants: list[Participant] = field(default_factory=list)
    ended_at: str | None = None
    duration_s: int | None = None
    direction: str | None = None
    subject: str | None = None
    status: str | None = None
    url: str | None = None  # a link back to the item in the vendor's app
    body_excerpt: str | None = None  # only when the instance's privacy setting allows it
    updated_at: str | None = None
    refs: dict[str, str] = field(default_factory=dict)  # entity -> external id in this connector
    details: dict[str, Any] = field(default_factory=dict)  # vendor facts worth keeping (amount, reason ...)

    def __post_init__(self) -> None:
        if self.direction is not None and self.direction not in DIRECTIONS:
            raise ValueError(f"direction {self.direction!r} is not one of {', '.join(sorted(DIRECTIONS))}")
        if not self.external_id:
            raise ValueError("an activity needs an external_id")

    def as_dict(self) -> dict[str, Any]:
        """The event as plain data (JSON-able when `details` is). Shallow, unlike dataclasses.asdict,
        which deep-copies every vendor body in `details`: ingest calls this once per record."""
        d = {name: getattr(self, name) for name in _EVENT_FIELDS}
        d["participants"] = [{name: getattr(p, name) for name in _PARTICIPANT_FIELDS} for p in self.participants]
        return d


_EVENT_FIELDS = tuple(f.name for f in fields(ActivityEvent))
_PARTICIPANT_FIELDS = tuple(f.name for f in fields(Participant))


class ActivityConnectorConfig(ConnectorConfig):
    """Config keys every mail, calendar and calling connector shares (privacy by config).

    body_excerpt_chars: 0 (the default) stores metadata only; N > 0 keeps at most N
    characters of the body. Attachments are never stored.
    internal: addresses, numbers and whole domains (`@example.com`) of the team's own
    users: they become the activity's internal participants, never contacts.
    """

    body_excerpt_chars: int = 0
    internal: list[str] = []

    def excerpt(self, text: str | None) -> str | None:
        """The body excerpt this instance may keep (None when it keeps metadata only)."""
        if not text or self.body_excerpt_chars <= 0:
            return None
        return text[: self.body_excerpt_chars]
