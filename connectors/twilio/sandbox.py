"""A local simulator of Twilio's Voice Calls resource (API 2010-04-01) for tests and demos.

Standalone (stdlib, starlette, uvicorn, orjson). Shapes follow twilio-oai
`spec/json/twilio_api_v2010.json` (`api.v2010.account.call`, `ListCallResponse`), not any
connector's assumptions:

- ``GET /2010-04-01/Accounts/{AccountSid}.json``  the account.
- ``GET /2010-04-01/Accounts/{AccountSid}/Calls.json``  filters ``To``, ``From``, ``Status``,
  ``ParentCallSid``, ``StartTime``, ``StartTime>``, ``StartTime<`` (date-only, UTC, inclusive:
  the wire form ``StartTime>=2024-06-01`` is the key ``StartTime>``); ``PageSize`` (default 50, max
  1,000, error 20007 above), ``Page``, ``PageToken``. Newest start first; ``next_page_uri`` is
  relative and null on the last page. Times are RFC 2822, ``duration`` a string.
- ``GET /2010-04-01/Accounts/{AccountSid}/Calls/{Sid}.json``  one call (20404 when absent).

HTTP Basic with the Account SID and auth token, or an API key SID and secret. Errors are
Twilio's ``{code, message, more_info, status}``. The store can also *send* status callbacks,
signed with ``X-Twilio-Signature`` as Twilio does, to any URL (`send_status_callbacks`).

Sandbox control (not Twilio's): ``POST /_sandbox/calls`` (create), ``/_sandbox/end``, ``/_sandbox/fail``;
``GET /_sandbox/stats``. Run with ``python -m connectors.twilio.sandbox --calls 500``; it prints
``{"url": ..., "account_sid": ..., "auth_token": ...}`` once it accepts connections.
"""

from __future__ import annotations

import argparse
import base64
import bisect
import hashlib
import hmac
import json
import random
import socket
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from email.utils import format_datetime
from typing import Any
from urllib.parse import urlencode

import httpx
import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

__all__ = ["SandboxServer", "TwilioStore", "create_app", "main", "sign"]

ACCOUNT_SID = "AC" + "0" * 31 + "1"
AUTH_TOKEN = "sandbox-auth-token-0001"
MAX_PAGE_SIZE = 1000
TERMINAL = ("completed", "busy", "failed", "no-answer", "canceled")
_AREA = ("415", "212", "646", "312", "617", "206")


def rfc2822(when: datetime | None) -> str | None:
    return format_datetime(when.astimezone(UTC)) if when is not None else None


def sign(auth_token: str, url: str, params: Sequence[tuple[str, str]]) -> str:
    """`X-Twilio-Signature`: base64 HMAC-SHA1 of the URL plus each sorted key and its value."""
    data = url + "".join(k + v for k, v in sorted(params))
    return base64.b64encode(hmac.new(auth_token.encode(), data.encode(), hashlib.sha1).digest()).decode()


