"""OAuth 2.0 for connectors: an `httpx.Auth` that keeps a stored token fresh.

    from hub.sdk import ConnectorConfig, build_client
    from hub.sdk.oauth import OAuth2Settings, oauth_auth

    class SalesforceConfig(ConnectorConfig):
        oauth: OAuth2Settings | None = None          # `crmhub auth login <instance>` finds it here

    auth = oauth_auth(cfg.oauth, self.context)       # subject="": the instance's own token
    client = build_client(base_url=auth.token["instance_url"], auth=auth,
                          transport=self.context.transport, sleep=self.context.sleep)

Grants (`OAuth2Settings.grant`):

- `authorization_code` (HubSpot, Salesforce, Google/Microsoft delegated): a person logs in once
  with `crmhub auth login <instance>` (loopback redirect, PKCE, state check); afterwards the
  refresh token is exchanged for access tokens, and a rotated refresh token is stored at once.
- `client_credentials` (Microsoft Graph application permissions): no person, no refresh token;
  a new token is fetched when the old one expires.
- `jwt_bearer` (RFC 7523; Google service accounts with domain-wide delegation): an assertion
  signed with the service account's key, `sub` = the mailbox (`oauth_auth(..., subject=mailbox)`).

On every request the auth sets `Authorization: Bearer <access token>`, first renewing the token
when it expires within `refresh_leeway_seconds` (a token without `expires_in`, as Salesforce
issues, is used until the vendor answers 401). A 401 renews the token once and sends the request
again; a second 401 is returned, and `raise_for_status` turns it into an `AuthError`.

Tokens live in a `TokenStore` (the hub lends one as `context.token_store`: encrypted rows in
`hub.oauth_tokens`). Renewal is compare-and-set on the row's version: a worker renews from the
version it read and stores the result only if the row is still at that version; the loser of a
race adopts the winner's token instead of renewing again. A store may also serialise renewals
(`refresh_lock`; PostgreSQL takes an advisory lock), so with rotating refresh tokens the second
worker never presents a refresh token the first has just used up.

Errors (all `hub.sdk.errors` types; messages never hold a token or secret):

    AuthError
    └── OAuthError          the token endpoint said no (`error`, `description`); `needs_reauth`
                            for invalid_grant / invalid_client / unauthorized_client (HubSpot:
                            BAD_REFRESH_TOKEN): the token is marked in the store, `crmhub status`
                            shows it, and later requests fail fast until a new login
    RetriableError          token endpoint 429/5xx or unreachable, or a peer's renewal took too long
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Generator, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from hub.sdk.errors import AuthError, FatalError, RetriableError
from hub.sdk.http import build_client, raise_for_status
from hub.sdk.redact import Redactor

__all__ = [
    "REAUTH_ERRORS",
    "MemoryTokenStore",
    "OAuth2Auth",
    "OAuth2Settings",
    "OAuthError",
    "StoredToken",
    "TokenEndpoint",
    "TokenStore",
    "authorization_url",
    "find_oauth_settings",
    "new_code_verifier",
    "oauth_auth",
]

log = logging.getLogger("crmhub.oauth")

#: token-endpoint errors that no retry can cure: a person (or a config fix) is needed
REAUTH_ERRORS = frozenset({"invalid_grant", "invalid_client", "unauthorized_client", "BAD_REFRESH_TOKEN"})
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"  # RFC 7523 §2.1 (authlib's JWTBearerGrant.GRANT_TYPE)
Grant = Literal["authorization_code", "client_credentials", "jwt_bearer"]


class OAuth2Settings(BaseModel):
    """One OAuth client, as written in a connector's config block (secrets by `${ENV}` reference)."""

    model_config = ConfigDict(extra="forbid")

    grant: Grant = "authorization_code"
    #: the OAuth client id; for `jwt_bearer`, the service account's e-mail (the assertion's issuer)
    client_id: str
    client_secret: SecretStr | None = None
    authorize_url: str | None = None
    token_url: str
    scopes: list[str] = Field(default_factory=list)
    #: where the vendor sends the browser back; must be registered with the vendor. Loopback only;
    #: port 0 takes a free port (for vendors that accept any loopback port, RFC 8252 §7.3)
    redirect_uri: str = "http://127.0.0.1:8765/callback"
    #: extra authorize parameters: Google `access_type: offline` + `prompt: consent`, HubSpot `optional_scope`
    authorize_params: dict[str, str] = Field(default_factory=dict)
    #: extra parameters on every token request (e.g. a `resource`)
    token_params: dict[str, str] = Field(default_factory=dict)
    client_auth: Literal["client_secret_post", "client_secret_basic"] = "client_secret_post"
    pkce: bool = True
    #: `jwt_bearer`: the PEM private key, its id (the `kid` header), the assertion's audience
    #: (default: `token_url`) and the default subject (the delegated user)
    private_key: SecretStr | None = None
    private_key_id: str | None = None
    audience: str | None = None
    subject: str | None = None
    #: renew this long before `expires_at` (at most half the token's lifetime)
    refresh_leeway_seconds: int = Field(300, ge=0)
    #: lifetime assumed when the vendor sends no `expires_in` (None: until a 401)
    default_expires_in: int | None = Field(None, gt=0)
    timeout_seconds: float = Field(30.0, gt=0)
    #: how long a worker waits for a peer's renewal of the same token
    lock_timeout_seconds: float = Field(60.0, gt=0)

    @model_validator(mode="after")
    def _complete_for_grant(self) -> OAuth2Settings:
        missing = []
        if self.grant == "authorization_code" and not self.authorize_url:
            missing.append("authorize_url")
        if self.grant == "client_credentials" and self.client_secret is None:
            missing.append("client_secret")
        if self.grant == "jwt_bearer" and self.private_key is None:
            missing.append("private_key")
        if missing:
            raise ValueError(f"grant {self.grant!r} needs {', '.join(missing)}")
        return self

    @classmethod
    def google_service_account(cls, key: dict[str, Any] | str | Path, scopes: list[str],
                               subject: str | None = None, **overrides: Any) -> OAuth2Settings:
        """Settings for a Google service-account key (the JSON file or its parsed content)."""
        info = key if isinstance(key, dict) else json.loads(Path(key).read_text())
        if info.get("type") != "service_account":
            raise ValueError("not a Google service-account key (its `type` is not service_account)")
        values: dict[str, Any] = {
            "grant": "jwt_bearer", "client_id": info["client_email"], "private_key": info["private_key"],
            "private_key_id": info.get("private_key_id"),
            "token_url": info.get("token_uri", "https://oauth2.googleapis.com/token"),
            "scopes": scopes, "subject": subject,
        }
        return cls.model_validate({**values, **overrides})

    def secrets(self) -> list[str]:
        return [s.get_secret_value() for s in (self.client_secret, self.private_key) if s is not None]


