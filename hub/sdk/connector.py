"""The Connector contract: a declaration of streams plus `read` (and optionally `write`).

A connector reads and writes its vendor and hands pages to the engine; it never
touches the database. It is found through the `crmhub.connectors` entry-point group,
so a third-party package can ship one::

    [project.entry-points."crmhub.connectors"]
    acme = "acme_crmhub:AcmeConnector"
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from hub.sdk.ratelimit import RateBudget
from hub.sdk.types import Cursor, Page, StreamSpec, WriteResult

__all__ = ["Connector", "ConnectorConfig", "ConnectorContext"]


class ConnectorConfig(BaseModel):
    """Base of every connector's config: the keys of its `connectors.<name>` block.

    Unknown keys are errors, so a misspelt key is named rather than ignored.
    """

    model_config = ConfigDict(extra="forbid")

    kind: str
    enabled: bool = True
    streams: list[str] | None = None
    schedule: str | None = None
    direction: str = "in"
    #: signing secrets for `crmhub serve` (several while a secret rotates)
    webhook_secrets: list[str] | None = None


@dataclass
class ConnectorContext:
    """What the hub lends a connector: its instance name, a shared request budget, a logger.

    `transport` is the test seam: tests hand an httpx transport (respx, MockTransport)
    and the connector passes it to `hub.sdk.http.build_client`.
    """

    name: str
    budget: RateBudget | None = None
    transport: Any = None
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("crmhub.connector"))
    sleep: Any = None  # injected into the HTTP client's retries (tests pass a no-op)
    #: stream -> vendor field paths the hub's mapping reads, so a connector can ask for just those
    field_hints: dict[str, list[str]] = field(default_factory=dict)
    token_store: Any = None  # hub.sdk.oauth.TokenStore where OAuth tokens persist (hub.sdk.oauth.oauth_auth)


class Connector(ABC):
    """Subclass per vendor. `kind` names it in config; `Config` validates its block."""

    kind: ClassVar[str]
    Config: ClassVar[type[ConnectorConfig]] = ConnectorConfig
    #: vendor facts for the shared request budget: requests per second and burst
    default_rate: ClassVar[float | None] = None
    default_burst: ClassVar[int] = 10

    def __init__(self, config: ConnectorConfig, context: ConnectorContext):
        self.config = config
        self.context = context
        self.name = context.name

    @abstractmethod
    def streams(self) -> list[StreamSpec]:
        """Every stream this connector can read, as data."""

    def stream(self, name: str) -> StreamSpec:
        for spec in self.streams():
            if spec.name == name:
                return spec
        known = ", ".join(s.name for s in self.streams())
        raise KeyError(f"{self.kind} has no stream {name!r} (it has: {known})")

    def enabled_streams(self) -> list[StreamSpec]:
        wanted = self.config.streams
        return [s for s in self.streams() if wanted is None or s.name in wanted]

    @abstractmethod
    def read(self, stream: str, cursor: Cursor | None) -> Iterator[Page]:
        """Yield pages from `cursor` (None: from the beginning).

        Each page's `next_cursor` must be valid once that page is stored: a resume
        from it loses nothing. Raise `CursorExpired` when the vendor rejects `cursor`.
        """

    def existing(self, stream: str, external_ids: Sequence[str]) -> set[str] | None:
        """Which of `external_ids` the source still holds (live: not soft-deleted), or None when
        it cannot tell. `migrate delta` asks it to find hard deletes: rows gone without a trace."""
        return None

    def write(self, stream: str, changes: Sequence[dict[str, Any]]) -> list[WriteResult]:
        """Write canonical changes to the vendor; per-record failures are results."""
        raise NotImplementedError(f"{self.kind} does not write {stream}")

    def webhook_pages(self, event: dict[str, Any]) -> list[tuple[str, Page]]:
        """Turn one stored webhook event (its JSON, as `crmhub serve` put it in the inbox) into
        pages per stream that the engine writes like polled ones (records, deletes; no cursor).

        [] means the event carries nothing to store (a ping, an event type not synced).
        Raise `SkippableRecord` for an event that cannot be used: it is retried, then dead-lettered.
        """
        return []

    def check(self) -> str:
        """Prove the credentials work with one cheap call; return a short description."""
        return "no check implemented"

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release clients and sockets."""
