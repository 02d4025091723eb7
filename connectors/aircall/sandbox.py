"""A local simulator of Aircall's public API (`/v1/calls`) for tests and demos.

Standalone (stdlib, starlette, uvicorn, orjson). Aircall publishes no OpenAPI document, so the
shapes follow the samples of its API reference (vendor-apis.md section 8):

- ``GET /v1/ping``  ``{"ping": "pong"}``.
- ``GET /v1/calls``  ``from``/``to`` (UNIX seconds, inclusive, on the creation time), ``order``
  (``asc``/``desc``, default asc), ``page`` (1-based), ``per_page`` (default 20, at most 50);
  ``{"calls": [...], "meta": {"count", "total", "current_page", "per_page", "next_page_link",
  "previous_page_link"}}``. A query can page through at most ``result_cap`` (10,000) results: a
  page past it answers 400.
- ``GET /v1/calls/{id}``  ``{"call": {...}}``, 404 when absent.

HTTP Basic with ``api_id:api_token`` (or a Bearer token). Every answer carries
``X-AircallApi-Limit``, ``-Remaining`` and ``-Reset`` (UNIX time); past the limit (when
enforced) and for injected faults the answer is 429. The store can also *send* webhooks
(``{resource, event, timestamp, token, data}``) to any URL (`send_webhook`).

Run with ``python -m connectors.aircall.sandbox --calls 500``; it prints ``{"url": ...}`` once it
accepts connections.
"""

from __future__ import annotations

import argparse
import base64
import json
import random
import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlencode

import httpx
import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

__all__ = ["AircallStore", "SandboxServer", "create_app", "main", "send_webhook"]

API_ID = "sandbox-api-id"
API_TOKEN = "sandbox-api-token-0001"
WEBHOOK_TOKEN = "cebcaac65sandbox0token"
MAX_PER_PAGE = 50
RESULT_CAP = 10_000
MISSED_REASONS = ("out_of_opening_hours", "short_abandoned", "abandoned_in_ivr", "abandoned_in_classic",
                  "no_available_agent", "agents_did_not_answer")
USERS = ({"id": 456, "name": "John Doe", "email": "john.doe@sandbox-company.example"},
         {"id": 457, "name": "Ana Silva", "email": "ana.silva@sandbox-company.example"})
NUMBERS = ({"id": 789, "digits": "+33 1 76 36 06 95", "name": "Paris office"},
           {"id": 790, "digits": "+1 415-555-0100", "name": "SF office"})