class TwilioStore:
    """Calls of one account, generated deterministically, changed through methods."""

    def __init__(self, calls: int = 200, *, seed: int = 7, start: datetime | None = None, days: int = 10,
                 account_sid: str = ACCOUNT_SID, auth_token: str = AUTH_TOKEN,
                 our_numbers: Sequence[str] = ("+14155550100", "+14155550101")) -> None:
        self.account_sid, self.auth_token = account_sid, auth_token
        self.our_numbers = list(our_numbers)
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.calls: dict[str, dict[str, Any]] = {}
        self.faults: list[tuple[int, float | None]] = []
        self.requests: list[str] = []
        #: (start epoch, sid) ascending, rebuilt after a change: a page costs a bisect, not a
        #: parse and sort of every call (a 100,000-call benchmark measured the sandbox otherwise)
        self._order: list[tuple[float, str]] | None = None
        self.now = start or datetime.now(UTC).replace(microsecond=0) - timedelta(days=days)
        step = timedelta(days=days) / max(calls, 1)
        for n in range(calls):
            self._add(self.now + step * n, terminal=True, seq=n)
        self.now = self.now + timedelta(days=days)

    # -- data ------------------------------------------------------------------------------------

    def _sid(self, prefix: str) -> str:
        return prefix + "".join(self.rng.choice("0123456789abcdef") for _ in range(32))

    def _add(self, at: datetime, *, terminal: bool, seq: int = 0, **fields: Any) -> dict[str, Any]:
        rng = self.rng
        outside = f"+1{rng.choice(_AREA)}555{rng.randrange(10_000):04d}"
        ours = rng.choice(self.our_numbers)
        inbound = rng.random() < 0.5
        status = fields.pop("status", None) or (rng.choice(("completed",) * 6 + ("busy", "no-answer", "failed",
                                                                                 "canceled")) if terminal
                                                  else "in-progress")
        duration = rng.randrange(5, 1800) if status == "completed" else 0
        sid = self._sid("CA")
        call: dict[str, Any] = {
            "sid": sid, "account_sid": self.account_sid, "parent_call_sid": None,
            "date_created": rfc2822(at), "date_updated": rfc2822(at + timedelta(seconds=duration)),
            "to": ours if inbound else outside, "to_formatted": None, "from": outside if inbound else ours,
            "from_formatted": None, "phone_number_sid": self._sid("PN") if inbound else None,
            "status": status, "start_time": rfc2822(at),
            "end_time": rfc2822(at + timedelta(seconds=duration)) if status in TERMINAL else None,
            "duration": str(duration) if status in TERMINAL else None, "price": "-0.01300" if duration else None,
            "price_unit": "USD", "direction": "inbound" if inbound else "outbound-api", "answered_by": None,
            "api_version": "2010-04-01", "forwarded_from": None, "group_sid": None, "caller_name": None,
            "queue_time": "0", "trunk_sid": None,
            "uri": f"/2010-04-01/Accounts/{self.account_sid}/Calls/{sid}.json",
            "subresource_uris": {k: f"/2010-04-01/Accounts/{self.account_sid}/Calls/{sid}/{v}.json" for k, v in (
                ("feedback", "Feedback"), ("notifications", "Notifications"), ("recordings", "Recordings"),
                ("streams", "Streams"), ("payments", "Payments"), ("siprec", "Siprec"), ("events", "Events"),
                ("feedback_summaries", "FeedbackSummary"))},
        }
        for k in ("to", "from"):
            call[f"{k}_formatted"] = _formatted(call[k])
        call.update(fields)
        self.calls[sid] = call
        self._order = None
        return call

    def add_call(self, at: datetime, *, in_progress: bool = False, **fields: Any) -> str:
        """One call started at `at` (a call Twilio lists late, or one from a given day)."""
        with self.lock:
            return str(self._add(at, terminal=not in_progress, **fields)["sid"])

    def create(self, n: int = 1, *, in_progress: bool = False, **fields: Any) -> list[str]:
        """New calls started now (the store's clock moves a minute per call)."""
        with self.lock:
            out = []
            for _ in range(n):
                self.now += timedelta(minutes=1)
                out.append(self._add(self.now, terminal=not in_progress, **fields)["sid"])
            return out

    def end(self, sid: str, duration: int = 60, status: str = "completed") -> dict[str, Any]:
        with self.lock:
            call = self.calls[sid]
            start = _parse(call["start_time"])
            ended = start + timedelta(seconds=duration)
            self.now = max(self.now, ended)
            call.update(status=status, end_time=rfc2822(ended), duration=str(duration), date_updated=rfc2822(ended))
            self._order = None
            return dict(call)

    def corrupt(self, sid: str) -> None:
        """Make a call unusable (Twilio never sends this; a proxy or a bug might)."""
        with self.lock:
            self.calls[sid].update(duration="twelve", end_time="not a date")
            self._order = None

    def fail_next(self, count: int, status: int = 429, retry_after: float | None = 0) -> None:
        with self.lock:
            self.faults.extend([(status, retry_after)] * count)

    def ids(self) -> set[str]:
        with self.lock:
            return set(self.calls)

    # -- queries ---------------------------------------------------------------------------------

    def list_calls(self, q: dict[str, str], size: int, token: str | None) -> tuple[list[dict[str, Any]], bool]:
        def day(name: str) -> date | None:
            v = q.get(name)
            if v is None:
                return None
            try:
                return date.fromisoformat(v)
            except ValueError:
                raise _Error(400, 20001, f"Invalid value for {name}: {v!r}; expected YYYY-MM-DD") from None

        on, after, before = day("StartTime"), day("StartTime>"), day("StartTime<")
        key: tuple[float, str] | None = None
        if token:
            try:
                ts_s, _, sid = base64.urlsafe_b64decode(token[2:].encode()).decode().partition("|")
                key = (float(ts_s), sid)
            except (ValueError, UnicodeDecodeError):
                raise _Error(400, 20001, f"Invalid PageToken {token!r}") from None
        filters = [(q[k], f) for k, f in (("To", "to"), ("From", "from"), ("Status", "status"),
                                          ("ParentCallSid", "parent_call_sid")) if q.get(k)]
        page: list[dict[str, Any]] = []
        with self.lock:
            order = self._index()
            # newest first: from the entry just below the token's (start, sid), downwards
            j = len(order) if key is None else bisect.bisect_left(order, key)
            for i in range(j - 1, -1, -1):
                ts, sid = order[i]
                c = self.calls[sid]
                d = datetime.fromtimestamp(ts, UTC).date() if ts != float("inf") else None
                if after and d is not None and d < after:
                    break  # older from here on
                if (on and d != on) or (after and d is None) or (before and (d is None or d > before)):
                    continue
                if any(c.get(f) != v for v, f in filters):
                    continue
                if len(page) == size:
                    return page, True
                page.append(dict(c))
        return page, False

    def _index(self) -> list[tuple[float, str]]:
        """(start epoch, sid) of every call, ascending."""
        if self._order is None:
            self._order = sorted(((_parse(c["start_time"]).timestamp() if c["start_time"] else float("inf")),
                                  c["sid"]) for c in self.calls.values())
        return self._order


