"""A local simulator of the Gmail API (v1) for demos, tests and benchmarks.

It follows the discovery document's shapes (`gmail.v1.json`: Profile, ListMessagesResponse, Message,
MessagePart, ListHistoryResponse, History), not any connector's assumptions:

- `GET /gmail/v1/users/{userId}/profile` -> `{emailAddress, messagesTotal, threadsTotal, historyId}`
- `GET /gmail/v1/users/{userId}/messages` `maxResults` (default 100, max 500), `pageToken`, `q`
  (`after:`, `before:`, `newer_than:`, `older_than:` terms), `labelIds`, `includeSpamTrash` ->
  `{messages: [{id, threadId}], nextPageToken, resultSizeEstimate}`, newest first, ids only.
- `GET /gmail/v1/users/{userId}/messages/{id}` `format` = full | metadata (+ `metadataHeaders`) |
  minimal | raw -> a Message; 404 when absent.
- `GET /gmail/v1/users/{userId}/history` `startHistoryId` (required), `historyTypes`, `labelId`,
  `maxResults` (default 100, max 500), `pageToken` -> `{history, nextPageToken, historyId}`; records
  strictly after `startHistoryId`, in order; a start older than the mailbox keeps -> **404**.

`userId` is `me` or the mailbox's own address; the bearer token names the mailbox (401 without
one, 403 for another user's mailbox). Errors have Google's body `{"error": {"code", "message",
"errors": [{"domain", "reason", "message"}], "status"}}`.

Sandbox control (not Gmail's, no auth): `POST /_sandbox/messages` (add one), `/_sandbox/delete`,
`/_sandbox/expire` (history ids before now become too old: the next history call gets 404),
`/_sandbox/fail` (the next n requests answer a status), `GET /_sandbox/stats` (requests by endpoint).
Run it with `python -m connectors.gmail.sandbox --mailbox ann@example.com=token --messages 200`.
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from connectors.gmail.loopback import LoopbackServer

__all__ = ["GmailSandbox", "GmailStore", "create_app", "main"]

LIST_DEFAULT, LIST_MAX = 100, 500
HISTORY_DEFAULT, HISTORY_MAX = 100, 500
HISTORY_STEP = 3  # history ids increase with gaps
_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
           429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE"}
_REASON = {400: "invalidArgument", 401: "authError", 403: "forbidden", 404: "notFound",
           429: "rateLimitExceeded", 500: "backendError", 503: "backendError"}


class GmailError(Exception):
    def __init__(self, code: int, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.reason = code, message, reason or _REASON.get(code, "failed")


def error_body(code: int, message: str, reason: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message,
                      "errors": [{"message": message, "domain": "global", "reason": reason}],
                      "status": _STATUS.get(code, "UNKNOWN")}}


@dataclass
class Message:
    id: str
    thread_id: str
    labels: list[str]
    internal_date: int  # ms since the epoch, as Gmail's `internalDate` (a string on the wire)
    headers: list[tuple[str, str]]
    body: str
    history_id: int
    wire_date: Any = None  # what `internalDate` says on the wire, when a test wants it broken

    def snippet(self) -> str:
        return self.body[:200].replace("'", "&#39;")  # Gmail's snippet is HTML-escaped

    def resource(self, fmt: str, wanted: set[str] | None) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "threadId": self.thread_id, "labelIds": list(self.labels),
                               "snippet": self.snippet(), "sizeEstimate": 512 + len(self.body),
                               "historyId": str(self.history_id),
                               "internalDate": str(self.internal_date) if self.wire_date is None else self.wire_date}
        if fmt == "minimal":
            return out
        if fmt == "raw":
            lines = [f"{k}: {v}" for k, v in self.headers] + ["", self.body]
            out["raw"] = base64.urlsafe_b64encode("\r\n".join(lines).encode()).decode()
            return out
        headers = [{"name": k, "value": v} for k, v in self.headers
                   if fmt == "full" or not wanted or k.lower() in wanted]
        payload: dict[str, Any] = {"partId": "", "mimeType": "text/plain", "filename": "", "headers": headers,
                                   "body": {"size": len(self.body.encode())}}
        if fmt == "full":
            payload["body"]["data"] = base64.urlsafe_b64encode(self.body.encode()).decode()
        out["payload"] = payload
        return out


@dataclass
class Mailbox:
    address: str
    token: str
    messages: dict[str, Message] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)  # {id, kind, message_id, thread_id, labels}
    history_id: int = 1000
    floor: int = 0  # a startHistoryId below this is too old (404)


class GmailStore:
    """The mailboxes' state; every method is thread-safe (the server runs in another thread)."""

    def __init__(self, mailboxes: dict[str, str] | None = None, messages: int = 0, *,
                 now_ms: int | None = None, spacing_ms: int = 60_000, internal_domain: str = "example.com") -> None:
        self.lock = threading.RLock()
        self.mailboxes: dict[str, Mailbox] = {}
        self._next_id = 0x18F1A2B3C4D50000
        self._failures: list[tuple[int, float | None]] = []
        self.requests: Counter[str] = Counter()
        self.internal_domain = internal_domain
        now = int(time.time() * 1000) if now_ms is None else now_ms
        for address, token in (mailboxes or {"ann@example.com": "sandbox-token"}).items():
            self.mailboxes[address.lower()] = Mailbox(address, token)
        for box in list(self.mailboxes.values()):
            for k in range(messages):
                outbound = k % 3 == 0
                peer = f"Contact {k} <contact{k}@customer{k % 10}.example>"
                me = f"{box.address.split('@')[0].title()} <{box.address}>"
                self.add_message(box.address, sender=me if outbound else peer, to=[peer if outbound else me],
                                 subject=f"Message {k}", at_ms=now - (messages - k) * spacing_ms,
                                 labels=["SENT"] if outbound else ["INBOX", "UNREAD"], body=f"Hello, this is mail {k}.")

    # -- the vendor's side ---------------------------------------------------------------------
    def box(self, address: str) -> Mailbox:
        try:
            return self.mailboxes[address.lower()]
        except KeyError:
            raise KeyError(f"no mailbox {address!r} (have: {', '.join(self.mailboxes)})") from None

    def _new_id(self) -> str:
        self._next_id += 0x1F3
        return f"{self._next_id:016x}"

    def _record(self, box: Mailbox, kind: str, msg: Message) -> int:
        box.history_id += HISTORY_STEP
        box.history.append({"id": box.history_id, "kind": kind, "message_id": msg.id, "thread_id": msg.thread_id,
                            "labels": list(msg.labels)})
        return box.history_id

    def add_message(self, address: str, *, sender: str | None = None, to: Sequence[str] = (), cc: Sequence[str] = (),
                    bcc: Sequence[str] = (), subject: str = "(no subject)", at_ms: int | None = None,
                    labels: Sequence[str] | None = None, body: str = "", thread_id: str | None = None,
                    headers: Sequence[tuple[str, str]] | None = None, internal_date: Any = None) -> str:
        """Deliver (or send) one message; `headers`/`internal_date` override the generated ones (bad data)."""
        with self.lock:
            box = self.box(address)
            at = int(time.time() * 1000) if at_ms is None else int(at_ms)
            mid = self._new_id()
            hdrs = list(headers) if headers is not None else [
                *([("From", sender)] if sender else []),
                *([("To", ", ".join(to))] if to else []),
                *([("Cc", ", ".join(cc))] if cc else []),
                *([("Bcc", ", ".join(bcc))] if bcc else []),
                ("Subject", subject),
                ("Date", format_datetime(datetime.fromtimestamp(at / 1000, UTC))),
                ("Message-ID", f"<{mid}@mail.sandbox.example>"),
            ]
            msg = Message(mid, thread_id or mid, list(labels if labels is not None else ["INBOX"]), at, hdrs, body, 0,
                          internal_date)
            box.messages[mid] = msg
            msg.history_id = self._record(box, "messageAdded", msg)
            return mid

    def delete_messages(self, address: str, ids: Sequence[str]) -> list[str]:
        """Permanent deletes (not trash): history gets `messagesDeleted`."""
        with self.lock:
            box = self.box(address)
            gone = []
            for mid in ids:
                msg = box.messages.pop(mid, None)
                if msg is not None:
                    self._record(box, "messageDeleted", msg)
                    gone.append(mid)
            return gone

    def expire_history(self, address: str) -> int:
        """Every history id handed out so far becomes too old: the next `history.list` from one gets 404."""
        with self.lock:
            box = self.box(address)
            box.history_id += HISTORY_STEP
            box.floor = box.history_id
            return box.floor

    def fail_next(self, count: int, status: int = 429, retry_after: float | None = None) -> None:
        with self.lock:
            self._failures.extend([(status, retry_after)] * count)

    def ids(self, address: str) -> list[str]:
        with self.lock:
            return list(self.box(address).messages)

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return {"requests": dict(self.requests)}

    def reset_stats(self) -> None:
        with self.lock:
            self.requests.clear()

    # -- requests ------------------------------------------------------------------------------
    def take_failure(self) -> tuple[int, float | None] | None:
        with self.lock:
            return self._failures.pop(0) if self._failures else None

    def authorise(self, auth: str | None, user_id: str) -> Mailbox:
        token = (auth or "").removeprefix("Bearer ").strip() if (auth or "").startswith("Bearer ") else None
        with self.lock:
            box = next((b for b in self.mailboxes.values() if token and b.token == token), None)
        if box is None:
            raise GmailError(401, "Request had invalid authentication credentials. Expected OAuth 2 access token, "
                                  "login cookie or other valid authentication credential.")
        if user_id != "me" and user_id.lower() != box.address.lower():
            raise GmailError(403, "Delegation denied for " + box.address, "forbidden")
        return box


