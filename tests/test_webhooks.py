"""Webhook intake: signatures (Stripe, HubSpot v3, Twilio), the inbox, and the server over real HTTP.

The server tests run uvicorn in a thread on a loopback port and check the database
from a separate engine, so "stored" means visible to another connection.
"""

from __future__ import annotations

import asyncio
import os
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import httpx
import orjson
import pytest
import uvicorn
from sqlalchemy import Engine, func, select, text

from hub.config import ConfigError, parse_config
from hub.webhooks import commit, inbox
from hub.webhooks.inbox import InboxRow
from hub.webhooks.schemes import BadPayload, parse_hubspot, parse_stripe, scheme_for
from hub.webhooks.server import WebhookSettings, create_app
from hub.webhooks.signatures import (
    BadSignature,
    HubSpotV3Verifier,
    StripeVerifier,
    TwilioVerifier,
    sign_hubspot_v3,
    sign_stripe,
    twilio_signature,
)
from state.db import make_engine
from state.schema import webhook_inbox

NOW = 1_760_000_000
SECRET = "whsec_test_secret"
OLD_SECRET = "whsec_old_secret"


def stripe_event(n: int = 1, **extra: Any) -> bytes:
    return orjson.dumps({"id": f"evt_{n:024d}", "object": "event", "type": "customer.updated", "created": NOW,
                         "data": {"object": {"id": "cus_4QFJOjw2pOmAGJ", "object": "customer"}}, **extra})


# -- Stripe --------------------------------------------------------------------------------------

def test_stripe_good_signature_passes() -> None:
    body = stripe_event()
    StripeVerifier([SECRET]).verify({"Stripe-Signature": sign_stripe(SECRET, body, NOW)}, body, "", NOW)


@pytest.mark.parametrize("header", [
    lambda b: sign_stripe("whsec_wrong", b, NOW),
    lambda b: f"t={NOW},v0=" + sign_stripe(SECRET, b, NOW).split("v1=")[1],  # v0 is never trusted
    lambda b: f"t={NOW}",
    lambda b: "v1=" + sign_stripe(SECRET, b, NOW).split("v1=")[1],
    lambda b: f"t=abc,v1={'0' * 64}",
    lambda b: "",
])
def test_stripe_bad_or_malformed_signature_fails(header: Any) -> None:
    body = stripe_event()
    with pytest.raises(BadSignature):
        StripeVerifier([SECRET]).verify({"Stripe-Signature": header(body)}, body, "", NOW)


def test_stripe_missing_header_fails() -> None:
    with pytest.raises(BadSignature, match="missing Stripe-Signature"):
        StripeVerifier([SECRET]).verify({}, stripe_event(), "", NOW)


def test_stripe_tampered_body_fails() -> None:
    body = stripe_event()
    header = sign_stripe(SECRET, body, NOW)
    tampered = body.replace(b"customer.updated", b"customer.deleted")
    with pytest.raises(BadSignature, match="no Stripe v1 signature matches"):
        StripeVerifier([SECRET]).verify({"Stripe-Signature": header}, tampered, "", NOW)


def test_stripe_timestamp_tolerance_either_side() -> None:
    body = stripe_event()
    v = StripeVerifier([SECRET], tolerance=300)
    v.verify({"Stripe-Signature": sign_stripe(SECRET, body, NOW - 300)}, body, "", NOW)
    with pytest.raises(BadSignature, match="tolerance"):
        v.verify({"Stripe-Signature": sign_stripe(SECRET, body, NOW - 301)}, body, "", NOW)
    with pytest.raises(BadSignature, match="tolerance"):
        v.verify({"Stripe-Signature": sign_stripe(SECRET, body, NOW + 301)}, body, "", NOW)


def test_stripe_rotated_secret() -> None:
    body = stripe_event()
    # while Stripe rolls the secret it signs with both; an endpoint knowing either passes
    both = sign_stripe(OLD_SECRET, body, NOW, SECRET)
    StripeVerifier([SECRET]).verify({"Stripe-Signature": both}, body, "", NOW)
    StripeVerifier([OLD_SECRET]).verify({"Stripe-Signature": both}, body, "", NOW)
    # and an endpoint configured with both accepts a request signed with the old one only
    StripeVerifier([SECRET, OLD_SECRET]).verify({"Stripe-Signature": sign_stripe(OLD_SECRET, body, NOW)}, body, "", NOW)
    with pytest.raises(BadSignature):
        StripeVerifier([SECRET]).verify({"Stripe-Signature": sign_stripe(OLD_SECRET, body, NOW)}, body, "", NOW)


