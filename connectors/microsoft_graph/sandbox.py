"""A local simulator of Microsoft Graph's Outlook delta endpoints, for demos and tests.

Standalone (starlette, uvicorn, orjson): it follows Graph's documented shapes (the delta-query
docs for messages and calendar views), not any connector's assumptions.

Graph endpoints (paths case-insensitive, `me` is the first mailbox):

- `GET /users/{id}` and `/me`: the user (`id`, `displayName`, `mail`, `userPrincipalName`).
- `GET /users/{id}/mailFolders/{folder}/messages/delta` (also `mailFolders('{folder-id}')`):
  `$select` honoured (`id` always sent); `Prefer: odata.maxpagesize` (default 10, at most 1,000
  [U]); `@odata.nextLink` with `$skiptoken` until the last page's `@odata.deltaLink` with
  `$deltatoken`; an initial round lists what the folder holds, later rounds what changed, with
  deletions as `{"id", "@removed": {"reason": "deleted"}}` (`"changed"` when deleted so).
- `GET /users/{id}/calendarView/delta?startDateTime=&endDateTime=`: the window is kept in the
  token; `$select`/`$filter`/`$orderby`/`$search`/`$expand` answer 400 (not supported on this
  function); changed events outside the window come as removed, as documented.
- `POST /{tenant}/oauth2/v2.0/token` (the Microsoft identity platform's token endpoint, as the
  sandbox's own host): `grant_type=client_credentials` with a known `client_id`/`client_secret`
  and `scope=https://graph.microsoft.com/.default` answers `{"token_type": "Bearer", "expires_in",
  "ext_expires_in", "access_token"}`; a bad secret answers 401 `invalid_client` (AADSTS7000215).
  `grant_type=refresh_token` (delegated) with a refresh token the sandbox issued answers a new
  access token and a new refresh token (the old one stays valid, as documented); an unknown one
  answers 400 `invalid_grant` (AADSTS70008).
- Errors as `{"error": {"code", "message", "innerError": {"request-id", "date"}}}`; 401 without
  a valid bearer token; an expired token: 410 Gone (`resyncRequired`, with a `Location` to start
  over) or 400 (`syncStateNotFound`/`syncStateInvalid`) [U]; injected 429/503 carry `Retry-After`.

Sandbox control (not Graph's, no auth), JSON bodies: `POST /_sandbox/send` (sender, to, cc,
subject), `/_sandbox/delete` (mailbox, ids, reason?), `/_sandbox/modify` (mailbox, folder, count),
`/_sandbox/event` (mailbox, subject, start, minutes, attendees), `/_sandbox/move` (mailbox, id,
start), `/_sandbox/cancel` (mailbox, id), `/_sandbox/replay` (mailbox, id, version),
`/_sandbox/expire` (mailbox?, code?), `/_sandbox/fail` (count, status, retry_after);
`GET /_sandbox/stats`. Run one in-process with `SandboxServer`, or as a process with
`python -m connectors.microsoft_graph.sandbox --mailboxes ann@contoso.test`, which prints
`{"url": ...}` once it accepts connections.
"""

from __future__ import annotations

import argparse
import json
import re
import socket
import threading
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, quote

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from connectors.microsoft_graph.sandbox_data import (
    GraphError,
    GraphStore,
    Mailbox,
    decode_token,
    encode_token,
)

__all__ = ["GraphStore", "SandboxServer", "create_app", "main"]

DEFAULT_PAGE = 10
MAX_PAGE = 1000
_USER = r"^/(?:me|users/(?P<user>[^/]+))"
_USER_RE = re.compile(_USER + r"$", re.I)
_MAIL_RE = re.compile(_USER + r"/mailfolders(?:/(?P<folder>[^/(]+)|\('(?P<quoted>[^']+)'\))/messages/delta$", re.I)
_CAL_RE = re.compile(_USER + r"/calendarview/delta$", re.I)
_STATUS_CODES = {429: "TooManyRequests", 500: "InternalServerError", 502: "BadGateway",
                 503: "ServiceUnavailable", 504: "GatewayTimeout"}


