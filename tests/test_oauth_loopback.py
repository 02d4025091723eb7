"""OAuth against a real loopback authorization server (`hub.auth.sandbox`): the login flow (loopback
redirect, PKCE, state), two workers refreshing one token at once on SQLite and PostgreSQL, 401 →
refresh → retry, and a revoked grant showing in `crmhub status`."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from hub.auth.crypto import ENV_VAR, TokenCipher, new_key
from hub.auth.login import LoginError, login
from hub.auth.sandbox import AuthServer, AuthServerState
from hub.auth.store import DbTokenStore
from hub.sdk import AuthError, ConnectorContext, build_client
from hub.sdk.oauth import OAuth2Settings, OAuthError, TokenEndpoint, oauth_auth
from state.db import make_engine


@pytest.fixture
def server() -> Iterator[AuthServer]:
    with AuthServer(AuthServerState(expires_in=1800, rotate_refresh=True)) as s:
        yield s


@pytest.fixture
def cipher() -> TokenCipher:
    return TokenCipher([os.urandom(32)])


@pytest.fixture
def store(db_url: str, cipher: TokenCipher) -> Iterator[DbTokenStore]:
    engine = make_engine(db_url)
    yield DbTokenStore(engine, cipher)
    engine.dispose()


def oauth_settings(server: AuthServer, **kw: Any) -> OAuth2Settings:
    return OAuth2Settings.model_validate({
        "client_id": server.state.client_id, "client_secret": server.state.client_secret,
        "authorize_url": f"{server.url}/authorize", "token_url": f"{server.url}/token",
        "scopes": ["crm.objects.contacts.read", "oauth"], "redirect_uri": "http://127.0.0.1:0/callback", **kw})


def browser(then: Callable[[str], str] = lambda url: url) -> tuple[Callable[[str], None], list[str]]:
    """A stand-in for the person's browser: follows the authorize URL (and its redirect) for real."""
    opened: list[str] = []

    def open_url(url: str) -> None:
        opened.append(url)
        httpx.get(then(url), follow_redirects=True, timeout=10)

    return open_url, opened


def seed_expired(server: AuthServer, store: DbTokenStore, connector: str = "sf_main") -> dict[str, Any]:
    """A token the server issued, stored as if obtained an hour ago (so it is due for renewal)."""
    token = server.state.issue("user@example.com", "crm", with_refresh=True)
    now = int(server.state.clock())
    store.save(connector, "", {**token, "obtained_at": now - 3600, "expires_at": now - 1800})
    return token


# -- login -----------------------------------------------------------------------------------------

def test_login_through_the_loopback_redirect_with_pkce(server: AuthServer, store: DbTokenStore) -> None:
    open_url, opened = browser()
    announced: list[str] = []
    stored = login(oauth_settings(server), store, "hubspot_main", open_browser=open_url,
                   announce=announced.append, timeout_s=20)
    assert stored.version == 1 and server.state.grants["authorization_code"] == 1
    url = httpx.URL(opened[0])
    params = dict(url.params)
    assert params["code_challenge_method"] == "S256" and len(params["code_challenge"]) == 43
    assert len(params["state"]) >= 32 and params["scope"] == "crm.objects.contacts.read oauth"
    assert params["redirect_uri"].startswith("http://127.0.0.1:") and ":0/" not in params["redirect_uri"]
    assert opened[0] in announced[0]
    token = store.load("hubspot_main", "")
    assert token is not None and token.token["access_token"] in server.state.access
    assert token.token["expires_at"] == token.token["obtained_at"] + 1800
    # and the stored token works against the resource
    auth = oauth_auth(oauth_settings(server), ConnectorContext(name="hubspot_main", token_store=store))
    with build_client(base_url=server.url, auth=auth) as client:
        assert client.get("/api/me").json()["scope"] == "crm.objects.contacts.read oauth"


def test_the_server_checks_pkce_for_real(server: AuthServer) -> None:
    # a code obtained with one verifier cannot be redeemed with another
    s = oauth_settings(server, redirect_uri="http://127.0.0.1:8765/callback")
    r = httpx.get(f"{server.url}/authorize", params={
        "response_type": "code", "client_id": s.client_id, "redirect_uri": s.redirect_uri, "state": "x",
        "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM", "code_challenge_method": "S256"})
    code = httpx.URL(r.headers["location"]).params["code"]
    with build_client() as client, pytest.raises(OAuthError, match="PKCE"):
        TokenEndpoint(s, client).exchange_code(code, redirect_uri=s.redirect_uri, code_verifier="w" * 43)


