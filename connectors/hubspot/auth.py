"""How the HubSpot connector authenticates: a private-app token, or OAuth.

`auth: {token: ...}` sends a private-app token as a Bearer token. `oauth: {...}`
(hub.sdk.oauth.OAuth2Settings, after `crmhub auth login <instance>`) sends an OAuth access
token that is refreshed before it expires and on a 401, its rotation stored by the hub.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING, Any

import httpx

from hub.sdk.oauth import oauth_auth

if TYPE_CHECKING:
    from connectors.hubspot.connector import HubSpotConfig

__all__ = ["BearerToken", "build_auth"]


class BearerToken(httpx.Auth):
    """`Authorization: Bearer <token>` on every request (HubSpot private apps)."""

    def __init__(self, token: str) -> None:
        self._header = f"Bearer {token}"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = self._header
        yield request


def build_auth(cfg: HubSpotConfig, context: Any) -> tuple[httpx.Auth, list[str]]:
    """The httpx auth for this instance and the secrets to redact from logs and errors."""
    if cfg.oauth is not None:
        return oauth_auth(cfg.oauth, context), cfg.oauth.secrets()
    assert cfg.auth is not None  # the config requires one of the two
    token = cfg.auth.token.get_secret_value()
    return BearerToken(token), [token]