class _Error(Exception):
    def __init__(self, status: int, code: int, message: str):
        self.status, self.code, self.message = status, code, message


def _parse(value: str) -> datetime:
    from email.utils import parsedate_to_datetime

    return parsedate_to_datetime(value).astimezone(UTC)


def _formatted(number: str) -> str:
    return f"({number[2:5]}) {number[5:8]}-{number[8:]}" if number.startswith("+1") and len(number) == 12 else number


def _json(obj: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(obj), status_code=status, media_type="application/json")


def _error(status: int, code: int, message: str, headers: dict[str, str] | None = None) -> Response:
    body = {"code": code, "message": message, "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status}
    return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers=headers)


def _page_token(call: dict[str, Any]) -> str:
    ts = _parse(call["start_time"]).timestamp() if call.get("start_time") else float("inf")
    return "PA" + base64.urlsafe_b64encode(f"{ts}|{call['sid']}".encode()).decode()


def create_app(store: TwilioStore, api_key: tuple[str, str] | None = None) -> Starlette:
    """The sandbox as a Starlette app; `api_key` (SK..., secret) is accepted besides the auth token."""
    accepted = {(store.account_sid, store.auth_token), *([api_key] if api_key else [])}

    def guard(request: Request) -> Response | None:
        store.requests.append(f"{request.method} {request.url.path}")
        auth = request.headers.get("authorization", "")
        try:
            user, _, secret = base64.b64decode(auth.removeprefix("Basic ")).decode().partition(":")
        except ValueError:
            user, secret = "", ""
        if not auth.startswith("Basic ") or (user, secret) not in accepted:
            return _error(401, 20003, "Authenticate", {"WWW-Authenticate": 'Basic realm="Twilio API"'})
        if request.path_params.get("account_sid") != store.account_sid:
            return _error(404, 20404, f"The requested resource {request.url.path} was not found")
        with store.lock:
            fault = store.faults.pop(0) if store.faults else None
        if fault is not None:
            status, retry_after = fault
            headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
            if status == 429:
                return _error(429, 20429, "Too Many Requests", headers)
            return _error(status, 20500, "Internal Server Error", headers)
        return None

    async def account(request: Request) -> Response:
        return guard(request) or _json({"sid": store.account_sid, "friendly_name": "Sandbox", "status": "active",
                                        "type": "Full", "uri": f"/2010-04-01/Accounts/{store.account_sid}.json"})

    async def list_calls(request: Request) -> Response:
        denied = guard(request)
        if denied:
            return denied
        q = dict(request.query_params)
        try:
            size = int(q.get("PageSize", "50"))
            page_no = int(q.get("Page", "0"))
        except ValueError:
            return _error(400, 20001, "PageSize and Page must be integers")
        if not 1 <= size <= MAX_PAGE_SIZE:
            return _error(400, 20007, f"PageSize must be between 1 and {MAX_PAGE_SIZE}")
        try:
            calls, more = store.list_calls(q, size, q.get("PageToken"))
        except _Error as err:
            return _error(err.status, err.code, err.message)
        path = request.url.path
        base = [(k, v) for k, v in request.query_params.multi_items() if k not in ("Page", "PageToken", "PageSize")]
        first = f"{path}?{urlencode([*base, ('PageSize', size), ('Page', 0)])}"
        nxt = (f"{path}?{urlencode([*base, ('PageSize', size), ('Page', page_no + 1), ('PageToken', _page_token(calls[-1]))])}"
               if more else None)
        start = page_no * size
        return _json({"calls": calls, "first_page_uri": first, "next_page_uri": nxt, "previous_page_uri": None,
                      "page": page_no, "page_size": size, "start": start, "end": start + max(len(calls) - 1, 0),
                      "uri": f"{path}?{request.url.query}" if request.url.query else path})

    async def get_call(request: Request) -> Response:
        denied = guard(request)
        if denied:
            return denied
        with store.lock:
            call = store.calls.get(request.path_params["sid"])
        if call is None:
            return _error(404, 20404, f"The requested resource {request.url.path} was not found")
        return _json(call)

    async def control(request: Request) -> Response:
        body = orjson.loads(await request.body() or b"{}")
        action = request.path_params["action"]
        if action == "calls":
            return _json({"sids": store.create(int(body.get("count", 1)), in_progress=bool(body.get("in_progress")))})
        if action == "end":
            return _json(store.end(body["sid"], int(body.get("duration", 60))))
        if action == "fail":
            store.fail_next(int(body.get("count", 1)), int(body.get("status", 429)), body.get("retry_after", 0))
            return _json({"ok": True})
        return _json({"calls": len(store.calls), "requests": len(store.requests)})

    acct = "/2010-04-01/Accounts/{account_sid}"
    return Starlette(routes=[
        Route(acct + ".json", account, methods=["GET"]),
        Route(acct + "/Calls.json", list_calls, methods=["GET"]),
        Route(acct + "/Calls/{sid}.json", get_call, methods=["GET"]),
        Route("/_sandbox/{action}", control, methods=["GET", "POST"]),
    ])


