"""A Twilio call (the Calls resource, or a status callback) as a hub activity.

Twilio writes times as RFC 2822 (`Thu, 30 Jul 2015 20:00:00 +0000`) and `duration` as a
string of seconds. Numbers are passed as Twilio wrote them (`+14155551212`, or
`client:alice` / `sip:...` for non-PSTN legs, which become vendor user ids); the hub
normalises numbers and applies the instance's `internal` list.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

from hub.sdk import ActivityEvent, Participant

__all__ = ["TERMINAL", "call_activity", "callback_activity", "parse_time", "to_iso"]

#: statuses after which a call no longer changes (twilio-oai `call_enum_status`)
TERMINAL = frozenset({"completed", "busy", "failed", "no-answer", "canceled"})
#: Twilio's status -> the hub's word; statuses not listed keep Twilio's own word
STATUS = {"completed": "completed", "busy": "missed", "no-answer": "missed", "canceled": "cancelled",
          "failed": "failed"}


_MONTHS = {m: i for i, m in enumerate(("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct",
                                          "Nov", "Dec"), 1)}


def parse_time(value: Any) -> datetime | None:
    """An RFC 2822 time as an aware UTC datetime; None when absent. ValueError when malformed."""
    if value in (None, ""):
        return None
    s = value if isinstance(value, str) else str(value)
    # Twilio writes one form, `Tue, 10 Aug 2010 08:02:17 +0000`: read by position, as the
    # general parser cost 14% of a call sync's CPU. Anything else goes the general way.
    if len(s) == 31 and s[3:5] == ", " and s[26:] == "+0000" and s[7] == s[11] == s[16] == s[25] == " ":
        month = _MONTHS.get(s[8:11])
        if month is not None and s[19] == s[22] == ":":
            try:
                return datetime(int(s[12:16]), month, int(s[5:7]), int(s[17:19]), int(s[20:22]), int(s[23:25]),
                                tzinfo=UTC)
            except ValueError:
                raise ValueError(f"not an RFC 2822 time: {value!r}") from None
    try:
        when = parsedate_to_datetime(str(value))
    except (TypeError, ValueError, IndexError):
        raise ValueError(f"not an RFC 2822 time: {value!r}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC)


def to_iso(when: datetime | None) -> str | None:
    return when.isoformat().replace("+00:00", "Z") if when is not None else None


def direction_of(twilio_direction: str | None) -> str | None:
    """`inbound` and `trunking-terminating` come in; `outbound-api`, `outbound-dial` and
    `trunking-originating` go out."""
    if not twilio_direction:
        return None
    return "inbound" if twilio_direction in ("inbound", "trunking-terminating") else "outbound"


def _party(role: str, value: Any, name: Any = None) -> Participant | None:
    if not value:
        return None
    text = str(value)
    if text.startswith(("client:", "sip:")):  # a Twilio Client identity or SIP address, not a number
        return Participant(role=role, user_id=text, name=str(name) if name else None)
    return Participant(role=role, phone=text, name=str(name) if name else None)


def _int(value: Any) -> int | None:
    if value in (None, ""):
        return None
    return int(str(value))


def call_activity(call: dict[str, Any], api_base: str) -> ActivityEvent:
    """A call resource (`api.v2010.account.call`) as an activity. ValueError when unusable."""
    sid = call.get("sid")
    if not sid or not str(sid).startswith("CA"):
        raise ValueError(f"a call needs a CA... sid, got {sid!r}")
    started = parse_time(call.get("start_time"))
    created = parse_time(call.get("date_created"))
    occurred = started or created
    if occurred is None:
        raise ValueError(f"call {sid} has neither start_time nor date_created")
    ended = parse_time(call.get("end_time"))
    status = str(call.get("status") or "")
    parties = [_party("caller", call.get("from"), call.get("caller_name")), _party("callee", call.get("to"))]
    details: dict[str, Any] = {"twilio_status": status, "twilio_direction": call.get("direction")}
    for key in ("parent_call_sid", "answered_by", "forwarded_from", "price", "price_unit", "queue_time"):
        if call.get(key) not in (None, ""):
            details[key] = call[key]
    recordings = (call.get("subresource_uris") or {}).get("recordings")
    if recordings:
        details["recordings_url"] = api_base + str(recordings)  # linked, never downloaded
    uri = call.get("uri")
    return ActivityEvent(
        type="call", external_id=str(sid), occurred_at=to_iso(occurred) or "",
        participants=[p for p in parties if p is not None], ended_at=to_iso(ended),
        duration_s=_int(call.get("duration")), direction=direction_of(call.get("direction")),
        status=STATUS.get(status, status or None), url=f"{api_base}{uri}" if uri else None,
        updated_at=to_iso(parse_time(call.get("date_updated")) or ended or occurred), details=details,
    )


def callback_activity(form: dict[str, Any]) -> ActivityEvent:
    """A status callback (form parameters as stored by `crmhub serve`) as an activity version.

    A callback carries no start time: `Timestamp` is when the event fired, so a finished
    call's start is `Timestamp - CallDuration`. ValueError when unusable.
    """
    sid = _one(form.get("CallSid"))
    if not sid or not sid.startswith("CA"):
        raise ValueError(f"a status callback needs a CA... CallSid, got {sid!r}")
    status = _one(form.get("CallStatus")) or ""
    fired = parse_time(_one(form.get("Timestamp")))
    if fired is None:
        raise ValueError(f"status callback for {sid} has no Timestamp")
    duration = _int(_one(form.get("CallDuration")))
    ended = fired if status in TERMINAL else None
    started = fired - timedelta(seconds=duration) if ended is not None and duration is not None else fired
    direction = _one(form.get("Direction"))
    parties = [_party("caller", _one(form.get("From")), _one(form.get("CallerName"))),
               _party("callee", _one(form.get("To")))]
    details: dict[str, Any] = {"twilio_status": status, "twilio_direction": direction}
    for key, name in (("ParentCallSid", "parent_call_sid"), ("AnsweredBy", "answered_by"),
                      ("ForwardedFrom", "forwarded_from"), ("SequenceNumber", "sequence_number"),
                      ("RecordingUrl", "recording_url"), ("RecordingSid", "recording_sid")):
        value = _one(form.get(key))
        if value:
            details[name] = value
    return ActivityEvent(
        type="call", external_id=sid, occurred_at=to_iso(started) or "",
        participants=[p for p in parties if p is not None], ended_at=to_iso(ended), duration_s=duration,
        direction=direction_of(direction), status=STATUS.get(status, status or None),
        updated_at=to_iso(fired), details=details,
    )


def _one(value: Any) -> str | None:
    """A form value (a repeated key was stored as a list: take the last)."""
    if isinstance(value, list):
        value = value[-1] if value else None
    return None if value is None else str(value)
