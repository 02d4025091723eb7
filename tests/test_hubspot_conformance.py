"""The connector conformance kit (hub.testing) applied to HubSpot, against the sandbox on loopback.

The harness speaks to the sandbox through its Python API (the vendor's side), never to the
connector. Two stores: a clean one, and a dirty one whose generated data already holds records
the packaged mapping rejects (every 97th contact), as a real portal does.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from connectors.hubspot.sandbox import SandboxServer, SandboxStore
from connectors.hubspot.sandbox_data import decode_after
from hub.app import Hub
from hub.config import parse_config
from hub.sdk import Cursor
from hub.testing import ConnectorConformance, Harness
from state.schema import retry_queue

TOKEN = "pat-na1-0c0f0e0d-conformance-kit-0000"
CONTACTS = 450
#: properties the packaged mapping (mappings/hubspot.yaml) must reject: `email` goes through `transform: email`
REJECTED = {"email": "not-an-email"}


def cursor_position(cursor: Cursor | None) -> tuple[int, ...]:
    """Orders the connector's cursors: a full load (by the list position) before incremental
    reading (by time, then the stage inside one timestamp, then the id keyset, then how far the
    archived list has been reported).

    The list's `after` is the sandbox's own token (it encodes the last id listed), decoded here
    with the sandbox's code. The archived pass's `after` is left out: that pass starts again from
    the top on every run by design (the list cannot be filtered by time).
    """
    if not cursor:
        return (-1,)
    if cursor["phase"] == "full":
        after = cursor.get("after")
        return (0, decode_after(after) if after else 0)
    stage = 2 if cursor.get("all_at_ts") else 1 if cursor.get("collapsed") or cursor.get("id_after") else 0
    return (1, int(cursor["ts"]), stage, int(cursor.get("id_after") or 0), int(cursor.get("archived_since") or 0))


def sandbox_harness(store: SandboxStore, server: SandboxServer) -> Harness:
    changed: list[str] = []

    def change(n: int) -> list[str]:
        changed.extend(store.modify("contacts", count=n))
        return changed[-n:]

    def delete(n: int) -> list[str]:
        # records changed since the load first (deleted after an edit), then ones spread over the list
        live = store.ids("contacts")
        alive = set(live)
        picks = [i for i in changed if i in alive] + live[:: max(1, len(live) // n)]
        return store.archive("contacts", list(dict.fromkeys(picks))[:n])

    def add_bad_record() -> str:
        victim = store.ids("contacts")[len(store.ids("contacts")) // 2]
        return store.modify("contacts", ids=[victim], properties=REJECTED)[0]

    return Harness(
        kind="hubspot",
        config={"base_url": server.url, "auth": {"token": TOKEN}, "search_lag_ms": 0},
        stream="contacts",
        source_ids=lambda: set(store.ids("contacts")),
        change=change,
        delete=delete,
        fail_next=lambda n, status: store.fail_next(n, status=status, retry_after=0),
        add_bad_record=add_bad_record,
        cursor_position=cursor_position,
        extra={"store": store},
    )


class TestHubSpotConformance(ConnectorConformance):
    @pytest.fixture(params=[pytest.param(0, id="clean"), pytest.param(97, id="dirty")])
    def harness(self, request: pytest.FixtureRequest) -> Iterator[Harness]:
        store = SandboxStore(contacts=CONTACTS, bad_every=request.param)
        with SandboxServer(store, token=TOKEN) as server:
            yield sandbox_harness(store, server)

    def test_resume_continues_where_the_page_left_off(self, harness: Harness) -> None:
        """Stricter than the kit's resume check, which only asks that nothing is lost (a connector
        whose page cursors start the load over passes it): a resume re-reads nothing."""
        pages = harness.read_all()
        assert len(pages) > 3, "the store must span several pages"
        for k in range(len(pages) - 1):
            done = {r.external_id for p in pages[: k + 1] for r in p.records}
            rest = [r.external_id for p in harness.read_all(pages[k].next_cursor) for r in p.records]
            assert not done & set(rest), f"resuming after page {k} re-read {sorted(done & set(rest))[:5]}"
            assert done | set(rest) == harness.source_ids()

    def test_every_bad_record_goes_to_the_retry_queue_and_the_rest_syncs(
            self, harness: Harness, tmp_path: Path) -> None:
        """The kit's bad-record check without its assumption that the vendor held none before."""
        store: SandboxStore = harness.extra["store"]
        bad = {harness.add_bad_record()}
        if store.bad_every:
            bad |= {i for n, i in enumerate(store.ids("contacts"), 1) if n % store.bad_every == 0}
        cfg = parse_config({"database": f"sqlite:///{tmp_path / 'kit.db'}",
                            "connectors": {harness.name: {"kind": harness.kind, **harness.config}}})
        hub = Hub(cfg, sleep=lambda _s: None).ready()
        try:
            conn = hub.engine.build(harness.name)
            result = hub.engine.run_stream(conn, harness.stream)
            conn.close()
            assert result.status == "ok", result.error
            assert (result.read, result.failed) == (CONTACTS, len(bad))
            with hub.db.connect() as c:
                queued: dict[str, Any] = {r["external_id"]: r for r in c.execute(select(retry_queue)).mappings()}
            assert set(queued) == bad
            assert all(r["payload"] and "mapping failed" in r["reason"] for r in queued.values())
        finally:
            hub.close()


# ---- the same kit on an engagement stream (calls, as activities) ----------------------------------
CALLS = 260


def calls_harness(store: SandboxStore, server: SandboxServer) -> Harness:
    def delete(n: int) -> list[str]:
        live = store.ids("calls")
        return store.archive("calls", live[:: max(1, len(live) // n)][:n])

    def add_bad_record() -> str:
        # a call without a usable time cannot be an activity: the connector rejects it with the reason
        victim = store.ids("calls")[len(store.ids("calls")) // 2]
        return store.modify("calls", ids=[victim], properties={"hs_timestamp": "sometime last week"})[0]

    return Harness(
        kind="hubspot",
        config={"base_url": server.url, "auth": {"token": TOKEN}, "search_lag_ms": 0, "streams": ["calls"]},
        stream="calls",
        source_ids=lambda: set(store.ids("calls")),
        change=lambda n: store.modify("calls", count=n),
        delete=delete,
        fail_next=lambda n, status: store.fail_next(n, status=status, retry_after=0),
        add_bad_record=add_bad_record,
        cursor_position=cursor_position,
        extra={"store": store},
    )


class TestHubSpotCallsConformance(ConnectorConformance):
    @pytest.fixture
    def harness(self) -> Iterator[Harness]:
        store = SandboxStore(contacts=100, engagements=CALLS)
        with SandboxServer(store, token=TOKEN) as server:
            yield calls_harness(store, server)