@pytest.mark.parametrize("secrets", [[], [""], "whsec_a_string_not_a_list"])
def test_verifier_refuses_empty_secrets(secrets: Any) -> None:
    with pytest.raises(ValueError):
        StripeVerifier(secrets)


# -- HubSpot v3 ----------------------------------------------------------------------------------

HS_URL = "https://hooks.example.com/webhooks/hubspot_main?portal=62515"
HS_SECRET = "hubspot-client-secret"


def test_hubspot_v3_good_signature_passes() -> None:
    body = b'[{"eventId":100,"subscriptionType":"contact.creation","objectId":123}]'
    headers = sign_hubspot_v3(HS_SECRET, HS_URL, body, NOW * 1000)
    HubSpotV3Verifier([HS_SECRET]).verify(headers, body, HS_URL, NOW)


def test_hubspot_v3_signs_the_decoded_uri() -> None:
    # HubSpot decodes %3A, %2F, %40 ... before signing; an encoded URL must verify the same
    body = b"[]"
    decoded = "https://hooks.example.com/webhooks/hubspot_main?next=https://x.example/a@b"
    encoded = "https://hooks.example.com/webhooks/hubspot_main?next=https%3A%2F%2Fx.example%2Fa%40b"
    headers = sign_hubspot_v3(HS_SECRET, decoded, body, NOW * 1000)
    HubSpotV3Verifier([HS_SECRET]).verify(headers, body, encoded, NOW)


def test_hubspot_v3_bad_signature_fails() -> None:
    body = b'[{"eventId":100}]'
    headers = sign_hubspot_v3("another-app", HS_URL, body, NOW * 1000)
    with pytest.raises(BadSignature, match="does not match"):
        HubSpotV3Verifier([HS_SECRET]).verify(headers, body, HS_URL, NOW)
    good = sign_hubspot_v3(HS_SECRET, HS_URL, body, NOW * 1000)
    with pytest.raises(BadSignature):
        HubSpotV3Verifier([HS_SECRET]).verify(good, body, HS_URL.replace("62515", "1"), NOW)


def test_hubspot_v3_old_request_fails() -> None:
    body = b'[{"eventId":100}]'
    v = HubSpotV3Verifier([HS_SECRET])
    v.verify(sign_hubspot_v3(HS_SECRET, HS_URL, body, (NOW - 299) * 1000), body, HS_URL, NOW)
    with pytest.raises(BadSignature, match="tolerance"):
        v.verify(sign_hubspot_v3(HS_SECRET, HS_URL, body, (NOW - 301) * 1000), body, HS_URL, NOW)


def test_hubspot_delivery_becomes_one_row_per_event() -> None:
    body = b'[{"eventId":1,"objectId":5},{"eventId":2,"objectId":6},{"objectId":7}]'
    events = parse_hubspot(body, "application/json", HS_URL)
    assert [e.event_id for e in events][:2] == ["1", "2"]
    assert events[2].event_id.startswith("sha256:")
    assert orjson.loads(events[1].raw) == {"eventId": 2, "objectId": 6}


# -- Twilio --------------------------------------------------------------------------------------

TW_URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
TW_PARAMS = {"CallSid": "CA1234567890ABCDE", "Caller": "+12349013030", "Digits": "1234",
             "From": "+12349013030", "To": "+18005551212"}
TW_SIGNATURE = "0/KCTR6DLpKmkAf8muzZqo1nDgQ="  # vendor-apis.md section 7


def test_twilio_test_vector() -> None:
    assert twilio_signature("12345", TW_URL, TW_PARAMS) == TW_SIGNATURE
    body = urlencode(TW_PARAMS).encode()
    v = TwilioVerifier(["12345"])
    v.verify({"X-Twilio-Signature": TW_SIGNATURE}, body, TW_URL, NOW)
    # Twilio may have signed the URL with or without the default port
    v.verify({"X-Twilio-Signature": TW_SIGNATURE}, body, TW_URL.replace(".com/", ".com:443/"), NOW)


