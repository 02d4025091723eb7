"""A local simulator of Salesforce's REST API for demos, tests and benchmarks.

It follows Salesforce's documented shapes (REST API Developer Guide), not any connector's
assumptions. The org's data lives in ``sandbox_data.py``, the SOQL subset in ``sandbox_soql.py``.

Salesforce endpoints (``vXX.X`` any version; ``Authorization: Bearer <token>``):

- ``GET /services/data/vXX.X/query?q=`` and ``/queryAll?q=``: ``{totalSize, done, nextRecordsUrl?,
  records: [{attributes: {type, url}, ...}]}``; ``Sforce-Query-Options: batchSize=N`` (200-2,000,
  default 2,000); ``GET /services/data/vXX.X/query/{locator}-{offset}`` for the next batch.
- ``GET /services/data/vXX.X/sobjects/{SObject}/deleted/?start=&end=``: ``{deletedRecords: [{id,
  deletedDate}], earliestDateAvailable, latestDateCovered}``.
- ``PATCH /services/data/vXX.X/composite/sobjects/{SObject}/{ExternalIdField}``: upsert up to 200,
  ``allOrNone``, one result per record ``{id, success, errors: [{statusCode, message, fields}], created}``.
- ``GET /services/data/vXX.X/limits``: ``DailyApiRequests {Max, Remaining}``.
- Every answer carries ``Sforce-Limit-Info: api-usage=N/M``; past the daily limit: 403
  ``REQUEST_LIMIT_EXCEEDED``. Errors are ``[{"message", "errorCode"}]``.

Sandbox control (not Salesforce's, no auth): ``POST /_sandbox/modify|delete|purge-deletes|
expire-locators|fail``, ``GET /_sandbox/stats``. Run it in-process with ``SandboxServer`` or as a
process: ``python -m connectors.salesforce.sandbox --contacts 10000`` prints ``{"url": ...}`` once
it accepts connections.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import socket
import threading
from collections.abc import Awaitable, Callable, Sequence
from email.utils import format_datetime
from typing import Any

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from connectors.salesforce.sandbox_data import SandboxError, SandboxStore, parse_param_time

__all__ = ["SandboxServer", "SandboxStore", "create_app", "main"]

_BATCH = re.compile(r"batchSize\s*=\s*(\d+)")
_HTML_ERROR = ("<!DOCTYPE html><html><head><title>Service Unavailable</title></head><body>"
               "<h1>Maintenance</h1><p>Your org is being upgraded. Please try again later.</p></body></html>")


def _json(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(obj), status_code=status, headers=headers,
                    media_type="application/json;charset=UTF-8")


def _record(version: str, sobject: str, row: dict[str, Any]) -> dict[str, Any]:
    rid = row["__id"]
    out: dict[str, Any] = {"attributes": {"type": sobject, "url": f"/services/data/{version}/sobjects/{sobject}/{rid}"}}
    out.update((k, v) for k, v in row.items() if k != "__id")
    return out


def create_app(store: SandboxStore, token: str | None = "sandbox-token") -> Starlette:
    def batch_of(request: Request) -> int:
        m = _BATCH.search(request.headers.get("sforce-query-options", ""))
        # Salesforce treats the size as a request, clamped to 200-2,000
        return max(200, min(2000, int(m.group(1)))) if m else 2000

    def batch_response(version: str, loc: str, sobject: str, rows: list[dict[str, Any]], offset: int,
                       size: int) -> dict[str, Any]:
        chunk = rows[offset:offset + size]
        done = offset + size >= len(rows)
        out: dict[str, Any] = {"totalSize": len(rows), "done": done,
                               "records": [_record(version, sobject, r) for r in chunk]}
        if not done:
            out["nextRecordsUrl"] = f"/services/data/{version}/query/{loc}-{offset + size}"
        return out

    def query(request: Request, version: str, include_deleted: bool) -> Any:
        q = request.query_params.get("q")
        if not q:
            raise SandboxError(400, "MALFORMED_QUERY", "A query string has to be specified")
        sobject, rows, size = store.query(q, include_deleted=include_deleted, batch=batch_of(request))
        loc = store.open_locator(sobject, rows, size) if len(rows) > size else ""
        return batch_response(version, loc, sobject, rows, 0, size)

    def query_more(request: Request, version: str) -> Any:
        loc, _, offset = request.path_params["locator"].rpartition("-")
        if not offset.isdigit():
            raise SandboxError(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
        found = store.locator(loc)
        return batch_response(version, loc, found.sobject, found.rows, int(offset), found.batch)

    def deleted(request: Request, version: str) -> Any:
        start = parse_param_time(request.query_params.get("start"), "start")
        end = parse_param_time(request.query_params.get("end"), "end")
        return store.deleted(request.path_params["sobject"], start, end)

    async def upsert(request: Request, version: str) -> Any:
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            raise SandboxError(400, "JSON_PARSER_ERROR", "The request body is not valid JSON") from None
        if not isinstance(body, dict) or not isinstance(body.get("records"), list):
            raise SandboxError(400, "JSON_PARSER_ERROR", "records: a list of records is required")
        return store.upsert(request.path_params["sobject"], request.path_params["field"], body["records"],
                            bool(body.get("allOrNone", False)))

    def limits(_request: Request, _version: str) -> Any:
        return {"DailyApiRequests": {"Max": store.daily_limit, "Remaining": max(0, store.daily_limit - store.api_used)}}

    def api(kind: str, action: Callable[[Request, str], Any]) -> Callable[[Request], Awaitable[Response]]:
        async def handle(request: Request) -> Response:
            version = request.path_params["version"]
            if token is not None and request.headers.get("authorization") != f"Bearer {token}":
                # the token is compared, never echoed
                return _json([{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}], 401)
            if store.over_limit():
                return _json([{"message": f"TotalRequests Limit exceeded. ({store.limit_info()})",
                               "errorCode": "REQUEST_LIMIT_EXCEEDED"}], 403,
                             {"Sforce-Limit-Info": store.limit_info()})
            store.count(kind)
            headers = {"Sforce-Limit-Info": store.limit_info(), "Date": format_datetime(store.clock(), usegmt=True)}
            failure = store.take_failure()
            if failure is not None:
                if failure.retry_after is not None:
                    headers["Retry-After"] = str(failure.retry_after)
                if failure.html:
                    return Response(_HTML_ERROR, failure.status, headers, media_type="text/html")
                code = "SERVER_UNAVAILABLE" if failure.status >= 500 else "REQUEST_LIMIT_EXCEEDED"
                return _json([{"message": "Injected failure", "errorCode": code}], failure.status, headers)
            if not re.fullmatch(r"v\d{2,3}\.\d", version):
                return _json([{"message": "The requested resource does not exist", "errorCode": "NOT_FOUND"}],
                             404, headers)
            try:
                result = action(request, version)
                if asyncio.iscoroutine(result):
                    result = await result
            except SandboxError as exc:
                return _json(exc.body(), exc.status, headers)
            return _json(result, headers=headers)
        return handle

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
        store.fail_next(int(d.get("count", 1)), int(d.get("status", 503)), d.get("retry_after"), bool(d.get("html")))
        return {"ok": True}

    def purge(d: dict[str, Any]) -> Any:
        store.purge_deletes(d.get("type"))
        return {"ok": True}

    def expire(_d: dict[str, Any]) -> Any:
        store.expire_locators()
        return {"ok": True}

    data = "/services/data/{version}"
    routes = [
        Route(f"{data}/query", api("query", lambda r, v: query(r, v, False)), methods=["GET"]),
        Route(f"{data}/queryAll", api("queryAll", lambda r, v: query(r, v, True)), methods=["GET"]),
        Route(f"{data}/query/{{locator}}", api("queryMore", query_more), methods=["GET"]),
        Route(f"{data}/queryAll/{{locator}}", api("queryMore", query_more), methods=["GET"]),
        Route(f"{data}/sobjects/{{sobject}}/deleted/", api("getDeleted", deleted), methods=["GET"]),
        Route(f"{data}/composite/sobjects/{{sobject}}/{{field}}", api("composite", upsert), methods=["PATCH"]),
        Route(f"{data}/limits", api("limits", limits), methods=["GET"]),
        Route("/_sandbox/modify", admin(lambda d: {"ids": store.modify(
            d["type"], ids=d.get("ids"), count=int(d.get("count", 0)), values=d.get("values"))}), methods=["POST"]),
        Route("/_sandbox/delete", admin(lambda d: {"ids": store.delete(d["type"], d["ids"])}), methods=["POST"]),
        Route("/_sandbox/purge-deletes", admin(purge), methods=["POST"]),
        Route("/_sandbox/expire-locators", admin(expire), methods=["POST"]),
        Route("/_sandbox/fail", admin(fail), methods=["POST"]),
        Route("/_sandbox/stats", admin(lambda _d: {"requests": dict(store.stats), "api_usage": store.limit_info()}),
              methods=["GET"]),
    ]
    return Starlette(routes=routes)


# ---- serving ----------------------------------------------------------------------------------
class _Uvicorn(uvicorn.Server):
    """Signals readiness once the socket accepts connections; no signal handlers (runs in a thread)."""

    def __init__(self, config: uvicorn.Config, on_ready: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_ready = on_ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            self._on_ready()

    def install_signal_handlers(self) -> None:  # the thread that runs us is not the main one
        return


def _config(app: Starlette) -> uvicorn.Config:
    # the Date header is the org's clock (SandboxStore.clock), set per response, not the host's
    return uvicorn.Config(app, loop="asyncio", http="auto", ws="none", lifespan="off", log_level="warning",
                          access_log=False, timeout_graceful_shutdown=2, date_header=False)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


class SandboxServer:
    """The sandbox on a loopback port, in a background thread::

        with SandboxServer(SandboxStore(contacts=1000), token="t") as sb:
            ...  # point the connector's instance_url at sb.url
    """

    def __init__(self, store: SandboxStore | None = None, host: str = "127.0.0.1", port: int = 0,
                 token: str | None = "sandbox-token") -> None:
        self.store = store if store is not None else SandboxStore()
        self.host, self.port, self.token = host, port, token
        self._app = create_app(self.store, token)
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

        self._thread = threading.Thread(target=run, name=f"salesforce-sandbox:{self.port}", daemon=True)
        self._thread.start()
        if not ready.wait(timeout) or not server.started:
            self.stop()
            raise RuntimeError(f"Salesforce sandbox did not start on {self.url}")
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
    p = argparse.ArgumentParser(prog="python -m connectors.salesforce.sandbox",
                                description="Run the Salesforce REST sandbox in the foreground.")
    for name, default in (("accounts", 50), ("contacts", 450), ("leads", 40), ("opportunities", 60), ("tasks", 40),
                          ("events", 30), ("seed", 7), ("per-second", 7), ("bad-every", 0),
                          ("daily-limit", 100_000), ("api-used", 0)):
        p.add_argument(f"--{name}", type=int, default=default)
    p.add_argument("--custom-object", action="append", default=[], help="a custom object to serve (Foo__c)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--token", default="sandbox-token", help="bearer token to require ('' disables auth)")
    a = p.parse_args(argv)
    store = SandboxStore(accounts=a.accounts, contacts=a.contacts, leads=a.leads, opportunities=a.opportunities,
                         tasks=a.tasks, events=a.events, custom_objects=a.custom_object, seed=a.seed,
                         per_second=a.per_second, bad_every=a.bad_every, daily_limit=a.daily_limit,
                         api_used=a.api_used)
    app = create_app(store, a.token or None)
    sock = _bind(a.host, a.port)
    host = f"[{a.host}]" if ":" in a.host else a.host
    url = f"http://{host}:{sock.getsockname()[1]}"
    server = _Uvicorn(_config(app),
                      lambda: print(json.dumps({"url": url}), flush=True))
    server.run(sockets=[sock])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
