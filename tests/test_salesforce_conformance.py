"""The connector conformance kit (hub.testing) applied to Salesforce, against the sandbox on loopback.

The harness edits the org through the sandbox's Python API (the vendor's side), never through the
connector. Two orgs: a clean one, and a dirty one whose data already holds contacts the packaged
mapping rejects (every 97th has a malformed Email), as a real org does.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from connectors.salesforce.api import parse_sf_datetime
from connectors.salesforce.sandbox import SandboxServer, SandboxStore
from hub.app import Hub
from hub.config import parse_config
from hub.sdk import Cursor
from hub.testing import ConnectorConformance, Harness
from state.schema import retry_queue

TOKEN = "00DDn0000000001!AQ4AQconformance.kit.token"
CONTACTS = 4_500  # three query batches of 2,000


def cursor_position(cursor: Cursor | None) -> tuple[Any, ...]:
    """The keyset (SystemModstamp, Id), then how far deletes have been read."""
    if not cursor:
        return (0.0, "", 0.0)
    ts = parse_sf_datetime(cursor["ts"]).timestamp() if cursor.get("ts") else 0.0
    since = parse_sf_datetime(cursor["deleted_since"]).timestamp() if cursor.get("deleted_since") else 0.0
    return (ts, cursor.get("id") or "", since)


def sandbox_harness(store: SandboxStore, server: SandboxServer) -> Harness:
    changed: list[str] = []

    def change(n: int) -> list[str]:
        changed.extend(store.modify("Contact", count=n))
        return changed[-n:]

    def delete(n: int) -> list[str]:
        live = store.ids("Contact")
        alive = set(live)
        picks = [i for i in changed if i in alive] + live[:: max(1, len(live) // n)]
        return store.delete("Contact", list(dict.fromkeys(picks))[:n])

    def add_bad_record() -> str:
        victim = store.ids("Contact")[len(store.ids("Contact")) // 2]
        return store.modify("Contact", ids=[victim], values={"Email": "not-an-email"})[0]

    return Harness(
        kind="salesforce",
        config={"auth": {"access_token": TOKEN, "instance_url": server.url}},
        stream="Contact",
        source_ids=lambda: set(store.ids("Contact")),
        change=change,
        delete=delete,
        fail_next=lambda n, status: store.fail_next(n, status=status, retry_after=0),
        add_bad_record=add_bad_record,
        cursor_position=cursor_position,
        extra={"store": store},
    )


class TestSalesforceConformance(ConnectorConformance):
    @pytest.fixture(params=[pytest.param(0, id="clean"), pytest.param(97, id="dirty")])
    def harness(self, request: pytest.FixtureRequest) -> Iterator[Harness]:
        store = SandboxStore(accounts=20, contacts=CONTACTS, leads=0, opportunities=0, tasks=0, events=0,
                             bad_every=request.param)
        with SandboxServer(store, token=TOKEN) as server:
            yield sandbox_harness(store, server)

    def test_resume_continues_where_the_page_left_off(self, harness: Harness) -> None:
        """Stricter than the kit: a resume from any page's cursor re-reads nothing."""
        pages = harness.read_all()
        assert len(pages) == 3
        for k in range(len(pages) - 1):
            done = {r.external_id for p in pages[: k + 1] for r in p.records}
            rest = [r.external_id for p in harness.read_all(pages[k].next_cursor) for r in p.records]
            assert not done & set(rest), f"resuming after page {k} re-read {sorted(done & set(rest))[:5]}"
            assert done | set(rest) == harness.source_ids()

    def test_every_bad_record_goes_to_the_retry_queue_and_the_rest_syncs(
            self, harness: Harness, tmp_path: Path) -> None:
        """The kit's bad-record check without its assumption that the org held none before."""
        store: SandboxStore = harness.extra["store"]
        bad = {harness.add_bad_record()}
        if store.bad_every:
            bad |= {i for i in store.ids("Contact") if (store.get("Contact", i) or {}).get("Email") == "not-an-email"}
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
                queued = {r["external_id"] for r in c.execute(select(retry_queue)).mappings()}
            assert queued == bad
        finally:
            hub.close()