def find_oauth_settings(config: Any) -> OAuth2Settings | None:
    """The OAuth client of a connector config: its `oauth` field, or an `auth` that is OAuth2Settings."""
    for name in ("oauth", "auth"):
        value = getattr(config, name, None)
        if isinstance(value, OAuth2Settings):
            return value
    return None


# -- the store ------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class StoredToken:
    """A token as stored: the vendor's token dict (plus `expires_at`, `obtained_at`) and its version."""

    token: dict[str, Any]
    version: int
    needs_reauth: bool = False
    reauth_reason: str | None = None


@runtime_checkable
class TokenStore(Protocol):
    """Where tokens persist, keyed by (connector instance, subject). `hub.auth.DbTokenStore` is the
    hub's (encrypted, in the database); `MemoryTokenStore` is one process's."""

    def load(self, connector: str, subject: str) -> StoredToken | None: ...

    def save(self, connector: str, subject: str, token: dict[str, Any]) -> StoredToken:
        """Store unconditionally (a login); clears a needs-reauth mark."""
        ...

    def replace(self, connector: str, subject: str, token: dict[str, Any], *,
                expected_version: int) -> StoredToken | None:
        """Compare-and-set: store only if still at `expected_version` (0: nothing stored); None if not."""
        ...

    def mark_needs_reauth(self, connector: str, subject: str, reason: str, *,
                          expected_version: int | None = None) -> bool: ...

    def refresh_lock(self, connector: str, subject: str, timeout_s: float) -> AbstractContextManager[None]:
        """Held while renewing; raises TimeoutError when a peer holds it longer than `timeout_s`."""
        ...


