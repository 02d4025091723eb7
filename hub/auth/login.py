"""`crmhub auth login`: the authorization-code flow with a loopback redirect (RFC 8252), PKCE and state.

    stored = login(settings, store, "hubspot_main", announce=print)

1. A one-shot HTTP listener starts on the redirect URI's loopback address and port.
2. The authorize URL (client id, redirect URI, scopes, a random `state`, an S256 PKCE challenge)
   is printed and opened in a browser.
3. The vendor sends the browser back to the listener with `code` and `state`. A `state` that is
   not ours fails the login (it is not the redirect this command started); `error=` fails it with
   the vendor's reason. Other paths get 404 and the listener keeps waiting.
4. The code is exchanged, with the PKCE verifier, at the token URL; the token is stored encrypted
   (clearing any needs-reauthorisation mark). Nothing secret is printed or logged.
"""

from __future__ import annotations

import hmac
import queue
import socket
import threading
import webbrowser
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

from authlib.common.security import generate_token

from hub.sdk.http import build_client
from hub.sdk.oauth import (
    OAuth2Settings,
    StoredToken,
    TokenEndpoint,
    TokenStore,
    authorization_url,
    new_code_verifier,
)

__all__ = ["LoginError", "login"]

_LOOPBACK = {"127.0.0.1", "localhost", "::1"}
_PAGE = "<!doctype html><meta charset=utf-8><title>crmhub</title><p>{}</p>"


class LoginError(Exception):
    """The login did not complete; the message says why and what to do."""


class _Callback(HTTPServer):
    result: queue.Queue[dict[str, str]]
    path_expected: str


class _Callback6(_Callback):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    server: _Callback

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        if parts.path != self.server.path_expected:
            self._reply(404, "Not the crmhub login callback.")
            return
        query = {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        ok = "code" in query and "error" not in query
        self._reply(200 if ok else 400, "crmhub: login complete, you can close this tab." if ok
                    else "crmhub: login failed; see the terminal.")
        self.server.result.put(query)

    def _reply(self, status: int, text: str) -> None:
        body = _PAGE.format(text).encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the request line carries the authorization code: never print it


def _listen(redirect_uri: str) -> tuple[_Callback, str]:
    parts = urlsplit(redirect_uri)
    host = parts.hostname or ""
    if parts.scheme != "http" or host not in _LOOPBACK:
        raise LoginError(f"redirect_uri {redirect_uri!r} is not a loopback http URL (http://127.0.0.1:PORT/PATH): "
                         "crmhub can only receive the redirect on this machine")
    bind = "::1" if host == "::1" else "127.0.0.1"
    server_class = _Callback6 if bind == "::1" else _Callback
    try:
        server = server_class((bind, parts.port or 80), _Handler)
    except OSError as exc:
        raise LoginError(f"cannot listen on {bind}:{parts.port} for the redirect ({exc.strerror}); "
                         "free that port or change oauth.redirect_uri (and its registration with the vendor)") from None
    server.result = queue.Queue()
    server.path_expected = parts.path or "/"
    port = server.server_address[1]
    netloc = f"[{host}]:{port}" if host == "::1" else f"{host}:{port}"
    return server, urlunsplit((parts.scheme, netloc, parts.path or "/", "", ""))


def login(settings: OAuth2Settings, store: TokenStore, connector: str, *, subject: str = "",
          open_browser: Callable[[str], Any] | None = webbrowser.open,
          announce: Callable[[str], Any] = print, timeout_s: float = 300.0,
          transport: Any = None) -> StoredToken:
    """Run the authorization-code flow for `connector` (and `subject`) and store the token."""
    if settings.grant != "authorization_code":
        raise LoginError(f"{connector} uses the {settings.grant} grant: it needs no login, its credentials "
                         "are in the config")
    server, redirect_uri = _listen(settings.redirect_uri)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                              name=f"crmhub-login:{connector}", daemon=True)
    thread.start()
    try:
        state = generate_token(32)
        verifier = new_code_verifier() if settings.pkce else None
        url = authorization_url(settings, redirect_uri=redirect_uri, state=state, code_verifier=verifier)
        announce(f"Open this URL to authorise {connector}{f' for {subject}' if subject else ''}:\n{url}")
        if open_browser is not None:
            open_browser(url)
        try:
            query = server.result.get(timeout=timeout_s)
        except queue.Empty:
            raise LoginError(f"no redirect came back within {timeout_s:.0f}s; run the login again") from None
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    if not hmac.compare_digest(query.get("state", ""), state):
        raise LoginError("the redirect's state does not match this login (a stale tab, or a forged "
                         "request); nothing was stored. Run the login again")
    if "error" in query:
        desc = query.get("error_description", "")
        raise LoginError(f"the vendor refused: {query['error']}" + (f": {desc}" if desc else ""))
    client = build_client(transport=transport, timeout=settings.timeout_seconds, secrets=settings.secrets())
    try:
        token = TokenEndpoint(settings, client).exchange_code(query["code"], redirect_uri=redirect_uri,
                                                             code_verifier=verifier)
    finally:
        client.close()
    return store.save(connector, subject, token)
