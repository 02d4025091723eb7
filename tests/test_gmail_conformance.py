"""The connector conformance kit (hub.testing) applied to Gmail, against its sandbox on loopback.

Two mailboxes in one connector instance, small pages so each mailbox spans several. The harness
speaks to the sandbox's store (the vendor's side), never to the connector.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from connectors.gmail.sandbox import GmailSandbox, GmailStore
from hub.sdk import Cursor
from hub.testing import ConnectorConformance, Harness

MAILBOXES = {"ann@example.com": "ya29.ann-conformance-0001", "bob@example.com": "ya29.bob-conformance-0002"}
PER_MAILBOX = 120
PAGE = 50


def config(url: str, **extra: Any) -> dict[str, Any]:
    return {"base_url": url, "page_size": PAGE, "requests_per_second": 10_000, "fetch_concurrency": 4,
            "mailboxes": [{"address": a, "access_token": t} for a, t in MAILBOXES.items()], **extra}


def ext(address: str, mid: str) -> str:
    return f"{address}:{mid}"


def cursor_position(cursor: Cursor | None) -> tuple[tuple[int, int, int], ...]:
    """Mailboxes in config order; per mailbox: not started, listing (by pages), history (by id)."""
    boxes = (cursor or {}).get("mailboxes") or {}
    out = []
    for address in MAILBOXES:
        s = boxes.get(address)
        if s is None:
            out.append((0, 0, 0))
        elif s["phase"] == "full":
            out.append((1, 0, int(s["pages"])))
        else:
            out.append((2, int(s["history_id"]), 0))
    return tuple(out)


def gmail_harness(store: GmailStore, url: str) -> Harness:
    boxes = list(MAILBOXES)

    def source_ids() -> set[str]:
        return {ext(a, m) for a in boxes for m in store.ids(a)}

    def change(n: int) -> list[str]:
        # mail is immutable: a change is new mail, in both mailboxes
        return [ext(boxes[k % 2], store.add_message(boxes[k % 2], sender=f"New {k} <new{k}@customer.example>",
                                                    to=[boxes[k % 2]], subject=f"new {k}")) for k in range(n)]

    def delete(n: int) -> list[str]:
        gone = []
        for k in range(n):
            a = boxes[k % 2]
            ids = store.ids(a)
            gone += [ext(a, m) for m in store.delete_messages(a, [ids[len(ids) // 2]])]
        return gone

    def add_bad_record() -> str:
        # no internalDate on the wire and no Date header: nothing says when it happened
        mid = store.add_message(boxes[0], headers=[("From", "x@customer.example"), ("Subject", "undated")],
                                internal_date="")
        return ext(boxes[0], mid)

    return Harness(kind="gmail", config=config(url), stream="messages", source_ids=source_ids, change=change,
                   delete=delete, fail_next=lambda n, status: store.fail_next(n, status, retry_after=0),
                   add_bad_record=add_bad_record, cursor_position=cursor_position, extra={"store": store})



class TestGmailConformance(ConnectorConformance):
    @pytest.fixture
    def harness(self) -> Iterator[Harness]:
        store = GmailStore(MAILBOXES, PER_MAILBOX)
        with GmailSandbox(store) as server:
            yield gmail_harness(store, server.url)

    def test_pages_span_both_mailboxes(self, harness: Harness) -> None:
        pages = harness.read_all()
        assert len(pages) >= 2 * (PER_MAILBOX // PAGE + 1)
        assert all(len(p.records) <= PAGE for p in pages)

    def test_undated_message_is_rejected_and_the_page_goes_on(self, harness: Harness) -> None:
        """The connector's half of the kit's bad-record check, which runs without the hub side."""
        bad = harness.add_bad_record()
        pages = harness.read_all()
        rejected = [r for p in pages for r in p.rejected]
        assert [r.external_id for r in rejected] == [bad]
        assert "internalDate" in rejected[0].reason and rejected[0].payload["id"] == bad.split(":")[1]
        assert {r.external_id for p in pages for r in p.records} == harness.source_ids() - {bad}
