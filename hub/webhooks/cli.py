"""`serve`: run the webhook server with uvicorn (`crmhub serve` calls it; so does
`python -m hub.webhooks.cli`, which the benchmark uses)."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import uvicorn

from hub.config import load_config
from hub.webhooks.server import WebhookSettings, create_app
from state.db import ensure_schema, make_engine

__all__ = ["serve"]


def serve(config_path: str | os.PathLike[str] | None = None, host: str = "127.0.0.1", port: int = 8080, *,
          settings: WebhookSettings | None = None, log_level: str = "info") -> None:
    """Serve `POST /webhooks/{connector}`, `/healthz` and `/metrics` until SIGINT/SIGTERM.

    The schema must be current (SQLite upgrades itself; PostgreSQL asks for `crmhub db upgrade`).
    """
    cfg = load_config(config_path)
    engine = make_engine(cfg.database)
    ensure_schema(engine)
    if settings is None:
        settings = WebhookSettings(process_workers=1)  # crmhub serve processes what it stores
    app = create_app(cfg, engine, settings)
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        uvicorn.run(
            app, host=host, port=port, log_level=log_level,
            access_log=False,  # a line per event is real CPU at thousands a second; /metrics counts them
            lifespan="on", ws="none", timeout_graceful_shutdown=30,
        )
    finally:
        engine.dispose()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m hub.webhooks.cli", description=serve.__doc__)
    ap.add_argument("--config", type=Path, default=None)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--log-level", default="info")
    ap.add_argument("--max-body-bytes", type=int, default=WebhookSettings.max_body_bytes)
    ap.add_argument("--public-base-url", default=None)
    ap.add_argument("--linger-ms", type=float, default=WebhookSettings.linger * 1000)
    ap.add_argument("--max-inflight", type=int, default=None, help="concurrent group commits")
    ap.add_argument("--process-workers", type=int, default=1,
                    help="inbox processing threads (0: only store events; run processing elsewhere)")
    args = ap.parse_args(argv)
    settings = WebhookSettings(max_body_bytes=args.max_body_bytes, public_base_url=args.public_base_url,
                               linger=args.linger_ms / 1000, max_inflight=args.max_inflight,
                               process_workers=args.process_workers)
    serve(args.config, args.host, args.port, settings=settings, log_level=args.log_level)


if __name__ == "__main__":
    main()
