"""Search indexing lag: every incremental run re-reads the `search_lag_ms` window behind its cursor,
so a record that became searchable after the last run passed it is still read."""

from __future__ import annotations

import json
from typing import Any

import httpx

from hub.config import parse_config
from hub.registry import ConnectorFactory
from tests.test_hubspot_connector import T0, record, search_page

LAG = 60_000


def test_late_indexed_record_in_the_lag_window_is_read() -> None:
    late = record(7, T0 - 5_000)  # changed before the cursor, indexed only after the last run
    bodies: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            body = json.loads(request.content)
            bodies.append(body)
            f = body["filterGroups"][0]["filters"][0]
            if f["operator"] == "BETWEEN":
                assert (int(f["value"]), int(f["highValue"])) == (T0 - LAG, T0)
                assert body["sorts"] == [{"propertyName": "hs_object_id", "direction": "ASCENDING"}]
                return httpx.Response(200, json=search_page([late, record(9, T0)]))
            return httpx.Response(200, json=search_page([]))
        return httpx.Response(200, json={"results": []})  # the archived list

    cfg = parse_config({"connectors": {"hs": {"kind": "hubspot", "auth": {"token": "t"}, "search_lag_ms": LAG}}})
    conn = ConnectorFactory(cfg, transport=httpx.MockTransport(handler), sleep=lambda _s: None).build("hs")
    cursor = {"phase": "incremental", "ts": T0, "seen": ["9"], "all_at_ts": False, "id_after": None,
              "archived_since": 0, "archived_after": None}
    pages = list(conn.read("contacts", cursor))
    ids = [r.external_id for p in pages for r in p.records]
    assert ids == ["7"], "the late record is read; the one already seen at the cursor is not"
    assert all(p.next_cursor and p.next_cursor["ts"] >= T0 for p in pages), "the cursor never moves back"
    assert len(bodies) == 2  # the sweep, then the keyset query that finds nothing new


def test_no_sweep_without_lag() -> None:
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.method)
        return httpx.Response(200, json=search_page([]) if request.method == "POST" else {"results": []})

    cfg = parse_config({"connectors": {"hs": {"kind": "hubspot", "auth": {"token": "t"}, "search_lag_ms": 0}}})
    conn = ConnectorFactory(cfg, transport=httpx.MockTransport(handler), sleep=lambda _s: None).build("hs")
    list(conn.read("contacts", {"phase": "incremental", "ts": T0, "seen": [], "archived_since": 0}))
    assert calls == ["POST", "GET"]
