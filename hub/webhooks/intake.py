"""`POST /webhooks/{connector}` as plain ASGI: the hot path of the webhook server.

It sits in front of the starlette app (which serves /healthz and /metrics) and answers
webhook requests itself, without a router, Request or Response objects: at thousands
of events a second on a small machine, that framework work was a measurable part of
each request.

Order of checks, so that nothing unverified is parsed and nothing unacknowledged
is promised: instance known (404) -> body size (413) -> signature (401) -> body
shape (400) -> durable group commit (503 if it fails) -> 200.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from hub.webhooks.commit import GroupCommitter
from hub.webhooks.inbox import InboxRow
from hub.webhooks.metrics import UNKNOWN, Metrics
from hub.webhooks.schemes import BadPayload, WebhookScheme
from hub.webhooks.signatures import BadSignature, Verifier

__all__ = ["Endpoint", "WebhookIntake"]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

PREFIX = "/webhooks/"
#: headers stored with every event; a verifier adds the ones it reads (never signatures)
KEPT_HEADERS = ("content-type", "user-agent")


@dataclass(frozen=True)
class Endpoint:
    name: str
    kind: str
    scheme: WebhookScheme | None = None
    verifier: Verifier | None = None
    #: why this instance takes no webhooks (answered with the 404)
    unavailable: str | None = None


class _Stop(Exception):
    """Answer now with (status, error); nothing was stored."""

    def __init__(self, status: int, error: str):
        self.status, self.error = status, error


class _Gone(Exception):
    """The client hung up before sending its body."""


class WebhookIntake:
    """ASGI middleware: answers `/webhooks/{name}` itself, passes anything else to `app`."""

    def __init__(self, app: ASGIApp, *, endpoints: dict[str, Endpoint], committer: GroupCommitter,
                 metrics: Metrics, max_body_bytes: int, public_base_url: str | None,
                 clock: Callable[[], float]):
        self.app = app
        self.endpoints = endpoints
        self.committer = committer
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.public_base_url = public_base_url.rstrip("/") if public_base_url else None
        self.clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"] if scope["type"] == "http" else ""
        name = path[len(PREFIX):]
        if not path.startswith(PREFIX) or not name or "/" in name:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        ep = self.endpoints.get(name)
        try:
            if scope["method"] != "POST":
                raise _Stop(405, "use POST")
            status, doc = await self._accept(scope, receive, name, ep)
        except _Stop as stop:
            status, doc = stop.status, {"error": stop.error}
        except _Gone:
            return
        body = orjson.dumps(doc)
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        if status == 405:
            headers.append((b"allow", b"POST"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        self.metrics.request(name if ep is not None else UNKNOWN, status, time.perf_counter() - started)

    async def _accept(self, scope: Scope, receive: Receive, name: str,
                      ep: Endpoint | None) -> tuple[int, dict[str, Any]]:
        if ep is None:
            raise _Stop(404, f"no connector instance {name!r} is configured")
        if ep.verifier is None or ep.scheme is None:
            raise _Stop(404, ep.unavailable or "no webhooks here")
        received_at = datetime.now(UTC)
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        body = await self._body(headers, receive)
        url = self._url(scope, headers)
        try:
            ep.verifier.verify(headers, body, url, self.clock())
        except BadSignature as err:
            raise _Stop(401, err.reason) from None
        try:
            events = ep.scheme.parse(body, headers.get("content-type", ""), url)
        except BadPayload as err:
            raise _Stop(400, str(err)) from None
        kept = {h: headers[h] for h in (*KEPT_HEADERS, *ep.verifier.kept_headers) if h in headers}
        rows = [InboxRow(name, e.event_id, received_at, e.raw, kept) for e in events]
        try:
            new = await self.committer.submit(rows)
        except Exception:  # logged by the committer; the vendor redelivers on a 503
            raise _Stop(503, "the event could not be stored; deliver it again") from None
        self.metrics.stored(name, len(new), len(rows) - len(new))
        return 200, {"stored": len(new), "duplicates": len(rows) - len(new)}

    async def _body(self, headers: dict[str, str], receive: Receive) -> bytes:
        limit = self.max_body_bytes
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise _Stop(413, f"body larger than {limit} bytes")
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _Gone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise _Stop(413, f"body larger than {limit} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def _url(self, scope: Scope, headers: dict[str, str]) -> str:
        """The URL as the vendor called it (HubSpot and Twilio sign it): the raw path and query."""
        raw_path = scope.get("raw_path") or scope["path"].encode()
        target = raw_path.decode("latin-1")
        if scope.get("query_string"):
            target += "?" + scope["query_string"].decode("latin-1")
        if self.public_base_url:
            return self.public_base_url + target
        host = headers.get("host")
        if not host:
            server = scope.get("server") or ("localhost", None)
            host = f"{server[0]}:{server[1]}" if server[1] else server[0]
        return f"{scope.get('scheme', 'http')}://{host}{target}"
