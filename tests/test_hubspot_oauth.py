"""HubSpot through OAuth (hub.sdk.oauth): an expired access token is refreshed on the 401 and the
request sent again; a refused refresh token marks the instance for re-authorisation."""

from __future__ import annotations

import httpx
import pytest
import respx

from hub.config import parse_config
from hub.registry import ConnectorFactory
from hub.sdk.errors import AuthError
from hub.sdk.oauth import MemoryTokenStore

API = "https://api.hubapi.com"
TOKEN_URL = "https://api.hubapi.com/oauth/v1/token"
OAUTH = {"client_id": "cid", "client_secret": "csecret-0000", "token_url": TOKEN_URL,
         "authorize_url": "https://app.hubspot.com/oauth/authorize", "scopes": ["crm.objects.contacts.read"]}


def _connector(store: MemoryTokenStore) -> object:
    cfg = parse_config({"connectors": {"hs": {"kind": "hubspot", "oauth": OAUTH, "streams": ["contacts"]}}})
    factory = ConnectorFactory(cfg, sleep=lambda _s: None, token_store=store)
    return factory.build("hs")


@respx.mock
def test_a_401_refreshes_the_token_and_the_read_goes_on() -> None:
    store = MemoryTokenStore()
    store.save("hs", "", {"access_token": "old-access", "refresh_token": "refresh-1", "token_type": "bearer"})
    seen: list[str] = []

    def contacts(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["Authorization"])
        if request.headers["Authorization"] == "Bearer old-access":
            return httpx.Response(401, json={"status": "error", "category": "EXPIRED_AUTHENTICATION"})
        return httpx.Response(200, json={"results": [{"id": "1", "properties": {"email": "a@x.io"},
                                                      "updatedAt": "2026-11-01T00:00:00Z", "archived": False}]})

    respx.get(url__startswith=f"{API}/crm/v3/objects/contacts").mock(side_effect=contacts)
    respx.post(f"{API}/crm/v3/objects/contacts/search").mock(
        return_value=httpx.Response(200, json={"total": 0, "results": []}))
    respx.post(TOKEN_URL).mock(return_value=httpx.Response(200, json={
        "access_token": "new-access", "refresh_token": "refresh-2", "expires_in": 1800, "token_type": "bearer"}))
    conn = _connector(store)
    pages = list(conn.read("contacts", None))  # type: ignore[attr-defined]
    assert [r.external_id for p in pages for r in p.records] == ["1"]
    assert seen[:2] == ["Bearer old-access", "Bearer new-access"]
    stored = store.load("hs", "")
    assert stored is not None and stored.token["refresh_token"] == "refresh-2"  # the rotation is kept


@respx.mock
def test_a_refused_refresh_token_needs_a_new_login() -> None:
    store = MemoryTokenStore()
    store.save("hs", "", {"access_token": "old-access", "refresh_token": "revoked", "token_type": "bearer"})
    respx.route(url__startswith=f"{API}/crm/v3/objects/contacts").mock(return_value=httpx.Response(401, json={}))
    respx.post(TOKEN_URL).mock(return_value=httpx.Response(400, json={
        "status": "BAD_REFRESH_TOKEN", "message": "missing or unknown refresh token"}))
    conn = _connector(store)
    with pytest.raises(AuthError, match="crmhub auth login hs"):
        list(conn.read("contacts", None))  # type: ignore[attr-defined]
    stored = store.load("hs", "")
    assert stored is not None and stored.needs_reauth