def _json(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(obj), status_code=status, headers=headers, media_type="application/json")


def _error(exc: GraphError) -> Response:
    body = {"error": {"code": exc.code, "message": exc.message,
                      "innerError": {"request-id": str(uuid.uuid4()), "date": datetime.now(UTC).strftime(
                          "%Y-%m-%dT%H:%M:%S")}}}
    return _json(body, exc.status, exc.headers)


def _prefer(request: Request) -> dict[str, str]:
    """`Prefer` preferences, from one comma-separated header or several headers."""
    out: dict[str, str] = {}
    for header in request.headers.getlist("prefer"):
        for part in header.split(","):
            key, _, value = part.strip().partition("=")
            if key:
                out[key.strip().lower()] = value.strip().strip('"')
    return out


def _page_size(request: Request) -> int:
    raw = _prefer(request).get("odata.maxpagesize")
    if raw is None:
        return DEFAULT_PAGE
    if not raw.isdigit() or int(raw) < 1:
        raise GraphError(400, "BadRequest", f"Invalid odata.maxpagesize preference: {raw!r}")
    return min(int(raw), MAX_PAGE)


def _parse_when(value: str | None, name: str) -> datetime:
    if not value:
        raise GraphError(400, "ErrorInvalidParameter",
                         f"This request requires a time window specified by the query string parameters "
                         f"StartDateTime and EndDateTime. ({name} is missing)")
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise GraphError(400, "ErrorInvalidParameter", f"The parameter '{name}' is not a valid date-time.") from None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def create_app(store: GraphStore, token: str | None = "sandbox-token",
               clients: dict[str, str] | None = None, refresh_tokens: Sequence[str] = ()) -> Starlette:
    """The sandbox as a Starlette app; `token=None` turns authentication off. `clients`
    (client id -> secret) may get tokens from the token endpoint (client credentials), and so
    may the holders of `refresh_tokens` (delegated: a person logged in before)."""
    issued: set[str] = set()
    refreshable: set[str] = set(refresh_tokens)

    async def token_endpoint(request: Request) -> Response:
        # application/x-www-form-urlencoded, parsed here (starlette's form() needs python-multipart)
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode()).items()}
        store.count_request("POST /oauth2/v2.0/token")

        def oauth_error(status: int, error: str, description: str) -> Response:
            return _json({"error": error, "error_description": description, "error_codes": [7000215],
                          "timestamp": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ"),
                          "trace_id": str(uuid.uuid4()), "correlation_id": str(uuid.uuid4())}, status)

        grant = form.get("grant_type")
        if grant == "refresh_token":
            if not clients or form.get("client_id") not in clients or form.get("refresh_token") not in refreshable:
                return oauth_error(400, "invalid_grant", "AADSTS70008: The provided authorization code or refresh "
                                                         "token has expired due to inactivity.")
            new, rotated = f"eyJ0eXAiOiJKV1QifQ.{uuid.uuid4().hex}.sandbox", f"0.AR8A{uuid.uuid4().hex}"
            issued.add(new)
            refreshable.add(rotated)
            return _json({"token_type": "Bearer", "scope": "Mail.Read Calendars.Read", "expires_in": 3600,
                          "ext_expires_in": 3600, "access_token": new, "refresh_token": rotated})
        if grant != "client_credentials":
            return oauth_error(400, "unsupported_grant_type", "AADSTS70003: The app requested an unsupported grant type.")
        cid, secret = str(form.get("client_id") or ""), str(form.get("client_secret") or "")
        if not clients or cid not in clients or clients[cid] != secret:
            return oauth_error(401, "invalid_client", "AADSTS7000215: Invalid client secret provided.")
        if form.get("scope") != "https://graph.microsoft.com/.default":
            return oauth_error(400, "invalid_scope", "AADSTS1002012: The provided value for scope is not valid.")
        new = f"eyJ0eXAiOiJKV1QifQ.{uuid.uuid4().hex}.sandbox"
        issued.add(new)
        return _json({"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": new})

    def mailbox_of(m: re.Match[str]) -> Mailbox:
        user = m.group("user")
        if user is None:
            return next(iter(store.mailboxes.values()))
        return store.mailbox(user.replace("%40", "@"))

    def user(m: re.Match[str]) -> dict[str, Any]:
        mb = mailbox_of(m)
        return {"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#users/$entity",
                "id": str(uuid.uuid5(uuid.NAMESPACE_DNS, mb.address)), "displayName": mb.name,
                "mail": mb.address, "userPrincipalName": mb.address}

    def delta(request: Request, m: re.Match[str], calendar: bool) -> dict[str, Any]:
        mb = mailbox_of(m)
        q = request.query_params
        prefix = m.group(0)
        if calendar:
            for unsupported in ("$select", "$filter", "$orderby", "$search", "$expand"):
                if unsupported in q:
                    raise GraphError(400, "ErrorInvalidUrlQuery",
                                     f"The query parameter '{unsupported}' is not supported with the delta function "
                                     f"on calendarView.")
            collection = "calendar"
        else:
            folder = m.group("folder") or m.group("quoted")
            collection = store.folder_id(mb, folder)
            prefix = re.sub(r"/mailfolders(?:/[^/(]+|\('[^']+'\))", f"/mailFolders('{collection}')", prefix,
                            flags=re.I)
        skip, dtok = q.get("$skiptoken"), q.get("$deltatoken")
        if skip or dtok:
            state = decode_token(str(skip or dtok))
            if state.get("c") != collection or state.get("m") != mb.address.lower():
                raise GraphError(400, "syncStateInvalid", "The sync state token does not belong to this request.")
            if state.get("g") != mb.generation:
                if mb.expire_code == "resyncRequired":
                    location = f"{request.base_url}{prefix.lstrip('/')}?$deltatoken="
                    raise GraphError(410, "resyncRequired", "Resync required. Replace any local cached entities "
                                     "with the ones returned in the resync.", {"Location": location})
                raise GraphError(400, mb.expire_code, "The sync state generation is not found.")
            if dtok:  # a new round: what changed since the last one's snapshot
                state = {**state, "s": state["u"], "u": store.seq, "a": ""}
        else:
            select = [f.strip() for f in q.get("$select", "").split(",") if f.strip()] or None
            state = {"c": collection, "m": mb.address.lower(), "g": mb.generation, "s": -1, "u": store.seq, "a": "",
                     "sel": select}
            if calendar:
                start, end = _parse_when(q.get("startDateTime") or q.get("startdatetime"), "startDateTime"), \
                    _parse_when(q.get("endDateTime") or q.get("enddatetime"), "endDateTime")
                state["w"] = [start.isoformat(), end.isoformat()]
        window = (datetime.fromisoformat(state["w"][0]), datetime.fromisoformat(state["w"][1])) if calendar else None
        items, following = store.delta(mb, collection, state, _page_size(request), window)
        select = state.get("sel")
        kind = "event" if calendar else "message"
        out: dict[str, Any] = {"@odata.context": f"https://graph.microsoft.com/v1.0/$metadata#Collection({kind})"}
        base = f"{request.base_url}{prefix.lstrip('/')}"
        if following is not None:
            out["@odata.nextLink"] = f"{base}?$skiptoken={quote(encode_token(following))}"
        else:
            out["@odata.deltaLink"] = f"{base}?$deltatoken={quote(encode_token({**state, 'a': ''}))}"
        out["value"] = [_project(i, select) for i in items]
        return out

    async def graph(request: Request) -> Response:
        path = "/" + request.path_params["path"]
        store.count_request(f"GET {re.sub(r'/users/[^/]+', '/users/{id}', path)}")
        auth = request.headers.get("authorization", "")
        if token is not None and auth != f"Bearer {token}" and auth.removeprefix("Bearer ") not in issued:
            empty = not request.headers.get("authorization")
            return _error(GraphError(401, "InvalidAuthenticationToken",
                                     "Access token is empty." if empty else "Access token validation failure."))
        fault = store.take_fault()
        if fault is not None:
            status, retry_after = fault
            headers = {"Retry-After": str(int(retry_after))} if retry_after is not None else {}
            return _error(GraphError(status, _STATUS_CODES.get(status, "UnknownError"),
                                     "Injected failure" if status != 429 else
                                     "Application is over its MailboxConcurrency limit.", headers))
        try:
            with store.lock:
                for regex, handler in ((_MAIL_RE, lambda m: delta(request, m, False)),
                                       (_CAL_RE, lambda m: delta(request, m, True)), (_USER_RE, user)):
                    m = regex.match(path)
                    if m:
                        return _json(handler(m), headers={"request-id": str(uuid.uuid4())})
            raise GraphError(400, "BadRequest", f"Resource not found for the segment '{path.rsplit('/', 1)[-1]}'.")
        except GraphError as exc:
            return _error(exc)

    def admin(action: Callable[[dict[str, Any]], Any]) -> Callable[[Request], Awaitable[Response]]:
        async def handle(request: Request) -> Response:
            try:
                raw = await request.body()
                data = orjson.loads(raw) if raw else {}
                if not isinstance(data, dict):
                    raise ValueError("body must be a JSON object")
                with store.lock:
                    return _json(action(data))
            except GraphError as exc:
                return _error(exc)
            except (KeyError, ValueError, TypeError, orjson.JSONDecodeError) as exc:
                return _json({"error": {"code": "BadRequest", "message": str(exc)}}, 400)
        return handle

    def when(v: str) -> datetime:
        t = datetime.fromisoformat(v.replace("Z", "+00:00"))
        return t if t.tzinfo else t.replace(tzinfo=UTC)

    def replay(d: dict[str, Any]) -> Any:
        store.replay(d["mailbox"], d["id"], int(d.get("version", -2)))
        return {"ok": True}

    def expire(d: dict[str, Any]) -> Any:
        store.expire_tokens(d.get("mailbox"), d.get("code", "resyncRequired"))
        return {"ok": True}

    def fail(d: dict[str, Any]) -> Any:
        store.fail_next(int(d.get("count", 1)), int(d.get("status", 429)), d.get("retry_after", 1))
        return {"ok": True}

    routes = [
        Route("/_sandbox/send", admin(lambda d: store.send(d["sender"], d["to"], d.get("subject", ""), d.get("cc"))),
              methods=["POST"]),
        Route("/_sandbox/delete", admin(lambda d: {"ids": store.delete(d["mailbox"], d["ids"], d.get("reason", "deleted"))}),
              methods=["POST"]),
        Route("/_sandbox/modify", admin(lambda d: {"ids": store.modify_messages(
            d["mailbox"], d.get("folder", "inbox"), int(d.get("count", 1)))}), methods=["POST"]),
        Route("/_sandbox/event", admin(lambda d: {"id": store.add_event(
            d["mailbox"], subject=d.get("subject", ""), start=when(d["start"]), minutes=int(d.get("minutes", 30)),
            attendees=[(a, a.split("@")[0]) for a in d.get("attendees", [])])}), methods=["POST"]),
        Route("/_sandbox/move", admin(lambda d: {"id": store.move_event(d["mailbox"], d["id"], when(d["start"]))}),
              methods=["POST"]),
        Route("/_sandbox/cancel", admin(lambda d: {"id": store.cancel_event(d["mailbox"], d["id"])}), methods=["POST"]),
        Route("/_sandbox/replay", admin(replay), methods=["POST"]),
        Route("/_sandbox/expire", admin(expire), methods=["POST"]),
        Route("/_sandbox/fail", admin(fail), methods=["POST"]),
        Route("/_sandbox/stats", admin(lambda _d: {"requests": dict(store.requests), "seq": store.seq}),
              methods=["GET"]),
        Route("/{tenant}/oauth2/v2.0/token", token_endpoint, methods=["POST"]),
        Route("/{path:path}", graph, methods=["GET"]),
    ]
    return Starlette(routes=routes)


