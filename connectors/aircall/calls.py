"""An Aircall call (the `/v1/calls` object, or a `call.*` webhook's `data`) as a hub activity.

Aircall dates are UNIX seconds. The contact's number is `raw_digits`, as Aircall wrote it
(`+1 800-123-4567`); the Aircall line is `number.digits`; the agent is `user`. Other people on
a conference are in `participants` (`type` user, contact or external). The hub normalises the
numbers and applies the instance's `internal` list.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from hub.sdk import ActivityEvent, Participant

__all__ = ["call_activity", "iso", "unix"]


def unix(value: Any, name: str) -> int | None:
    """A UNIX-seconds field; None when absent, ValueError when it is not a number."""
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"{name} is not a UNIX time: {value!r}")
    try:
        return int(float(value))
    except ValueError:
        raise ValueError(f"{name} is not a UNIX time: {value!r}") from None


def iso(seconds: int | None) -> str | None:
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


def _status(call: dict[str, Any], answered: int | None) -> str | None:
    """Aircall's `initial` / `answered` / `done`, with `done` split into completed and missed."""
    status = call.get("status")
    if call.get("missed_call_reason"):
        return "missed"
    if status == "done":
        return "completed" if answered is not None else "missed"
    if status == "initial":
        return "ringing"
    if status == "answered":
        return "in-progress"
    return str(status) if status else None


def _user(role: str, user: Any) -> Participant | None:
    if not isinstance(user, dict) or user.get("id") is None:
        return None
    return Participant(role=role, user_id=str(user["id"]), email=user.get("email") or None,
                       name=user.get("name") or None)


def call_activity(call: dict[str, Any], updated_at: int | None = None) -> ActivityEvent:
    """The activity for one call; `updated_at` (a webhook's `timestamp`) dates the version when given,
    else the call's latest own time does. ValueError when the call is unusable."""
    cid = call.get("id")
    if cid is None or isinstance(cid, bool) or not str(cid).isdigit():
        raise ValueError(f"a call needs a numeric id, got {cid!r}")
    started = unix(call.get("started_at"), "started_at")
    if started is None:
        raise ValueError(f"call {cid} has no started_at")
    answered = unix(call.get("answered_at"), "answered_at")
    ended = unix(call.get("ended_at"), "ended_at")
    direction = call.get("direction")
    if direction not in ("inbound", "outbound"):
        raise ValueError(f"call {cid} has direction {direction!r}, not inbound or outbound")
    contact_role, line_role = ("caller", "callee") if direction == "inbound" else ("callee", "caller")
    people: list[Participant] = []
    if call.get("raw_digits"):
        people.append(Participant(role=contact_role, phone=str(call["raw_digits"])))
    number = call.get("number")
    if isinstance(number, dict) and number.get("digits"):
        people.append(Participant(role=line_role, phone=str(number["digits"]), name=number.get("name") or None))
    agent = _user("agent", call.get("user"))
    if agent is not None:
        people.append(agent)
    known_users = {p.user_id for p in people if p.user_id}
    known_phones = {p.phone for p in people if p.phone}
    for part in call.get("participants") or []:
        if not isinstance(part, dict):
            continue
        if part.get("type") == "user":
            extra = _user("agent", part)
            if extra is not None and extra.user_id and extra.user_id not in known_users:
                people.append(extra)
                known_users.add(extra.user_id)
        elif part.get("phone_number") and part["phone_number"] not in known_phones:
            people.append(Participant(role=contact_role, phone=str(part["phone_number"]),
                                      name=part.get("name") or None))
            known_phones.add(part["phone_number"])
    details: dict[str, Any] = {"aircall_status": call.get("status")}
    for key in ("missed_call_reason", "cost", "archived"):
        if call.get(key) not in (None, ""):
            details[key] = call[key]
    if call.get("asset"):
        details["recording_url"] = call["asset"]  # the dashboard's link; the file is never downloaded
    elif call.get("recording") or call.get("voicemail"):
        details["has_recording"] = True  # `recording`/`voicemail` are short-lived signed URLs: not kept
    tags = [t.get("name") for t in call.get("tags") or [] if isinstance(t, dict) and t.get("name")]
    if tags:
        details["tags"] = tags
    if isinstance(call.get("contact"), dict) and call["contact"].get("id") is not None:
        details["aircall_contact_id"] = call["contact"]["id"]
    latest = max(t for t in (started, answered, ended, updated_at) if t is not None)
    duration = call.get("duration")
    return ActivityEvent(
        type="call", external_id=str(cid), occurred_at=iso(started) or "", participants=people,
        ended_at=iso(ended), duration_s=int(duration) if isinstance(duration, (int, float)) and ended else None,
        direction=direction, status=_status(call, answered), url=call.get("direct_link") or None,
        updated_at=iso(latest), details=details,
    )