def test_login_rejects_a_redirect_with_another_state(server: AuthServer, store: DbTokenStore) -> None:
    def forged(url: str) -> str:
        redirect = httpx.URL(url).params["redirect_uri"]
        return f"{redirect}?code=stolen-code&state=not-the-one-we-sent"

    open_url, _ = browser(forged)
    with pytest.raises(LoginError, match="state does not match"):
        login(oauth_settings(server), store, "hubspot_main", open_browser=open_url, announce=lambda _t: None,
              timeout_s=20)
    assert store.load("hubspot_main", "") is None and server.state.grants["authorization_code"] == 0


def test_login_reports_the_vendors_refusal(server: AuthServer, store: DbTokenStore) -> None:
    def denied(url: str) -> str:
        p = httpx.URL(url).params
        return f"{p['redirect_uri']}?error=access_denied&error_description=The+user+said+no&state={p['state']}"

    open_url, _ = browser(denied)
    with pytest.raises(LoginError, match="access_denied: The user said no"):
        login(oauth_settings(server), store, "hubspot_main", open_browser=open_url, announce=lambda _t: None,
              timeout_s=20)
    assert store.load("hubspot_main", "") is None


def test_login_ignores_stray_requests_and_times_out_cleanly(server: AuthServer, store: DbTokenStore) -> None:
    def stray_then_nothing(url: str) -> None:
        redirect = httpx.URL(httpx.URL(url).params["redirect_uri"])
        assert httpx.get(redirect.join("/favicon.ico")).status_code == 404

    with pytest.raises(LoginError, match="no redirect came back"):
        login(oauth_settings(server), store, "hubspot_main", open_browser=stray_then_nothing,
              announce=lambda _t: None, timeout_s=0.5)


def test_login_refuses_a_redirect_it_cannot_receive(server: AuthServer, store: DbTokenStore) -> None:
    with pytest.raises(LoginError, match="not a loopback"):
        login(oauth_settings(server, redirect_uri="https://crm.example.com/callback"), store, "hubspot_main",
              open_browser=None, announce=lambda _t: None)


# -- two workers, one token ------------------------------------------------------------------------

def _worker(server: AuthServer, db_url: str, cipher: TokenCipher, start: threading.Barrier,
            results: dict[str, Any], name: str, serialize: bool) -> None:
    engine = make_engine(db_url)
    try:
        store = DbTokenStore(engine, cipher, serialize_refresh=serialize)  # each worker its own engine
        auth = oauth_auth(oauth_settings(server), ConnectorContext(name="sf_main", token_store=store))
        with build_client(base_url=server.url, auth=auth) as client:
            start.wait(10)
            results[name] = (client.get("/api/me").status_code, auth.token["access_token"], auth.stats)
    except Exception as exc:  # reported by the test
        results[name] = exc
    finally:
        engine.dispose()