class MemoryTokenStore:
    """A `TokenStore` in this process's memory (tests; app-only grants without a hub)."""

    def __init__(self) -> None:
        self._rows: dict[tuple[str, str], StoredToken] = {}
        self._guard = threading.Lock()
        self._locks: dict[tuple[str, str], threading.Lock] = {}

    def load(self, connector: str, subject: str) -> StoredToken | None:
        with self._guard:
            return self._rows.get((connector, subject))

    def save(self, connector: str, subject: str, token: dict[str, Any]) -> StoredToken:
        with self._guard:
            old = self._rows.get((connector, subject))
            row = self._rows[(connector, subject)] = StoredToken(dict(token), (old.version if old else 0) + 1)
            return row

    def replace(self, connector: str, subject: str, token: dict[str, Any], *,
                expected_version: int) -> StoredToken | None:
        with self._guard:
            old = self._rows.get((connector, subject))
            if (old.version if old else 0) != expected_version:
                return None
            row = self._rows[(connector, subject)] = StoredToken(dict(token), expected_version + 1)
            return row

    def mark_needs_reauth(self, connector: str, subject: str, reason: str, *,
                          expected_version: int | None = None) -> bool:
        with self._guard:
            old = self._rows.get((connector, subject)) or StoredToken({}, 0)
            if expected_version is not None and old.version != expected_version:
                return False
            self._rows[(connector, subject)] = StoredToken(old.token, old.version, True, reason)
            return True

    @contextmanager
    def refresh_lock(self, connector: str, subject: str, timeout_s: float) -> Iterator[None]:
        with self._guard:
            lock = self._locks.setdefault((connector, subject), threading.Lock())
        if not lock.acquire(timeout=timeout_s):
            raise TimeoutError(f"another thread has been renewing the token of {connector} for {timeout_s:.0f}s")
        try:
            yield
        finally:
            lock.release()


# -- the token endpoint ---------------------------------------------------------------------------

class OAuthError(AuthError):
    """The token endpoint refused a grant (RFC 6749 §5.2 `error`, or HubSpot's `status`)."""

    def __init__(self, message: str, *, error: str, description: str = "", status: int | None = None):
        super().__init__(message)
        self.error = error
        self.description = description
        self.status = status

    @property
    def needs_reauth(self) -> bool:
        return self.error in REAUTH_ERRORS


def new_code_verifier() -> str:
    """A PKCE code verifier (RFC 7636 §4.1: 43-128 unreserved characters)."""
    from authlib.common.security import generate_token

    return str(generate_token(64))


def authorization_url(settings: OAuth2Settings, *, redirect_uri: str, state: str,
                      code_verifier: str | None) -> str:
    """The URL a person opens to grant access (authorization code flow, with S256 PKCE)."""
    from authlib.oauth2.rfc6749.parameters import prepare_grant_uri
    from authlib.oauth2.rfc7636 import create_s256_code_challenge

    if not settings.authorize_url:
        raise ValueError("these OAuth settings have no authorize_url")
    params: dict[str, Any] = dict(settings.authorize_params)
    if code_verifier:
        params.update(code_challenge=create_s256_code_challenge(code_verifier), code_challenge_method="S256")
    scope = " ".join(settings.scopes) or None
    return str(prepare_grant_uri(settings.authorize_url, settings.client_id, "code", redirect_uri=redirect_uri,
                                 scope=scope, state=state, **params))


