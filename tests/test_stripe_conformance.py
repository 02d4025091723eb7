"""The connector conformance kit (hub.testing) applied to Stripe customers, against the sandbox on loopback.

The harness changes the vendor through the sandbox's own API (Stripe's side), never the connector.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from connectors.stripe.sandbox import SandboxServer, SandboxStore
from hub.sdk import Cursor
from hub.testing import ConnectorConformance, Harness

KEY = "sk_test_conformance_0000000000"
CUSTOMERS = 450  # five pages of 100


def stripe_harness(store: SandboxStore, server: SandboxServer) -> Harness:
    def cursor_position(cursor: Cursor | None) -> tuple[int, int]:
        """A load walks the list newest first (so the resume point's creation index falls), then the
        events forward (their sandbox sequence rises)."""
        if not cursor:
            return (-1, 0)
        if cursor["phase"] == "full":
            return (0, -store.position("customers", cursor["after"]) if cursor.get("after") else 0)
        return (1, store.position("events", cursor["event"]) if cursor.get("event") else -1)

    def delete(n: int) -> list[str]:
        live = store.ids("customers")
        picks = live[:: max(1, len(live) // n)][:n]
        for cid in picks:
            store.delete_customer(cid)
        return picks

    def add_bad_record() -> str:
        victim = store.ids("customers")[len(store.ids("customers")) // 2]
        store.update_customer(victim, email="not-an-email")  # the packaged mapping checks emails
        return victim

    return Harness(
        kind="stripe",
        config={"base_url": server.url, "auth": {"api_key": KEY}},
        stream="customers",
        source_ids=lambda: set(store.ids("customers")),
        change=lambda n: store.modify(n),
        delete=delete,
        fail_next=lambda n, status: store.fail_next(n, status=status, retry_after=0),
        add_bad_record=add_bad_record,
        cursor_position=cursor_position,
        extra={"store": store},
    )


class TestStripeConformance(ConnectorConformance):
    @pytest.fixture
    def harness(self) -> Iterator[Harness]:
        store = SandboxStore(customers=CUSTOMERS)
        with SandboxServer(store, api_key=KEY) as server:
            yield stripe_harness(store, server)

    def test_resume_rereads_nothing(self, harness: Harness) -> None:
        """Stricter than the kit: a resume from a page's cursor starts after that page."""
        pages = harness.read_all()
        assert len(pages) == 5
        for k in range(len(pages) - 1):
            done = {r.external_id for p in pages[: k + 1] for r in p.records}
            rest: list[Any] = [r.external_id for p in harness.read_all(pages[k].next_cursor) for r in p.records]
            assert not done & set(rest)
            assert done | set(rest) == harness.source_ids()
