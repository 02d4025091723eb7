"""Google Calendar cassettes (fixtures/google_calendar/*.yaml) replayed through the connector with vcrpy.

Composed from Google's documented examples, not recorded (fixtures/google_calendar/README.md).
Replay is `record_mode="none"`: a request no interaction matches fails the test.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest
import vcr
from vcr.request import Request as VcrRequest

from connectors.google_calendar import GoogleCalendarConnector
from connectors.google_calendar.connector import GoogleCalendarConfig
from hub.sdk import ConnectorContext, CursorExpired, Page

CASSETTES = Path(__file__).resolve().parents[1] / "fixtures" / "google_calendar"
ANN = "ann@example.com"
TOKEN = "ya29.a0-cassette-token-not-a-real-one"
WINDOW = ("timeMin", "timeMax")


def _query(uri: str) -> list[tuple[str, str]]:
    # the window follows the clock: check that it is sent, not its values
    return sorted((k, "<time>" if k in WINDOW else v) for k, v in parse_qsl(urlsplit(uri).query))


def google_request(r1: VcrRequest, r2: VcrRequest) -> None:
    assert (r1.method, r1.scheme, r1.host, r1.path) == (r2.method, r2.scheme, r2.host, r2.path)
    assert _query(r1.uri) == _query(r2.uri), "query parameters differ"


def cassettes() -> vcr.VCR:
    v = vcr.VCR(cassette_library_dir=str(CASSETTES), record_mode="none", match_on=["google"],
                filter_headers=["authorization"])
    v.register_matcher("google", google_request)
    return v


def connector() -> GoogleCalendarConnector:
    # a wide window: the documented examples are dated June 2026
    cfg = GoogleCalendarConfig.model_validate({"kind": "google_calendar", "lookback_days": 3650,
                                               "calendars": [{"address": ANN, "access_token": TOKEN}]})
    return GoogleCalendarConnector(cfg, ConnectorContext(name="cal", sleep=lambda _s: None))


def test_full_sync_incremental_sync_then_410() -> None:
    conn = connector()
    with cassettes().use_cassette("full_then_incremental.yaml") as cassette:
        full = list(conn.read("events", None))
        incremental: list[Page] = []
        with pytest.raises(CursorExpired, match="fullSyncRequired"):
            for page in conn.read("events", full[-1].next_cursor):
                incremental.append(page)
            list(conn.read("events", incremental[-1].next_cursor))
        assert cassette.all_played
    conn.close()
    assert [len(p.records) for p in full] == [1, 1]
    assert full[0].next_cursor is not None and full[0].next_cursor["calendars"][ANN]["page_token"] == \
        "CiAKGjBpNDd2Nmp2Zml2cXRwYjBpOXA"
    assert full[-1].next_cursor == {"calendars": {ANN: {"phase": "sync", "sync_token": "CPDAlvWDx70CEPDAlvWDx70CGAU=",
                                                        "page_token": None, "pages": 0}}}
    demo = full[0].records[0].activity
    assert demo is not None
    assert (demo.occurred_at, demo.ended_at, demo.updated_at) == (
        "2026-06-02T13:00:00.000Z", "2026-06-02T13:30:00.000Z", "2026-05-30T08:12:00.000Z")
    assert [(p.role, p.email, p.response) for p in demo.participants] == [
        ("organizer", ANN, "accepted"), ("attendee", "Lee@Customer.example", "needsAction")], "rooms are not people"
    instance = full[1].records[0].activity
    assert instance is not None and instance.details["recurring_event_id"] == "4rk2m6q8s0u2w4y6a8c0e2g4i6"
    [page] = incremental
    moved = page.records[0].activity
    assert moved is not None and moved.occurred_at == "2026-06-04T09:00:00.000Z" and moved.status == "scheduled"
    assert ("attendee", "Lee@Customer.example", "accepted") in [(p.role, p.email, p.response) for p in moved.participants]
    assert page.deleted == [f"{ANN}:4rk2m6q8s0u2w4y6a8c0e2g4i6_20260610T090000Z", f"{ANN}:2f0s7l1i7m8kq9"]


def test_no_secret_in_any_cassette() -> None:
    for path in CASSETTES.glob("*.yaml"):
        text = path.read_text()
        assert "ya29." not in text and "Bearer" not in text and "authorization:" not in text.lower()