_TERM = re.compile(r"^(after|before|newer_than|older_than):(\S+)$")
_UNITS = {"d": 86_400, "m": 30 * 86_400, "y": 365 * 86_400}


def _seconds(value: str) -> float:
    if value.isdigit():
        return float(value)
    try:
        return datetime.strptime(value, "%Y/%m/%d").replace(tzinfo=UTC).timestamp()
    except ValueError:
        raise GmailError(400, f"Invalid date in query: {value!r}") from None


def query_filter(q: str, now_s: float) -> Callable[[Message], bool]:
    """The date terms of Gmail's search syntax (all the sandbox understands)."""
    tests: list[Callable[[Message], bool]] = []
    for term in q.split():
        m = _TERM.match(term)
        if not m:
            raise GmailError(400, f"the sandbox understands only after:/before:/newer_than:/older_than:, not {term!r}")
        op, arg = m.groups()
        if op in ("newer_than", "older_than"):
            n = re.fullmatch(r"(\d+)([dmy])", arg)
            if not n:
                raise GmailError(400, f"Invalid {op} value {arg!r}")
            bound = now_s - int(n.group(1)) * _UNITS[n.group(2)]
        else:
            bound = _seconds(arg)
        tests.append(_bound(bound, after=op in ("after", "newer_than")))
    return lambda msg: all(t(msg) for t in tests)


