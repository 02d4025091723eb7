"""Gmail connector without a database: what a message becomes, privacy, and Google's errors.

Sandbox tests speak to the sandbox on loopback; error tests use respx at the HTTP level (strict:
every route must be called)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import respx

from connectors.gmail import GmailConnector
from connectors.gmail.connector import GmailConfig
from connectors.gmail.sandbox import GmailSandbox, GmailStore
from hub.sdk import AuthError, ConnectorContext, CursorExpired, Page, RateLimited

ANN, BOB = "ann@example.com", "bob@example.com"
TOKENS = {ANN: "ya29.ann-connector-test-0001", BOB: "ya29.bob-connector-test-0002"}
BASE = "https://gmail.googleapis.com"


def connector(url: str = BASE, boxes: tuple[str, ...] = (ANN,), **extra: Any) -> GmailConnector:
    cfg = GmailConfig.model_validate({"kind": "gmail", "base_url": url, "fetch_concurrency": 1,
                                      "mailboxes": [{"address": a, "access_token": TOKENS[a]} for a in boxes], **extra})
    return GmailConnector(cfg, ConnectorContext(name="gm", sleep=lambda _s: None))


def read(conn: GmailConnector, cursor: dict[str, Any] | None = None) -> list[Page]:
    try:
        return list(conn.read("messages", cursor))
    finally:
        conn.close()


@pytest.fixture
def sandbox() -> Iterator[GmailSandbox]:
    with GmailSandbox(GmailStore(TOKENS, 0)) as server:
        yield server


def test_a_message_becomes_an_email_activity_with_participants_as_written(sandbox: GmailSandbox) -> None:
    store = sandbox.store
    out = store.add_message(ANN, sender="Ann Example <Ann@Example.com>",
                            to=['"Lee, Ann" <Lee@Customer.example>', "kim@customer.example"],
                            cc=["Bob <bob@example.com>"], subject="Proposal", labels=["SENT"],
                            body="Here's the proposal & terms")
    inbound = store.add_message(ANN, sender="Lee <lee@customer.example>", to=[ANN], subject="Re: Proposal")
    internal = store.add_message(ANN, sender=f"Bob <{BOB}>", to=[ANN], subject="lunch?")
    pages = read(connector(sandbox.url, internal=["@example.com"]))
    events = {r.external_id: r.activity for p in pages for r in p.records}
    ev = events[f"{ANN}:{out}"]
    assert ev is not None
    assert (ev.type, ev.direction, ev.status, ev.subject) == ("email", "outbound", "sent", "Proposal")
    assert [(p.role, p.email, p.name) for p in ev.participants] == [
        ("from", "Ann@Example.com", "Ann Example"), ("to", "Lee@Customer.example", "Lee, Ann"),
        ("to", "kim@customer.example", None), ("cc", "bob@example.com", "Bob")]
    assert ev.url == f"https://mail.google.com/mail/?authuser=ann%40example.com#all/{out}"
    assert ev.occurred_at.endswith("Z") and ev.updated_at == ev.occurred_at
    assert ev.details["message_id"] == f"<{out}@mail.sandbox.example>"
    assert ev.body_excerpt is None
    back, team = events[f"{ANN}:{inbound}"], events[f"{ANN}:{internal}"]
    assert back is not None and team is not None
    assert (back.direction, back.status, team.direction) == ("inbound", "received", "internal")


def test_metadata_only_by_default_and_a_bounded_excerpt_when_configured(sandbox: GmailSandbox) -> None:
    mid = sandbox.store.add_message(ANN, sender="lee@customer.example", to=[ANN], body="Don't forget the contract")
    plain = read(connector(sandbox.url))[0].records[0]
    assert "snippet" not in plain.data and plain.activity is not None and plain.activity.body_excerpt is None
    assert "payload" in plain.data and "data" not in plain.data["payload"]["body"], "format=metadata: no body"
    excerpt = read(connector(sandbox.url, body_excerpt_chars=10))[0].records[0]
    assert excerpt.external_id == f"{ANN}:{mid}"
    assert excerpt.activity is not None and excerpt.activity.body_excerpt == "Don't forg"  # unescaped, 10 chars


def test_message_deleted_between_listing_and_fetch_is_reported_deleted() -> None:
    with respx.mock(base_url=BASE, assert_all_called=True) as mock:
        mock.get("/gmail/v1/users/me/profile").respond(json={"emailAddress": ANN, "historyId": "500"})
        mock.get("/gmail/v1/users/me/messages").respond(
            json={"messages": [{"id": "m1", "threadId": "m1"}], "resultSizeEstimate": 1})
        mock.get("/gmail/v1/users/me/messages/m1").respond(
            404, json={"error": {"code": 404, "message": "Requested entity was not found.",
                                 "errors": [{"reason": "notFound", "domain": "global"}]}})
        mock.get("/gmail/v1/users/me/history").respond(json={"historyId": "500"})
        pages = read(connector())
    assert pages[0].deleted == [f"{ANN}:m1"] and not pages[0].records
    assert pages[-1].next_cursor == {"mailboxes": {ANN: {"phase": "history", "history_id": "500"}}}


def test_an_expired_history_id_raises_cursor_expired() -> None:
    with respx.mock(base_url=BASE, assert_all_called=True) as mock:
        mock.get("/gmail/v1/users/me/history", params={"startHistoryId": "42"}).respond(
            404, json={"error": {"code": 404, "message": "Requested entity was not found.",
                                 "errors": [{"reason": "notFound", "domain": "global"}], "status": "NOT_FOUND"}})
        with pytest.raises(CursorExpired, match=r"history id of ann@example\.com"):
            read(connector(), {"mailboxes": {ANN: {"phase": "history", "history_id": "42"}}})


def test_a_403_rate_limit_is_a_rate_limit_not_an_auth_failure() -> None:
    body = {"error": {"code": 403, "message": "User-rate limit exceeded.",
                      "errors": [{"domain": "usageLimits", "reason": "userRateLimitExceeded"}]}}
    with respx.mock(base_url=BASE, assert_all_called=True) as mock:
        mock.get("/gmail/v1/users/me/history").respond(403, json=body)
        with pytest.raises(RateLimited):
            read(connector(), {"mailboxes": {ANN: {"phase": "history", "history_id": "42"}}})


def test_a_rejected_token_is_an_auth_error_that_never_quotes_the_token() -> None:
    token = TOKENS[ANN]
    with respx.mock(base_url=BASE, assert_all_called=True) as mock:
        # a proxy that echoes the request's credentials back in its error body
        mock.get("/gmail/v1/users/me/profile").mock(side_effect=lambda req: httpx.Response(
            401, json={"error": {"code": 401, "message": f"Invalid Credentials: {req.headers['Authorization']}",
                                 "errors": [{"reason": "authError"}]}}))
        with pytest.raises(AuthError) as err:
            read(connector())
    assert token not in str(err.value) and "401" in str(err.value)


def test_each_mailbox_is_read_with_its_own_token(sandbox: GmailSandbox) -> None:
    a = sandbox.store.add_message(ANN, sender="x@customer.example", to=[ANN])
    b = sandbox.store.add_message(BOB, sender="y@customer.example", to=[BOB])
    ids = {r.external_id for p in read(connector(sandbox.url, (ANN, BOB))) for r in p.records}
    assert ids == {f"{ANN}:{a}", f"{BOB}:{b}"}


def test_config_names_a_mailbox_listed_twice() -> None:
    with pytest.raises(ValueError, match="listed twice"):
        GmailConfig.model_validate({"kind": "gmail", "mailboxes": [
            {"address": ANN, "access_token": "a"}, {"address": ANN.upper(), "access_token": "b"}]})


def test_added_then_deleted_within_one_history_page_is_only_a_delete(sandbox: GmailSandbox) -> None:
    first = read(connector(sandbox.url))
    mid = sandbox.store.add_message(ANN, sender="x@customer.example", to=[ANN])
    sandbox.store.delete_messages(ANN, [mid])
    pages = read(connector(sandbox.url), first[-1].next_cursor)
    assert [p.deleted for p in pages] == [[f"{ANN}:{mid}"]] and not pages[0].records
    assert sandbox.store.stats()["requests"].get("messages.get", 0) == 0


def test_a_service_account_with_domain_wide_delegation_gets_a_token_per_mailbox() -> None:
    """`oauth.grant: jwt_bearer`: one signed assertion per mailbox (`sub` = the mailbox), each
    mailbox read with its own token."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    subjects: list[str] = []

    def token(request: httpx.Request) -> httpx.Response:
        form = dict(httpx.QueryParams(request.content.decode()))
        assert form["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer"
        payload = form["assertion"].split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        assert claims["iss"] == "crmhub@project.iam.gserviceaccount.com"
        assert claims["scope"] == "https://www.googleapis.com/auth/gmail.readonly"
        subjects.append(claims["sub"])
        return httpx.Response(200, json={"access_token": f"ya29.sa-{claims['sub']}", "expires_in": 3599,
                                         "token_type": "Bearer"})

    def history(request: httpx.Request) -> httpx.Response:
        who = request.headers["Authorization"].removeprefix("Bearer ya29.sa-")
        return httpx.Response(200, json={"historyId": "77" if who == ANN else "88"})

    cfg = GmailConfig.model_validate({"kind": "gmail", "mailboxes": [{"address": ANN}, {"address": BOB}], "oauth": {
        "grant": "jwt_bearer", "client_id": "crmhub@project.iam.gserviceaccount.com", "private_key": pem,
        "token_url": "https://oauth2.googleapis.com/token",
        "scopes": ["https://www.googleapis.com/auth/gmail.readonly"]}})
    conn = GmailConnector(cfg, ConnectorContext(name="gm", sleep=lambda _s: None))
    cursor = {"mailboxes": {ANN: {"phase": "history", "history_id": "1"}, BOB: {"phase": "history", "history_id": "2"}}}
    with respx.mock(assert_all_called=True) as mock:
        mock.post("https://oauth2.googleapis.com/token").mock(side_effect=token)
        mock.get(f"{BASE}/gmail/v1/users/me/history").mock(side_effect=history)
        try:
            pages = list(conn.read("messages", cursor))
        finally:
            conn.close()
    assert sorted(subjects) == [ANN, BOB]
    assert pages[-1].next_cursor == {"mailboxes": {ANN: {"phase": "history", "history_id": "77"},
                                                   BOB: {"phase": "history", "history_id": "88"}}}


def test_a_mailbox_without_a_token_needs_an_oauth_client() -> None:
    with pytest.raises(ValueError, match="have no access_token"):
        GmailConfig.model_validate({"kind": "gmail", "mailboxes": [{"address": ANN}]})
