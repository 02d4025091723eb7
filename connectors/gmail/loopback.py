"""Serve a starlette app on loopback from a background thread (uvicorn), for the Google sandboxes.

The same shape as the HubSpot sandbox's server, kept here because a connector package may not
import another connector; both Google sandboxes (Gmail, Calendar) use it.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from typing import Self

import uvicorn
from starlette.applications import Starlette

__all__ = ["LoopbackServer"]


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
    # IPPROTO_TCP: asyncio sets TCP_NODELAY only on sockets that say so (else ~40 ms per response)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


class LoopbackServer:
    """`with LoopbackServer(app) as s: httpx.get(s.url + ...)`; port 0 picks a free port."""

    def __init__(self, app: Starlette, host: str = "127.0.0.1", port: int = 0, name: str = "sandbox") -> None:
        self.app, self.host, self.port, self.name = app, host, port, name
        self._server: _Uvicorn | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://[{self.host}]:{self.port}" if ":" in self.host else f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> Self:
        sock = _bind(self.host, self.port)
        self.port = sock.getsockname()[1]
        ready = threading.Event()
        config = uvicorn.Config(self.app, loop="asyncio", http="auto", ws="none", lifespan="off",
                                log_level="warning", access_log=False, timeout_graceful_shutdown=2)
        server = self._server = _Uvicorn(config, ready.set)

        def run() -> None:
            try:
                server.run(sockets=[sock])
            finally:
                sock.close()
                ready.set()

        self._thread = threading.Thread(target=run, name=f"{self.name}:{self.port}", daemon=True)
        self._thread.start()
        if not ready.wait(timeout) or not server.started:
            self.stop()
            raise RuntimeError(f"{self.name} did not start on {self.url}")
        return self

    def stop(self, timeout: float = 30.0) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
        self._server = self._thread = None

    def wait(self) -> None:
        """Block until interrupted, then stop (the sandboxes' `python -m` entry, after `start`)."""
        assert self._thread is not None, "start() first"
        try:
            while self._thread.is_alive():
                self._thread.join(0.5)
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