def _run_two(server: AuthServer, db_url: str, cipher: TokenCipher, serialize: bool) -> dict[str, Any]:
    results: dict[str, Any] = {}
    start = threading.Barrier(2)
    threads = [threading.Thread(target=_worker, args=(server, db_url, cipher, start, results, n, serialize))
               for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(isinstance(r, Exception) for r in results.values()), results
    return results


def test_two_workers_refreshing_at_once_make_one_refresh(server: AuthServer, store: DbTokenStore, db_url: str,
                                                          cipher: TokenCipher) -> None:
    # Salesforce-style strict rotation: a second refresh with the same refresh token would be invalid_grant.
    # The server holds the first refresh (waiting for a second that never comes), so the other worker
    # has surely read the stale token and is waiting for the refresh lock when the winner stores.
    server.state.hold_refreshes, server.state.hold_timeout = 2, 1.0
    seed_expired(server, store)
    results = _run_two(server, db_url, cipher, serialize=True)
    assert server.state.grants["refresh_token"] == 1
    assert {r[0] for r in results.values()} == {200}
    assert results["a"][1] == results["b"][1]
    assert sorted((r[2].renewals, r[2].adopted) for r in results.values()) == [(0, 1), (1, 0)]
    final = store.load("sf_main", "")
    assert final is not None and final.version == 2 and not final.needs_reauth
    assert final.token["access_token"] == results["a"][1]


def test_compare_and_set_loser_adopts_the_winners_token(db_url: str, cipher: TokenCipher) -> None:
    # Without the refresh lock both refresh for real (held until both are in flight; Microsoft-style
    # refresh tokens that stay valid); the version compare-and-set lets one store, the other re-reads.
    state = AuthServerState(expires_in=1800, rotate_refresh=False, hold_refreshes=2)
    engine = make_engine(db_url)
    with AuthServer(state) as server:
        store = DbTokenStore(engine, cipher)
        seed_expired(server, store)
        results = _run_two(server, db_url, cipher, serialize=False)
        assert state.grants["refresh_token"] == 2  # both refreshed once; the loser did not refresh again
        stats = [r[2] for r in results.values()]
        assert sorted((s.renewals, s.lost_races) for s in stats) == [(0, 1), (1, 0)]
        assert results["a"][1] == results["b"][1] and {r[0] for r in results.values()} == {200}
        final = store.load("sf_main", "")
        assert final is not None and final.version == 2 and final.token["access_token"] == results["a"][1]
    engine.dispose()


# -- 401 and revocation against the real server ----------------------------------------------------

def test_server_side_expiry_401_refresh_retry(server: AuthServer, store: DbTokenStore) -> None:
    token = server.state.issue("user@example.com", "crm", with_refresh=True)
    now = int(server.state.clock())
    store.save("sf_main", "", {**token, "obtained_at": now, "expires_at": now + 1800})
    auth = oauth_auth(oauth_settings(server), ConnectorContext(name="sf_main", token_store=store))
    with build_client(base_url=server.url, auth=auth) as client:
        assert client.get("/api/me").status_code == 200
        server.state.expire_access_tokens()  # the session ended early, as Salesforce's do
        assert client.get("/api/me").status_code == 200
    assert server.state.grants["refresh_token"] == 1 and auth.stats.retried_401 == 1
    stored = store.load("sf_main", "")
    assert stored is not None and stored.version == 2 and stored.token["refresh_token"] != token["refresh_token"]


def test_revoked_grant_shows_in_crmhub_status(server: AuthServer, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from hub.cli import app

    key = new_key()
    monkeypatch.setenv(ENV_VAR, key)
    db = f"sqlite:///{tmp_path / 'crmhub.db'}"
    cfg = tmp_path / "crmhub.yaml"
    cfg.write_text(f"database: {db}\nconnectors:\n  hubspot_main:\n    kind: hubspot\n"
                   "    auth: {token: pat-na1-private-app-token}\n")
    runner = CliRunner()
    env = {"COLUMNS": "300", ENV_VAR: key}
    assert runner.invoke(app, ["--config", str(cfg), "db", "upgrade"], env=env).exit_code == 0
    engine = make_engine(db)
    try:
        store = DbTokenStore(engine)  # the key from the environment, as the hub does
        token = seed_expired(server, store, connector="hubspot_main")
        server.state.revoke_refresh_tokens()
        auth = oauth_auth(oauth_settings(server), ConnectorContext(name="hubspot_main", token_store=store))
        with build_client(base_url=server.url, auth=auth) as client, pytest.raises(AuthError) as exc:
            client.get("/api/me")
        assert "invalid_grant" in str(exc.value) and token["refresh_token"] not in str(exc.value)
    finally:
        engine.dispose()
    shown = runner.invoke(app, ["--config", str(cfg), "status"], env=env)
    assert shown.exit_code == 0, shown.output
    flat = " ".join(shown.output.split())
    assert "hubspot_main: needs re-authorisation (invalid_grant: expired access/refresh token)" in flat
    assert "run `crmhub auth login hubspot_main`" in flat
    as_json = runner.invoke(app, ["--config", str(cfg), "status", "--json"], env=env)
    auth_doc = __import__("json").loads(as_json.output)["auth"]
    assert [(a["connector"], a["needs_reauth"]) for a in auth_doc] == [("hubspot_main", True)]
    listed = runner.invoke(app, ["--config", str(cfg), "auth", "status"], env=env)
    assert "needs re-authorisation" in listed.output and token["access_token"] not in listed.output
    # a connector on a private-app token has nothing to log in to
    refused = runner.invoke(app, ["--config", str(cfg), "auth", "login", "hubspot_main", "--no-browser"], env=env)
    assert refused.exit_code == 2 and "no `oauth` block" in " ".join(refused.output.split())
    # logout forgets the token; status is clean again
    assert "1 token(s) deleted" in runner.invoke(app, ["--config", str(cfg), "auth", "logout", "hubspot_main"],
                                                 env=env).output
    assert "needs re-authorisation" not in runner.invoke(app, ["--config", str(cfg), "status"], env=env).output
    made = runner.invoke(app, ["auth", "keygen"]).output.strip()
    assert len(TokenCipher.from_env({ENV_VAR: made})._keys) == 1
