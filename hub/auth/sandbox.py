"""A loopback OAuth 2.0 authorization server to log in and refresh against, offline.

It follows the RFCs rather than one vendor: RFC 6749 (authorization code, refresh token and client
credentials grants; §5.1 token and §5.2 error responses), RFC 7636 (S256 PKCE, checked), RFC 7523
(JWT bearer grant, signature checked with the registered public key) and RFC 8252 §7.3 (any port
on a loopback redirect URI). Vendor habits are options: `expires_in=None` with
`extra_token_fields={"instance_url": ...}` is Salesforce's shape, `expires_in=1800` HubSpot's,
`rotate_refresh=True` Salesforce's rotation setting and Microsoft's self-replacing refresh tokens.

    with AuthServer(AuthServerState()) as server:
        settings = OAuth2Settings(client_id=server.state.client_id, ..., token_url=server.url + "/token")

`GET /api/me` is a protected resource: 200 with a live access token, else 401 (`invalid_token`).
Run it: `python -m hub.auth.sandbox --port 8799` (prints its URLs and client credentials as JSON).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import json
import secrets
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import uvicorn
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import RSAKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

__all__ = ["AuthServer", "AuthServerState", "main"]

_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


@dataclass
class AuthServerState:
    """Registered client, issued codes and tokens, and counters; tests read and change it directly."""

    client_id: str = "crmhub-sandbox-client"
    client_secret: str = field(default_factory=lambda: "cs-" + secrets.token_urlsafe(16))
    redirect_uris: list[str] = field(default_factory=lambda: ["http://127.0.0.1:8765/callback"])
    expires_in: int | None = 1800
    rotate_refresh: bool = True  # a refresh returns a new refresh token and revokes the old one
    extra_token_fields: dict[str, Any] = field(default_factory=dict)
    #: JWT bearer: the issuer (service-account e-mail) and its public key in PEM
    jwt_issuer: str | None = None
    jwt_public_key: str | None = None
    #: hold refresh-grant answers until this many refresh requests are in flight (race tests)
    hold_refreshes: int = 0
    hold_timeout: float = 5.0  # then a held refresh goes on alone
    clock: Callable[[], float] = time.time
    codes: dict[str, dict[str, Any]] = field(default_factory=dict)
    access: dict[str, dict[str, Any]] = field(default_factory=dict)
    refresh: dict[str, dict[str, Any]] = field(default_factory=dict)
    grants: Counter[str] = field(default_factory=Counter)
    _held: int = 0
    _release: asyncio.Event | None = None

    def expire_access_tokens(self) -> None:
        """Every access token issued so far stops working (the vendor's session timeout)."""
        for info in self.access.values():
            info["expires_at"] = self.clock() - 1

    def revoke_refresh_tokens(self) -> None:
        """Every refresh token issued so far is revoked (a user removed the app)."""
        for info in self.refresh.values():
            info["revoked"] = True

    def issue(self, subject: str, scope: str, *, with_refresh: bool) -> dict[str, Any]:
        access = "at-" + secrets.token_urlsafe(24)
        lifetime = self.expires_in if self.expires_in is not None else 7200
        self.access[access] = {"subject": subject, "scope": scope, "expires_at": self.clock() + lifetime}
        body: dict[str, Any] = {"access_token": access, "token_type": "bearer", "scope": scope}
        if self.expires_in is not None:
            body["expires_in"] = self.expires_in
        if with_refresh:
            refresh = "rt-" + secrets.token_urlsafe(24)
            self.refresh[refresh] = {"subject": subject, "scope": scope, "revoked": False}
            body["refresh_token"] = refresh
        return {**body, **self.extra_token_fields}


def _error(error: str, description: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": error, "error_description": description}, status_code=status,
                        headers={"Cache-Control": "no-store"})


def _redirect_ok(registered: Sequence[str], given: str) -> bool:
    g = urlsplit(given)
    for uri in registered:
        r = urlsplit(uri)
        if uri == given:
            return True
        if r.hostname in _LOOPBACK and g.hostname == r.hostname and (r.scheme, r.path) == (g.scheme, g.path):
            return True  # RFC 8252 §7.3: any port on loopback
    return False


def create_app(state: AuthServerState) -> Starlette:
    async def authorize(request: Request) -> Response:
        q = request.query_params
        redirect_uri = q.get("redirect_uri", "")
        if q.get("client_id") != state.client_id or not _redirect_ok(state.redirect_uris, redirect_uri):
            return _error("invalid_request", "unknown client_id or unregistered redirect_uri")
        sep = "&" if "?" in redirect_uri else "?"
        if q.get("response_type") != "code":
            return RedirectResponse(f"{redirect_uri}{sep}{urlencode({'error': 'unsupported_response_type', 'state': q.get('state', '')})}")
        if q.get("code_challenge") and q.get("code_challenge_method") != "S256":
            return RedirectResponse(f"{redirect_uri}{sep}{urlencode({'error': 'invalid_request', 'state': q.get('state', '')})}")
        code = "code-" + secrets.token_urlsafe(16)
        state.codes[code] = {"redirect_uri": redirect_uri, "challenge": q.get("code_challenge"),
                             "scope": q.get("scope", ""), "subject": q.get("login_hint", "user@example.com"),
                             "expires_at": state.clock() + 600}
        params = {"code": code, **({"state": q["state"]} if "state" in q else {})}
        return RedirectResponse(f"{redirect_uri}{sep}{urlencode(params)}", status_code=302)

    def client_ok(request: Request, form: dict[str, str]) -> bool:
        header = request.headers.get("authorization", "")
        if header.lower().startswith("basic "):
            cid, _, secret = base64.b64decode(header[6:]).decode().partition(":")
        else:
            cid, secret = form.get("client_id", ""), form.get("client_secret", "")
        return cid == state.client_id and secrets.compare_digest(secret, state.client_secret)

    async def token(request: Request) -> Response:
        # parsed by hand: starlette's request.form() needs python-multipart, not a dependency here
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode(), keep_blank_values=True).items()}
        grant = form.get("grant_type", "")
        state.grants[grant] += 1
        if grant == "urn:ietf:params:oauth:grant-type:jwt-bearer":
            return jwt_bearer(request, form)
        if not client_ok(request, form):
            return _error("invalid_client", "client authentication failed", 401)
        if grant == "authorization_code":
            info = state.codes.pop(form.get("code", ""), None)  # single use
            if info is None or info["expires_at"] < state.clock():
                return _error("invalid_grant", "unknown, used or expired authorization code")
            if info["redirect_uri"] != form.get("redirect_uri"):
                return _error("invalid_grant", "redirect_uri differs from the authorization request")
            if info["challenge"]:
                verifier = form.get("code_verifier", "")
                digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
                if not secrets.compare_digest(digest, info["challenge"]):
                    return _error("invalid_grant", "PKCE verification failed")
            return JSONResponse(state.issue(info["subject"], info["scope"], with_refresh=True),
                                headers={"Cache-Control": "no-store"})
        if grant == "refresh_token":
            if state.hold_refreshes:
                await hold()
            info = state.refresh.get(form.get("refresh_token", ""))
            if info is None or info["revoked"]:
                return _error("invalid_grant", "expired access/refresh token")
            body = state.issue(info["subject"], info["scope"], with_refresh=state.rotate_refresh)
            if state.rotate_refresh:
                info["revoked"] = True
            return JSONResponse(body, headers={"Cache-Control": "no-store"})
        if grant == "client_credentials":
            return JSONResponse(state.issue("app:" + state.client_id, form.get("scope", ""), with_refresh=False))
        return _error("unsupported_grant_type", f"grant_type {grant!r} is not supported")

    async def hold() -> None:
        if state._release is None:
            state._release = asyncio.Event()
        state._held += 1
        if state._held >= state.hold_refreshes:
            state._release.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(state._release.wait(), timeout=state.hold_timeout)

    def jwt_bearer(request: Request, form: dict[str, str]) -> Response:
        if not state.jwt_public_key:
            return _error("unsupported_grant_type", "no JWT issuer registered")
        try:
            decoded = jwt.decode(form.get("assertion", ""), RSAKey.import_key(state.jwt_public_key),
                                 algorithms=["RS256"])
        except (JoseError, ValueError):
            return _error("invalid_grant", "assertion signature invalid")
        claims = decoded.claims
        now = state.clock()
        audience = str(request.url_for("token"))
        if claims.get("iss") != state.jwt_issuer:
            return _error("invalid_grant", "unknown issuer")
        if claims.get("aud") != audience:
            return _error("invalid_grant", f"audience must be {audience}")
        if not (claims.get("iat", 0) - 60 <= now < claims.get("exp", 0)) or claims["exp"] - claims["iat"] > 3600:
            return _error("invalid_grant", "assertion expired or too long-lived")
        return JSONResponse(state.issue(claims.get("sub") or str(claims["iss"]), str(claims.get("scope", "")),
                                        with_refresh=False))

    async def me(request: Request) -> Response:
        header = request.headers.get("authorization", "")
        info = state.access.get(header[7:]) if header.lower().startswith("bearer ") else None
        if info is None or info["expires_at"] <= state.clock():
            return JSONResponse({"error": "invalid_token"}, status_code=401,
                                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
        return JSONResponse({"subject": info["subject"], "scope": info["scope"]})

    return Starlette(routes=[
        Route("/authorize", authorize, methods=["GET"]),
        Route("/token", token, methods=["POST"], name="token"),
        Route("/api/me", me, methods=["GET", "POST"]),
    ])


class _Uvicorn(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, on_ready: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_ready = on_ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if not self.should_exit:
            self._on_ready()


def _serve(state: AuthServerState, host: str, port: int) -> tuple[_Uvicorn, socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    config = uvicorn.Config(create_app(state), loop="asyncio", http="h11", ws="none", lifespan="off",
                            log_level="warning", access_log=False, timeout_graceful_shutdown=2)
    return _Uvicorn(config, lambda: None), sock


class AuthServer:
    """Serves an `AuthServerState` on loopback from a background thread (port 0: a free port)."""

    def __init__(self, state: AuthServerState | None = None, host: str = "127.0.0.1", port: int = 0) -> None:
        self.state = state if state is not None else AuthServerState()
        self.host, self.port = host, port
        self._server: _Uvicorn | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> AuthServer:
        server, sock = _serve(self.state, self.host, self.port)
        self.port = sock.getsockname()[1]
        ready = threading.Event()
        server._on_ready = ready.set
        self._server = server

        def run() -> None:
            try:
                server.run(sockets=[sock])
            finally:
                sock.close()
                ready.set()

        self._thread = threading.Thread(target=run, name=f"oauth-sandbox:{self.port}", daemon=True)
        self._thread.start()
        if not ready.wait(timeout) or not server.started:
            self.stop()
            raise RuntimeError(f"OAuth sandbox did not start on {self.url}")
        return self

    def stop(self, timeout: float = 30.0) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
        self._server = self._thread = None

    def __enter__(self) -> AuthServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hub.auth.sandbox",
                                description="Run the loopback OAuth 2.0 authorization server in the foreground.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--expires-in", type=int, default=1800, help="0: answer without expires_in (Salesforce)")
    p.add_argument("--no-rotation", action="store_true", help="refresh tokens stay valid after use")
    p.add_argument("--redirect-uri", default="http://127.0.0.1:8765/callback")
    a = p.parse_args(argv)
    state = AuthServerState(redirect_uris=[a.redirect_uri], expires_in=a.expires_in or None,
                            rotate_refresh=not a.no_rotation)
    server, sock = _serve(state, a.host, a.port)
    url = f"http://{a.host}:{sock.getsockname()[1]}"
    server._on_ready = lambda: print(json.dumps({
        "authorize_url": f"{url}/authorize", "token_url": f"{url}/token", "resource": f"{url}/api/me",
        "client_id": state.client_id, "client_secret": state.client_secret,
        "redirect_uri": a.redirect_uri}), flush=True)
    server.run(sockets=[sock])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
