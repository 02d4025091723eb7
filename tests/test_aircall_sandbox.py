"""The Aircall sandbox speaks the shapes of Aircall's documented samples (`calls` + `meta`, the
call object, rate-limit headers) over real HTTP, enforces the result cap, and runs as a process."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest

from connectors.aircall.sandbox import API_ID, API_TOKEN, AircallStore, SandboxServer

META_KEYS = {"count", "total", "current_page", "per_page", "next_page_link", "previous_page_link"}


@pytest.fixture
def api() -> Iterator[tuple[httpx.Client, AircallStore]]:
    store = AircallStore(calls=130)
    with SandboxServer(store, result_cap=100) as server, \
            httpx.Client(base_url=server.url, auth=(API_ID, API_TOKEN)) as client:
        yield client, store


def test_pages_by_next_page_link_up_to_the_cap(api: tuple[httpx.Client, AircallStore]) -> None:
    client, store = api
    r = client.get("/v1/calls", params={"per_page": 500})
    body = r.json()
    assert set(body) == {"calls", "meta"} and set(body["meta"]) == META_KEYS
    assert body["meta"]["per_page"] == 50 and body["meta"]["total"] == 130  # per_page is clamped to 50
    assert all(h in r.headers for h in ("X-AircallApi-Limit", "X-AircallApi-Remaining", "X-AircallApi-Reset"))
    ids = [c["id"] for c in body["calls"]]
    link = body["meta"]["next_page_link"]
    while link:
        body = client.get(link).json()
        ids += [c["id"] for c in body["calls"]]
        link = body["meta"]["next_page_link"]
    assert len(ids) == 100 == len(set(ids)), "no query pages past the cap"
    assert client.get("/v1/calls", params={"page": 3, "per_page": 50}).status_code == 400
    started = [c["started_at"] for c in store.query(None, None, False)]
    lo, hi = started[10], started[20]
    window = client.get("/v1/calls", params={"from": lo, "to": hi, "per_page": 50}).json()
    assert [c["started_at"] for c in window["calls"]] == started[10:21]  # inclusive, oldest first


def test_a_call_by_id_and_errors(api: tuple[httpx.Client, AircallStore]) -> None:
    client, store = api
    cid = sorted(store.ids())[0]
    assert client.get(f"/v1/calls/{cid}").json()["call"]["id"] == int(cid)
    assert client.get("/v1/calls/99999999").status_code == 404
    assert httpx.get(str(client.base_url) + "/v1/calls", auth=(API_ID, "nope")).status_code == 401
    store.fail_next(1, 429)
    r = client.get("/v1/ping")
    assert r.status_code == 429 and r.headers["X-AircallApi-Remaining"] == "0" and "X-AircallApi-Reset" in r.headers


def test_runs_as_a_process_and_prints_its_url() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "connectors.aircall.sandbox", "--calls", "7"],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        info = json.loads(proc.stdout.readline())
        r = httpx.get(info["url"] + "/v1/calls", auth=(info["api_id"], info["api_token"]))
        assert r.status_code == 200 and r.json()["meta"]["total"] == 7
    finally:
        proc.terminate()
        proc.wait(timeout=30)
