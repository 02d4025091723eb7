"""Task and Event records as the hub's activities (hub.sdk.activity.ActivityEvent)."""

from __future__ import annotations

from typing import Any

from connectors.salesforce.api import parse_sf_datetime
from hub.sdk import ActivityEvent, Participant
from hub.sdk.activity import ActivityConnectorConfig

__all__ = ["activity_event"]

# Key prefixes (the first three characters of an Id) say what a polymorphic WhoId/WhatId points at.
_WHO = {"003": "contact", "00Q": "lead"}
_WHAT = {"006": "opportunity", "001": "account"}
_TASK_TYPES = {"Call": "call", "Email": "email", "ListEmail": "email", "Cadence": "task", "Task": "task"}


def _iso(value: Any) -> str | None:
    if not value:
        return None
    s = str(value)
    if len(s) == 10:  # a date field (ActivityDate): midnight UTC, the day is all Salesforce knows
        return f"{s}T00:00:00+00:00"
    return parse_sf_datetime(s).isoformat()


def _refs(raw: dict[str, Any]) -> dict[str, str]:
    refs: dict[str, str] = {}
    who, what, account = raw.get("WhoId"), raw.get("WhatId"), raw.get("AccountId")
    if isinstance(who, str) and who[:3] in _WHO:
        refs[_WHO[who[:3]]] = who
    if isinstance(what, str) and what[:3] in _WHAT:
        refs[_WHAT[what[:3]]] = what
    if isinstance(account, str) and account:
        refs["account"] = account  # Salesforce derives it from Who/What: it wins over a What account
    return refs


def activity_event(sobject: str, raw: dict[str, Any], cfg: ActivityConnectorConfig,
                   instance_url: str) -> ActivityEvent:
    """Raises ValueError (with the reason) when the record cannot be an activity."""
    ext = str(raw.get("Id") or "")
    owner = raw.get("OwnerId")
    participants = [Participant(role="organizer", user_id=str(owner))] if owner else []
    common: dict[str, Any] = {
        "external_id": ext, "participants": participants, "subject": raw.get("Subject"),
        "url": f"{instance_url.rstrip('/')}/{ext}", "body_excerpt": cfg.excerpt(raw.get("Description")),
        "updated_at": _iso(raw.get("SystemModstamp")), "refs": _refs(raw),
        "details": {k: raw[k] for k in ("WhoId", "WhatId", "Status", "Priority", "Location") if raw.get(k)},
    }
    if sobject == "Event":
        start = _iso(raw.get("StartDateTime")) or _iso(raw.get("ActivityDate"))
        if not start:
            raise ValueError("Event without StartDateTime or ActivityDate")
        minutes = raw.get("DurationInMinutes")
        return ActivityEvent(type="meeting", occurred_at=start, ended_at=_iso(raw.get("EndDateTime")),
                             duration_s=int(minutes) * 60 if isinstance(minutes, int | float) else None,
                             status="scheduled", **common)
    when = _iso(raw.get("CompletedDateTime")) or _iso(raw.get("ActivityDate")) or _iso(raw.get("CreatedDate"))
    if not when:
        raise ValueError("Task without CompletedDateTime, ActivityDate or CreatedDate")
    status = raw.get("Status")
    call = raw.get("CallType")
    seconds = raw.get("CallDurationInSeconds")
    return ActivityEvent(
        type=_TASK_TYPES.get(str(raw.get("TaskSubtype") or "Task"), "task"), occurred_at=when,
        status="completed" if status == "Completed" else (str(status).lower() if status else None),
        direction={"Inbound": "inbound", "Outbound": "outbound", "Internal": "internal"}.get(str(call)),
        duration_s=int(seconds) if isinstance(seconds, int | float) else None, **common)