def test_twilio_bad_signature_fails() -> None:
    body = urlencode(TW_PARAMS).encode()
    with pytest.raises(BadSignature):
        TwilioVerifier(["54321"]).verify({"X-Twilio-Signature": TW_SIGNATURE}, body, TW_URL, NOW)
    with pytest.raises(BadSignature):  # a changed parameter
        TwilioVerifier(["12345"]).verify({"X-Twilio-Signature": TW_SIGNATURE},
                                         body.replace(b"Digits=1234", b"Digits=9999"), TW_URL, NOW)
    with pytest.raises(BadSignature):  # another URL
        TwilioVerifier(["12345"]).verify({"X-Twilio-Signature": TW_SIGNATURE}, body, TW_URL + "&x=1", NOW)


def test_twilio_json_body_is_signed_through_body_sha256() -> None:
    import hashlib

    body = b'{"CallSid":"CA1"}'
    url = f"https://mycompany.com/hook?bodySHA256={hashlib.sha256(body).hexdigest()}"
    sig = twilio_signature("12345", url, {})
    TwilioVerifier(["12345"]).verify({"X-Twilio-Signature": sig}, body, url, NOW)
    with pytest.raises(BadSignature, match="bodySHA256"):
        TwilioVerifier(["12345"]).verify({"X-Twilio-Signature": sig}, b'{"CallSid":"CA2"}', url, NOW)


# -- parsing -------------------------------------------------------------------------------------

@pytest.mark.parametrize("body", [b"{not json", b"[1, 2]", b'"evt"', b'{"id":"evt_1","x":"\\u0000"}', b""])
def test_stripe_body_must_be_a_json_object(body: bytes) -> None:
    with pytest.raises(BadPayload):
        parse_stripe(body, "application/json", "")


def test_stripe_event_id_falls_back_to_the_body_hash() -> None:
    [ev] = parse_stripe(b'{"object":"event"}', "application/json", "")
    assert ev.event_id.startswith("sha256:") and len(ev.event_id) == 71


def test_registry_maps_kinds_to_verifiers() -> None:
    assert scheme_for("stripe") is not None and scheme_for("hubspot") is not None and scheme_for("twilio") is not None
    assert scheme_for("legacy_csv") is None


# -- the inbox -----------------------------------------------------------------------------------

def _rows(n: int, connector: str = "stripe_main", at: datetime | None = None) -> list[InboxRow]:
    at = at or datetime(2026, 1, 1, tzinfo=UTC)
    return [InboxRow(connector, f"evt_{i}", at + timedelta(seconds=i), stripe_event(i).decode(),
                     {"content-type": "application/json"}) for i in range(n)]


def _count(eng: Engine) -> int:
    with eng.connect() as c:
        return int(c.execute(select(func.count()).select_from(webhook_inbox)).scalar_one())


def test_inbox_insert_is_idempotent(db_url: str) -> None:
    eng = make_engine(db_url)
    with eng.begin() as c:
        assert inbox.insert_events(c, _rows(3)) == {("stripe_main", f"evt_{i}") for i in range(3)}
    with eng.begin() as c:
        # a redelivery, and a duplicate inside one batch, are stored once
        assert inbox.insert_events(c, [*_rows(4), _rows(4)[3]]) == {("stripe_main", "evt_3")}
    with eng.connect() as c:
        row = c.execute(select(webhook_inbox).where(webhook_inbox.c.event_id == "evt_2")).mappings().one()
    assert _count(eng) == 4
    assert row["body"]["id"] == f"evt_{2:024d}" and row["status"] == "pending" and row["attempts"] == 0
    assert row["headers"] == {"content-type": "application/json"}
    eng.dispose()


