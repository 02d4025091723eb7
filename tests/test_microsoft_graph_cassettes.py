"""Microsoft Graph cassettes (fixtures/microsoft_graph/*.yaml) replayed through the connector
with vcrpy. They were composed from Microsoft's documented examples, not recorded (see
fixtures/microsoft_graph/README.md). `record_mode="none"`: a request no interaction matches fails
the test, nothing reaches the network, and every interaction must be played."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import pytest
import vcr
from vcr.request import Request as VcrRequest

from hub.config import parse_config
from hub.registry import ConnectorFactory
from hub.sdk import Connector, Cursor, CursorExpired, Page

CASSETTES = Path(__file__).resolve().parents[1] / "fixtures" / "microsoft_graph"
TOKEN = "eyJ0eXAiOiJKV1QiLCJub25jZSI6ImNhc3NldHRlcyJ9.not-a-real-token"


def _parts(uri: str) -> tuple[str, str, str, list[tuple[str, str]]]:
    u = urlsplit(uri)
    query = sorted((k.lower(), v) for k, v in parse_qsl(u.query, keep_blank_values=True))
    return u.scheme, u.netloc, unquote(u.path), query


def graph_request(r1: VcrRequest, r2: VcrRequest) -> None:
    """Method, host, path and query (names without case: the docs write `startdatetime`)."""
    assert r1.method == r2.method
    assert _parts(r1.uri) == _parts(r2.uri), f"{r1.uri} != {r2.uri}"


def cassettes() -> vcr.VCR:
    v = vcr.VCR(cassette_library_dir=str(CASSETTES), record_mode="none", match_on=["graph"],
                filter_headers=["authorization"])
    v.register_matcher("graph", graph_request)
    return v


def no_retry(seconds: float) -> None:
    raise AssertionError(f"a replay needs no retry (asked to sleep {seconds}s)")


def connector(**options: Any) -> Connector:
    block = {"kind": "microsoft_graph", "auth": {"token": TOKEN}, "page_size": 2,
             "mailboxes": [{"id": "me", "address": "alex@contoso.com"}], **options}
    return ConnectorFactory(parse_config({"connectors": {"m365": block}}), sleep=no_retry).build("m365")


def read(conn: Connector, stream: str, cursor: Cursor | None = None) -> list[Page]:
    try:
        return list(conn.read(stream, cursor))
    finally:
        conn.close()


def test_messages_delta_two_rounds_as_documented() -> None:
    with cassettes().use_cassette("messages_delta.yaml") as cassette:
        opts = {"mail_folders": ["AQMkADNkNAAAgEMAAAA"]}
        first = read(connector(**opts), "messages")
        assert [len(p.records) for p in first] == [2, 2, 1]
        assert [r.activity.subject for p in first for r in p.records if r.activity] == [
            "Holiday hours update", "Holiday promotion sale", "Microsoft Virtual Academy at Contoso",
            "New or modified user account information", "Fabric CDN now available"]
        key = "me|AQMkADNkNAAAgEMAAAA"
        assert first[0].next_cursor and first[0].next_cursor["next"][key].endswith("$skiptoken=GwcBoTmPuoTQWfcsAbkYM")
        last = first[-1].next_cursor
        assert last and last["delta"][key].endswith("$deltatoken=GwcBoTmPuoGNlgXgF1nyUNMXY") and not last["next"]
        ev = first[0].records[0].activity
        assert ev is not None and (ev.direction, ev.status, ev.details["message_id"]) == \
            ("inbound", "received", "<holiday-hours-1@contoso.com>")
        second = read(connector(**opts), "messages", last)
        assert second[0].deleted == ["AAMkADk0MGFkODE3LWE4MmYtNDRhOS0Dh_6qB-pB2Sa2pUum19a6YAAKnLuxoAAA="]
        assert [r.external_id for r in second[0].records] == ["AAMkADNkNAAASq35xAAA="]
        assert cassette.all_played


def test_calendar_view_delta_two_rounds_as_documented() -> None:
    with cassettes().use_cassette("events_delta.yaml") as cassette:
        opts = {"mailboxes": [{"id": "me", "address": "samanthab@contoso.onmicrosoft.com"}],
                "calendar_start": "2016-12-01T00:00:00Z", "calendar_end": "2016-12-30T00:00:00Z"}
        first = read(connector(**opts), "events")
        events = [r.activity for p in first for r in p.records if r.activity]
        assert [e.subject for e in events] == ["Plan shopping list", "Pick up car", "Get food", "Prepare food", "Rest!"]
        rest = events[-1]
        assert (rest.occurred_at, rest.ended_at, rest.duration_s) == ("2016-12-12T02:00:00Z", "2016-12-12T07:30:00Z",
                                                                      5.5 * 3600)
        assert rest.direction == "outbound" and rest.details["location"] == "Home"
        assert [(p.role, p.email) for p in rest.participants] == [("organizer", "samanthab@contoso.onmicrosoft.com")]
        assert all("body" not in r.data for p in first for r in p.records)  # the calendar cannot $select: dropped
        second = read(connector(**opts), "events", first[-1].next_cursor)
        assert second[0].deleted == ["AAMkADk0MGFkODE3LWE4MmYtNDRhOS04OGQLkRkXbBznTvAADb6ytyAAA="]
        assert [r.activity.subject for r in second[0].records if r.activity] == ["Attend service"]
        assert cassette.all_played


@pytest.mark.parametrize("stream, cursor", [
    ("messages", {"delta": {"me|AQMkADNkNAAAgEMAAAA": "https://graph.microsoft.com/v1.0/me/mailfolders("
                            "'AQMkADNkNAAAgEMAAAA')/messages/delta?$deltatoken=GwcBoTmPuoGNlgXgF1nyUNMXY"}}),
    ("events", {"delta": {"me": "https://graph.microsoft.com/v1.0/me/calendarView/delta?$deltatoken=R0usmcFuQtZdtpk4"},
                "window": {"me": ["2016-12-01T00:00:00Z", "2016-12-30T00:00:00Z"]}}),
])
def test_documented_resync_signals_raise_cursor_expired(stream: str, cursor: Cursor) -> None:
    with cassettes().use_cassette("token_reset.yaml", allow_playback_repeats=False) as cassette:
        with pytest.raises(CursorExpired) as err:
            read(connector(mail_folders=["AQMkADNkNAAAgEMAAAA"], calendar_start="2016-12-01T00:00:00Z",
                           calendar_end="2016-12-30T00:00:00Z"), stream, cursor)
        assert ("410" if stream == "messages" else "syncStateNotFound") in str(err.value)
        assert cassette.play_count == 1


def test_no_cassette_holds_a_secret() -> None:
    for path in CASSETTES.glob("*.yaml"):
        text = path.read_text()
        assert "authorization" not in text.lower() or "filters authorization" in text.lower()
        assert "Bearer " not in text and "client_secret" not in text and "access_token" not in text