def status_callback_params(call: dict[str, Any], status: str, fired: datetime, sequence: int) -> list[tuple[str, str]]:
    """The form parameters of a Voice status callback for `call` (Twilio's names)."""
    params = {"AccountSid": call["account_sid"], "ApiVersion": "2010-04-01", "CallSid": call["sid"],
              "CallStatus": status, "Called": call["to"], "Caller": call["from"], "Direction": call["direction"],
              "From": call["from"], "To": call["to"], "CallbackSource": "call-progress-events",
              "SequenceNumber": str(sequence), "Timestamp": rfc2822(fired) or ""}
    if status in TERMINAL:
        params["CallDuration"] = call.get("duration") or "0"
        params["Duration"] = str(-(-int(params["CallDuration"]) // 60))  # billed minutes
    return sorted(params.items())


def send_status_callbacks(store: TwilioStore, url: str, sid: str, statuses: Sequence[str] = ("initiated", "ringing",
                          "in-progress", "completed"), client: httpx.Client | None = None,
                          auth_token: str | None = None) -> list[httpx.Response]:
    """POST signed status callbacks for one call to `url`, as Twilio does (form-encoded)."""
    own = client is None
    http = client or httpx.Client(timeout=10)
    out = []
    try:
        with store.lock:
            call = dict(store.calls[sid])
        start = _parse(call["start_time"])
        for n, status in enumerate(statuses):
            fired = _parse(call["end_time"]) if status in TERMINAL and call.get("end_time") else start
            params = status_callback_params(call, status, fired, n)
            headers = {"X-Twilio-Signature": sign(auth_token or store.auth_token, url, params),
                       "Content-Type": "application/x-www-form-urlencoded", "User-Agent": "TwilioProxy/1.1",
                       "I-Twilio-Idempotency-Token": hashlib.sha1(f"{sid}{n}".encode()).hexdigest()}
            out.append(http.post(url, content=urlencode(params), headers=headers))
    finally:
        if own:
            http.close()
    return out


# ---- running it ---------------------------------------------------------------------------------
class _Uvicorn(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, on_ready: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_ready = on_ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if not self.should_exit:
            self._on_ready()


def _serve(app: Starlette, host: str, port: int, on_ready: Callable[[str], None]) -> tuple[_Uvicorn, socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    url = f"http://{host}:{sock.getsockname()[1]}"
    config = uvicorn.Config(app, loop="asyncio", http="h11", ws="none", lifespan="off", log_level="warning",
                            access_log=False, timeout_graceful_shutdown=2)
    return _Uvicorn(config, lambda: on_ready(url)), sock


class SandboxServer:
    """Serve a store on loopback from a background thread (port 0: a free port)::

        with SandboxServer(TwilioStore(calls=100)) as server:
            httpx.get(f"{server.url}/2010-04-01/Accounts/{ACCOUNT_SID}/Calls.json", auth=(ACCOUNT_SID, AUTH_TOKEN))
    """

    def __init__(self, store: TwilioStore | None = None, host: str = "127.0.0.1", port: int = 0,
                 api_key: tuple[str, str] | None = None) -> None:
        self.store = store if store is not None else TwilioStore()
        self.host, self.port = host, port
        self.url = ""
        self._app = create_app(self.store, api_key)
        self._server: _Uvicorn | None = None
        self._thread: threading.Thread | None = None

    def start(self, timeout: float = 30.0) -> SandboxServer:
        ready = threading.Event()

        def on_ready(url: str) -> None:
            self.url = url
            ready.set()

        server, sock = _serve(self._app, self.host, self.port, on_ready)
        self._server = server
        self.port = sock.getsockname()[1]

        def run() -> None:
            try:
                server.run(sockets=[sock])
            finally:
                sock.close()
                ready.set()

        self._thread = threading.Thread(target=run, name=f"twilio-sandbox:{self.port}", daemon=True)
        self._thread.start()
        if not ready.wait(timeout) or not server.started:
            self.stop()
            raise RuntimeError("Twilio sandbox did not start")
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
    p = argparse.ArgumentParser(prog="python -m connectors.twilio.sandbox",
                                description="Run the Twilio Voice Calls sandbox in the foreground.")
    p.add_argument("--calls", type=int, default=500)
    p.add_argument("--days", type=int, default=10)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    a = p.parse_args(argv)
    store = TwilioStore(a.calls, seed=a.seed, days=a.days)
    server, sock = _serve(create_app(store), a.host, a.port, lambda url: print(json.dumps(
        {"url": url, "account_sid": store.account_sid, "auth_token": store.auth_token}), flush=True))
    server.run(sockets=[sock])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