def test_inbox_claim_done_fail_dead_requeue(db_url: str) -> None:
    eng = make_engine(db_url)
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    with eng.begin() as c:
        inbox.insert_events(c, _rows(5, at=t0))
    now = t0 + timedelta(minutes=1)
    with eng.begin() as c:
        got = inbox.claim(c, 3, "w1", now)
        assert [r["event_id"] for r in got] == ["evt_0", "evt_1", "evt_2"]
        inbox.mark_done(c, [got[0]["id"], got[1]["id"]], now)
        inbox.mark_failed(c, [got[2]["id"]], "mapping: no such field", now, max_attempts=2,
                          backoff=timedelta(seconds=30))
    with eng.begin() as c:
        # evt_2 waits for its back-off; the rest are due
        assert [r["event_id"] for r in inbox.claim(c, 10, "w2", now)] == ["evt_3", "evt_4"]
    with eng.begin() as c:
        again = inbox.claim(c, 10, "w2", now + timedelta(seconds=30))
        assert [r["event_id"] for r in again] == ["evt_2", "evt_3", "evt_4"]
        assert again[0]["attempts"] == 1 and again[0]["status"] == "failed" and again[0]["worker"] == "w2"
        inbox.mark_failed(c, [again[0]["id"]], "still broken", now, max_attempts=2)
    with eng.connect() as c:
        st = inbox.stats(c, now + timedelta(seconds=60))
    assert st.depth == {("stripe_main", "pending"): 2, ("stripe_main", "dead"): 1}
    assert st.oldest_age[("stripe_main", "pending")] == pytest.approx(117)
    with eng.begin() as c:
        assert inbox.claim(c, 10, "w3", now + timedelta(days=1))[0]["event_id"] == "evt_3", "dead is not claimed"
    with eng.begin() as c:
        assert inbox.requeue(c, connector="stripe_main", now=now) == 1
        assert inbox.purge_done(c, now + timedelta(seconds=1)) == 2
    with eng.connect() as c:
        assert inbox.stats(c, now).depth == {("stripe_main", "pending"): 3}
    eng.dispose()


@pytest.mark.postgres
def test_concurrent_claimers_get_disjoint_rows(pg_only_url: str) -> None:
    eng = make_engine(pg_only_url, pool_size=4)
    with eng.begin() as c:
        inbox.insert_events(c, _rows(10))
    now = datetime(2027, 1, 1, tzinfo=UTC)
    a, b = eng.connect(), eng.connect()
    try:
        ta, tb = a.begin(), b.begin()
        got_a = inbox.claim(a, 4, "a", now)
        got_b = inbox.claim(b, 4, "b", now)  # does not wait for a: a's rows are skipped
        ids_a, ids_b = {r["id"] for r in got_a}, {r["id"] for r in got_b}
        assert len(ids_a) == len(ids_b) == 4 and not ids_a & ids_b
        inbox.mark_done(a, list(ids_a), now)
        tb.rollback()  # b dies: its rows are free again, a's stay done
        ta.commit()
        with eng.begin() as c:
            left = {r["id"] for r in inbox.claim(c, 10, "c", now)}
        assert ids_b <= left and not left & ids_a and len(left) == 6
    finally:
        a.close()
        b.close()
        eng.dispose()


# -- the server ----------------------------------------------------------------------------------

@contextmanager
def live_server(app: Any) -> Iterator[str]:
    """uvicorn on a free loopback port in a thread; yields the base URL."""
    # port 0 through uvicorn's own bind (a socket handed in via `sockets=` was measured 20x slower per request)
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
def hub_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STRIPE_API_KEY", "sk_test_123")
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", SECRET)


def hub_config(db_url: str) -> Any:
    return parse_config({
        "database": db_url,
        "connectors": {
            # the shape issue 6 requires, as written
            "stripe_main": {"kind": "stripe", "auth": {"api_key": "${STRIPE_API_KEY}"},
                            "webhook_secrets": ["${STRIPE_WEBHOOK_SECRET}"]},
            "hubspot_main": {"kind": "hubspot", "auth": {"token": "x"}, "webhook_secrets": [HS_SECRET]},
            "twilio_main": {"kind": "twilio", "webhook_secrets": ["12345"]},
            "stripe_quiet": {"kind": "stripe"},
            "legacy": {"kind": "legacy_csv"},
        },
    })


@pytest.fixture
def server(db_url: str, hub_env: None) -> Iterator[tuple[str, Engine, Any]]:
    eng = make_engine(db_url)
    app = create_app(hub_config(db_url), eng, WebhookSettings(max_body_bytes=4096))
    check = make_engine(db_url)  # another engine: what it sees is committed
    with live_server(app) as base:
        yield base, check, app
    check.dispose()
    eng.dispose()


