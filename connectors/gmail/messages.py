"""A Gmail Message resource (format=metadata) as an email `ActivityEvent`.

Participants are the header's own addresses (split, case kept; the hub normalises). Direction
comes from the sender: the mailbox itself (or the SENT label) is outbound, anyone else inbound;
mail among the team's own addresses (`internal`, the configured mailboxes) is internal.
"""

from __future__ import annotations

import html
from datetime import UTC, datetime
from email.utils import getaddresses, parsedate_to_datetime
from typing import Any
from urllib.parse import quote

from hub.sdk import Participant
from hub.sdk.activity import ActivityEvent

__all__ = ["METADATA_HEADERS", "is_internal", "to_activity"]

METADATA_HEADERS = ("From", "To", "Cc", "Bcc", "Subject", "Date", "Message-ID")
_ROLES = (("from", "from"), ("to", "to"), ("cc", "cc"), ("bcc", "bcc"))


def is_internal(address: str, internal: frozenset[str]) -> bool:
    """`internal` holds lower-cased addresses and `@domain` entries."""
    a = address.strip().lower()
    return a in internal or ("@" in a and "@" + a.rsplit("@", 1)[1] in internal)


def _headers(msg: dict[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for h in ((msg.get("payload") or {}).get("headers") or []):
        if not isinstance(h, dict):
            continue
        name, value = str(h.get("name", "")).lower(), str(h.get("value", ""))
        # repeated To/Cc lines add up; for the rest the first one counts
        out[name] = f"{out[name]}, {value}" if name in out and name in ("to", "cc", "bcc") else out.get(name, value)
    return out


def _iso(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def occurred_at(msg: dict[str, Any], headers: dict[str, str]) -> str | None:
    """The Date header, else Gmail's `internalDate` (when Google received it; ms), else None.

    The Date header is the one time every copy of a mail shares (Microsoft 365's sentDateTime is
    it too), so a mailbox moved between vendors keeps its timeline; internalDate covers a
    missing or unreadable header."""
    try:
        dt = parsedate_to_datetime(headers.get("date", ""))
    except (TypeError, ValueError, IndexError):
        dt = None
    if dt is not None:
        return _iso(dt if dt.tzinfo else dt.replace(tzinfo=UTC))
    raw = msg.get("internalDate")
    if isinstance(raw, str | int) and str(raw).isdigit():
        return _iso(datetime.fromtimestamp(int(raw) / 1000, UTC))
    return None


def to_activity(msg: dict[str, Any], *, mailbox: str, external_id: str, internal: frozenset[str],
                excerpt: str | None) -> ActivityEvent:
    """Raises ValueError when the message has no usable date (the record goes to the retry queue)."""
    headers = _headers(msg)
    when = occurred_at(msg, headers)
    if when is None:
        raise ValueError(f"Gmail message {msg.get('id')} has neither an internalDate nor a Date header that parses")
    participants: list[Participant] = []
    addresses: dict[str, list[str]] = {}
    for key, role in _ROLES:
        value = headers.get(key)
        if not value:
            continue
        for name, addr in getaddresses([value]):
            if addr:
                participants.append(Participant(role=role, email=addr, name=name or None))
                addresses.setdefault(role, []).append(addr)
    me = mailbox.lower()
    senders = [a.lower() for a in addresses.get("from", [])]
    everyone = [a for r in ("from", "to", "cc", "bcc") for a in addresses.get(r, [])]
    team = internal | {me}
    # sent by the team (this mailbox or a colleague): the same answer whichever copy is read first
    outbound = me in senders or "SENT" in (msg.get("labelIds") or []) or any(is_internal(a, team) for a in senders)
    direction = "internal" if everyone and all(is_internal(a, team) for a in everyone) else \
        "outbound" if outbound else "inbound"
    return ActivityEvent(
        type="email", external_id=external_id, occurred_at=when, participants=participants,
        direction=direction, subject=headers.get("subject"), status="sent" if outbound else "received",
        url=f"https://mail.google.com/mail/?authuser={quote(mailbox)}#all/{msg.get('id')}",
        body_excerpt=excerpt, updated_at=when,
        details={"mailbox": mailbox, "message_id": headers.get("message-id"), "thread_id": msg.get("threadId"),
                 "labels": list(msg.get("labelIds") or []), "gmail_id": msg.get("id")},
    )


def snippet_text(msg: dict[str, Any]) -> str | None:
    s = msg.get("snippet")
    return html.unescape(s) if isinstance(s, str) else None
