"""A local simulator of HubSpot's CRM v3 objects API for demos, tests and benchmarks.

Standalone (stdlib, starlette, uvicorn, orjson): it must follow HubSpot's documented shapes, not
any connector's assumptions. The data model lives in ``sandbox_data.py``.

HubSpot endpoints (``{type}`` is ``contacts``, ``companies``, ``deals``, the engagements ``calls``,
``emails``, ``meetings``, ``notes``, ``tasks``, or an object type id such as ``0-1``/``0-48``):

- ``GET  /crm/v3/objects/{type}``  ``limit`` (10, clamped to 100), ``after`` (opaque keyset cursor),
  ``properties``, ``associations``, ``archived``; id order; no ``paging`` key on the last page.
- ``GET  /crm/v3/objects/{type}/{id}``  one record, 404 when absent.
- ``POST /crm/v3/objects/{type}/search``  ``filterGroups``/``sorts``/``properties``/``limit``
  (≤200)/``after`` (offset)/``query``; ``total``; 400 past 10,000 results; archived never shown.
- ``POST /crm/v3/objects/{type}/batch/create|update|upsert``  ≤100 inputs; 200/201, or 207 with
  ``errors`` (see ``sandbox_writes.py`` for which failures are whole-batch 4xx and which 207).
- ``POST /crm/v4/associations/{from}/{to}/batch/read``  associated ids with their type ids.
- ``GET  /crm/v3/owners``  ``limit`` (≤500), ``after``, ``email``, ``archived``.
- ``GET  /crm/v3/pipelines/{type}``  pipelines with their stages (deals).

Engagements carry ``hs_timestamp`` and their type's properties, and list with ``associations`` to
their contact, its company and (every other one) a deal (``sandbox_engagements.py``).

Sandbox control (not HubSpot's, no auth): ``POST /_sandbox/modify|archive|create|fail|reset-stats``,
``GET /_sandbox/stats``. Run one in-process with ``SandboxServer`` or as a process with
``python -m connectors.hubspot.sandbox --contacts 100000``, which prints ``{"url": ...}`` once
it accepts connections.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import math
import re
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from itertools import islice
from typing import Any
from urllib.parse import urlencode

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from connectors.hubspot import sandbox_writes
from connectors.hubspot.sandbox_data import (
    DATE_PROPS,
    DEFAULT_PROPERTIES,
    ID_BASE,
    MODIFIED_PROPS,
    NUMBER_PROPS,
    QUERY_PROPS,
    SandboxError,
    SandboxStore,
    encode_after,
    parse_time,
    resolve_type,
)

__all__ = ["SandboxServer", "SandboxStore", "create_app", "main", "search"]

LIST_MAX_LIMIT = 100  # HubSpot's SDKs page lists by 100; larger values are clamped here [U]
SEARCH_MAX_LIMIT = 200
SEARCH_MAX_RESULTS = 10_000
MAX_FILTER_GROUPS = 6
MAX_FILTERS = 18  # total across groups [U: the per-group caps vary by doc revision]
_RANGE_OPS = frozenset({"EQ", "GT", "GTE", "LT", "LTE", "BETWEEN"})
_OPS = _RANGE_OPS | {"NEQ", "IN", "NOT_IN", "HAS_PROPERTY", "NOT_HAS_PROPERTY", "CONTAINS_TOKEN",
                     "NOT_CONTAINS_TOKEN"}
_LO, _HI = -(1 << 62), 1 << 62
_AUTH_MISSING = ("Authentication credentials not found. This API supports OAuth 2.0 authentication and you "
                 "can find more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview")
_STATUS_TEXT = {
    400: ("There was a problem with the request.", "VALIDATION_ERROR"),
    401: (_AUTH_MISSING, "INVALID_AUTHENTICATION"),
    403: ("This app hasn't been granted all required scopes to make this call.", "MISSING_SCOPES"),
    404: ("resource not found", "OBJECT_NOT_FOUND"),
    423: ("The resource is locked; retry after 2 seconds.", "LOCKED"),
    500: ("internal error", "INTERNAL_ERROR"),
    502: ("Bad Gateway", "BAD_GATEWAY"),
    503: ("Service Unavailable", "SERVICE_UNAVAILABLE"),
    504: ("Gateway Timeout", "GATEWAY_TIMEOUT"),
}


# ---- search -----------------------------------------------------------------------------------
def _kind(prop: str) -> str:
    return "date" if prop in DATE_PROPS else "number" if prop in NUMBER_PROPS else "string"


def _coerce(kind: str, v: Any) -> Any:
    """A property value (record or request) as a comparable: ms, float or lowercase string."""
    if v is None or v == "":
        return None
    if kind == "date":
        return parse_time(v)
    if kind == "number":
        try:
            return float(v)
        except (TypeError, ValueError):
            return None
    return str(v).lower()


def _token_match(value: str, pattern: str) -> bool:
    tokens = [value, *re.split(r"[^0-9a-z]+", value)]
    return any(fnmatch.fnmatchcase(tok, pattern) for tok in tokens)


class _Filter:
    __slots__ = ("high", "kind", "op", "prop", "value", "values")

    def __init__(self, raw: Any, known: set[str]) -> None:
        if not isinstance(raw, dict):
            raise SandboxError(400, "Each filter must be an object with propertyName and operator")
        self.prop, self.op = str(raw.get("propertyName", "")), str(raw.get("operator", "")).upper()
        if self.op not in _OPS:
            raise SandboxError(400, f"Unknown operator {raw.get('operator')!r}; allowed: {sorted(_OPS)}")
        if self.prop not in known:
            raise SandboxError(400, f"Property {self.prop!r} does not exist")
        self.kind = "string" if self.op.endswith("CONTAINS_TOKEN") else _kind(self.prop)
        self.value: Any = None
        self.high: Any = None
        self.values: list[Any] = []
        if self.op in ("IN", "NOT_IN"):
            vals = raw.get("values")
            if not isinstance(vals, list) or not vals:
                raise SandboxError(400, f"Operator {self.op} needs a non-empty 'values' list")
            self.values = [self._arg(v) for v in vals]
        elif not self.op.endswith("HAS_PROPERTY"):
            self.value = self._arg(raw.get("value"))
            if self.op == "BETWEEN":
                self.high = self._arg(raw.get("highValue"))

    def _arg(self, v: Any) -> Any:
        c = _coerce(self.kind, v)
        if c is None:
            raise SandboxError(400, f"Invalid or missing value {v!r} for {self.op} on {self.prop!r}")
        return c

    def test(self, raw: dict[str, Any]) -> bool:
        v, op = _coerce(self.kind, raw.get(self.prop)), self.op
        if op in ("HAS_PROPERTY", "NOT_HAS_PROPERTY"):
            return (v is None) == (op == "NOT_HAS_PROPERTY")
        if op == "NEQ":
            return v != self.value
        if op == "NOT_IN":
            return v not in self.values
        if op == "NOT_CONTAINS_TOKEN":
            return v is None or not _token_match(v, self.value)
        if v is None:
            return False
        if op == "EQ":
            return bool(v == self.value)
        if op in ("IN", "CONTAINS_TOKEN"):
            return v in self.values if op == "IN" else _token_match(v, self.value)
        if op == "BETWEEN":
            return bool(self.value <= v <= self.high)
        return bool(v > self.value if op == "GT" else v >= self.value if op == "GTE"
                    else v < self.value if op == "LT" else v <= self.value)

    def narrow(self, lo: int, hi: int) -> tuple[int, int]:
        """Intersect an integer range [lo, hi] with this (range-operator) filter."""
        v, op = float(self.value), self.op
        if op in ("EQ", "GTE", "BETWEEN"):
            lo = max(lo, math.ceil(v))
        if op == "GT":
            lo = max(lo, math.floor(v) + 1)
        if op in ("EQ", "LTE"):
            hi = min(hi, math.floor(v))
        if op == "LT":
            hi = min(hi, math.ceil(v) - 1)
        if op == "BETWEEN":
            hi = min(hi, math.floor(float(self.high)))
        return lo, hi


def _int_arg(v: Any, name: str) -> int:
    if isinstance(v, bool) or not ((isinstance(v, int) and v >= 0) or (isinstance(v, str) and v.strip().isdigit())):
        raise SandboxError(400, f"{name} must be a non-negative integer, got {v!r}")
    return int(v)


def _sort_spec(sorts: Any, known: set[str]) -> tuple[str | None, bool]:
    """HubSpot honours one sort: the first of ``sorts`` ({propertyName, direction} or "[-]prop")."""
    if not sorts:
        return None, False
    first = sorts[0] if isinstance(sorts, list) else None
    if isinstance(first, str):
        prop, desc = first.lstrip("-"), first.startswith("-")
    elif isinstance(first, dict):
        prop, direction = str(first.get("propertyName", "")), str(first.get("direction", "ASCENDING")).upper()
        if direction not in ("ASCENDING", "DESCENDING"):
            raise SandboxError(400, f"Sort direction must be ASCENDING or DESCENDING, got {direction!r}")
        desc = direction == "DESCENDING"
    else:
        raise SandboxError(400, "sorts must be a list of {propertyName, direction}")
    if prop not in known:
        raise SandboxError(400, f"Cannot sort by unknown property {prop!r}")
    return prop, desc


def search(store: SandboxStore, object_type: str, body: Any) -> dict[str, Any]:
    """Answer ``POST /crm/v3/objects/{type}/search`` with HubSpot's CollectionResponseWithTotal.

    Fast path: one filter group whose range filters are on the modified date or ``hs_object_id``,
    sorted by either (or unsorted: id order). Those become an index range over the store's
    ordered streams, so 1,000,000 records cost O(after + limit), not O(N). Any other filter is
    tested record by record over that range; a sort on another property scans and sorts it.
    """
    t = resolve_type(object_type)
    if not isinstance(body, dict):
        raise SandboxError(400, "Search body must be a JSON object")
    limit, after = _int_arg(body.get("limit", 10), "limit"), _int_arg(body.get("after") or 0, "after")
    if limit > SEARCH_MAX_LIMIT:
        raise SandboxError(400, f"limit must be at most {SEARCH_MAX_LIMIT}, got {limit}")
    if after + limit > SEARCH_MAX_RESULTS:
        raise SandboxError(400, f"Search results are limited to {SEARCH_MAX_RESULTS} per query; "
                                f"after ({after}) + limit ({limit}) exceeds it. Narrow the filters instead.")
    groups = body.get("filterGroups") or []
    if not isinstance(groups, list) or not all(isinstance(g, dict) for g in groups):
        raise SandboxError(400, "filterGroups must be a list of {filters: [...]}")
    if len(groups) > MAX_FILTER_GROUPS:
        raise SandboxError(400, f"At most {MAX_FILTER_GROUPS} filterGroups are allowed, got {len(groups)}")
    props = body.get("properties") or list(DEFAULT_PROPERTIES[t])
    if not isinstance(props, list) or not all(isinstance(p, str) for p in props):
        raise SandboxError(400, "properties must be a list of strings")
    query = str(body.get("query") or "").strip().lower()
    with store.lock:
        known = store.known(t)
        compiled = [[_Filter(f, known) for f in (g.get("filters") or [])] for g in groups]
        if sum(map(len, compiled)) > MAX_FILTERS:
            raise SandboxError(400, f"At most {MAX_FILTERS} filters are allowed in total")
        sort_prop, desc = _sort_spec(body.get("sorts"), known)
        r, rest = [_LO, _HI, _LO, _HI], compiled
        if len(compiled) == 1:
            rest = [[]]
            for f in compiled[0]:
                if f.op in _RANGE_OPS and f.prop in MODIFIED_PROPS[t]:
                    r[0], r[1] = f.narrow(r[0], r[1])
                elif f.op in _RANGE_OPS and f.prop == "hs_object_id":
                    r[2], r[3] = f.narrow(r[2], r[3])
                else:
                    rest[0].append(f)
            rest = [g for g in rest if g]
        rng = (r[0], r[1], r[2], r[3])

        def keep(i: int) -> bool:
            raw = store.raw(t, i)
            if query and not any(query in str(raw.get(p) or "").lower() for p in QUERY_PROPS[t]):
                return False
            return not rest or any(all(f.test(raw) for f in g) for g in rest)

        filtered = bool(rest or query)
        total: int | None = None
        if sort_prop is None or sort_prop == "hs_object_id" or sort_prop in MODIFIED_PROPS[t]:
            stream = store.ordered(t, rng, sort_prop in MODIFIED_PROPS[t], desc)
            if filtered:
                stream = filter(keep, stream)
            else:
                total = store.count_in(t, rng)
        else:  # sort on another property: scan the candidates, sort by value, nulls last [U]
            kind = _kind(sort_prop)
            found = [(_coerce(kind, store.raw(t, i).get(sort_prop)), i)
                     for i in store.ordered(t, rng, False, False) if not filtered or keep(i)]
            present = sorted((e for e in found if e[0] is not None), key=lambda e: e[0], reverse=desc)
            stream = iter([i for _, i in present] + [i for v, i in found if v is None])
            total = len(found)
        skipped = sum(1 for _ in islice(stream, after))
        page = list(islice(stream, limit))
        if total is None:
            total = skipped + len(page) + sum(1 for _ in stream)
        out: dict[str, Any] = {"total": total, "results": [store.render(t, i, props) for i in page]}
    if page and after + len(page) < total:
        out["paging"] = {"next": {"after": str(after + len(page))}}
    return out


# ---- HTTP ---------------------------------------------------------------------------------------
class _RateWindow:
    """Rolling count of requests in the last ``interval_ms`` (HubSpot's ten-secondly window)."""

    def __init__(self, max_requests: int, interval_ms: int, clock: Callable[[], float]) -> None:
        self.max, self.interval, self.clock = max_requests, interval_ms / 1000, clock
        self.hits: deque[float] = deque()
        self.lock = threading.Lock()

    def hit(self) -> int:
        """Count one request; return how many remain in the window (negative when over)."""
        with self.lock:
            now = self.clock()
            while self.hits and self.hits[0] <= now - self.interval:
                self.hits.popleft()
            self.hits.append(now)
            return self.max - len(self.hits)


def _json(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(obj), status_code=status, headers=headers, media_type="application/json")


def _error(status: int, message: str | None = None, category: str | None = None,
           headers: dict[str, str] | None = None) -> Response:
    default_msg, default_cat = _STATUS_TEXT.get(status, ("Injected failure", "UNKNOWN_ERROR"))
    body = {"status": "error", "message": message or default_msg, "correlationId": str(uuid.uuid4()),
            "category": category or default_cat}
    return _json(body, status, headers)


def _rate_limited(retry_after: int | None, headers: dict[str, str]) -> Response:
    body = {"status": "error", "message": "You have reached your ten_secondly_rolling limit.",
            "errorType": "RATE_LIMIT", "correlationId": str(uuid.uuid4()), "policyName": "TEN_SECONDLY_ROLLING",
            "requestId": str(uuid.uuid4())}
    if retry_after is not None:
        headers = {**headers, "Retry-After": str(retry_after)}
    return _json(body, 429, headers)


def _qlist(request: Request, name: str) -> list[str]:
    """A comma list that may also be repeated (``properties=a,b&properties=c``)."""
    return [p.strip() for v in request.query_params.getlist(name) for p in v.split(",") if p.strip()]


def create_app(store: SandboxStore, token: str | None = "sandbox-token", *, rate_limit_max: int | None = 190,
               rate_limit_interval_ms: int = 10_000, enforce_rate_limit: bool = False,
               clock: Callable[[], float] = time.monotonic) -> Starlette:
    """The sandbox as a Starlette app. ``rate_limit_max=None`` drops the rate-limit headers;
    ``enforce_rate_limit`` answers 429 past ``rate_limit_max`` requests per interval (not search)."""
    window = _RateWindow(rate_limit_max, rate_limit_interval_ms, clock) if rate_limit_max else None

    def list_objects(request: Request, t: str) -> Any:
        q = request.query_params
        limit = _int_arg(q.get("limit", "10"), "limit")
        if limit < 1:
            raise SandboxError(400, f"limit must be at least 1, got {limit}")
        limit = min(limit, LIST_MAX_LIMIT)
        archived = q.get("archived", "false").lower() == "true"
        props, assoc = _qlist(request, "properties") or DEFAULT_PROPERTIES[t], _qlist(request, "associations")
        with store.lock:
            page, more = store.list_page(t, limit, q.get("after"), archived)
            out: dict[str, Any] = {"results": [store.render(t, i, props, assoc) for i in page]}
        if more:
            after = encode_after(ID_BASE[t] + page[-1])
            query = urlencode([(k, v) for k, v in q.multi_items() if k != "after"] + [("after", after)])
            out["paging"] = {"next": {"after": after, "link": f"{request.base_url}{request.url.path[1:]}?{query}"}}
        return out

    def get_object(request: Request, t: str) -> Any:
        q = request.query_params
        if q.get("idProperty") not in (None, "", "hs_object_id"):
            raise SandboxError(400, "idProperty lookups are not simulated by the sandbox")
        props, assoc = _qlist(request, "properties") or DEFAULT_PROPERTIES[t], _qlist(request, "associations")
        with store.lock:
            i = store.get(t, request.path_params["object_id"], q.get("archived", "false").lower() == "true")
            if i is None:
                raise SandboxError(404, "resource not found", "OBJECT_NOT_FOUND")
            return store.render(t, i, props, assoc)

    def search_objects(request: Request, t: str, body: bytes) -> Any:
        try:
            parsed = orjson.loads(body or b"{}")
        except orjson.JSONDecodeError as exc:
            raise SandboxError(400, f"Invalid input JSON: {exc}") from None
        return search(store, t, parsed)

    def endpoint(kind: str) -> Callable[[Request], Awaitable[Response]]:
        async def handle(request: Request) -> Response:
            body = await request.body() if request.method == "POST" else b""
            pp = request.path_params
            raw_type = pp.get("object_type") or pp.get("from_type") or kind
            what = f"batch.{pp['action']}" if kind == "batch" else f"associations.{pp['to_type']}" \
                if kind == "assoc" else kind
            response = dispatch(request, kind, body)
            store.count_request(f"{request.method} {raw_type}.{what}", response.status_code)
            return response
        return handle

    def parsed(body: bytes) -> Any:
        try:
            return orjson.loads(body or b"{}")
        except orjson.JSONDecodeError as exc:
            raise SandboxError(400, f"Invalid input JSON: {exc}") from None

    def other(request: Request, kind: str, body: bytes) -> Response:
        """Batch writes, associations, owners and pipelines (sandbox_writes.py)."""
        pp, q = request.path_params, request.query_params
        if kind == "batch":
            status, data = sandbox_writes.batch_write(store, pp["object_type"], pp["action"], parsed(body))
        elif kind == "assoc":
            status, data = sandbox_writes.associations_batch_read(store, pp["from_type"], pp["to_type"], parsed(body))
        elif kind == "owners":
            status, data = 200, sandbox_writes.list_owners(_int_arg(q.get("limit", "100"), "limit"), q.get("after"),
                                                           q.get("email"), q.get("archived", "false") == "true")
        else:
            status, data = 200, sandbox_writes.list_pipelines(pp["object_type"])
        return _json(data, status)

    def dispatch(request: Request, kind: str, body: bytes) -> Response:
        if token is not None:
            auth = request.headers.get("authorization", "")
            if auth != f"Bearer {token}":
                return _error(401, None if not auth else "The access token provided is invalid.")
        headers: dict[str, str] = {}
        if window is not None and kind != "search":  # search has its own limit and no headers
            remaining = window.hit()
            headers = {"X-HubSpot-RateLimit-Max": str(window.max),
                       "X-HubSpot-RateLimit-Remaining": str(max(remaining, 0)),
                       "X-HubSpot-RateLimit-Interval-Milliseconds": str(rate_limit_interval_ms)}
            if enforce_rate_limit and remaining < 0:
                return _rate_limited(1, headers)
        fault = store.take_fault(request.url.path)
        if fault is not None:
            status, retry_after = fault
            if status == 429:
                return _rate_limited(retry_after, headers)
            if retry_after is not None and status == 503:
                headers = {**headers, "Retry-After": str(retry_after)}
            return _error(status, headers=headers)
        try:
            if kind not in ("list", "get", "search"):
                response = other(request, kind, body)
                response.headers.update(headers)
                return response
            t = resolve_type(request.path_params["object_type"])
            if kind == "list":
                data = list_objects(request, t)
            elif kind == "get":
                data = get_object(request, t)
            else:
                data = search_objects(request, t, body)
        except SandboxError as exc:
            return _error(exc.status, exc.message, exc.category, headers)
        return _json(data, headers=headers)

    def admin(action: Callable[[dict[str, Any]], Any]) -> Callable[[Request], Awaitable[Response]]:
        async def handle(request: Request) -> Response:
            try:
                raw = await request.body()
                data = orjson.loads(raw) if raw else {}
                if not isinstance(data, dict):
                    raise ValueError("body must be a JSON object")
                return _json(action(data))
            except (KeyError, ValueError, TypeError, SandboxError, orjson.JSONDecodeError) as exc:
                return _json({"error": str(exc)}, 400)
        return handle

    def fail(d: dict[str, Any]) -> Any:
        store.fail_next(int(d.get("count", 1)), int(d.get("status", 429)), d.get("retry_after", 1),
                        d.get("path_prefix"))
        return {"ok": True}

    def reset(_: dict[str, Any]) -> Any:
        store.reset_stats()
        return {"ok": True}

    routes = [
        Route("/crm/v3/objects/{object_type}", endpoint("list"), methods=["GET"]),
        Route("/crm/v3/objects/{object_type}/search", endpoint("search"), methods=["POST"]),
        Route("/crm/v3/objects/{object_type}/batch/{action}", endpoint("batch"), methods=["POST"]),
        Route("/crm/v4/associations/{from_type}/{to_type}/batch/read", endpoint("assoc"), methods=["POST"]),
        Route("/crm/v3/owners", endpoint("owners"), methods=["GET"]),
        Route("/crm/v3/owners/", endpoint("owners"), methods=["GET"]),
        Route("/crm/v3/pipelines/{object_type}", endpoint("pipelines"), methods=["GET"]),
        Route("/crm/v3/objects/{object_type}/{object_id}", endpoint("get"), methods=["GET"]),
        Route("/_sandbox/modify", admin(lambda d: {"ids": store.modify(
            d["type"], ids=d.get("ids"), count=d.get("count"), properties=d.get("properties"),
            same_ts=bool(d.get("same_ts")))}), methods=["POST"]),
        Route("/_sandbox/archive", admin(lambda d: {"ids": store.archive(d["type"], d["ids"])}), methods=["POST"]),
        Route("/_sandbox/create", admin(lambda d: {"ids": store.create(
            d["type"], int(d["count"]), d.get("properties"))}), methods=["POST"]),
        Route("/_sandbox/fail", admin(fail), methods=["POST"]),
        Route("/_sandbox/stats", admin(lambda _: store.stats()), methods=["GET"]),
        Route("/_sandbox/reset-stats", admin(reset), methods=["POST"]),
    ]
    return Starlette(routes=routes)


# ---- running it ---------------------------------------------------------------------------------
class _Uvicorn(uvicorn.Server):
    """uvicorn that calls ``on_ready`` once its sockets accept connections."""

    def __init__(self, config: uvicorn.Config, on_ready: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_ready = on_ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if not self.should_exit:
            self._on_ready()


def _bind(host: str, port: int) -> socket.socket:
    # proto=IPPROTO_TCP matters: asyncio only sets TCP_NODELAY on accepted sockets that say so,
    # and without it every response waits ~40 ms on a delayed ACK.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


def _config(app: Starlette) -> uvicorn.Config:
    # http="auto" takes httptools when installed, else h11.
    return uvicorn.Config(app, loop="asyncio", http="auto", ws="none", lifespan="off", log_level="warning",
                          access_log=False, timeout_graceful_shutdown=2)


class SandboxServer:
    """Serve a store on loopback from a background thread (port 0: a free port). Example::

        with SandboxServer(SandboxStore(contacts=500)) as server:
            httpx.get(f"{server.url}/crm/v3/objects/contacts", headers={"Authorization": "Bearer sandbox-token"})
            server.store.modify("contacts", count=10)
    """

    def __init__(self, store: SandboxStore | None = None, host: str = "127.0.0.1", port: int = 0,
                 token: str | None = "sandbox-token", **app_options: Any) -> None:
        self.store = store if store is not None else SandboxStore()
        self.host, self.port, self.token = host, port, token
        self._app = create_app(self.store, token, **app_options)
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

        self._thread = threading.Thread(target=run, name=f"hubspot-sandbox:{self.port}", daemon=True)
        self._thread.start()
        if not ready.wait(timeout) or not server.started:
            self.stop()
            raise RuntimeError(f"HubSpot sandbox did not start on {self.url}")
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
    p = argparse.ArgumentParser(prog="python -m connectors.hubspot.sandbox",
                                description="Run the HubSpot CRM v3 sandbox in the foreground.")
    for name, default in (("contacts", 1000), ("companies", None), ("deals", None), ("engagements", None), ("seed", 7),
                          ("base-time-ms", 1_700_000_000_000), ("bad-every", 0)):
        p.add_argument(f"--{name}", type=int, default=default)
    p.add_argument("--same-ts-block", type=int, nargs=2, metavar=("START", "COUNT"), default=None)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--token", default="sandbox-token", help="bearer token to require ('' disables auth)")
    p.add_argument("--rate-limit-max", type=int, default=190, help="0 drops the rate-limit headers")
    p.add_argument("--enforce-rate-limit", action="store_true")
    a = p.parse_args(argv)
    store = SandboxStore(a.contacts, a.companies, a.deals, a.seed, a.base_time_ms, a.bad_every,
                         tuple(a.same_ts_block) if a.same_ts_block else None, engagements=a.engagements)
    app = create_app(store, a.token or None, rate_limit_max=a.rate_limit_max or None,
                     enforce_rate_limit=a.enforce_rate_limit)
    sock = _bind(a.host, a.port)
    host = f"[{a.host}]" if ":" in a.host else a.host
    url = f"http://{host}:{sock.getsockname()[1]}"
    server = _Uvicorn(_config(app), lambda: print(json.dumps({"url": url}), flush=True))
    server.run(sockets=[sock])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
