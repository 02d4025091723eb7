"""The connector conformance kit (hub.testing) applied to Aircall, against the sandbox on loopback.

A "change" is new calls (`from`/`to` select on creation time); calls that end after they were
read are covered in tests/test_aircall_connector.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from connectors.aircall.sandbox import API_ID, API_TOKEN, AircallStore, SandboxServer
from hub.sdk import Cursor
from hub.testing import ConnectorConformance, Harness

CALLS = 260

#: the stream's mapping: the connector builds each activity itself (RawRecord.activity)
MAPPING = "kind: aircall\nstreams:\n  calls:\n    target: activity\n"


def cursor_position(cursor: Cursor | None) -> tuple[int, int]:
    """The newest creation time read, then how many calls of that second were read."""
    if not cursor:
        return (-1, 0)
    return (int(cursor["since"]), len(cursor.get("seen") or []))


def aircall_harness(store: AircallStore, server: SandboxServer, **config: Any) -> Harness:
    def add_bad_record() -> str:
        cid = sorted(store.ids())[len(store.ids()) // 2]
        store.corrupt(cid)
        return cid

    return Harness(
        kind="aircall",
        config={"base_url": server.url, "lookback_days": 15, "requests_per_second": 500,
                "auth": {"api_id": API_ID, "api_token": API_TOKEN}, **config},
        stream="calls",
        source_ids=store.ids,
        change=lambda n: store.create(n),
        delete=lambda n: [],
        fail_next=lambda n, status: store.fail_next(n, status=status, retry_after=0 if status == 503 else None),
        add_bad_record=add_bad_record,
        cursor_position=cursor_position,
        extra={"store": store},
    )


class TestAircallConformance(ConnectorConformance):
    @pytest.fixture(params=[pytest.param(10_000, id="uncapped"), pytest.param(100, id="window-splits")])
    def harness(self, request: pytest.FixtureRequest) -> Iterator[Harness]:
        store = AircallStore(calls=CALLS)
        with SandboxServer(store, result_cap=request.param) as server:
            yield aircall_harness(store, server, result_cap=request.param)

    def test_resume_continues_where_the_page_left_off(self, harness: Harness) -> None:
        """Stricter than the kit: a resume re-reads nothing."""
        pages = harness.read_all()
        assert len(pages) >= 4, "the store must span several pages"
        for k in range(len(pages) - 1):
            done = {r.external_id for p in pages[: k + 1] for r in p.records}
            rest = [r.external_id for p in harness.read_all(pages[k].next_cursor) for r in p.records]
            assert not done & set(rest), f"resuming after page {k} re-read {sorted(done & set(rest))[:5]}"
            assert done | set(rest) == harness.source_ids()
