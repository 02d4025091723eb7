"""`hub.sdk.oauth.oauth_auth` at the HTTP level, against strict respx fakes of a vendor and its token
endpoint: 401 → refresh → retry, expiry ahead of time, invalid_grant → needs re-authorisation,
a token response without `expires_in`, client credentials, the JWT bearer grant, and no secret
in logs, errors or the database."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
import respx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from joserfc import jwt
from joserfc.jwk import RSAKey
from sqlalchemy import text

from hub.auth.crypto import TokenCipher
from hub.auth.store import DbTokenStore
from hub.sdk import AuthError, ConnectorContext, RetriableError, build_client, raise_for_status
from hub.sdk.oauth import MemoryTokenStore, OAuth2Settings, OAuthError, TokenStore, oauth_auth
from state.db import make_engine

API = "https://api.vendor.example"
TOKEN_URL = "https://login.vendor.example/oauth/token"
SECRET = "cs-CLIENT-secret-value-42"
OLD_AT, OLD_RT = "at-OLD-access-token-aaaaaaaa", "rt-OLD-refresh-token-bbbbbbbb"
NEW_AT, NEW_RT = "at-NEW-access-token-cccccccc", "rt-NEW-refresh-token-dddddddd"


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def settings(**kw: Any) -> OAuth2Settings:
    base: dict[str, Any] = {"client_id": "cid-1", "client_secret": SECRET, "authorize_url": "https://login.vendor.example/authorize",
                            "token_url": TOKEN_URL, "scopes": ["crm.read"]}
    return OAuth2Settings.model_validate({**base, **kw})


@pytest.fixture
def router() -> Iterator[respx.Router]:
    r = respx.Router(assert_all_called=True, assert_all_mocked=True)
    yield r
    r.assert_all_called()


@pytest.fixture
def db_store(db_url: str) -> Iterator[DbTokenStore]:
    engine = make_engine(db_url)
    yield DbTokenStore(engine, TokenCipher([os.urandom(32)]))
    engine.dispose()


def ctx(router: respx.Router, store: TokenStore | None, name: str = "hubspot_main") -> ConnectorContext:
    return ConnectorContext(name=name, transport=httpx.MockTransport(router.handler), token_store=store,
                            sleep=lambda _s: None)


def client_for(auth: Any, router: respx.Router) -> httpx.Client:
    return build_client(base_url=API, auth=auth, transport=httpx.MockTransport(router.handler), sleep=lambda _s: None)


def form(request: httpx.Request) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(request.content.decode()).items()}


def token_endpoint(router: respx.Router, *responses: httpx.Response) -> tuple[respx.Route, list[dict[str, str]]]:
    seen: list[dict[str, str]] = []
    queue = list(responses)

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(form(request))
        return queue.pop(0)

    return router.post(TOKEN_URL).mock(side_effect=answer), seen


def bearer_is(expected: str) -> Callable[[httpx.Request], bool]:
    return lambda request: request.headers.get("authorization") == f"Bearer {expected}"


def seed(store: TokenStore, clock: Clock, *, expires_in: int | None = 1800, **extra: Any) -> None:
    token: dict[str, Any] = {"access_token": OLD_AT, "refresh_token": OLD_RT, "token_type": "bearer",
                             "obtained_at": int(clock.now), **extra}
    if expires_in is not None:
        token["expires_at"] = int(clock.now) + expires_in
    store.save("hubspot_main", "", token)


# -- refresh ---------------------------------------------------------------------------------------

def test_401_refreshes_once_persists_the_rotation_and_retries(router: respx.Router, db_store: DbTokenStore) -> None:
    clock = Clock()
    seed(db_store, clock)
    me = router.get(f"{API}/me")
    me.side_effect = lambda req: (httpx.Response(200, json={"ok": True}) if bearer_is(NEW_AT)(req)
                                  else httpx.Response(401, json={"message": "expired"}))
    _, seen = token_endpoint(router, httpx.Response(200, json={
        "access_token": NEW_AT, "refresh_token": NEW_RT, "expires_in": 1800, "token_type": "bearer"}))
    auth = oauth_auth(settings(), ctx(router, db_store), clock=clock)
    with client_for(auth, router) as client:
        assert raise_for_status(client.get("/me")).json() == {"ok": True}
    assert me.call_count == 2 and len(seen) == 1
    assert seen[0] == {"grant_type": "refresh_token", "refresh_token": OLD_RT, "client_id": "cid-1",
                       "client_secret": SECRET}
    stored = db_store.load("hubspot_main", "")
    assert stored is not None and stored.version == 2
    assert (stored.token["access_token"], stored.token["refresh_token"]) == (NEW_AT, NEW_RT)
    assert stored.token["expires_at"] == int(clock.now) + 1800
    assert auth.stats.renewals == 1 and auth.stats.retried_401 == 1


def test_a_second_401_is_returned_not_looped(router: respx.Router) -> None:
    clock, store = Clock(), MemoryTokenStore()
    seed(store, clock)
    me = router.get(f"{API}/me").respond(401, json={"message": "This app lacks the scope"})
    token_endpoint(router, httpx.Response(200, json={"access_token": NEW_AT, "expires_in": 1800}))
    auth = oauth_auth(settings(), ctx(router, store), clock=clock)
    with client_for(auth, router) as client:
        response = client.get("/me")
        assert response.status_code == 401 and me.call_count == 2
        with pytest.raises(AuthError) as exc:
            raise_for_status(response)
    assert NEW_AT not in str(exc.value) and OLD_AT not in str(exc.value)
    stored = store.load("hubspot_main", "")
    assert stored is not None and stored.token["refresh_token"] == OLD_RT  # no rotation: the old one stays


def test_expiring_token_is_renewed_before_the_request(router: respx.Router) -> None:
    clock, store = Clock(), MemoryTokenStore()
    seed(store, clock, expires_in=1800)
    me = router.get(f"{API}/me")
    me.side_effect = lambda req: httpx.Response(200 if bearer_is(NEW_AT)(req) or bearer_is(OLD_AT)(req) else 401)
    _, seen = token_endpoint(router, httpx.Response(200, json={"access_token": NEW_AT, "expires_in": 1800}))
    auth = oauth_auth(settings(refresh_leeway_seconds=300), ctx(router, store), clock=clock)
    with client_for(auth, router) as client:
        client.get("/me")
        assert len(seen) == 0 and bearer_is(OLD_AT)(me.calls.last.request)
        clock.now += 1800 - 299  # inside the leeway: renew first
        client.get("/me")
    assert len(seen) == 1 and me.call_count == 2 and bearer_is(NEW_AT)(me.calls.last.request)


def test_token_without_expires_in_is_used_until_a_401(router: respx.Router) -> None:
    # Salesforce: no expires_in, an instance_url the connector needs for its base URL
    clock, store = Clock(), MemoryTokenStore()
    seed(store, clock, expires_in=None, instance_url="https://acme.my.salesforce.com", issued_at="1800000000000")
    me = router.get(f"{API}/me")
    me.side_effect = lambda req: (httpx.Response(200) if bearer_is(NEW_AT)(req) else httpx.Response(
        401, json=[{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]))
    token_endpoint(router, httpx.Response(200, json={
        "access_token": NEW_AT, "instance_url": "https://acme.my.salesforce.com", "id": "https://login/id/00D/005",
        "token_type": "Bearer", "issued_at": "1800009999000", "signature": "c2ln"}))
    auth = oauth_auth(settings(), ctx(router, store), clock=clock)
    assert auth.token["instance_url"] == "https://acme.my.salesforce.com"
    clock.now += 30 * 86400  # a month later, still no proactive refresh
    with client_for(auth, router) as client:
        assert client.get("/me").status_code == 200
    stored = store.load("hubspot_main", "")
    assert stored is not None and "expires_at" not in stored.token
    assert stored.token["refresh_token"] == OLD_RT  # the refresh response had none: the old one is kept


def test_default_expires_in_applies_when_the_vendor_sends_none(router: respx.Router) -> None:
    clock, store = Clock(), MemoryTokenStore()
    seed(store, clock, expires_in=0)
    token_endpoint(router, httpx.Response(200, json={"access_token": NEW_AT, "token_type": "Bearer"}))
    auth = oauth_auth(settings(default_expires_in=7200), ctx(router, store), clock=clock)
    assert auth.token["expires_at"] == int(clock.now) + 7200


# -- invalid_grant ---------------------------------------------------------------------------------

@pytest.mark.parametrize("body", [
    {"error": "invalid_grant", "error_description": "expired access/refresh token"},  # RFC 6749, Salesforce
    {"status": "BAD_REFRESH_TOKEN", "message": "missing or unknown refresh token"},  # HubSpot v1
])
def test_invalid_grant_marks_needs_reauth_and_fails_fast(router: respx.Router, db_store: DbTokenStore,
                                                         body: dict[str, str]) -> None:
    clock = Clock()
    seed(db_store, clock, expires_in=600)
    clock.now += 600  # expired
    token_route, _ = token_endpoint(router, httpx.Response(400, json=body))
    auth = oauth_auth(settings(), ctx(router, db_store), clock=clock)
    with client_for(auth, router) as client:
        with pytest.raises(OAuthError) as exc:
            client.get("/me")
        assert exc.value.needs_reauth and "crmhub auth login hubspot_main" in str(exc.value)
        stored = db_store.load("hubspot_main", "")
        assert stored is not None and stored.needs_reauth and stored.reauth_reason
        assert stored.reauth_reason.startswith(("invalid_grant", "BAD_REFRESH_TOKEN"))
        # later requests, and a fresh worker, fail at once without asking the vendor again
        with pytest.raises(AuthError, match="needs re-authorisation"):
            client.get("/me")
    other = oauth_auth(settings(), ctx(router, db_store), clock=clock)
    with pytest.raises(AuthError, match="crmhub auth login hubspot_main"):
        _ = other.token
    assert token_route.call_count == 1
    assert db_store.status()[0]["needs_reauth"] is True


def test_token_endpoint_outage_is_retriable_and_marks_nothing(router: respx.Router) -> None:
    clock, store = Clock(), MemoryTokenStore()
    seed(store, clock, expires_in=600)
    clock.now += 600
    route = router.post(TOKEN_URL).respond(503, text="upstream unavailable")
    auth = oauth_auth(settings(), ctx(router, store), clock=clock)
    with pytest.raises(RetriableError):
        _ = auth.token
    assert route.call_count == 1  # a token POST is not idempotent: only 429/connect errors are repeated
    stored = store.load("hubspot_main", "")
    assert stored is not None and not stored.needs_reauth


def test_no_stored_token_says_how_to_log_in(router: respx.Router) -> None:
    auth = oauth_auth(settings(), ctx(router, MemoryTokenStore(), name="sf_main"), subject="ops@acme.example")
    with pytest.raises(AuthError, match=r"crmhub auth login sf_main --subject ops@acme.example"):
        _ = auth.token


def test_authorization_code_needs_the_hubs_store(router: respx.Router) -> None:
    with pytest.raises(AuthError, match="token store"):
        oauth_auth(settings(), ctx(router, None))


def test_settings_name_what_a_grant_lacks() -> None:
    with pytest.raises(ValueError, match="authorize_url"):
        OAuth2Settings(client_id="c", token_url=TOKEN_URL)
    with pytest.raises(ValueError, match="client_secret"):
        OAuth2Settings(grant="client_credentials", client_id="c", token_url=TOKEN_URL)
    with pytest.raises(ValueError, match="private_key"):
        OAuth2Settings(grant="jwt_bearer", client_id="sa@p.iam.gserviceaccount.com", token_url=TOKEN_URL)


# -- app-only grants --------------------------------------------------------------------------------

def test_client_credentials_fetch_cache_and_refetch(router: respx.Router) -> None:
    clock = Clock()
    me = router.get(f"{API}/users/ops@acme.example/messages").respond(200, json={"value": []})
    _, seen = token_endpoint(
        router,
        httpx.Response(200, json={"token_type": "Bearer", "expires_in": 3599, "access_token": "eyJ0-first"}),
        httpx.Response(200, json={"token_type": "Bearer", "expires_in": 3599, "access_token": "eyJ0-second"}))
    s = settings(grant="client_credentials", authorize_url=None, scopes=["https://graph.microsoft.com/.default"])
    auth = oauth_auth(s, ctx(router, None, name="graph"), clock=clock)  # no hub store: one per process
    with client_for(auth, router) as client:
        client.get("/users/ops@acme.example/messages")
        client.get("/users/ops@acme.example/messages")
        clock.now += 3600
        client.get("/users/ops@acme.example/messages")
    assert len(seen) == 2 and me.call_count == 3
    assert seen[0] == {"grant_type": "client_credentials", "scope": "https://graph.microsoft.com/.default",
                       "client_id": "cid-1", "client_secret": SECRET}
    assert bearer_is("eyJ0-second")(me.calls.last.request)


def test_client_credentials_bad_secret_is_marked_then_recovers(router: respx.Router) -> None:
    store = MemoryTokenStore()
    token_endpoint(router,
                   httpx.Response(401, json={"error": "invalid_client", "error_description": "AADSTS7000215: Invalid client secret provided."}),
                   httpx.Response(200, json={"access_token": "eyJ0-ok", "expires_in": 3599}))
    s = settings(grant="client_credentials", authorize_url=None)
    auth = oauth_auth(s, ctx(router, store, name="graph"))
    with pytest.raises(OAuthError, match="check the client credentials"):
        _ = auth.token
    marked = store.load("graph", "")
    assert marked is not None and marked.needs_reauth
    # once the secret is fixed the next attempt succeeds and clears the mark (no login exists for app grants)
    assert oauth_auth(s, ctx(router, store, name="graph")).token["access_token"] == "eyJ0-ok"
    cleared = store.load("graph", "")
    assert cleared is not None and not cleared.needs_reauth


def test_client_secret_basic_sends_the_secret_in_the_header_only(router: respx.Router) -> None:
    route = router.post(TOKEN_URL).respond(200, json={"access_token": "at-basic", "expires_in": 60})
    s = settings(grant="client_credentials", authorize_url=None, client_auth="client_secret_basic")
    assert oauth_auth(s, ctx(router, None, name="graph")).token["access_token"] == "at-basic"
    seen = [call.request for call in route.calls]
    assert seen[0].headers["authorization"].startswith("Basic ") and SECRET not in seen[0].content.decode()


@pytest.fixture(scope="module")
def rsa_pem() -> tuple[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return private, public


def test_jwt_bearer_signs_a_verifiable_assertion_per_mailbox(router: respx.Router, rsa_pem: tuple[str, str]) -> None:
    private, public = rsa_pem
    clock = Clock()
    google_token = "https://oauth2.googleapis.com/token"
    assertions: list[dict[str, Any]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        f = form(request)
        assert f["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer" and "client_secret" not in f
        decoded = jwt.decode(f["assertion"], RSAKey.import_key(public), algorithms=["RS256"])  # a real check
        assertions.append({**decoded.claims, "kid": decoded.header.get("kid")})
        return httpx.Response(200, json={"access_token": f"ya29.for-{decoded.claims['sub']}", "expires_in": 3599,
                                         "token_type": "Bearer"})

    router.post(google_token).mock(side_effect=answer)
    s = OAuth2Settings.google_service_account(
        {"type": "service_account", "client_email": "sync@acme-proj.iam.gserviceaccount.com", "private_key": private,
         "private_key_id": "kid-123", "token_uri": google_token},
        scopes=["https://www.googleapis.com/auth/gmail.readonly"])
    store = MemoryTokenStore()
    a = oauth_auth(s, ctx(router, store, name="gmail"), subject="ana@acme.example", clock=clock)
    b = oauth_auth(s, ctx(router, store, name="gmail"), subject="bo@acme.example", clock=clock)
    assert a.token["access_token"] == "ya29.for-ana@acme.example"
    assert b.token["access_token"] == "ya29.for-bo@acme.example"
    assert [x["sub"] for x in assertions] == ["ana@acme.example", "bo@acme.example"]
    first = assertions[0]
    assert first["iss"] == "sync@acme-proj.iam.gserviceaccount.com" and first["aud"] == google_token
    assert first["scope"] == "https://www.googleapis.com/auth/gmail.readonly" and first["kid"] == "kid-123"
    assert first["exp"] - first["iat"] == 3600 and first["iat"] == int(clock.now)


def test_google_service_account_rejects_other_key_files() -> None:
    with pytest.raises(ValueError, match="service_account"):
        OAuth2Settings.google_service_account({"type": "authorized_user"}, scopes=[])


# -- secrets stay secret ----------------------------------------------------------------------------

def test_no_token_or_secret_in_logs_errors_or_database(router: respx.Router, db_store: DbTokenStore,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)  # httpx, httpcore, crmhub: everything
    clock = Clock()
    seed(db_store, clock)
    me = router.get(f"{API}/me")
    me.side_effect = lambda req: (httpx.Response(200) if bearer_is(NEW_AT)(req) else httpx.Response(
        401, json={"message": f"token {OLD_AT} expired"}))  # a vendor echoing the token back
    token_endpoint(router,
                   httpx.Response(200, json={"access_token": NEW_AT, "refresh_token": NEW_RT, "expires_in": 1800}),
                   httpx.Response(400, json={"error": "invalid_grant",
                                             "error_description": f"refresh token {NEW_RT} was revoked"}))
    auth = oauth_auth(settings(), ctx(router, db_store), clock=clock)
    errors: list[str] = []
    with client_for(auth, router) as client:
        client.get("/me")
        clock.now += 3600
        try:
            client.get("/me")
        except AuthError as exc:
            errors.append(str(exc))
            errors.append(repr(exc))
        try:
            client.get("/me")
        except AuthError as exc:
            errors.append(str(exc))
    assert len(errors) == 3 and "invalid_grant" in errors[0]
    with db_store.engine.connect() as c:
        table = "hub.oauth_tokens" if db_store.engine.dialect.name == "postgresql" else "oauth_tokens"
        dump = repr(c.execute(text(f"SELECT * FROM {table}")).fetchall())
    text_seen = "\n".join([caplog.text, *errors, dump, *(r.getMessage() for r in caplog.records)])
    for secret in (OLD_AT, OLD_RT, NEW_AT, NEW_RT, SECRET):
        assert secret not in text_seen, secret
    assert "needs re-authorisation" in caplog.text  # the warning is there, without the token


def test_a_new_login_unblocks_a_long_lived_worker(router: respx.Router, db_store: DbTokenStore) -> None:
    clock = Clock()
    seed(db_store, clock)
    db_store.mark_needs_reauth("hubspot_main", "", "invalid_grant: revoked")
    me = router.get(f"{API}/me").respond(200)
    auth = oauth_auth(settings(), ctx(router, db_store), clock=clock)
    with client_for(auth, router) as client:
        with pytest.raises(AuthError, match="needs re-authorisation"):
            client.get("/me")
        # `crmhub auth login` stores a new token (what hub.auth.login does after the code exchange)
        db_store.save("hubspot_main", "", {"access_token": NEW_AT, "refresh_token": NEW_RT,
                                           "obtained_at": int(clock.now), "expires_at": int(clock.now) + 1800})
        assert client.get("/me").status_code == 200
    assert bearer_is(NEW_AT)(me.calls.last.request)


def test_invalid_grant_after_a_peer_rotated_adopts_the_peers_token(router: respx.Router) -> None:
    # Strict rotation, no refresh lock: a peer used the refresh token and stored its result while our
    # refresh was in flight, so the vendor says invalid_grant to us. That is no revocation: the
    # mark's compare-and-set fails, and the peer's token is used.
    clock, store = Clock(), MemoryTokenStore()
    seed(store, clock, expires_in=600)
    clock.now += 600
    peer = {"access_token": NEW_AT, "refresh_token": NEW_RT, "obtained_at": int(clock.now),
            "expires_at": int(clock.now) + 1800}

    def vendor(request: httpx.Request) -> httpx.Response:
        assert store.replace("hubspot_main", "", peer, expected_version=1) is not None  # the peer wins meanwhile
        return httpx.Response(400, json={"error": "invalid_grant", "error_description": "token was rotated"})

    router.post(TOKEN_URL).mock(side_effect=vendor)
    me = router.get(f"{API}/me").respond(200)
    auth = oauth_auth(settings(), ctx(router, store), clock=clock)
    with client_for(auth, router) as client:
        assert client.get("/me").status_code == 200
    assert bearer_is(NEW_AT)(me.calls.last.request) and auth.stats.adopted == 1
    final = store.load("hubspot_main", "")
    assert final is not None and not final.needs_reauth and final.version == 2
