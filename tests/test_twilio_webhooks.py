"""Twilio status callbacks through the real webhook app (`crmhub serve`'s `create_app`) on loopback:
signature good and bad (401, nothing stored), redelivery stored once, and the stored callback
turned into the call's activity versions by `TwilioConnector.webhook_pages`.

The callbacks are sent by the Twilio sandbox, signed as Twilio signs them; "stored" is checked
from a second engine, so it means committed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
import uvicorn
from sqlalchemy import Engine, func, select

from connectors.twilio.sandbox import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    TwilioStore,
    send_status_callbacks,
    sign,
    status_callback_params,
)
from hub.config import parse_config
from hub.registry import ConnectorFactory
from hub.sdk import SkippableRecord
from hub.webhooks.server import create_app
from state.db import make_engine
from state.schema import webhook_inbox

CONFIG = {"kind": "twilio", "auth": {"account_sid": ACCOUNT_SID, "auth_token": AUTH_TOKEN},
          "webhook_secrets": [AUTH_TOKEN]}


@contextmanager
def live_server(app: Any) -> Iterator[str]:
    """uvicorn on a free loopback port in a thread; yields the base URL."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on",
                                           ws="none", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture
def served(db_url: str) -> Iterator[tuple[str, Engine]]:
    cfg = parse_config({"database": db_url, "connectors": {"twilio_main": CONFIG}})
    eng = make_engine(db_url)
    check = make_engine(db_url)
    with live_server(create_app(cfg, eng)) as base:
        yield f"{base}/webhooks/twilio_main", check
    check.dispose()
    eng.dispose()


def stored(check: Engine) -> list[dict[str, Any]]:
    with check.connect() as c:
        return [dict(r) for r in c.execute(select(webhook_inbox).order_by(webhook_inbox.c.id)).mappings()]


def count(check: Engine) -> int:
    with check.connect() as c:
        return int(c.execute(select(func.count()).select_from(webhook_inbox)).scalar_one())


def connector() -> Any:
    cfg = parse_config({"connectors": {"twilio_main": CONFIG}})
    return ConnectorFactory(cfg).build("twilio_main")


def test_signed_status_callbacks_are_stored(served: tuple[str, Engine]) -> None:
    url, check = served
    store = TwilioStore(calls=3)
    sid = sorted(store.ids())[0]
    answers = send_status_callbacks(store, url, sid)
    assert [r.status_code for r in answers] == [200] * 4
    rows = stored(check)
    assert [r["body"]["CallStatus"] for r in rows] == ["initiated", "ringing", "in-progress", "completed"]
    assert {r["body"]["CallSid"] for r in rows} == {sid}
    assert all(r["event_id"].startswith("sha256:") for r in rows)
    assert all("x-twilio-signature" not in (r["headers"] or {}) for r in rows)


@pytest.mark.parametrize("case", ["wrong token", "tampered parameter", "missing header", "another url",
                                  "added parameter"])
def test_bad_signature_is_401_and_stores_nothing(served: tuple[str, Engine], case: str) -> None:
    url, check = served
    store = TwilioStore(calls=1)
    call = next(iter(store.calls.values()))
    params = status_callback_params(call, "completed", time_now(), 3)
    signature = sign(AUTH_TOKEN, url, params)
    body = urlencode(params)
    headers = {"Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": signature}
    if case == "wrong token":
        headers["X-Twilio-Signature"] = sign("not-the-auth-token", url, params)
    elif case == "tampered parameter":
        body = body.replace("CallStatus=completed", "CallStatus=failed")
    elif case == "missing header":
        del headers["X-Twilio-Signature"]
    elif case == "another url":
        headers["X-Twilio-Signature"] = sign(AUTH_TOKEN, url + "?instance=other", params)
    else:
        body += "&RecordingUrl=https%3A%2F%2Fevil.example%2Fx"
    r = httpx.post(url, content=body, headers=headers)
    assert r.status_code == 401 and r.json()["error"]
    assert count(check) == 0
    # and the same callback signed properly is accepted: the 401 was about the signature
    good = httpx.post(url, content=urlencode(params), headers={"X-Twilio-Signature": signature,
                                                               "Content-Type": "application/x-www-form-urlencoded"})
    assert good.status_code == 200 and count(check) == 1


def test_redelivered_callbacks_are_stored_once(served: tuple[str, Engine]) -> None:
    url, check = served
    store = TwilioStore(calls=2)
    sid = sorted(store.ids())[1]
    with httpx.Client() as client:
        first = send_status_callbacks(store, url, sid, client=client)
        again = send_status_callbacks(store, url, sid, client=client)  # Twilio retries on a timeout
    assert [r.json() for r in first] == [{"stored": 1, "duplicates": 0}] * 4
    assert [r.json() for r in again] == [{"stored": 0, "duplicates": 1}] * 4
    assert count(check) == 4


def test_stored_callbacks_become_versions_of_the_call(served: tuple[str, Engine]) -> None:
    """What a worker does with the inbox rows: each status is a version; the last one ends the call."""
    url, check = served
    store = TwilioStore(calls=1)
    sid = store.create(1, in_progress=True)[0]
    send_status_callbacks(store, url, sid, statuses=("ringing", "in-progress"))
    ended = store.end(sid, duration=95)
    send_status_callbacks(store, url, sid, statuses=("completed",))
    conn = connector()
    versions = []
    for row in stored(check):
        [(stream, page)] = conn.webhook_pages(row["body"])
        assert stream == "calls" and page.next_cursor is None and not page.deleted
        [rec] = page.records
        assert rec.external_id == sid and rec.activity is not None
        versions.append(rec.activity)
    assert [v.status for v in versions] == ["ringing", "in-progress", "completed"]
    last = versions[-1]
    assert last.duration_s == 95 and last.ended_at is not None and last.direction in ("inbound", "outbound")
    assert last.occurred_at == versions[0].occurred_at  # Timestamp - CallDuration: the call's start
    assert last.updated_at is not None and versions[0].updated_at is not None
    assert last.updated_at > versions[0].updated_at  # the end is the newest version
    phones = {p.role: p.phone for p in last.participants}
    assert phones == {"caller": ended["from"], "callee": ended["to"]}


def test_unusable_callbacks_are_skippable_or_ignored() -> None:
    conn = connector()
    # a recording-status callback carries no call facts: nothing to store
    assert conn.webhook_pages({"CallSid": "CA" + "1" * 32, "RecordingSid": "RE1", "RecordingStatus": "completed",
                               "AccountSid": ACCOUNT_SID}) == []
    with pytest.raises(SkippableRecord, match="for account"):
        conn.webhook_pages({"CallSid": "CA" + "1" * 32, "CallStatus": "completed", "AccountSid": "AC" + "9" * 32,
                            "Timestamp": "Mon, 23 Nov 2026 10:00:00 +0000"})
    with pytest.raises(SkippableRecord, match="Timestamp"):
        conn.webhook_pages({"CallSid": "CA" + "1" * 32, "CallStatus": "completed", "AccountSid": ACCOUNT_SID})
    with pytest.raises(SkippableRecord, match="CallSid"):
        conn.webhook_pages({"CallStatus": "completed", "Timestamp": "Mon, 23 Nov 2026 10:00:00 +0000"})


def time_now() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC).replace(microsecond=0)
