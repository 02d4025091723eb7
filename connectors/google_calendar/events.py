"""A Google Calendar Event resource as a meeting `ActivityEvent`.

The organizer and the attendees (with their `responseStatus`) become participants; rooms and other
resources do not. `updated_at` is the event's `updated`, so the hub keeps the latest of versions
that arrive out of order. A cancelled event that still carries its times and people (Google often
sends them; the docs guarantee only `id`) becomes the same activity with status `cancelled`;
`is_bare_tombstone` says when it does not (the connector reports that as a status-only change).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from typing import Any

from hub.sdk import Participant
from hub.sdk.activity import ActivityEvent

__all__ = ["event_time", "is_bare_tombstone", "to_activity"]


def _iso(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def event_time(value: Any) -> tuple[datetime, bool] | None:
    """An EventDateTime (`dateTime`, or `date` for all-day events) as UTC, and whether all-day.

    Raises ValueError on a value that does not parse; None when there is none."""
    if not isinstance(value, dict):
        return None
    if value.get("dateTime"):
        dt = datetime.fromisoformat(str(value["dateTime"]).replace("Z", "+00:00"))
        return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)), False
    if value.get("date"):
        # an all-day event has no zone of its own: midnight UTC keeps the day on the timeline
        return datetime.combine(date.fromisoformat(str(value["date"])), time(0), UTC), True
    return None


def is_bare_tombstone(ev: dict[str, Any]) -> bool:
    """A cancelled event with nothing but ids (and maybe its original start): no times, no people."""
    return ev.get("status") == "cancelled" and not (ev.get("start") and (ev.get("attendees") or ev.get("organizer")))


def to_activity(ev: dict[str, Any], *, calendar: str, external_id: str, excerpt: str | None) -> ActivityEvent:
    """Raises ValueError when the event's times are missing or do not parse (the retry queue's case)."""
    start = event_time(ev.get("start")) or event_time(ev.get("originalStartTime"))
    if start is None:
        raise ValueError(f"Calendar event {ev.get('id')} has no start (start/originalStartTime)")
    end = event_time(ev.get("end"))
    participants: list[Participant] = []
    organizer_seen = False
    for a in ev.get("attendees") or []:
        if not isinstance(a, dict) or a.get("resource") or not a.get("email"):
            continue  # rooms and equipment are not people
        role = "organizer" if a.get("organizer") else "attendee"
        organizer_seen |= role == "organizer"
        participants.append(Participant(role=role, email=str(a["email"]), name=a.get("displayName"),
                                        response=a.get("responseStatus")))
    org = ev.get("organizer") or {}
    if not organizer_seen and org.get("email"):
        participants.insert(0, Participant(role="organizer", email=str(org["email"]), name=org.get("displayName")))
    cancelled = ev.get("status") == "cancelled"
    # as Microsoft 365 says it: a meeting this calendar's owner organised is outbound
    organizer = str(org.get("email") or "").lower()
    direction = "outbound" if organizer and organizer == calendar.lower() else "inbound"
    return ActivityEvent(
        type="meeting", external_id=external_id, occurred_at=_iso(start[0]),
        ended_at=_iso(end[0]) if end else None,
        duration_s=int((end[0] - start[0]).total_seconds()) if end else None,
        participants=participants, direction=direction, subject=ev.get("summary"),
        status="cancelled" if cancelled else "scheduled",
        url=ev.get("htmlLink"), body_excerpt=excerpt, updated_at=ev.get("updated"),
        details={k: v for k, v in (("calendar", calendar), ("event_id", ev.get("id")), ("ical_uid", ev.get("iCalUID")),
                                   ("recurring_event_id", ev.get("recurringEventId")),
                                   ("original_start", (ev.get("originalStartTime") or {}).get("dateTime")),
                                   ("vendor_status", ev.get("status")), ("all_day", start[1] or None),
                                   ("location", ev.get("location"))) if v is not None},
    )
