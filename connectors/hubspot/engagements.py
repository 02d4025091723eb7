"""HubSpot engagements (calls, emails, meetings, notes, tasks) as activities.

Each engagement becomes a `hub.sdk.ActivityEvent` on its `RawRecord.activity`: the type, when it
happened (`hs_timestamp`), subject, status, direction, participants where the engagement has
addresses or numbers, and `refs` naming the HubSpot ids of its first associated contact, company
and deal (`{"contact", "account", "opportunity"}`), which the hub resolves through its links.

Associations come with the list endpoint (`associations=contacts,companies,deals`, full loads);
search returns none, so an incremental page asks associations v4 (`POST /crm/v4/associations/
{type}/{to}/batch/read`, one call per associated type) for the page's ids.

Property names and values follow HubSpot's engagement guides (developers.hubspot.com/docs/guides/
api/crm/engagements/{calls,email,meetings,notes,tasks}). `hs_email_headers` is a JSON string
(`from`, `to`, `cc`, `bcc` with `email`, `firstName`, `lastName`) [V, email guide]; the read-only
`hs_email_from_email`/`hs_email_to_email` are the fallback [U: seen in property lists only].
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson

from hub.sdk import ActivityEvent, Participant

__all__ = ["ASSOCIATED", "ENGAGEMENTS", "attach_associations", "body_properties", "to_activity"]

#: what an engagement is associated with, as list `associations` and v4 type names
ASSOCIATED = ("contacts", "companies", "deals")
REF_NAMES = {"contacts": "contact", "companies": "account", "deals": "opportunity"}
#: stream -> (activity type, properties read for the activity)
ENGAGEMENTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "calls": ("call", ("hs_timestamp", "hs_call_title", "hs_call_direction", "hs_call_status", "hs_call_disposition",
                       "hs_call_duration", "hs_call_from_number", "hs_call_to_number", "hubspot_owner_id")),
    "emails": ("email", ("hs_timestamp", "hs_email_subject", "hs_email_direction", "hs_email_status",
                         "hs_email_headers", "hubspot_owner_id")),
    "meetings": ("meeting", ("hs_timestamp", "hs_meeting_title", "hs_meeting_start_time", "hs_meeting_end_time",
                             "hs_meeting_outcome", "hs_meeting_location", "hubspot_owner_id")),
    "notes": ("note", ("hs_timestamp", "hubspot_owner_id")),
    "tasks": ("task", ("hs_timestamp", "hs_task_subject", "hs_task_status", "hs_task_priority", "hs_task_type",
                       "hubspot_owner_id")),
}
#: the body property of each type: read only when the instance keeps body excerpts
BODIES = {"calls": "hs_call_body", "emails": "hs_email_text", "meetings": "hs_meeting_body",
          "notes": "hs_note_body", "tasks": "hs_task_body"}

_CALL_STATUS = {"COMPLETED": "completed", "NO_ANSWER": "missed", "BUSY": "missed", "FAILED": "failed",
                "CANCELED": "cancelled", "QUEUED": "scheduled"}
_EMAIL_DIRECTION = {"EMAIL": "outbound", "FORWARDED_EMAIL": "outbound", "INCOMING_EMAIL": "inbound"}
_MEETING_STATUS = {"SCHEDULED": "scheduled", "COMPLETED": "completed", "CANCELED": "cancelled",
                   "RESCHEDULED": "rescheduled", "NO_SHOW": "no_show"}
_TAGS = re.compile(r"<[^>]+>")


def body_properties(stream: str) -> tuple[str, ...]:
    return (BODIES[stream],) if stream in BODIES else ()


def iso_utc(value: Any) -> str | None:
    """A HubSpot date (ISO string, or epoch-ms string/number) as ISO-8601 UTC; None when absent.

    Raises ValueError for a value that is neither, so the record is rejected with the reason.
    """
    if value is None or value == "":
        return None
    s = str(value).strip()
    if s.lstrip("-").isdigit():
        dt = datetime.fromtimestamp(int(s) / 1000, UTC)
    else:
        try:
            dt = datetime.fromisoformat(s.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"{s[:40]!r} is not a date") from None
        dt = dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _first(raw: dict[str, Any], to: str) -> str | None:
    results = (((raw.get("associations") or {}).get(to)) or {}).get("results") or []
    for a in results:
        if isinstance(a, dict) and a.get("id") not in (None, ""):
            return str(a["id"])
    return None


def _person(role: str, who: Any) -> Participant | None:
    if not isinstance(who, dict) or not who.get("email"):
        return None
    name = " ".join(p for p in (who.get("firstName"), who.get("lastName")) if p) or None
    return Participant(role=role, email=str(who["email"]), name=name)


def _email_people(p: dict[str, Any]) -> list[Participant]:
    headers = p.get("hs_email_headers")
    parsed: Any = None
    if headers:
        try:
            parsed = orjson.loads(headers)
        except orjson.JSONDecodeError:
            parsed = None  # a malformed header blob costs the participants, not the activity
    out: list[Participant] = []
    if isinstance(parsed, dict):
        if (sender := _person("from", parsed.get("from"))) is not None:
            out.append(sender)
        for role in ("to", "cc", "bcc"):
            for who in parsed.get(role) or []:
                if (person := _person(role, who)) is not None:
                    out.append(person)
        return out
    for role, prop in (("from", "hs_email_from_email"), ("to", "hs_email_to_email"), ("cc", "hs_email_cc_email"),
                       ("bcc", "hs_email_bcc_email")):
        for addr in re.split(r"[;,]", str(p.get(prop) or "")):
            if addr.strip():
                out.append(Participant(role=role, email=addr.strip()))
    return out


def _duration_s(value: Any) -> int | None:
    try:
        return int(float(value)) // 1000 if value not in (None, "") else None
    except ValueError:
        return None


def to_activity(stream: str, raw: dict[str, Any], excerpt_chars: int = 0) -> ActivityEvent:
    """The activity of one engagement; ValueError (with the reason) when it cannot be one."""
    kind = ENGAGEMENTS[stream][0]
    p = raw.get("properties") or {}
    if not isinstance(p, dict):
        raise ValueError("engagement properties are not an object")
    occurred = iso_utc(p.get("hs_timestamp"))
    if occurred is None:
        raise ValueError(f"{kind} {raw.get('id')} has no hs_timestamp")
    owner = str(p["hubspot_owner_id"]) if p.get("hubspot_owner_id") not in (None, "") else None
    people: list[Participant] = []
    subject = direction = status = ended = None
    duration: int | None = None
    details: dict[str, Any] = {"hubspot_owner_id": owner} if owner else {}
    if kind == "call":
        subject = p.get("hs_call_title") or None
        direction = {"INBOUND": "inbound", "OUTBOUND": "outbound"}.get(str(p.get("hs_call_direction") or "").upper())
        raw_status = str(p.get("hs_call_status") or "").upper()
        status = _CALL_STATUS.get(raw_status, raw_status.lower() or None)
        duration = _duration_s(p.get("hs_call_duration"))
        for role, prop in (("caller", "hs_call_from_number"), ("callee", "hs_call_to_number")):
            if p.get(prop):
                people.append(Participant(role=role, phone=str(p[prop])))
        if owner:
            people.append(Participant(role="agent", user_id=owner))
        if p.get("hs_call_disposition"):
            details["disposition"] = p["hs_call_disposition"]
    elif kind == "email":
        subject = p.get("hs_email_subject") or None
        direction = _EMAIL_DIRECTION.get(str(p.get("hs_email_direction") or "").upper())
        raw_status = str(p.get("hs_email_status") or "")
        status = ("received" if direction == "inbound" and raw_status.upper() in ("", "SENT")
                  else raw_status.lower() or None)
        people = _email_people(p)
    elif kind == "meeting":
        subject = p.get("hs_meeting_title") or None
        raw_status = str(p.get("hs_meeting_outcome") or "").upper()
        status = _MEETING_STATUS.get(raw_status, raw_status.lower() or None)
        ended = iso_utc(p.get("hs_meeting_end_time"))
        start = iso_utc(p.get("hs_meeting_start_time")) or occurred
        if ended:
            duration = int((datetime.fromisoformat(ended[:-1] + "+00:00")
                            - datetime.fromisoformat(start[:-1] + "+00:00")).total_seconds())
        if owner:
            people.append(Participant(role="organizer", user_id=owner))
        if p.get("hs_meeting_location"):
            details["location"] = p["hs_meeting_location"]
    elif kind == "task":
        subject = p.get("hs_task_subject") or None
        status = str(p.get("hs_task_status") or "").lower() or None
        for key, prop in (("priority", "hs_task_priority"), ("task_type", "hs_task_type")):
            if p.get(prop):
                details[key] = p[prop]
    body = p.get(BODIES[stream]) if excerpt_chars > 0 else None
    excerpt = (_TAGS.sub("", str(body)).strip()[:excerpt_chars] or None) if body else None
    refs = {name: ext for to, name in REF_NAMES.items() if (ext := _first(raw, to)) is not None}
    return ActivityEvent(type=kind, external_id=str(raw["id"]), occurred_at=occurred, participants=people,
                         ended_at=ended, duration_s=duration, direction=direction, subject=subject, status=status,
                         body_excerpt=excerpt, updated_at=raw.get("updatedAt"), refs=refs, details=details)


def attach_associations(post: Callable[[str, dict[str, Any]], dict[str, Any]], obj: str,
                        records: list[dict[str, Any]]) -> int:
    """Give search results the `associations` a list page would carry (v4 batch read, one call per
    associated type, only for a non-empty page). Returns the number of requests made."""
    ids = [str(r["id"]) for r in records if r.get("id")]
    if not ids:
        return 0
    by_id = {str(r["id"]): r for r in records if r.get("id")}
    for to in ASSOCIATED:
        data = post(f"/crm/v4/associations/{obj}/{to}/batch/read", {"inputs": [{"id": i} for i in ids]})
        # 207: inputs without associations come back as errors; they simply have none
        for item in data.get("results") or []:
            rec = by_id.get(str((item.get("from") or {}).get("id")))
            found = [{"id": str(a["toObjectId"]), "type": _type_label(a)} for a in item.get("to") or []
                     if isinstance(a, dict) and a.get("toObjectId") is not None]
            if rec is not None and found:
                rec.setdefault("associations", {})[to] = {"results": found}
    return len(ASSOCIATED)


def _type_label(assoc: dict[str, Any]) -> str:
    types = assoc.get("associationTypes") or [{}]
    first = types[0] if isinstance(types[0], dict) else {}
    return str(first.get("label") or first.get("typeId") or "")
