"""Aircall webhooks through the real webhook app (`crmhub serve`'s `create_app`) on loopback: the
`token` field good and bad (401, nothing stored), the token never stored, redelivery stored once,
and stored `call.*` events turned into the call's activity versions by `AircallConnector.webhook_pages`.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import Engine

from connectors.aircall.sandbox import (
    API_ID,
    API_TOKEN,
    WEBHOOK_TOKEN,
    AircallStore,
    send_webhook,
    webhook_body,
)
from connectors.twilio.sandbox import ACCOUNT_SID, AUTH_TOKEN, TwilioStore, send_status_callbacks
from hub.config import parse_config
from hub.registry import ConnectorFactory
from hub.sdk import SkippableRecord
from hub.webhooks.schemes import BadPayload, parse_aircall
from hub.webhooks.server import create_app
from hub.webhooks.signatures import AircallTokenVerifier, BadSignature
from state.db import make_engine
from tests.test_twilio_webhooks import count, live_server, stored

CONFIG = {"kind": "aircall", "auth": {"api_id": API_ID, "api_token": API_TOKEN},
          "webhook_secrets": [WEBHOOK_TOKEN]}


@pytest.fixture
def served(db_url: str) -> Iterator[tuple[str, Engine]]:
    cfg = parse_config({"database": db_url, "connectors": {"aircall_main": CONFIG}})
    eng = make_engine(db_url)
    check = make_engine(db_url)
    with live_server(create_app(cfg, eng)) as base:
        yield f"{base}/webhooks/aircall_main", check
    check.dispose()
    eng.dispose()


def connector() -> Any:
    return ConnectorFactory(parse_config({"connectors": {"aircall_main": CONFIG}})).build("aircall_main")


def test_verifier_compares_the_token_field() -> None:
    v = AircallTokenVerifier(["old-token", WEBHOOK_TOKEN])  # two while a webhook is re-created
    v.verify({}, b'{"event":"call.created","token":"%s"}' % WEBHOOK_TOKEN.encode(), "", 0)
    v.verify({}, b'{"event":"call.created","token":"old-token"}', "", 0)
    for body, why in ((b'{"event":"call.created","token":"guess"}', "does not match"),
                      (b'{"event":"call.created"}', "missing token"), (b'{"token": 12}', "missing token"),
                      (b"token=" + WEBHOOK_TOKEN.encode(), "not JSON"), (b"[1]", "missing token")):
        with pytest.raises(BadSignature, match=why):
            v.verify({}, body, "", 0)


def test_parser_drops_the_token_and_keys_by_content() -> None:
    [ev] = parse_aircall(b'{"event":"call.ended","token":"t0k","timestamp":1,"data":{"id":5}}', "application/json", "")
    assert "token" not in orjson.loads(ev.raw)
    # the same event with its keys in another order (and its token) is the same event
    [again] = parse_aircall(b'{"data":{"id":5},"timestamp":1,"event":"call.ended","token":"t0k"}', "", "")
    assert again.event_id == ev.event_id
    [other] = parse_aircall(b'{"event":"call.ended","timestamp":2,"data":{"id":5}}', "", "")
    assert other.event_id != ev.event_id
    with pytest.raises(BadPayload):
        parse_aircall(b'{"resource":"call"}', "", "")


def test_webhooks_with_the_token_are_stored_without_it(served: tuple[str, Engine]) -> None:
    url, check = served
    store = AircallStore(calls=2)
    cid = sorted(store.ids())[0]
    answers = [send_webhook(store, url, cid, event) for event in ("call.created", "call.answered", "call.ended")]
    assert [r.status_code for r in answers] == [200] * 3
    rows = stored(check)
    assert [r["body"]["event"] for r in rows] == ["call.created", "call.answered", "call.ended"]
    assert all("token" not in r["body"] and str(r["body"]["data"]["id"]) == cid for r in rows)
    assert WEBHOOK_TOKEN not in orjson.dumps([r["body"] for r in rows]).decode()


@pytest.mark.parametrize("case", ["wrong token", "no token", "token prefix", "not json"])
def test_bad_token_is_401_and_stores_nothing(served: tuple[str, Engine], case: str) -> None:
    url, check = served
    store = AircallStore(calls=1)
    call = next(iter(store.calls.values()))
    token = {"wrong token": "cebcaac65XXXXXXXXXx", "token prefix": WEBHOOK_TOKEN[:-1]}.get(case, WEBHOOK_TOKEN)
    body = webhook_body(call, "call.ended", token)
    if case == "no token":
        doc = orjson.loads(body)
        del doc["token"]
        body = orjson.dumps(doc)
    elif case == "not json":
        body = b"token=" + WEBHOOK_TOKEN.encode()
    r = httpx.post(url, content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 401 and r.json()["error"]
    assert count(check) == 0


def test_redelivered_webhook_is_stored_once(served: tuple[str, Engine]) -> None:
    url, check = served
    store = AircallStore(calls=1)
    cid = next(iter(store.ids()))
    with httpx.Client() as client:
        first = send_webhook(store, url, cid, "call.ended", client=client, timestamp=1_795_000_000)
        again = send_webhook(store, url, cid, "call.ended", client=client, timestamp=1_795_000_000)
    assert first.json() == {"stored": 1, "duplicates": 0}
    assert again.status_code == 200 and again.json() == {"stored": 0, "duplicates": 1}
    assert count(check) == 1


def test_stored_events_become_versions_of_the_call(served: tuple[str, Engine]) -> None:
    url, check = served
    store = AircallStore(calls=0)
    cid = store.create(1, done=False, direction="inbound", answered_at=None, status="initial")[0]
    started = store.calls[int(cid)]["started_at"]
    send_webhook(store, url, cid, "call.created", timestamp=started)
    store.end(cid, duration=42)
    send_webhook(store, url, cid, "call.ended", timestamp=started + 72)  # call.ended comes ~30 s later
    conn = connector()
    versions = []
    for row in stored(check):
        [(stream, page)] = conn.webhook_pages(row["body"])
        [rec] = page.records
        assert stream == "calls" and rec.external_id == cid and rec.activity is not None
        versions.append(rec.activity)
    first, last = versions
    assert (first.status, last.status) == ("ringing", "completed")
    assert last.duration_s == 42 and last.ended_at is not None and first.ended_at is None
    assert first.updated_at is not None and last.updated_at is not None and last.updated_at > first.updated_at
    roles = {p.role for p in last.participants}
    assert {"caller", "callee", "agent"} <= roles


def test_other_resources_store_nothing_and_bad_calls_are_skippable() -> None:
    conn = connector()
    assert conn.webhook_pages({"resource": "user", "event": "user.opened", "timestamp": 1, "data": {"id": 1}}) == []
    with pytest.raises(SkippableRecord, match="started_at"):
        conn.webhook_pages({"resource": "call", "event": "call.created", "timestamp": 1,
                            "data": {"id": 7, "direction": "inbound"}})
    with pytest.raises(SkippableRecord, match="timestamp"):
        conn.webhook_pages({"resource": "call", "event": "call.created", "timestamp": "soon", "data": {"id": 7}})


def test_crmhub_serve_as_a_process_takes_both_vendors_and_refuses_bad_ones(tmp_path: Path) -> None:
    """The `crmhub serve` command itself, on a loopback port: a Twilio callback signed by the sandbox
    and an Aircall webhook with its token are stored; forged ones are 401 and store nothing."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    db = f"sqlite:///{tmp_path / 'hub.db'}"
    config = tmp_path / "crmhub.yaml"
    config.write_text(json.dumps({"database": db, "connectors": {
        "aircall_main": CONFIG,
        "twilio_main": {"kind": "twilio", "auth": {"account_sid": ACCOUNT_SID, "auth_token": "${TW_TOKEN}"},
                        "webhook_secrets": ["${TW_TOKEN}"]}}}))
    crmhub = str(Path(sys.executable).parent / "crmhub")
    proc = subprocess.Popen([crmhub, "--config", str(config), "serve", "--port", str(port)],
                            env={**os.environ, "TW_TOKEN": AUTH_TOKEN},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline, "crmhub serve did not come up"
                time.sleep(0.1)
        tw, ac = TwilioStore(calls=1), AircallStore(calls=1)
        sid, cid = next(iter(tw.ids())), next(iter(ac.ids()))
        good = send_status_callbacks(tw, f"{base}/webhooks/twilio_main", sid, ("completed",))
        forged = send_status_callbacks(tw, f"{base}/webhooks/twilio_main", sid, ("busy",), auth_token="guessed")
        ok = send_webhook(ac, f"{base}/webhooks/aircall_main", cid, "call.ended")
        bad = send_webhook(ac, f"{base}/webhooks/aircall_main", cid, "call.hungup", token="guessed")
        assert [r.status_code for r in (*good, *forged, ok, bad)] == [200, 401, 200, 401]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) in (0, -signal.SIGTERM)
    check = make_engine(db)
    try:
        rows = stored(check)
    finally:
        check.dispose()
    assert [(r["connector"], r["body"].get("CallStatus") or r["body"]["event"]) for r in rows] == [
        ("twilio_main", "completed"), ("aircall_main", "call.ended")]
