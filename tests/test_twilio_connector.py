"""Twilio connector: what goes on the wire (respx), and the day-scan cursor against the sandbox:
a call started late in a day and listed late is not lost, a call in progress is read again
when it ends, what the cursor remembers stays bounded, and credentials stay out of errors."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import respx
from hypothesis import given
from hypothesis import strategies as st

from connectors.twilio.calls import call_activity
from connectors.twilio.sandbox import ACCOUNT_SID, AUTH_TOKEN, SandboxServer, TwilioStore
from hub.config import ConfigError, parse_config
from hub.registry import ConnectorFactory
from hub.sdk import AuthError, Connector, Cursor, Page

API_KEY = ("SK" + "a" * 32, "api-key-secret-0001")
CALLS_PATH = f"/2010-04-01/Accounts/{ACCOUNT_SID}/Calls.json"


def build(base_url: str = "https://api.twilio.com", **options: Any) -> Connector:
    auth = options.pop("auth", {"account_sid": ACCOUNT_SID, "auth_token": AUTH_TOKEN})
    cfg = parse_config({"connectors": {"tw": {"kind": "twilio", "base_url": base_url, "auth": auth, **options}}})
    return ConnectorFactory(cfg, sleep=lambda _s: None).build("tw")


def read(conn: Connector, cursor: Cursor | None = None) -> list[Page]:
    return list(conn.read("calls", cursor))


def ids(pages: list[Page]) -> list[str]:
    return [r.external_id for p in pages for r in p.records]


def empty_page(uri: str = "/x") -> dict[str, Any]:
    return {"calls": [], "next_page_uri": None, "page": 0, "page_size": 1000, "start": 0, "end": 0, "uri": uri,
            "first_page_uri": uri, "previous_page_uri": None}


def test_the_list_asks_by_start_day_with_the_largest_page_and_an_api_key() -> None:
    with respx.mock(assert_all_called=True) as router:
        route = router.get(host="api.twilio.com", path=CALLS_PATH).mock(
            return_value=httpx.Response(200, json=empty_page()))
        conn = build(auth={"account_sid": ACCOUNT_SID, "api_key_sid": API_KEY[0], "api_key_secret": API_KEY[1]},
                     start_date="2026-11-01")
        [page] = read(conn)
    request = route.calls.last.request
    # `StartTime>=2026-11-01` on the wire: the key `StartTime>`, percent-encoded as twilio-python does
    assert request.url.query == b"StartTime%3E=2026-11-01&PageSize=1000"
    assert request.headers["authorization"] == "Basic " + base64.b64encode(":".join(API_KEY).encode()).decode()
    assert page.records == [] and page.next_cursor == {"gen": 1, "day": "2026-11-01", "seen": {}}


def test_next_page_uri_is_relative_to_the_api_and_followed() -> None:
    call = {"sid": "CA" + "1" * 32, "start_time": "Thu, 30 Jul 2015 20:00:00 +0000", "status": "completed",
            "date_updated": "Thu, 30 Jul 2015 20:00:20 +0000", "from": "+15017122661", "to": "+14155551212",
            "direction": "outbound-api", "duration": "20", "end_time": "Thu, 30 Jul 2015 20:00:20 +0000"}
    nxt = f"/2010-04-01/Accounts/{ACCOUNT_SID}/Calls.json?StartTime%3E=2015-07-30&PageSize=1&Page=1&PageToken=PA1"
    with respx.mock(assert_all_called=True) as router:
        second = router.get(host="api.twilio.com", path=CALLS_PATH, params={"Page": "1", "PageToken": "PA1"}).mock(
            return_value=httpx.Response(200, json=empty_page()))
        router.get(host="api.twilio.com", path=CALLS_PATH).mock(
            return_value=httpx.Response(200, json={**empty_page(), "calls": [call], "next_page_uri": nxt}))
        pages = read(build(page_size=1, start_date="2015-07-30"))
    assert second.calls.last.request.url == "https://api.twilio.com" + nxt
    assert ids(pages) == [call["sid"]]
    assert pages[0].next_cursor is not None and pages[0].next_cursor["next"] == nxt
    assert pages[1].next_cursor == {"gen": 1, "day": "2015-07-30",
                                    "seen": {call["sid"]: [call["date_updated"], 1438286400, False]}}


def at(day: int, hh: int, mm: int) -> datetime:
    return datetime(2026, 11, day, hh, mm, tzinfo=UTC)


@pytest.mark.parametrize("overlap, found", [(3600, True), (0, False)])
def test_a_call_started_late_in_a_day_and_listed_late_is_read(overlap: int, found: bool) -> None:
    """The cursor's day comes from the newest start less `overlap_seconds`: just after midnight it
    stays on the day before, so a call of 23:59 that Twilio lists only later is still read. Without
    the overlap, it would be lost (the case that shows the overlap is what saves it)."""
    store = TwilioStore(calls=0)
    store.add_call(at(20, 12, 0))
    store.add_call(at(21, 0, 10))
    with SandboxServer(store) as server:
        conn = build(server.url, start_date="2026-11-20", overlap_seconds=overlap)
        first = read(conn)
        assert len(ids(first)) == 2
        cursor = first[-1].next_cursor
        assert cursor is not None and cursor["day"] == ("2026-11-20" if overlap else "2026-11-21")
        late = store.add_call(at(20, 23, 59))  # started before the newest call, listed after the first read
        assert (late in ids(read(conn, cursor))) is found


def test_a_call_in_progress_is_read_again_when_it_ends_and_holds_the_day() -> None:
    store = TwilioStore(calls=0)
    store.add_call(at(20, 9, 0))
    live = store.add_call(at(20, 10, 0), in_progress=True)
    with SandboxServer(store) as server:
        conn = build(server.url, start_date="2026-11-20")
        c1 = read(conn)[-1].next_cursor
        later = store.add_call(at(23, 15, 0))  # days later: the open call keeps the scan on its day
        p2 = read(conn, c1)
        c2 = p2[-1].next_cursor
        assert ids(p2) == [later] and c2 is not None and c2["day"] == "2026-11-20"
        assert read(conn, c2)[-1].records == []  # nothing changed: nothing yielded again
        store.end(live, duration=300)
        p3 = read(conn, c2)
        [rec] = [r for p in p3 for r in p.records]
        assert rec.external_id == live and rec.activity is not None
        assert (rec.activity.status, rec.activity.duration_s) == ("completed", 300)
        c3 = p3[-1].next_cursor
        assert c3 is not None and c3["day"] == "2026-11-23"  # ended: the day moves on
        assert set(c3["seen"]) == {later}


def test_what_the_cursor_remembers_stays_bounded() -> None:
    store = TwilioStore(calls=600, days=10)
    with SandboxServer(store) as server:
        pages = read(build(server.url, page_size=100, lookback_days=12))
    assert len(set(ids(pages))) == 600
    final = pages[-1].next_cursor
    assert final is not None and 0 < len(final["seen"]) < 150  # about the last day's calls, not all 600
    assert all(len(p.next_cursor.get("acc") or {}) < 250 for p in pages if p.next_cursor)


def test_rejected_credentials_are_an_auth_error_that_does_not_quote_them() -> None:
    with SandboxServer(TwilioStore(calls=1)) as server:
        conn = build(server.url, auth={"account_sid": ACCOUNT_SID, "auth_token": "wrong-token-123456"})
        with pytest.raises(AuthError) as err:
            read(conn)
        assert "401" in str(err.value) and "wrong-token-123456" not in str(err.value)
        assert "accepted" in build(server.url).check()


def test_config_names_what_is_missing() -> None:
    with pytest.raises(ConfigError, match="auth"):
        build(auth={"account_sid": ACCOUNT_SID})
    with pytest.raises(ConfigError, match="api_key_secret"):
        build(auth={"account_sid": ACCOUNT_SID, "api_key_sid": API_KEY[0]})
    with pytest.raises(ConfigError, match="page_size"):
        build(page_size=1001)


def test_a_call_becomes_an_activity() -> None:
    now = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)

    def rfc(d: datetime) -> str:
        return d.strftime("%a, %d %b %Y %H:%M:%S +0000")

    call = {"sid": "CA" + "2" * 32, "status": "no-answer", "direction": "inbound", "from": "(415) 555-0100",
            "to": "client:alice", "caller_name": "ANN LEE", "start_time": rfc(now), "end_time": rfc(now),
            "date_updated": rfc(now + timedelta(seconds=30)), "duration": "0",
            "uri": f"/2010-04-01/Accounts/{ACCOUNT_SID}/Calls/CA{'2' * 32}.json",
            "subresource_uris": {"recordings": f"/2010-04-01/Accounts/{ACCOUNT_SID}/Calls/CA{'2' * 32}/Recordings.json"}}
    act = call_activity(call, "https://api.twilio.com")
    assert (act.type, act.status, act.direction, act.duration_s) == ("call", "missed", "inbound", 0)
    assert act.occurred_at == "2026-11-20T10:00:00Z" and act.updated_at == "2026-11-20T10:00:30Z"
    caller, callee = act.participants
    assert (caller.role, caller.phone, caller.name) == ("caller", "(415) 555-0100", "ANN LEE")  # as written
    assert (callee.role, callee.user_id, callee.phone) == ("callee", "client:alice", None)
    assert act.details["recordings_url"].endswith("/Recordings.json")  # linked, never fetched
    assert act.url == f"https://api.twilio.com{call['uri']}"


def test_a_stored_page_token_twilio_refuses_restarts_the_scan_without_doubles() -> None:
    store = TwilioStore(calls=120)
    with SandboxServer(store) as server:
        conn = build(server.url, page_size=50, lookback_days=12)
        first = read(conn)
        mid = first[0].next_cursor
        assert mid is not None and "PageToken=" in mid["next"]
        broken = {**mid, "next": mid["next"].split("PageToken=")[0] + "PageToken=PAnot-a-token"}
        rest = read(conn, broken)
    done = ids(first[:1])
    again = ids(rest)
    assert set(done) | set(again) == store.ids(), "nothing lost"
    assert len(again) == len(set(again))
    # what the scan still remembers (the newest day's calls) is not yielded twice; older ones may be
    remembered = set(mid["acc"])
    assert remembered and not remembered & set(again)


@given(st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2099, 12, 31)))
def test_twilio_times_read_by_position_agree_with_the_rfc_2822_parser(when: datetime) -> None:
    from email.utils import format_datetime, parsedate_to_datetime

    from connectors.twilio.calls import parse_time

    text = format_datetime(when.replace(microsecond=0, tzinfo=UTC))  # Twilio's form: "Tue, 10 Aug 2010 08:02:17 +0000"
    assert parse_time(text) == parsedate_to_datetime(text)
    assert parse_time(text.replace("+0000", "-0500")) == parsedate_to_datetime(text.replace("+0000", "-0500"))


@pytest.mark.parametrize("bad", ["Tue, 10 Foo 2010 08:02:17 +0000", "Tue, 32 Aug 2010 08:02:17 +0000",
                                 "Tue, 10 Aug 2010 25:02:17 +0000", "yesterday"])
def test_a_malformed_twilio_time_is_a_value_error(bad: str) -> None:
    from connectors.twilio.calls import parse_time

    with pytest.raises(ValueError, match="not an RFC 2822 time"):
        parse_time(bad)
