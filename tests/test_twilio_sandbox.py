"""The Twilio sandbox speaks Twilio's documented shapes (twilio-oai `ListCallResponse`,
`api.v2010.account.call`, the error object) over real HTTP, and runs as a process."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest

from connectors.twilio.sandbox import ACCOUNT_SID, AUTH_TOKEN, SandboxServer, TwilioStore

CALLS = f"/2010-04-01/Accounts/{ACCOUNT_SID}/Calls.json"
LIST_KEYS = {"calls", "first_page_uri", "next_page_uri", "previous_page_uri", "page", "page_size", "start", "end",
             "uri"}
CALL_KEYS = {"sid", "account_sid", "parent_call_sid", "date_created", "date_updated", "to", "to_formatted", "from",
             "from_formatted", "phone_number_sid", "status", "start_time", "end_time", "duration", "price",
             "price_unit", "direction", "answered_by", "api_version", "forwarded_from", "group_sid", "caller_name",
             "queue_time", "trunk_sid", "uri", "subresource_uris"}


@pytest.fixture
def api() -> Iterator[tuple[httpx.Client, TwilioStore]]:
    store = TwilioStore(calls=120)
    with SandboxServer(store) as server, httpx.Client(base_url=server.url, auth=(ACCOUNT_SID, AUTH_TOKEN)) as c:
        yield c, store


def test_list_pages_by_relative_next_page_uri_with_the_documented_keys(api: tuple[httpx.Client, TwilioStore]) -> None:
    client, store = api
    seen: list[str] = []
    page = client.get(CALLS, params={"PageSize": 50}).json()
    assert set(page) == LIST_KEYS and set(page["calls"][0]) >= CALL_KEYS
    while True:
        seen += [c["sid"] for c in page["calls"]]
        if page["next_page_uri"] is None:
            break
        assert page["next_page_uri"].startswith("/2010-04-01/")  # relative: the client adds the host
        page = client.get(page["next_page_uri"]).json()
    assert sorted(seen) == sorted(store.ids()) and len(seen) == 120


def test_start_time_filters_are_days_inclusive(api: tuple[httpx.Client, TwilioStore]) -> None:
    client, store = api
    day = sorted(c["start_time"] for c in store.calls.values())[60]
    from email.utils import parsedate_to_datetime

    d = parsedate_to_datetime(day).date().isoformat()
    on = client.get(CALLS, params={"StartTime": d, "PageSize": 1000}).json()["calls"]
    after = client.get(CALLS, params={"StartTime>": d, "PageSize": 1000}).json()["calls"]
    assert on and all(parsedate_to_datetime(c["start_time"]).date().isoformat() == d for c in on)
    assert {c["sid"] for c in on} <= {c["sid"] for c in after}
    assert all(parsedate_to_datetime(c["start_time"]).date().isoformat() >= d for c in after)


def test_errors_are_twilio_error_objects(api: tuple[httpx.Client, TwilioStore]) -> None:
    client, _ = api
    r = client.get(CALLS, params={"PageSize": 1001})
    assert r.status_code == 400 and r.json()["code"] == 20007 and "more_info" in r.json()
    r = httpx.get(str(client.base_url) + CALLS, auth=(ACCOUNT_SID, "wrong"))
    assert r.status_code == 401 and r.json()["code"] == 20003
    assert client.get(f"/2010-04-01/Accounts/{ACCOUNT_SID}/Calls/CA{'0' * 32}.json").json()["code"] == 20404


def test_runs_as_a_process_and_prints_its_url() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "connectors.twilio.sandbox", "--calls", "5"],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        info = json.loads(proc.stdout.readline())
        r = httpx.get(info["url"] + CALLS, auth=(info["account_sid"], info["auth_token"]))
        assert r.status_code == 200 and len(r.json()["calls"]) == 5
    finally:
        proc.terminate()
        proc.wait(timeout=30)
