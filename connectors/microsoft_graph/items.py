"""Graph `message` and `event` resources → `hub.sdk.activity.ActivityEvent`.

Pure functions, no HTTP: the connector hands each delta item here. The rules that must agree
with the Gmail connector, so one mail read through either lands on the same timeline:

- type `email`; participants as written (`from`, `to`, `cc`, `bcc`; the hub normalises);
- direction `outbound` when the sender is the mailbox being read, else `inbound`, and
  `internal` when every address on it is the team's own (the `internal` list, with `@domain`
  entries, and the configured mailboxes); status `sent` when the mailbox sent it, else `received`;
- occurred_at: the time the mail was sent (`sentDateTime`, the RFC 822 `Date`), else
  `receivedDateTime`, as ISO-8601 UTC to the second (`2026-06-01T10:00:00Z`);
- details["message_id"]: the RFC 822 `Message-ID` (`internetMessageId`), the cross-vendor key.

A meeting is type `meeting`: status `cancelled` when `isCancelled`, else `scheduled`; the
organizer and every person attendee (rooms and equipment left out) with their answer.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from hub.sdk import ActivityEvent, Participant

__all__ = ["ItemError", "event_activity", "graph_time", "is_internal", "message_activity"]

# Meeting attendees of these types are places and things, never contacts.
_NON_PERSON_ATTENDEES = frozenset({"resource"})


class ItemError(ValueError):
    """A delta item the hub cannot use as an activity (the connector rejects it, with this reason)."""


def graph_time(value: Any, zone: Any = None, *, what: str = "time", ms: bool = False) -> str:
    """A Graph timestamp as ISO-8601 UTC to the second (`ms`: to the millisecond).

    Graph sends `2026-06-01T10:00:00Z` on messages and `{"dateTime": "2026-06-01T10:00:00.0000000",
    "timeZone": "UTC"}` on events (seven fraction digits, the zone apart). The connector asks for
    UTC (`Prefer: outlook.timezone="UTC"`); an IANA zone is converted, anything else is an error.
    """
    if not isinstance(value, str) or not value:
        raise ItemError(f"{what} is missing")
    text = value.strip().replace("Z", "+00:00")
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ItemError(f"{what} {value!r} is not an ISO-8601 date-time") from None
    if parsed.tzinfo is None:
        name = zone or "UTC"
        if name in ("UTC", "tzone://Microsoft/Utc", "Etc/UTC", "GMT"):
            tz: Any = UTC
        else:
            try:
                tz = ZoneInfo(str(name))
            except (ZoneInfoNotFoundError, ValueError):
                raise ItemError(f"{what} is in time zone {name!r}, which is not an IANA zone "
                                f"(ask Graph for UTC with Prefer: outlook.timezone)") from None
        parsed = parsed.replace(tzinfo=tz)
    parsed = parsed.astimezone(UTC)
    if ms:  # change times: two versions within one second must still be ordered
        return parsed.strftime("%Y-%m-%dT%H:%M:%S.") + f"{parsed.microsecond // 1000:03d}Z"
    return parsed.strftime("%Y-%m-%dT%H:%M:%SZ")


def _address(holder: Any) -> tuple[str | None, str | None]:
    """(address, name) of a Graph `recipient` ({"emailAddress": {"name", "address"}})."""
    if not isinstance(holder, dict):
        return None, None
    ea = holder.get("emailAddress")
    if not isinstance(ea, dict):
        return None, None
    address = ea.get("address")
    name = ea.get("name")
    return (str(address).strip() or None if address else None), (str(name) if name else None)


def _people(raw: dict[str, Any], key: str, role: str) -> list[Participant]:
    found = raw.get(key) or []
    if not isinstance(found, list):
        raise ItemError(f"{key} is not a list")
    out = []
    for item in found:
        address, name = _address(item)
        if address:
            out.append(Participant(role=role, email=address, name=name))
    return out


def _same_address(a: str | None, b: str | None) -> bool:
    return bool(a and b) and str(a).strip().lower() == str(b).strip().lower()


def is_internal(address: str, team: frozenset[str]) -> bool:
    """`team` holds lower-cased addresses and `@domain` entries."""
    a = address.strip().lower()
    return a in team or ("@" in a and "@" + a.rsplit("@", 1)[1] in team)


def message_activity(raw: dict[str, Any], *, mailbox: str | None, folder: str, excerpt: str | None = None,
                     team: frozenset[str] = frozenset()) -> ActivityEvent:
    """One mail as an email activity. `mailbox` is the address of the mailbox read (direction);
    `team` the lower-cased addresses and `@domains` of the team's own users."""
    ext = raw.get("id")
    if not ext or not isinstance(ext, str):
        raise ItemError("message without an id")
    sender, sender_name = _address(raw.get("from") or raw.get("sender"))
    sent = raw.get("sentDateTime")
    occurred = graph_time(sent if sent else raw.get("receivedDateTime"), what="sentDateTime/receivedDateTime")
    participants: list[Participant] = []
    if sender:
        participants.append(Participant(role="from", email=sender, name=sender_name))
    for key, role in (("toRecipients", "to"), ("ccRecipients", "cc"), ("bccRecipients", "bcc")):
        participants += _people(raw, key, role)
    everyone = [p.email for p in participants if p.email]
    own = team | ({mailbox.lower()} if mailbox else set())
    # sent by the team (this mailbox or a colleague): the same answer whichever copy is read first
    outbound = _same_address(sender, mailbox) or (bool(sender) and is_internal(str(sender), own))
    direction = "internal" if everyone and all(is_internal(a, own) for a in everyone) else \
        "outbound" if outbound else "inbound"
    modified = raw.get("lastModifiedDateTime")
    details: dict[str, Any] = {"mailbox": mailbox, "folder": folder}
    for key, name in (("internetMessageId", "message_id"), ("conversationId", "conversation_id")):
        if raw.get(key):
            details[name] = raw[key]
    if raw.get("isDraft") is True or raw.get("isDraft") == "true":
        details["draft"] = True
    return ActivityEvent(
        type="email",
        external_id=ext,
        occurred_at=occurred,
        participants=participants,
        direction=direction,
        subject=raw.get("subject") or None,
        status="sent" if outbound else "received",
        url=raw.get("webLink") or None,
        body_excerpt=excerpt,
        updated_at=graph_time(modified, what="lastModifiedDateTime", ms=True) if modified else None,
        details=details,
    )