class AircallStore:
    """Calls of one company, generated deterministically, changed through methods."""

    def __init__(self, calls: int = 200, *, seed: int = 7, start: int | None = None, days: int = 10,
                 per_second: int = 0, base_url: str = "https://api.aircall.io") -> None:
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.calls: dict[int, dict[str, Any]] = {}
        self.faults: list[tuple[int, float | None]] = []
        self.requests: list[str] = []
        self.base_url = base_url
        self.next_id = 1001
        span = days * 86400
        first = start if start is not None else int(time.time()) - span
        for n in range(calls):
            at = first + (n // per_second if per_second else (span * n) // max(calls, 1))
            self._add(at, done=True)
        self.now = first + span

    def _add(self, at: int, *, done: bool, **fields: Any) -> dict[str, Any]:
        rng = self.rng
        cid, self.next_id = self.next_id, self.next_id + 1
        inbound = rng.random() < 0.6
        missed = done and inbound and rng.random() < 0.2
        answered = None if missed or (not done and rng.random() < 0.5) else at + rng.randrange(2, 20)
        duration = rng.randrange(10, 1200) if answered else rng.randrange(0, 30)
        user = dict(rng.choice(USERS))
        number = dict(rng.choice(NUMBERS))
        digits = f"+1 {rng.choice(('212', '415', '646'))}-555-{rng.randrange(10_000):04d}"
        call: dict[str, Any] = {
            "id": cid, "direct_link": f"{self.base_url}/v1/calls/{cid}", "direction": "inbound" if inbound else "outbound",
            "status": "done" if done else ("answered" if answered else "initial"),
            "missed_call_reason": rng.choice(MISSED_REASONS) if missed else None,
            "started_at": at, "answered_at": answered, "ended_at": at + duration if done else None,
            "duration": duration if done else 0, "cost": "0", "raw_digits": digits, "archived": False,
            "asset": f"https://assets.aircall.io/calls/{cid}/recording" if done and answered else None,
            "recording": None, "voicemail": None,
            "user": None if missed else {**user, "direct_link": f"{self.base_url}/v1/users/{user['id']}",
                                         "available": True, "availability_status": "available"},
            "number": {**number, "direct_link": f"{self.base_url}/v1/numbers/{number['id']}", "country": "FR"},
            "contact": None, "assigned_to": None, "teams": [], "tags": [], "comments": [],
            "participants": [{"phone_number": digits, "type": "external"}]
            + ([] if missed else [{"id": user["id"], "name": user["name"], "type": "user"}]),
        }
        call.update(fields)
        self.calls[cid] = call
        return call

    def create(self, n: int = 1, *, done: bool = True, ago: int = 0, **fields: Any) -> list[str]:
        """New calls created now (or `ago` seconds ago): never in the reader's future."""
        with self.lock:
            out = []
            for _ in range(n):
                self.now = max(self.now, int(time.time()))
                out.append(str(self._add(self.now - ago, done=done, **fields)["id"]))
            return out

    def end(self, cid: str, duration: int = 60) -> dict[str, Any]:
        with self.lock:
            call = self.calls[int(cid)]
            answered = call["answered_at"] or call["started_at"] + 5
            call.update(status="done", answered_at=answered, ended_at=call["started_at"] + duration, duration=duration)
            return dict(call)

    def corrupt(self, cid: str) -> None:
        with self.lock:
            self.calls[int(cid)]["direction"] = "sideways"

    def fail_next(self, count: int, status: int = 429, retry_after: float | None = None) -> None:
        with self.lock:
            self.faults.extend([(status, retry_after)] * count)

    def ids(self) -> set[str]:
        with self.lock:
            return {str(i) for i in self.calls}

    def query(self, lo: int | None, hi: int | None, desc: bool) -> list[dict[str, Any]]:
        with self.lock:
            rows = [c for c in self.calls.values()
                    if (lo is None or c["started_at"] >= lo) and (hi is None or c["started_at"] <= hi)]
        rows.sort(key=lambda c: (c["started_at"], c["id"]), reverse=desc)
        return rows


class _RateWindow:
    def __init__(self, limit: int, clock: Callable[[], float]) -> None:
        self.limit, self.clock = limit, clock
        self.window_start = int(clock()) // 60 * 60
        self.used = 0
        self.lock = threading.Lock()

    def hit(self) -> tuple[int, int]:
        """(remaining, reset epoch) after counting one request."""
        with self.lock:
            start = int(self.clock()) // 60 * 60
            if start != self.window_start:
                self.window_start, self.used = start, 0
            self.used += 1
            return self.limit - self.used, self.window_start + 60


def _json(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(obj), status_code=status, media_type="application/json", headers=headers)


def _int(value: str | None, name: str) -> int | None:
    if value is None or value == "":
        return None
    if not value.lstrip("-").isdigit():
        raise ValueError(f"{name} must be an integer")
    return int(value)


def create_app(store: AircallStore, api_id: str = API_ID, api_token: str = API_TOKEN, *, rate_limit: int = 60,
               enforce_rate_limit: bool = False, result_cap: int = RESULT_CAP,
               clock: Callable[[], float] = time.time) -> Starlette:
    window = _RateWindow(rate_limit, clock)
    basic = "Basic " + base64.b64encode(f"{api_id}:{api_token}".encode()).decode()

    def guard(request: Request) -> tuple[Response | None, dict[str, str]]:
        store.requests.append(f"{request.method} {request.url.path}?{request.url.query}")
        remaining, reset = window.hit()
        headers = {"X-AircallApi-Limit": str(rate_limit), "X-AircallApi-Remaining": str(max(remaining, 0)),
                   "X-AircallApi-Reset": str(reset)}
        if request.headers.get("authorization") not in (basic, f"Bearer {api_token}"):
            return _json({"error": "Unauthorized", "troubleshoot": "Check your API key"}, 401, headers), headers
        with store.lock:
            fault = store.faults.pop(0) if store.faults else None
        if fault is not None:
            status, retry_after = fault
            extra = {"Retry-After": str(retry_after)} if retry_after is not None else {}
            if status == 429:
                # Aircall says when the window resets, in its own header
                return _json({"error": "Too Many Requests", "troubleshoot": "Wait for X-AircallApi-Reset"}, 429,
                             {**headers, "X-AircallApi-Remaining": "0", "X-AircallApi-Reset": str(int(clock())),
                              **extra}), headers
            return _json({"error": "Internal Server Error"}, status, {**headers, **extra}), headers
        if enforce_rate_limit and remaining < 0:
            return _json({"error": "Too Many Requests", "troubleshoot": "Wait for X-AircallApi-Reset"}, 429,
                         headers), headers
        return None, headers

    async def ping(request: Request) -> Response:
        denied, headers = guard(request)
        return denied or _json({"ping": "pong"}, headers=headers)

    async def list_calls(request: Request) -> Response:
        denied, headers = guard(request)
        if denied:
            return denied
        q = request.query_params
        try:
            lo, hi = _int(q.get("from"), "from"), _int(q.get("to"), "to")
            page = _int(q.get("page"), "page") or 1
            per_page = min(_int(q.get("per_page"), "per_page") or 20, MAX_PER_PAGE)
        except ValueError as err:
            return _json({"error": "Bad Request", "troubleshoot": str(err)}, 400, headers)
        order = q.get("order", "asc")
        if order not in ("asc", "desc") or page < 1 or per_page < 1:
            return _json({"error": "Bad Request", "troubleshoot": "order is asc or desc; page and per_page >= 1"},
                         400, headers)
        if page * per_page > result_cap:
            return _json({"error": "Bad Request", "troubleshoot": f"at most {result_cap} results can be paged "
                          "through: narrow the from/to window"}, 400, headers)
        rows = store.query(lo, hi, order == "desc")
        chunk = rows[(page - 1) * per_page: page * per_page]
        base = f"{str(request.base_url).rstrip('/')}{request.url.path}"
        keep = [(k, v) for k, v in q.multi_items() if k not in ("page", "per_page")]

        def link(n: int) -> str:
            return f"{base}?{urlencode([*keep, ('page', n), ('per_page', per_page)])}"

        more = page * per_page < min(len(rows), result_cap)
        meta = {"count": len(chunk), "total": len(rows), "current_page": page, "per_page": per_page,
                "next_page_link": link(page + 1) if more else None,
                "previous_page_link": link(page - 1) if page > 1 else None}
        return _json({"calls": chunk, "meta": meta}, headers=headers)

    async def get_call(request: Request) -> Response:
        denied, headers = guard(request)
        if denied:
            return denied
        raw = request.path_params["call_id"]
        call = store.calls.get(int(raw)) if raw.isdigit() else None
        if call is None:
            return _json({"error": "Not found", "troubleshoot": f"Call {raw} not found"}, 404, headers)
        return _json({"call": call}, headers=headers)

    return Starlette(routes=[
        Route("/v1/ping", ping, methods=["GET"]),
        Route("/v1/calls", list_calls, methods=["GET"]),
        Route("/v1/calls/{call_id}", get_call, methods=["GET"]),
    ])


def webhook_body(call: dict[str, Any], event: str, token: str, timestamp: int | None = None) -> bytes:
    """The envelope Aircall posts: `{resource, event, timestamp, token, data}`."""
    return orjson.dumps({"resource": "call", "event": event, "timestamp": timestamp or int(time.time()),
                         "token": token, "data": call})


def send_webhook(store: AircallStore, url: str, cid: str, event: str = "call.ended", token: str = WEBHOOK_TOKEN,
                 client: httpx.Client | None = None, timestamp: int | None = None) -> httpx.Response:
    """POST one `call.*` webhook for a call to `url`, as Aircall does (JSON, the token in the body)."""
    with store.lock:
        call = dict(store.calls[int(cid)])
    body = webhook_body(call, event, token, timestamp)
    headers = {"Content-Type": "application/json", "User-Agent": "Aircall-Webhooks"}
    if client is not None:
        return client.post(url, content=body, headers=headers)
    with httpx.Client(timeout=10) as http:
        return http.post(url, content=body, headers=headers)


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

        with SandboxServer(AircallStore(calls=100)) as server:
            httpx.get(f"{server.url}/v1/calls", auth=(API_ID, API_TOKEN))
    """

    def __init__(self, store: AircallStore | None = None, host: str = "127.0.0.1", port: int = 0,
                 **app_options: Any) -> None:
        self.store = store if store is not None else AircallStore()
        self.host, self.port = host, port
        self.url = ""
        self._app = create_app(self.store, **app_options)
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

        self._thread = threading.Thread(target=run, name=f"aircall-sandbox:{self.port}", daemon=True)
        self._thread.start()
        if not ready.wait(timeout) or not server.started:
            self.stop()
            raise RuntimeError("Aircall sandbox did not start")
        self.store.base_url = self.url
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
    p = argparse.ArgumentParser(prog="python -m connectors.aircall.sandbox",
                                description="Run the Aircall calls sandbox in the foreground.")
    p.add_argument("--calls", type=int, default=500)
    p.add_argument("--days", type=int, default=10)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--rate-limit", type=int, default=60)
    p.add_argument("--enforce-rate-limit", action="store_true")
    p.add_argument("--result-cap", type=int, default=RESULT_CAP)
    a = p.parse_args(argv)
    store = AircallStore(a.calls, seed=a.seed, days=a.days)
    app = create_app(store, rate_limit=a.rate_limit, enforce_rate_limit=a.enforce_rate_limit,
                     result_cap=a.result_cap)
    server, sock = _serve(app, a.host, a.port, lambda url: print(json.dumps(
        {"url": url, "api_id": API_ID, "api_token": API_TOKEN, "webhook_token": WEBHOOK_TOKEN}), flush=True))
    server.run(sockets=[sock])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
