"""Google Calendar connector without a database: requests it makes, what an event becomes,
privacy, the expansion window, and Google's errors (respx, strict)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import respx

from connectors.google_calendar import GoogleCalendarConnector
from connectors.google_calendar.connector import GoogleCalendarConfig
from hub.sdk import ConnectorContext, CursorExpired, FatalError, Page

ANN = "ann@example.com"
TOKEN = "ya29.ann-cal-connector-0001"
BASE = "https://www.googleapis.com"
EVENTS = f"/calendar/v3/calendars/{ANN}/events"


def connector(**extra: Any) -> GoogleCalendarConnector:
    cfg = GoogleCalendarConfig.model_validate({"kind": "google_calendar", "calendars": [
        {"address": ANN, "access_token": TOKEN}], **extra})
    return GoogleCalendarConnector(cfg, ConnectorContext(name="cal", sleep=lambda _s: None))


def read(cursor: dict[str, Any] | None = None, **extra: Any) -> list[Page]:
    conn = connector(**extra)
    try:
        return list(conn.read("events", cursor))
    finally:
        conn.close()


def synced(token: str = "CPDAlvWDx70CEPDAlvWDx70CGAU=") -> dict[str, Any]:
    return {"calendars": {ANN: {"phase": "sync", "sync_token": token, "page_token": None, "pages": 0}}}


def test_full_sync_is_windowed_and_single_events_then_the_sync_token_alone() -> None:
    with respx.mock(base_url=BASE, assert_all_called=True) as mock:
        route = mock.get(EVENTS).mock(side_effect=[
            httpx.Response(200, json={"kind": "calendar#events", "items": [], "nextPageToken": "p2"}),
            httpx.Response(200, json={"kind": "calendar#events", "items": [], "nextSyncToken": "s1"}),
            httpx.Response(200, json={"kind": "calendar#events", "items": [], "nextSyncToken": "s2"}),
        ])
        pages = read()
        assert pages[-1].next_cursor == {"calendars": {ANN: {"phase": "sync", "sync_token": "s1",
                                                             "page_token": None, "pages": 0}}}
        read(pages[-1].next_cursor)
    full, second, incremental = (dict(c.request.url.params) for c in route.calls)
    assert full["singleEvents"] == "true" and full["maxResults"] == "2500"
    assert "timeMin" in full and "timeMax" in full and "syncToken" not in full
    assert second["pageToken"] == "p2" and second["timeMin"] == full["timeMin"], "one window for the whole listing"
    assert incremental == {"singleEvents": "true", "maxResults": "2500", "syncToken": "s1"}
    assert all(c.request.headers["Authorization"] == f"Bearer {TOKEN}" for c in route.calls)


def test_410_gone_raises_cursor_expired() -> None:
    body = {"error": {"errors": [{"domain": "calendar", "reason": "fullSyncRequired",
                                  "message": "Sync token is no longer valid, a full sync is required.",
                                  "locationType": "parameter", "location": "syncToken"}],
                      "code": 410, "message": "Sync token is no longer valid, a full sync is required."}}
    with respx.mock(base_url=BASE, assert_all_called=True) as mock:
        mock.get(EVENTS).respond(410, json=body)
        with pytest.raises(CursorExpired, match="fullSyncRequired"):
            read(synced())


def test_a_last_page_without_a_sync_token_is_a_clear_error() -> None:
    with respx.mock(base_url=BASE, assert_all_called=True) as mock:
        mock.get(EVENTS).respond(json={"kind": "calendar#events", "items": []})
        with pytest.raises(FatalError, match="nextSyncToken"):
            read()


def test_an_event_becomes_a_meeting_with_organizer_and_attendees() -> None:
    event = {"kind": "calendar#event", "id": "7cbh8rpc10lrc0ckih9tafss99", "status": "confirmed",
             "htmlLink": "https://www.google.com/calendar/event?eid=N2NiaDhycGMxMGxyYzBja2loOXRhZnNzOTk",
             "updated": "2026-05-30T08:12:00.000Z", "summary": "Demo", "description": "Agenda: pricing",
             "organizer": {"email": ANN, "self": True},
             "start": {"dateTime": "2026-06-02T15:00:00+02:00"}, "end": {"dateTime": "2026-06-02T15:30:00+02:00"},
             "attendees": [{"email": ANN, "organizer": True, "self": True, "responseStatus": "accepted"},
                           {"email": "Lee@Customer.example", "displayName": "Lee", "responseStatus": "tentative"},
                           {"email": "c_room@resource.calendar.google.com", "resource": True,
                            "responseStatus": "accepted"}]}
    allday = {"id": "offsite", "status": "confirmed", "updated": "2026-05-30T08:12:00.000Z", "summary": "Offsite",
              "start": {"date": "2026-06-10"}, "end": {"date": "2026-06-11"}, "organizer": {"email": "x@customer.example"}}
    with respx.mock(base_url=BASE, assert_all_called=True) as mock:
        mock.get(EVENTS).respond(json={"items": [event, allday], "nextSyncToken": "s"})
        plain = read()[0].records
        mock.get(EVENTS).respond(json={"items": [event], "nextSyncToken": "s"})
        with_excerpt = read(body_excerpt_chars=7)[0].records
    ev = plain[0].activity
    assert ev is not None
    assert (ev.type, ev.status, ev.subject, ev.updated_at) == ("meeting", "scheduled", "Demo", "2026-05-30T08:12:00.000Z")
    assert (ev.occurred_at, ev.ended_at, ev.duration_s) == ("2026-06-02T13:00:00.000Z", "2026-06-02T13:30:00.000Z", 1800)
    assert [(p.role, p.email, p.name, p.response) for p in ev.participants] == [
        ("organizer", ANN, None, "accepted"), ("attendee", "Lee@Customer.example", "Lee", "tentative")]
    assert ev.url == event["htmlLink"] and plain[0].external_id == f"{ANN}:{event['id']}"
    assert ev.body_excerpt is None and "description" not in plain[0].data, "metadata only by default"
    day = plain[1].activity
    assert day is not None and day.occurred_at == "2026-06-10T00:00:00.000Z" and day.details["all_day"] is True
    assert [(p.role, p.email) for p in day.participants] == [("organizer", "x@customer.example")]
    assert with_excerpt[0].activity is not None and with_excerpt[0].activity.body_excerpt == "Agenda:"


def test_incremental_instances_outside_the_window_are_left_out_and_tombstones_are_cancellations() -> None:
    near = {"id": "w_20260101T100000Z", "recurringEventId": "w", "status": "confirmed", "updated": "2026-01-01T00:00:00Z",
            "start": {"dateTime": "2999-01-01T10:00:00Z"}, "end": {"dateTime": "2999-01-01T11:00:00Z"},
            "organizer": {"email": ANN}}
    gone = {"kind": "calendar#event", "id": "2f0s7l1i7m8kq9", "status": "cancelled"}
    with respx.mock(base_url=BASE, assert_all_called=True) as mock:
        mock.get(EVENTS).respond(json={"items": [near, gone], "nextSyncToken": "s2"})
        page = read(synced())[0]
    assert page.deleted == [f"{ANN}:2f0s7l1i7m8kq9"]
    # and what the delete means: the meeting is cancelled (the hub keeps its stored time and people)
    (rec,) = page.records
    assert rec.external_id == f"{ANN}:2f0s7l1i7m8kq9" and rec.activity is not None
    assert (rec.activity.type, rec.activity.occurred_at, rec.activity.status, rec.activity.participants) == \
        ("meeting", "", "cancelled", [])


def test_an_event_whose_start_does_not_parse_is_rejected_and_the_page_goes_on() -> None:
    bad = {"id": "bad", "status": "confirmed", "start": {"dateTime": "next tuesday"}, "organizer": {"email": ANN}}
    good = {"id": "good", "status": "confirmed", "start": {"dateTime": "2026-06-02T15:00:00Z"},
            "organizer": {"email": ANN}}
    with respx.mock(base_url=BASE, assert_all_called=True) as mock:
        mock.get(EVENTS).respond(json={"items": [bad, good], "nextSyncToken": "s"})
        page = read()[0]
    assert [r.external_id for r in page.records] == [f"{ANN}:good"]
    assert [r.external_id for r in page.rejected] == [f"{ANN}:bad"] and "next tuesday" in page.rejected[0].reason


def test_calendar_owners_are_internal_users() -> None:
    cfg = connector(internal=["@example.com"]).cfg
    assert cfg.internal == ["@example.com", ANN]