def stripe_post(client: httpx.Client, body: bytes, *, secret: str = SECRET, t: int | None = None,
                path: str = "/webhooks/stripe_main") -> httpx.Response:
    header = sign_stripe(secret, body, int(time.time()) if t is None else t)
    return client.post(path, content=body, headers={"Stripe-Signature": header, "Content-Type": "application/json"})


def test_signed_event_is_committed_before_the_answer(server: tuple[str, Engine, Any]) -> None:
    base, check, _ = server
    with httpx.Client(base_url=base) as client:
        r = stripe_post(client, stripe_event(7))
        # no sleep, no retry: the row must already be visible to another connection
        with check.connect() as c:
            row = c.execute(select(webhook_inbox)).mappings().one()
    assert r.status_code == 200 and r.json() == {"stored": 1, "duplicates": 0}
    assert row["connector"] == "stripe_main" and row["event_id"] == f"evt_{7:024d}"
    assert row["body"] == orjson.loads(stripe_event(7))
    assert "stripe-signature" not in row["headers"] and row["headers"]["content-type"] == "application/json"


def test_the_answer_waits_for_the_commit(server: tuple[str, Engine, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    base, check, _ = server

    def slow(real: Any) -> Any:
        def go(conn: Any, rows: Any) -> set[tuple[str, str]]:
            time.sleep(0.3)  # a slow disk
            return real(conn, rows)
        return go

    monkeypatch.setattr(commit, "insert_events", slow(inbox.insert_events))
    monkeypatch.setattr(commit, "pg_insert", slow(inbox.pg_insert))
    with httpx.Client(base_url=base) as client:
        t0 = time.perf_counter()
        r = stripe_post(client, stripe_event())
        elapsed = time.perf_counter() - t0
    assert r.status_code == 200 and elapsed >= 0.3
    assert _count(check) == 1


@pytest.mark.parametrize("case", ["wrong secret", "expired", "missing header", "tampered body"])
def test_bad_signature_is_401_and_stores_nothing(server: tuple[str, Engine, Any], case: str) -> None:
    base, check, _ = server
    body = stripe_event()
    with httpx.Client(base_url=base) as client:
        if case == "wrong secret":
            r = stripe_post(client, body, secret="whsec_attacker")
        elif case == "expired":
            r = stripe_post(client, body, t=int(time.time()) - 301)
        elif case == "missing header":
            r = client.post("/webhooks/stripe_main", content=body)
        else:
            header = sign_stripe(SECRET, body, int(time.time()))
            r = client.post("/webhooks/stripe_main", content=body.replace(b"updated", b"deleted"),
                            headers={"Stripe-Signature": header})
    assert r.status_code == 401 and r.json()["error"]
    assert _count(check) == 0


def test_oversized_is_413_and_malformed_is_400_storing_nothing(server: tuple[str, Engine, Any]) -> None:
    base, check, _ = server
    big = stripe_event(1, padding="x" * 5000)
    with httpx.Client(base_url=base) as client:
        assert stripe_post(client, big).status_code == 413

        def chunked() -> Iterator[bytes]:  # no Content-Length: the limit holds while streaming
            yield big[:3000]
            yield big[3000:]

        r = client.post("/webhooks/stripe_main", content=chunked(),
                        headers={"Stripe-Signature": sign_stripe(SECRET, big, int(time.time()))})
        assert r.status_code == 413
    with httpx.Client(base_url=base) as client:
        r = stripe_post(client, b'{"id": "evt_1", "object": ')
        assert r.status_code == 400 and "malformed JSON" in r.json()["error"]
        assert stripe_post(client, b"[1,2,3]").status_code == 400
    assert _count(check) == 0


def test_duplicate_delivery_is_stored_once(server: tuple[str, Engine, Any]) -> None:
    base, check, _ = server
    with httpx.Client(base_url=base) as client:
        first = stripe_post(client, stripe_event(3))
        again = stripe_post(client, stripe_event(3))  # Stripe redelivers with a fresh signature
    assert first.json() == {"stored": 1, "duplicates": 0}
    assert again.status_code == 200 and again.json() == {"stored": 0, "duplicates": 1}
    assert _count(check) == 1


def test_unknown_instance_and_kinds_without_webhooks_are_404(server: tuple[str, Engine, Any]) -> None:
    base, check, _ = server
    with httpx.Client(base_url=base) as client:
        r = stripe_post(client, stripe_event(), path="/webhooks/nope")
        assert r.status_code == 404 and "no connector instance 'nope'" in r.json()["error"]
        r = stripe_post(client, stripe_event(), path="/webhooks/legacy")
        assert r.status_code == 404 and "does not receive webhooks" in r.json()["error"]
        r = stripe_post(client, stripe_event(), path="/webhooks/stripe_quiet")
        assert r.status_code == 404 and "add `webhook_secrets" in r.json()["error"]
    assert _count(check) == 0


def test_hubspot_and_twilio_deliveries_are_stored(server: tuple[str, Engine, Any]) -> None:
    base, check, _ = server
    hs_body = b'[{"eventId":11,"objectId":1},{"eventId":12,"objectId":2}]'
    with httpx.Client(base_url=base) as client:
        url = f"{base}/webhooks/hubspot_main"
        r = client.post(url, content=hs_body, headers=sign_hubspot_v3(HS_SECRET, url, hs_body, int(time.time() * 1000)))
        assert r.status_code == 200 and r.json() == {"stored": 2, "duplicates": 0}
        url = f"{base}/webhooks/twilio_main?src=call"
        form = urlencode(TW_PARAMS).encode()
        r = client.post(url, content=form, headers={"X-Twilio-Signature": twilio_signature("12345", url, TW_PARAMS),
                                                    "Content-Type": "application/x-www-form-urlencoded"})
        assert r.status_code == 200
        r = client.post(url, content=form, headers={"X-Twilio-Signature": TW_SIGNATURE})
        assert r.status_code == 401
    with check.connect() as c:
        rows = {(r.connector, r.event_id): r.body for r in c.execute(select(webhook_inbox))}
    assert rows[("hubspot_main", "12")] == {"eventId": 12, "objectId": 2}
    [(key, body)] = [(k, v) for k, v in rows.items() if k[0] == "twilio_main"]
    assert key[1].startswith("sha256:") and body["CallSid"] == "CA1234567890ABCDE"


def test_concurrent_requests_share_commits(server: tuple[str, Engine, Any]) -> None:
    base, check, app = server

    async def blast() -> list[int]:
        async with httpx.AsyncClient(base_url=base, limits=httpx.Limits(max_connections=16)) as client:
            bodies = [stripe_event(i) for i in range(120)]
            t = int(time.time())
            rs = await asyncio.gather(*(client.post("/webhooks/stripe_main", content=b,
                                                    headers={"Stripe-Signature": sign_stripe(SECRET, b, t)})
                                        for b in [*bodies, *bodies[:30]]))
            return [r.status_code for r in rs]

    codes = asyncio.run(blast())
    assert codes == [200] * 150
    assert _count(check) == 120
    stats = app.state.committer.stats
    assert stats.rows == 150 and stats.batches < 150, "concurrent requests should share commits"


def test_a_failed_commit_answers_503_and_stores_nothing(server: tuple[str, Engine, Any],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    base, check, _ = server

    def broken(insert: Any) -> Any:
        def go(conn: Any, rows: Any) -> set[tuple[str, str]]:
            insert(conn, rows)
            raise RuntimeError("disk full")  # after the insert, before the commit: rolled back
        return go

    monkeypatch.setattr(commit, "insert_events", broken(inbox.insert_events))  # SQLite's path
    monkeypatch.setattr(commit, "pg_insert", broken(inbox.pg_insert))  # PostgreSQL's
    with httpx.Client(base_url=base) as client:
        r = stripe_post(client, stripe_event())
        assert r.status_code == 503
        monkeypatch.undo()
        r = stripe_post(client, stripe_event(2))  # the writer recovers
        assert r.status_code == 200
    assert _count(check) == 1


def test_inbox_commits_are_durable_even_on_a_relaxed_connection(db_url: str, hub_env: None,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from sqlalchemy import event

    eng = make_engine(db_url)
    pg = eng.dialect.name == "postgresql"

    @event.listens_for(eng, "connect")
    def _relaxed(dbapi_conn: Any, _rec: Any) -> None:  # as a sync run leaves a pooled connection
        if pg:
            with dbapi_conn.cursor() as cur:
                cur.execute("SET synchronous_commit = off")
            dbapi_conn.commit()

    seen: list[Any] = []

    def spy(real: Any) -> Any:
        def go(conn: Any, rows: Any) -> set[tuple[str, str]]:
            if pg:
                seen.append(conn.execute("SHOW synchronous_commit").fetchone()[0])
            else:
                seen.append(conn.exec_driver_sql("PRAGMA synchronous").scalar_one())
            return real(conn, rows)
        return go

    monkeypatch.setattr(commit, "pg_insert", spy(inbox.pg_insert))
    monkeypatch.setattr(commit, "insert_events", spy(inbox.insert_events))
    with live_server(create_app(hub_config(db_url), eng)) as base, httpx.Client(base_url=base) as client:
        assert stripe_post(client, stripe_event()).status_code == 200
    assert seen == (["on"] if pg else [2])  # SQLite: 2 = FULL (the engine's default is NORMAL, 1)
    if not pg:
        with eng.connect() as c:
            assert c.exec_driver_sql("PRAGMA synchronous").scalar_one() == 1, "restored for the next user"
    eng.dispose()


@pytest.mark.postgres
def test_one_unstorable_event_does_not_fail_its_batch(pg_only_url: str) -> None:
    eng = make_engine(pg_only_url)
    committer = commit.GroupCommitter(eng, max_inflight=1, linger=0)
    at = datetime.now(UTC)

    async def go() -> list[Any]:
        return await asyncio.gather(
            committer.submit([InboxRow("s", "ok-1", at, "{}")]),  # goes alone, the rest queue behind it
            committer.submit([InboxRow("s", "ok-2", at, "{}")]),
            committer.submit([InboxRow("s", "bad", at, "{not json")]),
            committer.submit([InboxRow("s", "ok-3", at, "{}")]),
            return_exceptions=True,
        )

    results = asyncio.run(go())
    committer.close()
    assert results[0] == {("s", "ok-1")} and results[1] == {("s", "ok-2")} and results[3] == {("s", "ok-3")}
    assert isinstance(results[2], Exception)
    assert _count(eng) == 3
    eng.dispose()


def test_malformed_webhook_secrets_is_a_config_error(db_url: str, hub_env: None) -> None:
    cfg = parse_config({"database": db_url, "connectors": {"stripe_main": {"kind": "stripe", "webhook_secrets": "x"}}})
    eng = make_engine(db_url)
    with pytest.raises(ConfigError, match=r"connectors\.stripe_main\.webhook_secrets"):
        create_app(cfg, eng)
    eng.dispose()


# -- health and metrics --------------------------------------------------------------------------

SAMPLE = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\]|\\.)*",?)*\})? '
                    r"(-?[0-9.e+-]+|\+Inf|-Inf|NaN)$")


def test_healthz(server: tuple[str, Engine, Any]) -> None:
    base, _, _ = server
    with httpx.Client(base_url=base) as client:
        r = client.get("/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok", "database": "ok"}


def test_healthz_reports_a_dead_database(hub_env: None, tmp_path: Any) -> None:
    dead = make_engine("postgresql+psycopg://postgres@127.0.0.1:9/none", connect_args={"connect_timeout": 2})
    app = create_app(hub_config(f"sqlite:///{tmp_path / 'x.db'}"), dead)
    with live_server(app) as base, httpx.Client(base_url=base) as client:
        r = client.get("/healthz")
        m = client.get("/metrics")
    dead.dispose()
    assert r.status_code == 503 and r.json()["status"] == "error"
    assert m.status_code == 200 and "crmhub_webhook_inbox_up 0" in m.text


def test_metrics_exposition(server: tuple[str, Engine, Any]) -> None:
    base, check, _ = server
    with httpx.Client(base_url=base) as client:
        stripe_post(client, stripe_event(1))
        stripe_post(client, stripe_event(1))
        stripe_post(client, stripe_event(2), secret="nope")
        stripe_post(client, stripe_event(3), path="/webhooks/scanner")
        with check.begin() as c:
            inbox.insert_events(c, [InboxRow("hubspot_main", "9", datetime.now(UTC) - timedelta(minutes=5), "{}")])
            [row] = [r for r in inbox.claim(c, 10, "w") if r["connector"] == "hubspot_main"]
            inbox.mark_failed(c, [row["id"]], "boom", max_attempts=1)
        r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain; version=0.0.4")
    lines = r.text.splitlines()
    for line in lines:
        assert line.startswith("# HELP ") or line.startswith("# TYPE ") or SAMPLE.match(line), line
    samples = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in lines if not line.startswith("#")}
    assert samples['crmhub_webhook_requests_total{connector="stripe_main",status="200"}'] == 2
    assert samples['crmhub_webhook_requests_total{connector="stripe_main",status="401"}'] == 1
    assert samples['crmhub_webhook_requests_total{connector="_unknown",status="404"}'] == 1
    assert samples['crmhub_webhook_events_total{connector="stripe_main",result="stored"}'] == 1
    assert samples['crmhub_webhook_events_total{connector="stripe_main",result="duplicate"}'] == 1
    assert samples['crmhub_webhook_ack_seconds_bucket{connector="stripe_main",le="+Inf"}'] == 2
    assert samples['crmhub_webhook_ack_seconds_count{connector="stripe_main"}'] == 2
    assert samples['crmhub_webhook_inbox_depth{connector="stripe_main",status="pending"}'] == 1
    assert samples['crmhub_webhook_inbox_depth{connector="hubspot_main",status="dead"}'] == 1
    assert samples['crmhub_webhook_dead_letters{connector="hubspot_main"}'] == 1
    assert samples['crmhub_webhook_inbox_oldest_age_seconds{connector="hubspot_main",status="dead"}'] >= 299
    assert samples["crmhub_webhook_inbox_up"] == 1
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", r.text, re.M))
    assert types["crmhub_webhook_requests_total"] == "counter" and types["crmhub_webhook_ack_seconds"] == "histogram"
    assert types["crmhub_webhook_inbox_depth"] == "gauge"