def _project(item: dict[str, Any], select: list[str] | None) -> dict[str, Any]:
    """What Graph sends for an item under `$select`: the chosen properties, plus id and annotations."""
    if select is None or "@removed" in item:
        return item
    keep = {s.lower() for s in select} | {"id"}
    return {k: v for k, v in item.items() if k.startswith("@odata.") or k.lower() in keep}


# ---- running it ---------------------------------------------------------------------------------
class _Uvicorn(uvicorn.Server):
    """uvicorn that calls `on_ready` once its sockets accept connections."""

    def __init__(self, config: uvicorn.Config, on_ready: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_ready = on_ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if not self.should_exit:
            self._on_ready()


def _bind(host: str, port: int) -> socket.socket:
    # IPPROTO_TCP: asyncio sets TCP_NODELAY only on sockets that say so (no 40 ms delayed ACKs)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


def _config(app: Starlette) -> uvicorn.Config:
    return uvicorn.Config(app, loop="asyncio", http="auto", ws="none", lifespan="off", log_level="warning",
                          access_log=False, timeout_graceful_shutdown=2)


class SandboxServer:
    """Serve a store on loopback from a background thread (port 0: a free port)::

        with SandboxServer(GraphStore(["ann@contoso.test"])) as server:
            httpx.get(f"{server.url}/users/ann@contoso.test/mailFolders/inbox/messages/delta",
                      headers={"Authorization": "Bearer sandbox-token"})
    """

    def __init__(self, store: GraphStore | None = None, host: str = "127.0.0.1", port: int = 0,
                 token: str | None = "sandbox-token", clients: dict[str, str] | None = None,
                 refresh_tokens: Sequence[str] = ()) -> None:
        self.store = store if store is not None else GraphStore()
        self.host, self.port, self.token = host, port, token
        self._app = create_app(self.store, token, clients, refresh_tokens)
        self._server: _Uvicorn | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://[{self.host}]:{self.port}" if ":" in self.host else f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> SandboxServer:
        sock = _bind(self.host, self.port)
        self.port = sock.getsockname()[1]
        ready = threading.Event()
        server = self._server = _Uvicorn(_config(self._app), ready.set)

        def run() -> None:
            try:
                server.run(sockets=[sock])
            finally:
                sock.close()
                ready.set()

        self._thread = threading.Thread(target=run, name=f"graph-sandbox:{self.port}", daemon=True)
        self._thread.start()
        if not ready.wait(timeout) or not server.started:
            self.stop()
            raise RuntimeError(f"Graph sandbox did not start on {self.url}")
        return self

    def stop(self, timeout: float = 30.0) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
        self._server = self._thread = None

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m connectors.microsoft_graph.sandbox",
                                description="Run the Microsoft Graph (Outlook delta) sandbox in the foreground.")
    p.add_argument("--mailboxes", nargs="+", default=["ann@contoso.test"])
    p.add_argument("--messages", type=int, default=30, help="messages per mailbox (Inbox and Sent Items)")
    p.add_argument("--events", type=int, default=12, help="events per mailbox")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--token", default="sandbox-token", help="bearer token to require ('' disables auth)")
    a = p.parse_args(argv)
    store = GraphStore(a.mailboxes, messages=a.messages, events=a.events, seed=a.seed)
    sock = _bind(a.host, a.port)
    host = f"[{a.host}]" if ":" in a.host else a.host
    url = f"http://{host}:{sock.getsockname()[1]}"
    server = _Uvicorn(_config(create_app(store, a.token or None)), lambda: print(json.dumps({"url": url}), flush=True))
    server.run(sockets=[sock])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