class TokenEndpoint:
    """The grants, spoken to the vendor's token URL through the SDK's HTTP client.

    Returns the vendor's token dict normalised: `expires_at` (epoch seconds) from `expires_in`,
    `obtained_at`, and the previous refresh token kept when a refresh returns none.
    """

    def __init__(self, settings: OAuth2Settings, client: httpx.Client, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.client = client
        self.clock = clock
        self.redactor = Redactor(settings.secrets())

    def exchange_code(self, code: str, *, redirect_uri: str, code_verifier: str | None) -> dict[str, Any]:
        params = {"code": code, "redirect_uri": redirect_uri}
        if code_verifier:
            params["code_verifier"] = code_verifier
        return self._grant("authorization_code", params)

    def refresh(self, old: dict[str, Any]) -> dict[str, Any]:
        refresh_token = old.get("refresh_token")
        if not refresh_token:
            raise OAuthError("no refresh token is stored (ask for offline access / the refresh_token scope "
                             "and log in again)", error="invalid_grant", description="no refresh token")
        return self._grant("refresh_token", {"refresh_token": refresh_token}, old)

    def client_credentials(self) -> dict[str, Any]:
        scope = " ".join(self.settings.scopes) or None
        return self._grant("client_credentials", {"scope": scope} if scope else {})

    def jwt_bearer(self, subject: str | None) -> dict[str, Any]:
        from authlib.oauth2.rfc7523 import JWTBearerGrant
        from joserfc.jwk import RSAKey

        s = self.settings
        assert s.private_key is not None  # the settings validator made sure
        now = int(self.clock())
        claims = {"scope": " ".join(s.scopes)} if s.scopes else {}
        header = {"alg": "RS256", **({"kid": s.private_key_id} if s.private_key_id else {})}
        try:  # a joserfc key object: authlib deprecates passing PEM text
            key = RSAKey.import_key(s.private_key.get_secret_value())
        except (ValueError, TypeError):
            raise FatalError("oauth.private_key is not an RSA private key in PEM form (the service-account "
                             "key file's `private_key`)") from None
        assertion = JWTBearerGrant.sign(key, issuer=s.client_id,
                                        audience=s.audience or s.token_url, subject=subject or None,
                                        issued_at=now, expires_at=now + 3600, claims=claims, header=header)
        signed = assertion.decode() if isinstance(assertion, bytes) else str(assertion)
        self.redactor.add(signed)
        # RFC 7523 §2.1: the assertion authenticates; no client secret is sent
        return self._grant(JWT_BEARER, {"assertion": signed}, client_auth=False)

    # -- one request -----------------------------------------------------------------------------

    def _grant(self, grant_type: str, params: dict[str, Any], old: dict[str, Any] | None = None, *,
               client_auth: bool = True) -> dict[str, Any]:
        # authlib (with cryptography, ~11 MB) loads on a token request, not with every connector
        from authlib.oauth2.rfc6749.parameters import prepare_token_request

        s = self.settings
        auth: httpx.Auth | None = None
        fields = {**s.token_params, **params}
        secret = s.client_secret.get_secret_value() if s.client_secret is not None else None
        if client_auth and s.client_auth == "client_secret_basic" and secret is not None:
            auth = httpx.BasicAuth(s.client_id, secret)
        elif client_auth:
            fields["client_id"] = s.client_id
            if secret is not None:
                fields["client_secret"] = secret
        body = prepare_token_request(grant_type, "", **fields)
        response = self.client.post(s.token_url, content=body.encode(), auth=auth or httpx.USE_CLIENT_DEFAULT,
                                    headers={"Content-Type": "application/x-www-form-urlencoded",
                                             "Accept": "application/json"})
        return self._normalise(self._parse(grant_type, response), old)

    def _parse(self, grant_type: str, response: httpx.Response) -> dict[str, Any]:
        status = response.status_code
        try:
            data = response.json()
        except ValueError:
            data = None
        if isinstance(data, dict):
            for key in ("access_token", "refresh_token", "id_token"):
                value = data.get(key)
                if isinstance(value, str):
                    self.redactor.add(value)
        if 200 <= status < 300 and isinstance(data, dict) and data.get("access_token"):
            return data
        if isinstance(data, dict) and status < 500 and status != 429:
            # RFC 6749 §5.2 says `error`; HubSpot's v1 endpoint says `status` (BAD_REFRESH_TOKEN) + `message`
            error = data.get("error") or data.get("status")
            if isinstance(error, str) and error:
                description = self.redactor.redact(str(data.get("error_description") or data.get("message") or ""))
                raise OAuthError(
                    f"{_where(self.settings)} refused the {grant_type} grant ({status}): {error}"
                    + (f": {description}" if description else ""),
                    error=error, description=description, status=status)
        if 200 <= status < 300:
            raise FatalError(f"{_where(self.settings)} answered {status} without an access_token")
        raise_for_status(response, self.redactor)
        raise FatalError(f"{_where(self.settings)} answered {status}")  # 3xx: not a token response

    def _normalise(self, data: dict[str, Any], old: dict[str, Any] | None) -> dict[str, Any]:
        token = dict(data)
        now = int(self.clock())
        token["obtained_at"] = now
        token.pop("expires_at", None)
        try:
            expires_in: int | None = int(token["expires_in"])
        except (KeyError, TypeError, ValueError):
            expires_in = self.settings.default_expires_in
        if expires_in is not None:
            token["expires_at"] = now + expires_in
        if old and old.get("refresh_token") and not token.get("refresh_token"):
            token["refresh_token"] = old["refresh_token"]  # no rotation this time: the old one stays valid
        for key in ("instance_url",):  # Salesforce sends it on the code exchange; keep it across refreshes
            if old and key in old and key not in token:
                token[key] = old[key]
        return token


def _where(settings: OAuth2Settings) -> str:
    return f"token endpoint {settings.token_url}"


# -- the auth -------------------------------------------------------------------------------------

@dataclass
class _Stats:
    renewals: int = 0  # tokens this auth obtained from the vendor and stored
    adopted: int = 0  # newer tokens a peer had stored, taken instead of renewing
    lost_races: int = 0  # renewals whose compare-and-set lost (the winner's token was adopted)
    retried_401: int = 0


class OAuth2Auth(httpx.Auth):
    """Bearer auth over a stored token: renews ahead of expiry and once on 401 (see the module docstring)."""

    requires_request_body = True  # the body is sent again after a 401

    def __init__(self, settings: OAuth2Settings, connector: str, store: TokenStore, endpoint: TokenEndpoint, *,
                 subject: str = "", clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.connector = connector
        self.subject = subject
        self.store = store
        self.endpoint = endpoint
        self.clock = clock
        self.redactor = endpoint.redactor
        self.stats = _Stats()
        self._stored: StoredToken | None = None
        self._lock = threading.RLock()

    @property
    def token(self) -> dict[str, Any]:
        """The current token dict (renewed first if due): `access_token`, `instance_url` (Salesforce) ..."""
        return dict(self._current()[0])

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        token, used = self._current()
        request.headers["Authorization"] = f"Bearer {token['access_token']}"
        response = yield request
        if response.status_code != 401:
            return
        # HubSpot warns a 401 is not always an expired token, so renew once, never in a loop.
        self.stats.retried_401 += 1
        token = self._renew(used, reason="401")
        request.headers["Authorization"] = f"Bearer {token['access_token']}"
        yield request

    # -- state -----------------------------------------------------------------------------------

    def _who(self) -> str:
        return f"{self.connector}" + (f" ({self.subject})" if self.subject else "")

    def _login_hint(self) -> str:
        if self.settings.grant == "authorization_code":
            return f"run `crmhub auth login {self.connector}" + (f" --subject {self.subject}`" if self.subject else "`")
        return "check the client credentials / service-account key in the config"

    def _expired(self, token: dict[str, Any]) -> bool:
        expires_at = token.get("expires_at")
        if not isinstance(expires_at, int | float):
            return False  # no expires_in (Salesforce): valid until the vendor says 401
        lifetime = expires_at - float(token.get("obtained_at", expires_at))
        leeway = min(float(self.settings.refresh_leeway_seconds), max(0.0, lifetime / 2))
        return expires_at - leeway <= self.clock()

    def _usable(self, stored: StoredToken | None) -> bool:
        return bool(stored and stored.token.get("access_token") and not stored.needs_reauth
                    and not self._expired(stored.token))

    def _blocked(self, stored: StoredToken | None) -> bool:
        # A person must act for an authorization-code token; app-only grants try again (the
        # config may have been fixed) and a success clears the mark.
        return bool(stored and stored.needs_reauth and self.settings.grant == "authorization_code")

    def _reauth_error(self, reason: str | None) -> AuthError:
        return AuthError(f"{self._who()} needs re-authorisation ({reason or 'marked in the token store'}): "
                         f"{self._login_hint()}")

    def _current(self) -> tuple[dict[str, Any], int]:
        with self._lock:
            stored = self._stored
            if stored is None:
                stored = self._stored = self.store.load(self.connector, self.subject)
            if self._blocked(stored):
                stored = self._stored = self.store.load(self.connector, self.subject)  # logged in again since?
                if self._blocked(stored):
                    raise self._reauth_error(stored.reauth_reason if stored else None)
            if stored is None or not stored.token.get("access_token"):
                if self.settings.grant == "authorization_code":
                    raise AuthError(f"no OAuth token is stored for {self._who()}: {self._login_hint()}")
                self._renew(stored.version if stored else 0, reason="no token yet")
            elif stored.needs_reauth or self._expired(stored.token):
                self._renew(stored.version, reason="expired")
            assert self._stored is not None
            return self._stored.token, self._stored.version

    def _adopt(self, stored: StoredToken) -> dict[str, Any]:
        for key in ("access_token", "refresh_token"):
            value = stored.token.get(key)
            if isinstance(value, str):
                self.redactor.add(value)
        self._stored = stored
        return stored.token

    def _renew(self, stale_version: int, *, reason: str) -> dict[str, Any]:
        """Replace the token at `stale_version`: adopt a newer stored one, or obtain one and
        compare-and-set it. Serialised by the store's refresh lock where it has one."""
        with self._lock:
            try:
                with self.store.refresh_lock(self.connector, self.subject, self.settings.lock_timeout_seconds):
                    return self._renew_locked(stale_version, reason)
            except TimeoutError as exc:
                raise RetriableError(f"{self._who()}: {exc}") from None

    def _renew_locked(self, stale_version: int, reason: str) -> dict[str, Any]:
        latest = self.store.load(self.connector, self.subject)
        if latest is not None and latest.version != stale_version and self._usable(latest):
            self.stats.adopted += 1
            return self._adopt(latest)  # a peer renewed it while we waited: no second renewal
        if self._blocked(latest):
            raise self._reauth_error(latest.reauth_reason if latest else None)
        base_version = latest.version if latest else 0
        old = latest.token if latest else {}
        try:
            fresh = self._obtain(old)
        except OAuthError as exc:
            if not exc.needs_reauth:
                raise
            why = self.redactor.redact(f"{exc.error}: {exc.description}" if exc.description else exc.error)
            if not self.store.mark_needs_reauth(self.connector, self.subject, why, expected_version=base_version):
                winner = self.store.load(self.connector, self.subject)
                if self._usable(winner):  # a peer stored a token meanwhile: ours was a stale grant
                    assert winner is not None
                    self.stats.adopted += 1
                    return self._adopt(winner)
            log.warning("OAuth token of %s needs re-authorisation: %s", self._who(), why)
            raise OAuthError(f"{exc} - {self._who()} needs re-authorisation: {self._login_hint()}",
                             error=exc.error, description=exc.description, status=exc.status) from None
        saved = self.store.replace(self.connector, self.subject, fresh, expected_version=base_version)
        if saved is None:
            # Lost the compare-and-set: a peer (a worker without our lock, or a login) stored first.
            self.stats.lost_races += 1
            winner = self.store.load(self.connector, self.subject)
            if winner is None or not winner.token.get("access_token") or self._blocked(winner):
                raise self._reauth_error(winner.reauth_reason if winner else "token deleted during renewal")
            log.info("OAuth token of %s: a peer renewed it first; using theirs", self._who())
            return self._adopt(winner)
        self.stats.renewals += 1
        log.info("OAuth token of %s renewed (%s; version %d)", self._who(), reason, saved.version)
        return self._adopt(saved)

    def _obtain(self, old: dict[str, Any]) -> dict[str, Any]:
        grant = self.settings.grant
        if grant == "client_credentials":
            return self.endpoint.client_credentials()
        if grant == "jwt_bearer":
            return self.endpoint.jwt_bearer(self.subject or self.settings.subject)
        return self.endpoint.refresh(old)

    def close(self) -> None:
        self.endpoint.client.close()


def oauth_auth(settings: OAuth2Settings, context: Any, *, subject: str = "",
               clock: Callable[[], float] = time.time) -> OAuth2Auth:
    """The `httpx.Auth` for `build_client(..., auth=...)`: bearer tokens of `context.name` (and
    `subject`, e.g. a mailbox), kept in `context.token_store`. App-only grants (client credentials,
    JWT bearer) fall back to a per-process store when the context has none."""
    store = getattr(context, "token_store", None)
    if store is None:
        if settings.grant == "authorization_code":
            raise AuthError(f"{context.name}: OAuth tokens need the hub's token store, and this context has none")
        store = MemoryTokenStore()
    client = build_client(transport=getattr(context, "transport", None),
                          sleep=getattr(context, "sleep", None) or time.sleep,
                          timeout=settings.timeout_seconds, secrets=settings.secrets())
    endpoint = TokenEndpoint(settings, client, clock=clock)
    return OAuth2Auth(settings, context.name, store, endpoint, subject=subject, clock=clock)

