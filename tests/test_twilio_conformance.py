"""The connector conformance kit (hub.testing) applied to Twilio, against the sandbox on loopback.

The harness changes the vendor through the sandbox's store (Twilio's side), never through the
connector. A "change" is new calls: Twilio lists calls by start day, so that is what a
scan must pick up; calls that end later are covered in tests/test_twilio_connector.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from connectors.twilio.sandbox import ACCOUNT_SID, AUTH_TOKEN, SandboxServer, TwilioStore
from hub.sdk import Cursor
from hub.testing import ConnectorConformance, Harness

CALLS = 230

#: the stream's mapping: the connector builds each activity itself (RawRecord.activity)
MAPPING = "kind: twilio\nstreams:\n  calls:\n    target: activity\n"


def cursor_position(cursor: Cursor | None) -> tuple[int, int]:
    """Scans completed, then pages into the current scan (a finished scan restarts the count)."""
    if not cursor:
        return (-1, 0)
    return (int(cursor["gen"]), int(cursor.get("pages") or 0))


def twilio_harness(store: TwilioStore, server: SandboxServer, **config: Any) -> Harness:
    def add_bad_record() -> str:
        sid = sorted(store.ids())[len(store.ids()) // 2]
        store.corrupt(sid)
        return sid

    return Harness(
        kind="twilio",
        config={"base_url": server.url, "page_size": 50, "lookback_days": 15,
                "auth": {"account_sid": ACCOUNT_SID, "auth_token": AUTH_TOKEN}, **config},
        stream="calls",
        source_ids=store.ids,
        change=lambda n: store.create(n),
        delete=lambda n: [],
        fail_next=lambda n, status: store.fail_next(n, status=status, retry_after=0),
        add_bad_record=add_bad_record,
        cursor_position=cursor_position,
        extra={"store": store},
    )


class TestTwilioConformance(ConnectorConformance):
    @pytest.fixture
    def harness(self) -> Iterator[Harness]:
        store = TwilioStore(calls=CALLS)
        with SandboxServer(store) as server:
            yield twilio_harness(store, server)

    def test_resume_continues_where_the_page_left_off(self, harness: Harness) -> None:
        """Stricter than the kit: a resume from a mid-scan cursor re-reads nothing."""
        pages = harness.read_all()
        assert len(pages) >= 4, "the store must span several pages"
        for k in range(len(pages) - 1):
            done = {r.external_id for p in pages[: k + 1] for r in p.records}
            rest = [r.external_id for p in harness.read_all(pages[k].next_cursor) for r in p.records]
            assert not done & set(rest), f"resuming after page {k} re-read {sorted(done & set(rest))[:5]}"
            assert done | set(rest) == harness.source_ids()
