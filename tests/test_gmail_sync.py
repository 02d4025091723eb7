"""Gmail through the real sync engine into SQLite and PostgreSQL, against the sandbox on loopback:
history expiry -> a recorded full resync with nothing lost or doubled, deletes, the cost of an
incremental sync with nothing new, a mailbox added to the config later."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import func, select

from connectors.gmail.sandbox import GmailSandbox, GmailStore
from hub.app import Hub
from hub.config import parse_config
from hub.sync import StreamResult
from state.schema import activities, activity_versions, retry_queue, sync_runs

ANN, BOB, CAROL = "ann@example.com", "bob@example.com", "carol@example.com"
TOKENS = {ANN: "ya29.ann-sync-test-0001", BOB: "ya29.bob-sync-test-0002", CAROL: "ya29.carol-sync-test-0003"}
NAME = "gmail_main"


class Rig:
    def __init__(self, db_url: str, store: GmailStore, url: str) -> None:
        self.db_url, self.store, self.url = db_url, store, url
        self.boxes = [ANN, BOB]

    def run(self, **extra: Any) -> StreamResult:
        cfg = parse_config({"database": self.db_url, "connectors": {NAME: {
            "kind": "gmail", "base_url": self.url, "page_size": 15, "requests_per_second": 10_000,
            "mailboxes": [{"address": a, "access_token": TOKENS[a]} for a in self.boxes], **extra}}})
        hub = Hub(cfg, sleep=lambda _s: None).ready()
        try:
            conn = hub.factory.build(NAME)
            try:
                result = hub.engine.run_stream(conn, "messages")
            finally:
                conn.close()
            assert result.status == "ok", result.error
            return result
        finally:
            hub.close()

    def rows(self) -> dict[str, dict[str, Any]]:
        hub = Hub(parse_config({"database": self.db_url, "connectors": {}}))
        try:
            with hub.db.connect() as c:
                found = {r["external_id"]: dict(r) for r in c.execute(
                    select(activities).where(activities.c.source == NAME)).mappings()}
                counts: dict[str, int] = dict(c.execute(select(activity_versions.c.external_id, func.count())
                                                        .where(activity_versions.c.source == NAME)
                                                        .group_by(activity_versions.c.external_id)).all())
                runs = c.execute(select(sync_runs.c.full_resync, sync_runs.c.resync_reason)
                                 .order_by(sync_runs.c.id)).all()
            for ext, row in found.items():
                row["versions"] = counts.get(ext, 0)
            self.runs = runs
            return found
        finally:
            hub.close()

    def live(self) -> set[str]:
        return {f"{a}:{m}" for a in self.boxes for m in self.store.ids(a)}


@pytest.fixture
def rig(db_url: str) -> Iterator[Rig]:
    store = GmailStore({a: TOKENS[a] for a in (ANN, BOB, CAROL)}, 40)
    with GmailSandbox(store) as server:
        yield Rig(db_url, store, server.url)


def test_history_expiry_is_a_recorded_full_resync_with_nothing_lost_or_doubled(rig: Rig) -> None:
    first = rig.run()
    assert (first.read, first.written) == (80, 80)
    added = [rig.store.add_message(ANN, sender="Lee <lee@customer.example>", to=[ANN], subject=f"after {k}")
             for k in range(3)]
    gone = rig.store.delete_messages(BOB, rig.store.ids(BOB)[:1])
    second = rig.run()
    assert (second.read, second.deleted, second.full_resync) == (3, 1, False)

    # while nobody synced, Gmail dropped ann's history; mail kept arriving in both mailboxes
    late = [rig.store.add_message(a, sender="Kim <kim@customer.example>", to=[a], subject="late") for a in (ANN, BOB)]
    rig.store.expire_history(ANN)
    third = rig.run()
    assert third.full_resync and "expired" in (third.resync_reason or "")

    rows = rig.rows()
    live = rig.live()
    assert {f"{ANN}:{m}" for m in added} | {f"{ANN}:{late[0]}", f"{BOB}:{late[1]}"} <= live
    assert set(rows) == live | {f"{BOB}:{gone[0]}"}, "every message once, the deleted one kept as history"
    assert all(rows[e]["versions"] == 1 and rows[e]["status"] in ("sent", "received") for e in live), \
        "a resync re-reads mail without making new versions of it"
    assert rows[f"{BOB}:{gone[0]}"]["status"] == "deleted"
    assert [bool(r[0]) for r in rig.runs] == [False, False, True]
    assert rig.run().requests == 2, "after the resync, history again: one request per mailbox"


def test_deleted_messages_become_deleted_versions_and_keep_their_history(rig: Rig) -> None:
    rig.run()
    gone = {f"{ANN}:{m}" for m in rig.store.delete_messages(ANN, rig.store.ids(ANN)[5:7])}
    result = rig.run()
    assert result.deleted == 2
    rows = rig.rows()
    assert {e for e, r in rows.items() if r["status"] == "deleted"} == gone
    assert all(rows[e]["versions"] == 2 and rows[e]["subject"] for e in gone)


def test_an_incremental_sync_with_nothing_new_costs_one_request_per_mailbox(rig: Rig) -> None:
    rig.run()
    rig.store.reset_stats()
    result = rig.run()
    assert rig.store.stats()["requests"] == {"history.list": 2}
    assert (result.requests, result.read) == (2, 0)


def test_a_mailbox_added_later_gets_its_full_sync_and_the_others_keep_their_cursor(rig: Rig) -> None:
    rig.run()
    rig.boxes = [ANN, BOB, CAROL]
    rig.store.reset_stats()
    result = rig.run()
    assert result.read == 40 and not result.full_resync
    asked = rig.store.stats()["requests"]
    assert asked["profile"] == 1 and asked["history.list"] == 3  # ann, bob: history; carol: after her listing
    assert set(rig.rows()) == rig.live()


def test_an_undated_message_goes_to_the_retry_queue_and_the_rest_syncs(rig: Rig) -> None:
    bad = rig.store.add_message(ANN, headers=[("From", "x@customer.example"), ("Subject", "undated")],
                                internal_date="")
    result = rig.run()
    assert (result.read, result.failed, result.written) == (81, 1, 80)
    hub = Hub(parse_config({"database": rig.db_url, "connectors": {}}))
    try:
        with hub.db.connect() as c:
            queued = c.execute(select(retry_queue)).mappings().all()
    finally:
        hub.close()
    assert [(q["external_id"], q["payload"]["id"]) for q in queued] == [(f"{ANN}:{bad}", bad)]
    assert "internalDate" in queued[0]["reason"]
    assert set(rig.rows()) == rig.live() - {f"{ANN}:{bad}"}
