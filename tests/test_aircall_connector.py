"""Aircall connector: windows split under the 10,000-result cap, 429s paced by Aircall's own
headers, what goes on the wire (respx), calls re-read until they settle, and a call's activity."""

from __future__ import annotations

import logging
import time
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
import respx

from connectors.aircall.calls import call_activity
from connectors.aircall.sandbox import API_ID, API_TOKEN, AircallStore, SandboxServer
from hub.config import ConfigError, parse_config
from hub.registry import ConnectorFactory
from hub.sdk import AuthError, Connector, Cursor, Page

BASIC = {"api_id": API_ID, "api_token": API_TOKEN}


def build(base_url: str = "https://api.aircall.io", sleeps: list[float] | None = None, **options: Any) -> Connector:
    auth = options.pop("auth", BASIC)
    cfg = parse_config({"connectors": {"ac": {"kind": "aircall", "base_url": base_url, "auth": auth,
                                              "requests_per_second": 500, **options}}})
    sleep = sleeps.append if sleeps is not None else (lambda _s: None)
    return ConnectorFactory(cfg, sleep=sleep).build("ac")


def read(conn: Connector, cursor: Cursor | None = None) -> list[Page]:
    return list(conn.read("calls", cursor))


def ids(pages: list[Page]) -> list[str]:
    return [r.external_id for p in pages for r in p.records]


def list_queries(store: AircallStore) -> list[dict[str, int]]:
    out = []
    for line in store.requests:
        path, _, query = line.split(" ", 1)[1].partition("?")
        if path == "/v1/calls":
            out.append({k: int(v) for k, v in parse_qsl(query) if k in ("from", "to", "page", "per_page")})
    return out


@pytest.mark.parametrize("cap", [100, 50])
def test_windows_are_split_so_no_query_passes_the_cap(cap: int) -> None:
    store = AircallStore(calls=430)
    with SandboxServer(store, result_cap=cap) as server:
        pages = read(build(server.url, result_cap=cap, lookback_days=11))
    got = ids(pages)
    assert sorted(got) == sorted(store.ids()) and len(got) == len(set(got)), "every call once"
    queries = list_queries(store)
    starts = sorted(c["started_at"] for c in store.calls.values())
    assert len(queries) > 430 // 50, "a split costs requests: the windows were really split"
    for q in queries:
        assert q["per_page"] == 50 and q["page"] * q["per_page"] <= cap
    # a window holding more than `cap` calls is only probed (its first page), then split in two
    split = 0
    for q, nxt in zip(queries, [*queries[1:], {}], strict=True):
        if sum(q["from"] <= s <= q["to"] for s in starts) > cap:
            split += 1
            assert q["page"] == 1 and nxt["page"] == 1 and nxt["from"] == q["from"] and nxt["to"] < q["to"]
    assert split >= 2
    assert sum(p.requests for p in pages) == len(store.requests)


def test_more_calls_in_one_second_than_the_cap_is_read_up_to_it_and_said(caplog: pytest.LogCaptureFixture) -> None:
    store = AircallStore(calls=120, per_second=120, start=int(time.time()) - 3600)  # all in one second
    with SandboxServer(store, result_cap=100) as server, caplog.at_level(logging.WARNING):
        pages = read(build(server.url, result_cap=100))
    assert len(ids(pages)) == 100
    assert "more than one query can page through" in caplog.text


def test_429_waits_for_aircall_reset_header() -> None:
    reset = int(time.time()) + 7
    body = {"calls": [], "meta": {"count": 0, "total": 0, "current_page": 1, "per_page": 50,
                                  "next_page_link": None, "previous_page_link": None}}
    sleeps: list[float] = []
    with respx.mock(assert_all_called=True) as router:
        route = router.get("https://api.aircall.io/v1/calls", params={"order": "asc"}).mock(side_effect=[
            httpx.Response(429, json={"error": "Too Many Requests"}, headers={
                "X-AircallApi-Limit": "60", "X-AircallApi-Remaining": "0", "X-AircallApi-Reset": str(reset)}),
            httpx.Response(200, json=body, headers={"X-AircallApi-Limit": "60", "X-AircallApi-Remaining": "59",
                                                    "X-AircallApi-Reset": str(reset + 60)}),
        ])
        pages = read(build(sleeps=sleeps, start_date="2026-11-01"))
    assert route.call_count == 2 and pages[-1].records == []
    assert any(5 <= s <= 7 for s in sleeps), f"waited {sleeps}, not until X-AircallApi-Reset"
    q = dict(parse_qsl(urlsplit(str(route.calls.last.request.url)).query))
    assert (q["per_page"], q["order"], q["page"]) == ("50", "asc", "1") and int(q["from"]) <= int(q["to"])


