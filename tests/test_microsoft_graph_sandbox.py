"""The Graph sandbox speaks Graph's documented shapes, whatever the connector does: plain httpx
against it on loopback, and the sandbox run as a process."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest

from connectors.microsoft_graph.sandbox import GraphStore, SandboxServer

TOKEN = "sandbox-shape-tests-token"
ANN = "ann@contoso.test"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def server() -> Iterator[SandboxServer]:
    with SandboxServer(GraphStore([ANN], messages=7, events=3), token=TOKEN) as sb:
        yield sb


def get(url: str, **headers: str) -> httpx.Response:
    return httpx.get(url, headers={**AUTH, **headers}, timeout=10)


def round_of(first: str, page: int = 3) -> list[dict[str, Any]]:
    out, url = [], first
    while True:
        body = get(url, Prefer=f"odata.maxpagesize={page}").json()
        out.append(body)
        assert ("@odata.nextLink" in body) != ("@odata.deltaLink" in body), "a page has exactly one of the links"
        if "@odata.deltaLink" in body:
            return out
        url = body["@odata.nextLink"]


def test_message_delta_pages_select_and_removed(server: SandboxServer) -> None:
    pages = round_of(f"{server.url}/users/{ANN}/mailFolders/inbox/messages/delta?$select=subject,from")
    assert len(pages) == 2 and pages[0]["@odata.context"].endswith("$metadata#Collection(message)")
    assert "mailFolders('" in pages[0]["@odata.nextLink"] and "$skiptoken=" in pages[0]["@odata.nextLink"]
    items = [i for p in pages for i in p["value"]]
    assert {k for i in items for k in i} == {"@odata.type", "@odata.etag", "id", "subject", "from"}
    server.store.delete(ANN, [items[0]["id"]])
    nxt = get(pages[-1]["@odata.deltaLink"]).json()
    assert nxt["value"] == [{"@odata.type": "#microsoft.graph.message", "id": items[0]["id"],
                             "@removed": {"reason": "deleted"}}]
    # a new initial round lists what the folder holds: the deleted one is simply absent
    again = [i["id"] for p in round_of(f"{server.url}/me/mailFolders/inbox/messages/delta") for i in p["value"]]
    assert items[0]["id"] not in again and len(again) == len(items) - 1


def test_errors_in_graph_shape(server: SandboxServer) -> None:
    r = httpx.get(f"{server.url}/me/mailFolders/inbox/messages/delta")
    assert r.status_code == 401 and r.json()["error"]["code"] == "InvalidAuthenticationToken"
    r = get(f"{server.url}/me/calendarView/delta?startDateTime=2026-01-01T00:00:00Z"
            f"&endDateTime=2026-02-01T00:00:00Z&$select=subject")
    assert r.status_code == 400 and set(r.json()["error"]) == {"code", "message", "innerError"}
    r = get(f"{server.url}/me/calendarView/delta")
    assert r.status_code == 400 and r.json()["error"]["code"] == "ErrorInvalidParameter"
    delta = round_of(f"{server.url}/me/mailFolders/sentitems/messages/delta")[-1]["@odata.deltaLink"]
    server.store.expire_tokens()
    r = get(delta)
    assert r.status_code == 410 and r.headers["Location"].endswith("$deltatoken=")
    server.store.expire_tokens(code="syncStateNotFound")
    r = get(delta)
    assert r.status_code == 400 and r.json()["error"]["code"] == "syncStateNotFound"
    server.store.fail_next(1, 429, retry_after=3)
    r = get(f"{server.url}/me")
    assert r.status_code == 429 and r.headers["Retry-After"] == "3"


def test_calendar_delta_keeps_its_window_in_the_token(server: SandboxServer) -> None:
    store = server.store
    fmt = "%Y-%m-%dT%H:%M:%SZ"
    url = (f"{server.url}/me/calendarView/delta?startDateTime={(store.base_time - timedelta(days=30)).strftime(fmt)}"
           f"&endDateTime={(store.base_time + timedelta(days=30)).strftime(fmt)}")
    pages = round_of(url, page=2)
    events = [i for p in pages for i in p["value"]]
    assert {e["id"] for e in events} == set(store.ids(ANN, "calendar"))
    assert all(e["start"]["timeZone"] == "UTC" and len(e["start"]["dateTime"]) == 27 for e in events)
    store.cancel_event(ANN, events[0]["id"])
    changed = get(pages[-1]["@odata.deltaLink"]).json()["value"]
    assert [(e["id"], e["isCancelled"]) for e in changed] == [(events[0]["id"], True)]


def test_runs_as_a_process() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "connectors.microsoft_graph.sandbox", "--messages", "2",
                             "--events", "1", "--token", TOKEN], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        url = json.loads(proc.stdout.readline())["url"]
        me = get(f"{url}/me").json()
        assert me["mail"] == "ann@contoso.test" and me["userPrincipalName"] == "ann@contoso.test"
    finally:
        proc.terminate()
        proc.wait(10)
