"""The connector conformance kit (hub.testing) applied to Microsoft Graph mail and calendar,
against the Graph sandbox on loopback.

The harness speaks to the sandbox through its Python API (the vendor's side), never to the
connector. Two mailboxes, small pages, so every read spans several pages and keys.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from connectors.microsoft_graph.sandbox import GraphStore, SandboxServer
from connectors.microsoft_graph.sandbox_data import decode_token
from hub.sdk import Cursor
from hub.testing import ConnectorConformance, Harness

TOKEN = "eyJ0eXAiOiJKV1QiLCJub25jZSI6ImNvbmZvcm1hbmNlLWtpdCJ9.graph-sandbox-token"
MAILBOXES = ["ann@contoso.test", "bob@contoso.test"]
FOLDERS = ["inbox", "sentitems"]


def _state(link: str) -> dict[str, Any]:
    query = parse_qs(urlsplit(link).query)
    return decode_token((query.get("$skiptoken") or query["$deltatoken"])[0])


def cursor_position(cursor: Cursor | None) -> tuple[Any, ...]:
    """Orders the connector's cursors by the sandbox's own tokens: per key in reading order,
    (snapshot of the last finished round, snapshot of the round under way, keyset in it)."""
    if not cursor:
        return ()
    keys = sorted(set(cursor.get("delta", {})) | set(cursor.get("next", {})))
    out: list[Any] = []
    for key in keys:
        done = int(_state(cursor["delta"][key])["u"]) if key in cursor.get("delta", {}) else -1
        pending = cursor.get("next", {}).get(key)
        if pending:
            st = _state(pending)
            out.append((done, int(st["u"]), str(st["a"])))
        else:
            out.append((done, done, "\uffff"))
    return tuple(out)


def mail_harness(store: GraphStore, server: SandboxServer) -> Harness:
    def source_ids() -> set[str]:
        return {i for mb in MAILBOXES for f in FOLDERS for i in store.ids(mb, f)}

    def change(n: int) -> list[str]:
        return store.modify_messages("ann@contoso.test", "inbox", n)

    def delete(n: int) -> list[str]:
        live = store.ids("bob@contoso.test", "sentitems")
        return store.delete("bob@contoso.test", live[1: 1 + n])

    def add_bad_record() -> str:
        return store.deliver("ann@contoso.test", "inbox", sender=("eve@example.com", "Eve"),
                             to=[("ann@contoso.test", "Ann")], subject="broken", bad=True)

    return Harness(
        kind="microsoft_graph",
        config={"base_url": server.url, "auth": {"token": TOKEN}, "mailboxes": MAILBOXES, "page_size": 4,
                "streams": ["messages"]},
        stream="messages", source_ids=source_ids, change=change, delete=delete,
        fail_next=lambda n, status: store.fail_next(n, status, 0), add_bad_record=add_bad_record,
        cursor_position=cursor_position, extra={"store": store},
    )


def calendar_harness(store: GraphStore, server: SandboxServer) -> Harness:
    start, end = store.base_time - timedelta(days=30), store.base_time + timedelta(days=30)

    def source_ids() -> set[str]:
        return {i for mb in MAILBOXES for i in store.ids(mb, "calendar")}

    def change(n: int) -> list[str]:
        ids = store.ids("ann@contoso.test", "calendar")[:n]
        for ext in ids:  # an hour later, still inside the window
            raw = store.mailbox("ann@contoso.test").items["calendar"][ext].current
            from datetime import UTC, datetime
            t = datetime.fromisoformat(raw["start"]["dateTime"][:19]).replace(tzinfo=UTC)
            store.move_event("ann@contoso.test", ext, t + timedelta(hours=1))
        return ids

    def delete(n: int) -> list[str]:
        return store.delete("bob@contoso.test", store.ids("bob@contoso.test", "calendar")[2: 2 + n])

    def add_bad_record() -> str:
        # what Graph sends when the UTC preference is not applied: a Windows zone name
        ext = store.add_event("ann@contoso.test", subject="zoned", start=store.base_time + timedelta(days=1))
        store.update("ann@contoso.test", ext, {"start": {"dateTime": "2026-06-02T09:00:00.0000000",
                                                         "timeZone": "Pacific Standard Time"}})
        return ext

    return Harness(
        kind="microsoft_graph",
        config={"base_url": server.url, "auth": {"token": TOKEN}, "mailboxes": MAILBOXES, "page_size": 4,
                "calendar_start": start.isoformat(), "calendar_end": end.isoformat(), "streams": ["events"]},
        stream="events", source_ids=source_ids, change=change, delete=delete,
        fail_next=lambda n, status: store.fail_next(n, status, 0), add_bad_record=add_bad_record,
        cursor_position=cursor_position, extra={"store": store},
    )


class _GraphChecks(ConnectorConformance):
    def test_resume_continues_where_the_page_left_off(self, harness: Harness) -> None:
        """Stricter than the kit: a resume from any page's cursor re-reads nothing."""
        pages = harness.read_all()
        assert len(pages) > 4, "the store must span several pages"
        for k in range(len(pages) - 1):
            done = {r.external_id for p in pages[: k + 1] for r in p.records}
            rest = [r.external_id for p in harness.read_all(pages[k].next_cursor) for r in p.records]
            assert not done & set(rest), f"resuming after page {k} re-read {sorted(done & set(rest))[:5]}"
            assert done | set(rest) == harness.source_ids()

    def test_bad_record_is_rejected_and_the_read_goes_on(self, harness: Harness) -> None:
        """The connector's half of the kit's bad-record check: the record comes back as rejected,
        with its payload and a reason, and every other record is read."""
        bad = harness.add_bad_record()
        pages = harness.read_all()
        rejected = [r for p in pages for r in p.rejected]
        assert [r.external_id for r in rejected] == [bad]
        assert rejected[0].payload and rejected[0].reason
        assert {r.external_id for p in pages for r in p.records} == harness.source_ids() - {bad}


class TestGraphMailConformance(_GraphChecks):
    @pytest.fixture
    def harness(self) -> Iterator[Harness]:
        store = GraphStore(MAILBOXES, messages=13, events=0)
        with SandboxServer(store, token=TOKEN) as server:
            yield mail_harness(store, server)


class TestGraphCalendarConformance(_GraphChecks):
    @pytest.fixture
    def harness(self) -> Iterator[Harness]:
        store = GraphStore(MAILBOXES, messages=0, events=11)
        with SandboxServer(store, token=TOKEN) as server:
            yield calendar_harness(store, server)
