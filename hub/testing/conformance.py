"""The connector conformance kit: every connector gets the standard checks by subclassing.

    class TestAcmeConformance(ConnectorConformance):
        @pytest.fixture
        def harness(self, tmp_path):
            with AcmeSandbox() as sb:
                yield Harness(kind="acme", config={...}, stream="contacts", source=sb, ...)

The checks: streams are declared; pagination ends and yields every record once; the
cursor never moves backwards; a read resumed from any page's cursor loses nothing;
deletes are reported; 429 and 5xx are retried; a bad record goes to the retry queue
while the sync goes on. A harness speaks to the vendor's sandbox, never to our code.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from hub.config import parse_config
from hub.registry import ConnectorFactory
from hub.sdk.connector import Connector
from hub.sdk.types import Cursor, Page

__all__ = ["ConnectorConformance", "Harness"]


@dataclass
class Harness:
    """What the kit needs to know about one connector and its sandbox.

    source_ids: the ids the vendor holds for `stream` now (the truth to compare with).
    change: change `n` records in the vendor; returns their ids.
    delete: delete (archive) `n` records in the vendor; returns their ids.
    fail_next: make the vendor answer the next `n` requests with `status` (Retry-After 0).
    add_bad_record: put a record the mapping must reject into the vendor; returns its id.
    cursor_position: a comparable position of a cursor (the kit checks it never decreases).
    """

    kind: str
    config: dict[str, Any]
    stream: str
    source_ids: Callable[[], set[str]]
    change: Callable[[int], list[str]]
    delete: Callable[[int], list[str]]
    fail_next: Callable[[int, int], None]
    add_bad_record: Callable[[], str]
    cursor_position: Callable[[Cursor | None], Any]
    name: str = "conformance"
    max_pages: int = 10_000
    extra: dict[str, Any] = field(default_factory=dict)

    def connector(self) -> Connector:
        cfg = parse_config({"connectors": {self.name: {"kind": self.kind, **self.config}}}, "conformance")
        return ConnectorFactory(cfg, sleep=lambda _s: None).build(self.name)

    def read_all(self, cursor: Cursor | None = None) -> list[Page]:
        conn = self.connector()
        try:
            pages = []
            for page in conn.read(self.stream, cursor):
                pages.append(page)
                assert len(pages) <= self.max_pages, "pagination does not end"
            return pages
        finally:
            conn.close()


def _ids(pages: list[Page]) -> list[str]:
    return [r.external_id for p in pages for r in p.records]


class ConnectorConformance:
    """Subclass in a test module and provide a `harness` fixture."""

    @pytest.fixture
    def harness(self) -> Iterator[Harness]:  # pragma: no cover - provided by the subclass
        raise NotImplementedError

    def test_streams_declared(self, harness: Harness) -> None:
        conn = harness.connector()
        specs = conn.streams()
        assert specs, "a connector declares at least one stream"
        names = [s.name for s in specs]
        assert len(names) == len(set(names)), f"stream names repeat: {names}"
        assert harness.stream in names
        for s in specs:
            assert s.target in {"account", "contact", "lead", "opportunity", "activity"} or s.target.endswith("__c") \
                or s.target.isidentifier(), s

    def test_pagination_ends_and_reads_every_record_once(self, harness: Harness) -> None:
        pages = harness.read_all()
        ids = _ids(pages)
        assert set(ids) == harness.source_ids(), "a full read must see exactly the vendor's records"
        assert len(ids) == len(set(ids)), "a full read must not yield a record twice"
        assert pages[-1].next_cursor is not None, "the last page leaves a cursor for the next run"

    def test_cursor_never_moves_backwards(self, harness: Harness) -> None:
        pages = harness.read_all()
        harness.change(3)
        pages += harness.read_all(pages[-1].next_cursor)
        positions = [harness.cursor_position(p.next_cursor) for p in pages]
        assert positions == sorted(positions), f"cursor moved backwards: {positions}"

    def test_resume_from_every_page_cursor_loses_nothing(self, harness: Harness) -> None:
        pages = harness.read_all()
        truth = harness.source_ids()
        for k in sorted({0, len(pages) // 2, len(pages) - 1}):
            done = set(_ids(pages[: k + 1]))
            rest = set(_ids(harness.read_all(pages[k].next_cursor)))
            assert done | rest == truth, f"resuming after page {k} lost {sorted(truth - done - rest)[:5]}"

    def test_incremental_reads_changes_only(self, harness: Harness) -> None:
        pages = harness.read_all()
        changed = set(harness.change(3))
        got = set(_ids(harness.read_all(pages[-1].next_cursor)))
        assert changed <= got, f"changes not read: {sorted(changed - got)}"
        assert len(got) <= len(changed) + 2, f"an incremental read re-read too much: {len(got)} for {len(changed)}"

    def test_deletes_reported(self, harness: Harness) -> None:
        conn = harness.connector()
        if not conn.stream(harness.stream).reports_deletes:
            pytest.skip(f"{harness.kind}.{harness.stream} declares no deletes")
        pages = harness.read_all()
        gone = set(harness.delete(2))
        later = harness.read_all(pages[-1].next_cursor)
        reported = {d for p in later for d in p.deleted}
        assert gone <= reported, f"deletes not reported: {sorted(gone - reported)}"

    @pytest.mark.parametrize("status", [429, 503])
    def test_rate_limits_and_server_errors_are_retried(self, harness: Harness, status: int) -> None:
        harness.fail_next(2, status)
        pages = harness.read_all()
        assert set(_ids(pages)) == harness.source_ids()

    def test_bad_record_goes_to_retry_queue_and_sync_goes_on(self, harness: Harness, tmp_path: Path) -> None:
        from sqlalchemy import select

        from hub.app import Hub
        from state.schema import retry_queue

        bad = harness.add_bad_record()
        cfg = parse_config({"database": f"sqlite:///{tmp_path / 'kit.db'}",
                            "connectors": {harness.name: {"kind": harness.kind, **harness.config}}}, "conformance")
        h = Hub(cfg, sleep=lambda _s: None).ready()
        try:
            conn = h.engine.build(harness.name)
            result = h.engine.run_stream(conn, harness.stream)
            conn.close()
            assert result.status == "ok", result.error
            assert result.failed >= 1
            with h.db.connect() as c:
                rows = c.execute(select(retry_queue)).mappings().all()
            queued = {r["external_id"] for r in rows}
            assert bad in queued
            # every other record synced: the vendor's records are the synced ones plus the queued ones
            assert result.read - result.failed == len(harness.source_ids() - queued)
            row = next(r for r in rows if r["external_id"] == bad)
            assert row["payload"] and row["reason"]
        finally:
            h.close()