def event_activity(raw: dict[str, Any], *, mailbox: str | None, excerpt: str | None = None) -> ActivityEvent:
    """One calendar item (a single meeting or one occurrence of a series) as a meeting activity."""
    ext = raw.get("id")
    if not ext or not isinstance(ext, str):
        raise ItemError("event without an id")
    start, end = raw.get("start"), raw.get("end")
    if not isinstance(start, dict) or not isinstance(end, dict):
        raise ItemError("event without start/end")
    occurred = graph_time(start.get("dateTime"), start.get("timeZone"), what="start")
    ended = graph_time(end.get("dateTime"), end.get("timeZone"), what="end")
    duration = int((datetime.fromisoformat(ended.replace("Z", "+00:00"))
                    - datetime.fromisoformat(occurred.replace("Z", "+00:00"))).total_seconds())
    organizer, organizer_name = _address(raw.get("organizer"))
    participants: list[Participant] = []
    if organizer:
        participants.append(Participant(role="organizer", email=organizer, name=organizer_name,
                                        response="organizer"))
    for att in raw.get("attendees") or []:
        if not isinstance(att, dict) or att.get("type") in _NON_PERSON_ATTENDEES:
            continue
        address, name = _address(att)
        if not address or _same_address(address, organizer):
            continue  # Graph lists the organizer among the attendees too
        status = att.get("status")
        response = status.get("response") if isinstance(status, dict) else None
        participants.append(Participant(role="attendee", email=address, name=name,
                                        response=str(response) if response else None))
    cancelled = raw.get("isCancelled") is True or raw.get("isCancelled") == "true"
    is_organizer = raw.get("isOrganizer")
    outbound = _same_address(organizer, mailbox) if organizer else is_organizer is True
    modified = raw.get("lastModifiedDateTime")
    details: dict[str, Any] = {"mailbox": mailbox}
    for key, name in (("iCalUId", "ical_uid"), ("seriesMasterId", "series_master_id"), ("type", "event_type"),
                      ("showAs", "show_as")):
        if raw.get(key):
            details[name] = raw[key]
    location = raw.get("location")
    if isinstance(location, dict) and location.get("displayName"):
        details["location"] = location["displayName"]
    if raw.get("isAllDay") is True:
        details["all_day"] = True
    return ActivityEvent(
        type="meeting",
        external_id=ext,
        occurred_at=occurred,
        ended_at=ended,
        duration_s=max(0, duration),
        participants=participants,
        direction="outbound" if outbound else "inbound",
        subject=raw.get("subject") or None,
        status="cancelled" if cancelled else "scheduled",
        url=raw.get("webLink") or None,
        body_excerpt=excerpt,
        updated_at=graph_time(modified, what="lastModifiedDateTime", ms=True) if modified else None,
        details=details,
    )
