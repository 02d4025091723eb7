"""Microsoft Graph mail and calendar synced by the engine into the activity timeline, on SQLite
and PostgreSQL: a delta token rejected mid-life gives a recorded full resync with nothing lost or
doubled; @removed mail is a delete version; a meeting moved twice whose versions arrive out of
order ends at its latest state; a cancelled meeting is cancelled on the timeline."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import insert, select

from connectors.microsoft_graph.sandbox import GraphStore, SandboxServer
from hub.activities import timeline
from hub.app import Hub
from hub.config import parse_config
from hub.sync import StreamResult
from state.schema import activities, activity_versions, contacts, sync_runs

TOKEN = "eyJ0eXAiOiJKV1QiLCJub25jZSI6InN5bmMifQ.graph-sync-tests"
ANN, BOB = "ann@contoso.test", "bob@contoso.test"
NAME = "m365"


@pytest.fixture
def store() -> GraphStore:
    return GraphStore([ANN, BOB], messages=8, events=6)


@pytest.fixture
def hub(store: GraphStore, db_url: str) -> Iterator[Hub]:
    with SandboxServer(store, token=TOKEN) as server:
        block = {"kind": "microsoft_graph", "base_url": server.url, "auth": {"token": TOKEN},
                 "mailboxes": [ANN, BOB], "page_size": 3, "internal": ["@contoso.test"],
                 "calendar_start": (store.base_time - timedelta(days=20)).isoformat(),
                 "calendar_end": (store.base_time + timedelta(days=20)).isoformat()}
        h = Hub(parse_config({"database": db_url, "connectors": {NAME: block}}), sleep=lambda _s: None).ready()
        try:
            yield h
        finally:
            h.close()


def sync(h: Hub, stream: str) -> StreamResult:
    # factory.build, not engine.build: the latter wants a mapping file (see the report)
    conn = h.factory.build(NAME)
    try:
        result = h.engine.run_stream(conn, stream)
    finally:
        conn.close()
    assert result.status == "ok", result.error
    return result


def rows(h: Hub, table: Any, **where: Any) -> list[dict[str, Any]]:
    q = select(table)
    for k, v in where.items():
        q = q.where(table.c[k] == v)
    with h.db.connect() as c:
        return [dict(r) for r in c.execute(q).mappings()]


def live_mail(store: GraphStore) -> set[str]:
    return {i for mb in (ANN, BOB) for f in ("inbox", "sentitems") for i in store.ids(mb, f)}


def test_expired_delta_token_gives_a_recorded_full_resync_with_nothing_lost_or_doubled(
        store: GraphStore, hub: Hub) -> None:
    first = sync(hub, "messages")
    assert first.read == len(live_mail(store)) and not first.full_resync
    gone = store.delete(ANN, store.ids(ANN, "inbox")[:1])
    store.modify_messages(BOB, "inbox", 2)
    assert sync(hub, "messages").deleted == 1
    # changes while the token dies: a new mail, a changed one
    new = store.send("erin@example.com", [ANN], "Arrived while the token expired")
    changed = store.modify_messages(BOB, "sentitems", 1)
    store.expire_tokens(ANN, code="syncStateNotFound")
    resync = sync(hub, "messages")
    assert resync.full_resync and "cursor expired" in (resync.resync_reason or "")
    run = rows(hub, sync_runs, id=resync.run_id)[0]
    assert run["full_resync"] and "syncStateNotFound" in (run["resync_reason"] or "")
    acts = {r["external_id"]: r for r in rows(hub, activities, source=NAME)}
    assert live_mail(store) <= set(acts), "a live mail is missing after the resync"
    assert new[ANN.lower()] in acts and changed[0] in acts
    assert set(acts) == live_mail(store) | set(gone)  # one row per mail: nothing doubled
    assert acts[gone[0]]["status"] == "deleted"
    # the resync re-read every mail; unchanged ones gave no new version
    versions: dict[str, int] = {}
    for v in rows(hub, activity_versions, source=NAME):
        versions[v["external_id"]] = versions.get(v["external_id"], 0) + 1
    untouched = live_mail(store) - set(changed) - set(new.values()) - set(store.ids(BOB, "inbox"))
    assert untouched and all(versions[e] == 1 for e in untouched)
    # and the next run is incremental again
    again = sync(hub, "messages")
    assert not again.full_resync and again.read == 0


def test_removed_mail_is_a_delete_version_on_the_timeline(store: GraphStore, hub: Hub) -> None:
    sync(hub, "messages")
    victim = store.ids(BOB, "inbox")[0]
    store.delete(BOB, [victim])
    assert sync(hub, "messages").deleted == 1
    row = rows(hub, activities, source=NAME, external_id=victim)[0]
    assert row["status"] == "deleted" and row["version"] == 2


def test_mail_removed_as_changed_stays_on_the_timeline_as_it_was(store: GraphStore, hub: Hub) -> None:
    sync(hub, "messages")
    kept = store.ids(BOB, "inbox")[0]
    before = rows(hub, activities, source=NAME, external_id=kept)[0]
    store.delete(BOB, [kept], reason="changed")  # soft-deleted or restorable, as Graph documents it
    assert sync(hub, "messages").deleted == 0
    assert rows(hub, activities, source=NAME, external_id=kept)[0] == before


def test_meeting_moved_twice_arriving_out_of_order_ends_at_its_latest_state(store: GraphStore, hub: Hub) -> None:
    sync(hub, "events")
    ext = store.ids(ANN, "calendar")[0]
    first = store.base_time + timedelta(days=2, hours=2)
    store.move_event(ANN, ext, first)
    latest = first + timedelta(days=1)
    store.move_event(ANN, ext, latest)
    sync(hub, "events")  # reads the latest move
    store.replay(ANN, ext, version=-2)  # then Graph replays the first move, alone on its page
    late = sync(hub, "events")
    assert late.read == 1
    row = rows(hub, activities, source=NAME, external_id=ext)[0]
    assert row["occurred_at"].replace(tzinfo=UTC) == latest.replace(tzinfo=UTC) and row["status"] == "scheduled"
    store.cancel_event(ANN, ext)
    sync(hub, "events")
    row = rows(hub, activities, source=NAME, external_id=ext)[0]
    assert row["status"] == "cancelled" and row["occurred_at"].replace(tzinfo=UTC) == latest.replace(tzinfo=UTC)
    applied = sorted((v["version"], v["applied"]) for v in rows(hub, activity_versions, source=NAME,
                                                                 external_id=ext))
    assert applied[-2:] == [(applied[-2][0], False), (applied[-1][0], True)]  # the late one kept, not applied


def test_a_contacts_timeline_holds_its_mail_and_meetings_in_time_order(store: GraphStore, hub: Hub) -> None:
    guest = store.person(0)[0]
    with hub.db.begin() as c:
        c.execute(insert(contacts), [{"id": "c-guest", "email": guest.upper(), "created_at": datetime.now(UTC)}])
    sync(hub, "messages")
    sync(hub, "events")
    with hub.db.connect() as c:
        line = timeline(c, "c-guest")
    assert line, "the contact has activities"
    mb = store.mailbox(ANN)
    expected_mail = {e for box in (ANN, BOB) for f in ("inbox", "sentitems")
                     for e, it in store.mailbox(box).items[store.mailbox(box).folders[f]].items()
                     if guest in str(it.current)}
    expected_meetings = {e for box in (ANN, BOB) for e, it in store.mailbox(box).items["calendar"].items()
                         if guest in str(it.current)}
    got = {r["id"] for r in line}
    ids = {r["id"]: r["external_id"] for r in rows(hub, activities, source=NAME)}
    assert {ids[i] for i in got} == expected_mail | expected_meetings
    assert [r["occurred_at"] for r in line] == sorted(r["occurred_at"] for r in line)
    assert {r["type"] for r in line} == {"email", "meeting"} and mb.address == ANN


def test_a_bad_message_goes_to_the_retry_queue_and_the_rest_syncs(store: GraphStore, hub: Hub) -> None:
    from state.schema import retry_queue

    bad = store.deliver(ANN, "inbox", sender=("eve@example.com", "Eve"), to=[(ANN, "Ann")], subject="x", bad=True)
    result = sync(hub, "messages")
    assert (result.read, result.failed) == (len(live_mail(store)), 1)  # read, then rejected by the connector
    queued = rows(hub, retry_queue)
    assert [r["external_id"] for r in queued] == [bad]
    assert "sentDateTime" in queued[0]["reason"] and "body" not in queued[0]["payload"]
    assert {r["external_id"] for r in rows(hub, activities, source=NAME)} == live_mail(store) - {bad}
