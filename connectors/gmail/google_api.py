"""What the Gmail and Calendar connectors share: Google's error bodies, and bearer auth per account.

Google answers every error with `{"error": {"code", "message", "errors": [{"domain", "reason",
"message"}], "status"}}`. Rate limits come as 429, or as 403 with reason `rateLimitExceeded` /
`userRateLimitExceeded` (no rate-limit headers), which the SDK would take for a credentials
problem; `check` sorts them out.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import httpx
import orjson
from pydantic import SecretStr

from hub.sdk import ConnectorContext, CursorExpired, FatalError, RateLimited, Redactor, raise_for_status
from hub.sdk.oauth import OAuth2Settings, oauth_auth

__all__ = ["RATE_LIMIT_REASONS", "BearerToken", "account_auth", "account_secrets", "check", "error_reasons",
           "json_object"]

#: 403 reasons that mean "slow down", not "not allowed" (Gmail and Calendar usage-limit docs)
RATE_LIMIT_REASONS = frozenset({"rateLimitExceeded", "userRateLimitExceeded"})


class BearerToken(httpx.Auth):
    """A fixed OAuth access token for one Google account (a mailbox, a calendar)."""

    def __init__(self, token: str) -> None:
        self._header = f"Bearer {token}"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = self._header
        yield request


def account_auth(address: str, access_token: SecretStr | None, oauth: OAuth2Settings | None,
                 context: ConnectorContext) -> httpx.Auth:
    """The httpx auth for one Google account (a mailbox, a calendar): its fixed access token when
    the config gives one, else the instance's OAuth client (`hub.sdk.oauth`) with the account as
    subject: its own authorization-code grant (`crmhub auth login <instance> --subject <address>`),
    or a service account with domain-wide delegation (JWT bearer, `sub` = the address)."""
    if access_token is not None:
        return BearerToken(access_token.get_secret_value())
    if oauth is None:
        raise ValueError(f"{address}: no access_token and no oauth client to get one")
    return oauth_auth(oauth, context, subject=address)


def account_secrets(access_tokens: list[SecretStr | None], oauth: OAuth2Settings | None) -> list[str]:
    """What must never reach a log or an error: the fixed tokens and the OAuth client's secrets."""
    return [t.get_secret_value() for t in access_tokens if t is not None] + (oauth.secrets() if oauth else [])


def error_reasons(resp: httpx.Response) -> list[str]:
    """The `errors[].reason` values of a Google error body ([] when the body is not one)."""
    try:
        body = orjson.loads(resp.content)
    except orjson.JSONDecodeError:
        return []
    err = body.get("error") if isinstance(body, dict) else None
    if not isinstance(err, dict):
        return []
    return [str(e.get("reason")) for e in err.get("errors") or [] if isinstance(e, dict) and e.get("reason")]


def check(resp: httpx.Response, redactor: Redactor, *, expired_status: int | None = None,
          what: str = "cursor") -> httpx.Response:
    """A 2xx response, or the error type carrying the recovery (CursorExpired on `expired_status`)."""
    if resp.status_code < 300:
        return resp
    resp.read()
    if expired_status is not None and resp.status_code == expired_status:
        reasons = ", ".join(error_reasons(resp)) or "no reason given"
        raise CursorExpired(f"Google rejected the stored {what} ({resp.status_code}: {reasons})")
    if resp.status_code == 403 and RATE_LIMIT_REASONS & set(error_reasons(resp)):
        try:
            raise_for_status(resp, redactor)
        except FatalError as exc:
            raise RateLimited(str(exc), status=403) from None
    raise_for_status(resp, redactor)
    return resp


def json_object(resp: httpx.Response, redactor: Redactor, vendor: str) -> dict[str, Any]:
    try:
        data = orjson.loads(resp.content)
    except orjson.JSONDecodeError:
        text = redactor.redact(resp.text[:65536])[:200]
        raise FatalError(f"{vendor} answered {resp.status_code} with a body that is not JSON: {text!r}") from None
    if not isinstance(data, dict):
        raise FatalError(f"{vendor} answered with JSON that is not an object: {redactor.redact(str(data)[:200])}")
    return data
