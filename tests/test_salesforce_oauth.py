"""Salesforce through OAuth (hub.sdk.oauth): the org's host comes from the token response, a token
without `expires_in` is used until a 401, then refreshed and the request sent again. The sandbox on
loopback is the org; the token endpoint is Salesforce's documented response shape (respx)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import respx

from connectors.salesforce.sandbox import SandboxServer, SandboxStore
from hub.config import parse_config
from hub.registry import ConnectorFactory
from hub.sdk.errors import AuthError
from hub.sdk.oauth import MemoryTokenStore

TOKEN = "00Dxx0000001gPL!AR8AQJXg5oj8jXSgxJfA0lBog.39AsX.LVpxezPwuX5VAIrrbbHMuol7GQxnMeYMN7cj8EoWr78nt1u44zU31IbYNNJguseu"
TOKEN_URL = "https://login.salesforce.com/services/oauth2/token"
OAUTH = {"client_id": "3MVG9-consumer-key", "client_secret": "consumer-secret-0000", "token_url": TOKEN_URL,
         "authorize_url": "https://login.salesforce.com/services/oauth2/authorize", "scopes": ["api", "refresh_token"]}


@pytest.fixture
def org() -> Iterator[SandboxServer]:
    with SandboxServer(SandboxStore(accounts=3, contacts=20), token=TOKEN) as server:
        yield server


def _connector(store: MemoryTokenStore) -> object:
    cfg = parse_config({"connectors": {"sf": {"kind": "salesforce", "oauth": OAUTH}}})
    return ConnectorFactory(cfg, sleep=lambda _s: None, token_store=store).build("sf")


def test_an_expired_session_is_refreshed_and_the_read_goes_on(org: SandboxServer) -> None:
    store = MemoryTokenStore()
    store.save("sf", "", {"access_token": "expired-session", "refresh_token": "5Aep861-refresh",
                          "instance_url": org.url, "token_type": "Bearer"})
    with respx.mock(assert_all_called=False) as mock:
        mock.route(url__startswith=org.url).pass_through()
        # Salesforce's refresh response: no expires_in, no new refresh token, the instance again
        refresh = mock.post(TOKEN_URL).mock(return_value=httpx.Response(200, json={
            "access_token": TOKEN, "instance_url": org.url, "id": "https://login.salesforce.com/id/00D/005",
            "token_type": "Bearer", "issued_at": "1763900000000", "signature": "sig="}))
        conn = _connector(store)
        ids = [r.external_id for p in conn.read("Contact", None) for r in p.records]  # type: ignore[attr-defined]
    assert len(ids) == 20 and refresh.call_count == 1
    kept = store.load("sf", "")
    assert kept is not None and kept.token["refresh_token"] == "5Aep861-refresh"  # kept when none comes back


def test_without_a_login_the_error_says_what_to_run(org: SandboxServer) -> None:
    store = MemoryTokenStore()
    conn = _connector(store)
    with pytest.raises(AuthError, match="crmhub auth login sf"):
        list(conn.read("Contact", None))  # type: ignore[attr-defined]