def test_an_access_token_is_sent_as_bearer_and_bad_credentials_fail_without_quoting_them() -> None:
    with respx.mock(assert_all_called=True) as router:
        route = router.get("https://api.aircall.io/v1/ping").mock(return_value=httpx.Response(200, json={"ping": "pong"}))
        build(auth={"access_token": "oauth-access-token-1"}).check()
    assert route.calls.last.request.headers["authorization"] == "Bearer oauth-access-token-1"
    with SandboxServer(AircallStore(calls=1)) as server, pytest.raises(AuthError) as err:
        read(build(server.url, auth={"api_id": API_ID, "api_token": "not-the-token-42"}))
    assert "401" in str(err.value) and "not-the-token-42" not in str(err.value)


def test_config_names_what_is_wrong() -> None:
    with pytest.raises(ConfigError, match="api_token, or access_token"):
        build(auth={"api_id": API_ID})
    with pytest.raises(ConfigError, match="per_page"):
        build(per_page=51)


def test_a_call_is_fetched_again_until_it_settles() -> None:
    store = AircallStore(calls=5)
    live = store.create(1, done=False, ago=120)[0]
    with SandboxServer(store) as server:
        conn = build(server.url, settle_seconds=600)
        c1 = read(conn)[-1].next_cursor
        assert c1 is not None and list(c1["open"]) == [live]
        store.end(live, duration=30)
        p2 = read(conn, c1)
        [rec] = [r for p in p2 for r in p.records]
        assert rec.external_id == live and rec.activity is not None and rec.activity.status == "completed"
        assert f"GET /v1/calls/{live}?" in store.requests  # fetched by id: `from` cannot see a change
        c2 = p2[-1].next_cursor
        assert c2 is not None and list(c2["open"]) == [live]  # ended less than settle_seconds ago
        c3 = read(build(server.url, settle_seconds=0), c2)[-1].next_cursor
        assert c3 is not None and c3["open"] == {}
        gone = store.create(1, done=False)[0]
        c4 = read(conn, c3)[-1].next_cursor
        del store.calls[int(gone)]  # deleted in Aircall: a 404 drops it
        assert c4 is not None and read(conn, c4)[-1].next_cursor["open"] == {}  # type: ignore[index]


def test_a_missed_inbound_call_becomes_an_activity() -> None:
    sample = {"id": 123, "direct_link": "https://api.aircall.io/v1/calls/123", "direction": "inbound",
              "status": "done", "missed_call_reason": "agents_did_not_answer", "started_at": 1732622895,
              "answered_at": None, "ended_at": 1732622925, "duration": 30, "raw_digits": "+1 800-123-4567",
              "number": {"id": 9, "digits": "+33 1 76 36 06 95", "name": "Paris office"},
              "user": None, "asset": None, "recording": None, "voicemail": "https://signed.example/v.mp3?X-Amz=1",
              "participants": [{"phone_number": "+1 800-123-4567", "type": "external"},
                               {"id": 456, "name": "John Doe", "type": "user"}]}
    act = call_activity(sample)
    assert (act.status, act.direction, act.duration_s) == ("missed", "inbound", 30)
    assert act.details["missed_call_reason"] == "agents_did_not_answer" and act.details["has_recording"]
    assert "signed.example" not in str(act.as_dict())  # a short-lived signed URL is not kept
    assert [(p.role, p.phone or p.user_id) for p in act.participants] == [
        ("caller", "+1 800-123-4567"), ("callee", "+33 1 76 36 06 95"), ("agent", "456")]
    assert act.occurred_at == "2024-11-26T12:08:15Z" and act.updated_at == "2024-11-26T12:08:45Z"
    assert act.url == "https://api.aircall.io/v1/calls/123"
    with pytest.raises(ValueError, match="direction"):
        call_activity({**sample, "direction": "sideways"})
