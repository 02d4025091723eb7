"""Task and Event records as hub activities (hub.sdk.activity.ActivityEvent), built by the connector."""

from __future__ import annotations

from typing import Any

import pytest

from connectors.salesforce.activities import activity_event
from connectors.salesforce.connector import SalesforceConfig

INSTANCE = "https://acme.my.salesforce.com"


def config(**extra: Any) -> SalesforceConfig:
    return SalesforceConfig.model_validate({"kind": "salesforce",
                                            "auth": {"access_token": "t", "instance_url": INSTANCE}, **extra})


def task(**extra: Any) -> dict[str, Any]:
    return {"Id": "00TDn0000000001AAA", "OwnerId": "005Dn0000000001AAA", "Subject": "Call back",
            "Status": "Completed", "TaskSubtype": "Call", "CallType": "Inbound", "CallDurationInSeconds": 95,
            "ActivityDate": "2026-01-05", "CompletedDateTime": "2026-01-05T10:15:00.000+0000",
            "WhoId": "003Dn0000000002AAA", "WhatId": "006Dn0000000003AAA", "AccountId": "001Dn0000000004AAA",
            "Description": "Discussed renewal pricing in detail", "SystemModstamp": "2026-01-05T10:16:00.000+0000",
            "CreatedDate": "2026-01-04T09:00:00.000+0000", **extra}


def test_a_call_task_is_a_call_with_refs_from_who_what_and_account() -> None:
    ev = activity_event("Task", task(), config(), INSTANCE)
    assert (ev.type, ev.external_id, ev.occurred_at, ev.direction, ev.duration_s, ev.status) == (
        "call", "00TDn0000000001AAA", "2026-01-05T10:15:00+00:00", "inbound", 95, "completed")
    assert ev.refs == {"contact": "003Dn0000000002AAA", "opportunity": "006Dn0000000003AAA",
                       "account": "001Dn0000000004AAA"}
    assert ev.url == f"{INSTANCE}/00TDn0000000001AAA" and ev.updated_at == "2026-01-05T10:16:00+00:00"
    assert [(p.role, p.user_id) for p in ev.participants] == [("organizer", "005Dn0000000001AAA")]
    assert ev.body_excerpt is None, "metadata only unless the instance allows an excerpt"


def test_the_excerpt_follows_the_privacy_setting() -> None:
    assert activity_event("Task", task(), config(body_excerpt_chars=9), INSTANCE).body_excerpt == "Discussed"


@pytest.mark.parametrize(("who", "what", "refs"), [
    ("00QDn0000000009AAA", "001Dn0000000004AAA", {"lead": "00QDn0000000009AAA", "account": "001Dn0000000004AAA"}),
    (None, "a01Dn0000000001AAA", {"account": "001Dn0000000004AAA"}),  # a custom object What: not a ref
])
def test_polymorphic_who_and_what_are_told_apart_by_key_prefix(who: str | None, what: str,
                                                                refs: dict[str, str]) -> None:
    ev = activity_event("Task", task(WhoId=who, WhatId=what), config(), INSTANCE)
    assert ev.refs == refs


def test_an_open_email_task_falls_back_to_its_due_date() -> None:
    ev = activity_event("Task", task(TaskSubtype="Email", Status="Not Started", CompletedDateTime=None,
                                     CallType=None, CallDurationInSeconds=None), config(), INSTANCE)
    assert (ev.type, ev.occurred_at, ev.status, ev.direction) == ("email", "2026-01-05T00:00:00+00:00",
                                                                  "not started", None)


def test_an_event_is_a_meeting_with_its_end_and_duration() -> None:
    raw = {"Id": "00UDn0000000001AAA", "Subject": "Demo", "StartDateTime": "2026-01-06T15:00:00.000+0000",
           "EndDateTime": "2026-01-06T15:30:00.000+0000", "DurationInMinutes": 30, "WhoId": "003Dn0000000002AAA",
           "SystemModstamp": "2026-01-05T10:16:00.000+0000", "Location": "Zoom"}
    ev = activity_event("Event", raw, config(), INSTANCE)
    assert (ev.type, ev.occurred_at, ev.ended_at, ev.duration_s) == (
        "meeting", "2026-01-06T15:00:00+00:00", "2026-01-06T15:30:00+00:00", 1800)
    assert ev.details["Location"] == "Zoom" and ev.refs == {"contact": "003Dn0000000002AAA"}


def test_an_activity_without_any_date_is_refused_with_the_reason() -> None:
    with pytest.raises(ValueError, match="Event without StartDateTime"):
        activity_event("Event", {"Id": "00UDn0000000001AAA"}, config(), INSTANCE)
    with pytest.raises(ValueError, match="Task without"):
        activity_event("Task", {"Id": "00TDn0000000001AAA"}, config(), INSTANCE)