def test_no_secret_is_stored(server: tuple[str, Engine, Any]) -> None:
    base, check, _ = server
    with httpx.Client(base_url=base) as client:
        url = f"{base}/webhooks/hubspot_main"
        body = b'[{"eventId":1}]'
        headers = {**sign_hubspot_v3(HS_SECRET, url, body, int(time.time() * 1000)), "Authorization": "Bearer x"}
        assert client.post(url, content=body, headers=headers).status_code == 200
    with check.connect() as c:
        stored = c.execute(text("SELECT headers FROM hub.webhook_inbox" if "postgres" in str(check.url)
                                else "SELECT headers FROM webhook_inbox")).scalar_one()
    dumped = stored if isinstance(stored, str) else orjson.dumps(stored).decode()
    assert "x-hubspot-request-timestamp" in dumped.lower()
    assert "signature" not in dumped.lower() and "authorization" not in dumped.lower()


def test_serve_runs_the_server_until_sigterm(tmp_path: Any) -> None:
    """`hub.webhooks.cli.serve` (what `crmhub serve` calls) as a process: up, answers, stops cleanly."""
    import json
    import signal
    import subprocess
    import sys

    with socket_port() as port:
        pass
    config = tmp_path / "crmhub.yaml"
    config.write_text(json.dumps({"database": f"sqlite:///{tmp_path / 'hub.db'}", "connectors": {
        "stripe_main": {"kind": "stripe", "auth": {"api_key": "${STRIPE_API_KEY}"},
                        "webhook_secrets": ["${STRIPE_WEBHOOK_SECRET}"]}}}))
    env = {**os.environ, "STRIPE_API_KEY": "sk_test", "STRIPE_WEBHOOK_SECRET": SECRET}
    proc = subprocess.Popen([sys.executable, "-m", "hub.webhooks.cli", "--config", str(config), "--port", str(port),
                             "--log-level", "warning"], env=env)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline, "serve did not come up"
                time.sleep(0.1)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            assert stripe_post(client, stripe_event()).status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        # uvicorn shuts down gracefully, then re-raises the signal it caught
        assert proc.wait(timeout=30) in (0, -signal.SIGTERM)
    eng = make_engine(f"sqlite:///{tmp_path / 'hub.db'}")
    assert _count(eng) == 1
    eng.dispose()


@contextmanager
def socket_port() -> Iterator[int]:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield int(s.getsockname()[1])