def _bound(bound: float, *, after: bool) -> Callable[[Message], bool]:
    def test(msg: Message) -> bool:
        at = msg.internal_date / 1000
        return at > bound if after else at < bound
    return test


def _token(parts: Sequence[Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(list(parts))).decode().rstrip("=")


def _untoken(token: str) -> list[Any]:
    try:
        value = orjson.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (ValueError, orjson.JSONDecodeError):
        raise GmailError(400, "Invalid pageToken") from None
    if not isinstance(value, list):
        raise GmailError(400, "Invalid pageToken")
    return value


def _size(request: Request, default: int, cap: int) -> int:
    raw = request.query_params.get("maxResults")
    if raw is None:
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise GmailError(400, f"Invalid value for maxResults: {raw!r}")
    return min(int(raw), cap)


def list_messages(store: GmailStore, box: Mailbox, request: Request) -> dict[str, Any]:
    qp = request.query_params
    size = _size(request, LIST_DEFAULT, LIST_MAX)
    match = query_filter(qp.get("q", ""), time.time())
    labels = set(qp.getlist("labelIds"))
    spam_trash = qp.get("includeSpamTrash", "false").lower() == "true"
    with store.lock:
        found = [m for m in box.messages.values()
                 if match(m) and labels <= set(m.labels) and (spam_trash or not {"SPAM", "TRASH"} & set(m.labels))]
    found.sort(key=lambda m: (m.internal_date, m.id), reverse=True)  # newest first
    token = qp.get("pageToken")
    if token:
        # keyset on (internalDate, id): a delete during a scan cannot shift an unread message past it
        at, mid = _untoken(token)
        found = [m for m in found if (m.internal_date, m.id) < (int(at), str(mid))]
    page = found[:size]
    out: dict[str, Any] = {"resultSizeEstimate": len(found)}
    if page:
        out["messages"] = [{"id": m.id, "threadId": m.thread_id} for m in page]
    if len(found) > size:
        out["nextPageToken"] = _token([page[-1].internal_date, page[-1].id])
    return out


def get_message(store: GmailStore, box: Mailbox, mid: str, request: Request) -> dict[str, Any]:
    fmt = request.query_params.get("format", "full")
    if fmt not in ("full", "metadata", "minimal", "raw"):
        raise GmailError(400, f"Invalid value for format: {fmt!r}")
    wanted = {h.lower() for h in request.query_params.getlist("metadataHeaders")} or None
    with store.lock:
        msg = box.messages.get(mid)
        if msg is None:
            raise GmailError(404, "Requested entity was not found.")
        return msg.resource(fmt, wanted if fmt == "metadata" else None)


def list_history(store: GmailStore, box: Mailbox, request: Request) -> dict[str, Any]:
    qp = request.query_params
    raw_start = qp.get("startHistoryId")
    if not raw_start or not raw_start.isdigit():
        raise GmailError(400, "Invalid startHistoryId" if raw_start else "Missing startHistoryId")
    start = int(raw_start)
    size = _size(request, HISTORY_DEFAULT, HISTORY_MAX)
    kinds = set(qp.getlist("historyTypes")) or {"messageAdded", "messageDeleted", "labelAdded", "labelRemoved"}
    label = qp.get("labelId")
    with store.lock:
        if start < box.floor:
            raise GmailError(404, "Requested entity was not found.")
        after = int(_untoken(qp["pageToken"])[0]) if qp.get("pageToken") else start
        rows = [h for h in box.history if h["id"] > after and h["kind"] in kinds
                and (label is None or label in h["labels"])]
        current = box.history_id
    page = rows[:size]
    out: dict[str, Any] = {"historyId": str(current)}
    if page:
        history = []
        for h in page:
            ref = {"id": h["message_id"], "threadId": h["thread_id"]}
            key = "messagesAdded" if h["kind"] == "messageAdded" else "messagesDeleted"
            history.append({"id": str(h["id"]), "messages": [ref], key: [{"message": {**ref, "labelIds": h["labels"]}}]})
        out["history"] = history
    if len(rows) > size:
        out["nextPageToken"] = _token([page[-1]["id"]])
    return out


def _json(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(obj), status_code=status, media_type="application/json", headers=headers)


def create_app(store: GmailStore) -> Starlette:
    def api(kind: str) -> Callable[[Request], Awaitable[Response]]:
        async def handle(request: Request) -> Response:
            store.requests[kind] += 1
            failure = store.take_failure()
            if failure is not None:
                status, retry_after = failure
                headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
                return _json(error_body(status, "sandbox: failing on demand", _REASON.get(status, "failed")),
                             status, headers)
            try:
                box = store.authorise(request.headers.get("authorization"), request.path_params["user_id"])
                if kind == "profile":
                    with store.lock:
                        data: dict[str, Any] = {"emailAddress": box.address, "messagesTotal": len(box.messages),
                                                "threadsTotal": len({m.thread_id for m in box.messages.values()}),
                                                "historyId": str(box.history_id)}
                elif kind == "messages.list":
                    data = list_messages(store, box, request)
                elif kind == "messages.get":
                    data = get_message(store, box, request.path_params["message_id"], request)
                else:
                    data = list_history(store, box, request)
            except GmailError as exc:
                return _json(error_body(exc.code, exc.message, exc.reason), exc.code)
            return _json(data)
        return handle

    def control(action: Callable[[dict[str, Any]], Any]) -> Callable[[Request], Awaitable[Response]]:
        async def handle(request: Request) -> Response:
            try:
                raw = await request.body()
                data = orjson.loads(raw) if raw else {}
                return _json(action(data))
            except (KeyError, ValueError, TypeError, orjson.JSONDecodeError) as exc:
                return _json({"error": str(exc)}, 400)
        return handle

    def add(d: dict[str, Any]) -> Any:
        return {"id": store.add_message(d["address"], sender=d.get("from"), to=d.get("to", []), cc=d.get("cc", []),
                                        bcc=d.get("bcc", []), subject=d.get("subject", "(no subject)"),
                                        at_ms=d.get("at_ms"), labels=d.get("labels"), body=d.get("body", ""))}

    def fail(d: dict[str, Any]) -> Any:
        store.fail_next(int(d.get("count", 1)), int(d.get("status", 429)), d.get("retry_after"))
        return {"ok": True}

    base = "/gmail/v1/users/{user_id}"
    return Starlette(routes=[
        Route(f"{base}/profile", api("profile"), methods=["GET"]),
        Route(f"{base}/messages", api("messages.list"), methods=["GET"]),
        Route(f"{base}/messages/{{message_id}}", api("messages.get"), methods=["GET"]),
        Route(f"{base}/history", api("history.list"), methods=["GET"]),
        Route("/_sandbox/messages", control(add), methods=["POST"]),
        Route("/_sandbox/delete", control(lambda d: {"ids": store.delete_messages(d["address"], d["ids"])}),
              methods=["POST"]),
        Route("/_sandbox/expire", control(lambda d: {"floor": store.expire_history(d["address"])}), methods=["POST"]),
        Route("/_sandbox/fail", control(fail), methods=["POST"]),
        Route("/_sandbox/stats", control(lambda _d: store.stats()), methods=["GET"]),
    ])


class GmailSandbox(LoopbackServer):
    """`with GmailSandbox(GmailStore({...}, messages=50)) as sb:` serves the store on loopback."""

    def __init__(self, store: GmailStore | None = None, host: str = "127.0.0.1", port: int = 0) -> None:
        self.store = store if store is not None else GmailStore()
        super().__init__(create_app(self.store), host, port, name="gmail-sandbox")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m connectors.gmail.sandbox", description="Run the Gmail API sandbox.")
    p.add_argument("--mailbox", action="append", metavar="ADDRESS=TOKEN",
                   help="a mailbox and its bearer token (repeatable; default ann@example.com=sandbox-token)")
    p.add_argument("--messages", type=int, default=100, help="messages generated per mailbox")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    args = p.parse_args(argv)
    boxes = dict(m.split("=", 1) for m in args.mailbox) if args.mailbox else None
    server = GmailSandbox(GmailStore(boxes, args.messages), args.host, args.port)
    server.start()
    print(json.dumps({"url": server.url, "mailboxes": list(server.store.mailboxes)}), flush=True)
    server.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
