"""The webhook server: verify, store durably, then acknowledge.

    POST /webhooks/{connector}   200 stored (or already stored) · 401 bad signature · 400 malformed
                                 · 404 no such instance, or it takes no webhooks · 413 too large
                                 · 503 the inbox could not store it (the vendor will redeliver)
    GET  /healthz                200 when the database answers, else 503
    GET  /metrics                Prometheus text

With `process_workers` > 0 the app also runs inbox processing workers (hub.webhooks.processor)
in threads for its lifetime; `crmhub serve` starts one by default.

Only a 2xx promises anything, and it is sent after the event's COMMIT returned (with
`synchronous_commit = on`); every other answer stores nothing. The instance's
`kind` picks the verifier (`hub.webhooks.schemes`), its `webhook_secrets` list gives
the secrets; the connector class itself is not needed here.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy import Engine, text
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from hub.config import ConfigError, HubConfig
from hub.webhooks import inbox
from hub.webhooks.commit import GroupCommitter
from hub.webhooks.intake import Endpoint, WebhookIntake
from hub.webhooks.metrics import CONTENT_TYPE, Metrics
from hub.webhooks.processor import InboxProcessor, ProcessingStats, ProcessorSettings, start_workers
from hub.webhooks.schemes import scheme_for

__all__ = ["Endpoint", "WebhookSettings", "create_app", "endpoints"]

log = logging.getLogger("crmhub.webhooks")


@dataclass
class WebhookSettings:
    max_body_bytes: int = 1 << 20
    #: the scheme://host[:port] vendors post to, when a proxy or TLS terminator sits in front;
    #: HubSpot and Twilio sign the URL they called, which the server cannot otherwise see
    public_base_url: str | None = None
    max_batch: int = 1000
    max_inflight: int | None = None  # concurrent group commits (default: 4 on PostgreSQL, 1 on SQLite)
    #: while a commit runs, how long new events may wait to join a bigger batch (hub.webhooks.commit)
    linger: float = 0.002
    clock: Callable[[], float] = field(default=time.time)
    #: inbox processing threads run by the app (0: the inbox is only filled here)
    process_workers: int = 0
    processor: ProcessorSettings = field(default_factory=ProcessorSettings)


def endpoints(cfg: HubConfig) -> dict[str, Endpoint]:
    """One endpoint per configured instance; a malformed `webhook_secrets` is a ConfigError."""
    out: dict[str, Endpoint] = {}
    problems: list[str] = []
    for name, block in cfg.connectors.items():
        kind = str(block.get("kind"))
        scheme = scheme_for(kind)
        secrets = block.get("webhook_secrets")
        if scheme is None:
            out[name] = Endpoint(name, kind, unavailable=f"connector kind {kind!r} does not receive webhooks")
            continue
        if secrets is None:
            out[name] = Endpoint(name, kind, scheme, unavailable=(
                f"webhooks are not enabled for {name!r}: add `webhook_secrets: [...]` to connectors.{name}"))
            continue
        if not isinstance(secrets, list) or not secrets or not all(isinstance(s, str) and s for s in secrets):
            problems.append(f"connectors.{name}.webhook_secrets: must be a list of non-empty secrets. "
                            f"Fix: webhook_secrets: [\"${{{name.upper()}_WEBHOOK_SECRET}}\"]")
            continue
        out[name] = Endpoint(name, kind, scheme, scheme.verifier(secrets))
    if problems:
        raise ConfigError(cfg.path or "crmhub.yaml", problems)
    return out


def _json(status: int, doc: dict[str, Any]) -> Response:
    return Response(orjson.dumps(doc), status_code=status, media_type="application/json")


def create_app(cfg: HubConfig, engine: Engine, settings: WebhookSettings | None = None) -> Starlette:
    """The ASGI app. Its group committer starts on the first request and drains at shutdown."""
    settings = settings or WebhookSettings()
    eps = endpoints(cfg)
    metrics = Metrics()
    committer = GroupCommitter(engine, max_batch=settings.max_batch, max_inflight=settings.max_inflight,
                               linger=settings.linger)

    def db_ping() -> None:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    async def healthz(request: Request) -> Response:
        try:
            await asyncio.wait_for(run_in_threadpool(db_ping), timeout=5)
        except Exception as err:
            return _json(503, {"status": "error", "database": f"{type(err).__name__}: {err}"[:500]})
        return _json(200, {"status": "ok", "database": "ok"})

    def read_stats() -> inbox.InboxStats:
        with engine.connect() as conn:
            return inbox.stats(conn)

    async def metrics_page(request: Request) -> Response:
        try:
            stats: inbox.InboxStats | None = await asyncio.wait_for(run_in_threadpool(read_stats), timeout=10)
        except Exception as err:
            log.warning("metrics: the inbox did not answer: %s", err)
            stats = None
        return Response(metrics.render(stats, committer.stats, processing if settings.process_workers else None),
                        media_type=CONTENT_TYPE)

    processing = ProcessingStats()
    stop_processing = threading.Event()
    workers: list[threading.Thread] = []

    def make_processor() -> InboxProcessor:
        from hub.app import Hub

        hub = Hub(cfg, db=engine)  # the same database engine; its own connectors and writers
        return InboxProcessor(engine, hub.factory, hub.engine, settings=settings.processor, stats=processing)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        for ep in eps.values():
            if ep.verifier is not None:
                log.info("webhooks: POST /webhooks/%s (%s)", ep.name, ep.kind)
        if settings.process_workers:
            stop_processing.clear()
            workers[:] = start_workers(settings.process_workers, make_processor, stop_processing)
            log.info("webhooks: %d inbox processing worker(s)", len(workers))
        yield
        await committer.drain()
        committer.close()
        stop_processing.set()
        for t in workers:
            await run_in_threadpool(t.join, 30)

    intake = Middleware(WebhookIntake, endpoints=eps, committer=committer, metrics=metrics,
                        max_body_bytes=settings.max_body_bytes, public_base_url=settings.public_base_url,
                        clock=settings.clock)
    app = Starlette(routes=[
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics_page, methods=["GET"]),
    ], middleware=[intake], lifespan=lifespan)
    app.state.committer = committer
    app.state.metrics = metrics
    app.state.endpoints = eps
    app.state.processing = processing
    return app
