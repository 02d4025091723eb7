"""Twilio through the real sync engine and the webhook path into SQLite and PostgreSQL, against
the sandbox on loopback: every call once on the timeline, a call that ends is a new version (by
polling and by its status callbacks), a redelivered callback changes nothing, internal numbers
never become contacts, and a number written another way still finds its contact."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from connectors.twilio.sandbox import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    SandboxServer,
    TwilioStore,
    send_status_callbacks,
)
from hub.activities import timeline
from hub.app import Hub
from hub.config import parse_config
from hub.ids import new_id
from hub.sync import StreamResult
from hub.webhooks.processor import InboxProcessor, ProcessorSettings
from hub.webhooks.server import create_app
from state.schema import activities, activity_participants, activity_versions, contacts
from tests.test_twilio_webhooks import live_server

NAME = "twilio_main"
OURS = ["+14155550100", "+14155550101"]


class Rig:
    def __init__(self, db_url: str, store: TwilioStore, url: str, home: Path) -> None:
        self.db_url, self.store, self.url = db_url, store, url
        self.cfg = parse_config({"database": db_url, "sync": {"retry_backoff_seconds": 0}, "connectors": {NAME: {
            "kind": "twilio", "base_url": url, "page_size": 40, "lookback_days": 15, "requests_per_second": 10_000,
            "auth": {"account_sid": ACCOUNT_SID, "auth_token": AUTH_TOKEN}, "internal": OURS,
            "webhook_secrets": [AUTH_TOKEN]}}}, path=str(home / "crmhub.yaml"))
        self.hub = Hub(self.cfg, sleep=lambda _s: None).ready()

    def run(self) -> StreamResult:
        conn = self.hub.factory.build(NAME)
        try:
            result = self.hub.engine.run_stream(conn, "calls")
        finally:
            conn.close()
        assert result.status == "ok", result.error
        return result

    def rows(self) -> dict[str, dict[str, Any]]:
        with self.hub.db.connect() as c:
            found = {r["external_id"]: dict(r) for r in c.execute(
                select(activities).where(activities.c.source == NAME)).mappings()}
            q = (select(activity_versions.c.external_id, func.count()).where(activity_versions.c.source == NAME)
                 .group_by(activity_versions.c.external_id))
            versions: dict[str, int] = {str(e): int(n) for e, n in c.execute(q)}
        for ext, row in found.items():
            row["versions"] = versions.get(ext, 0)
        return found

    def participants(self, external_id: str) -> list[dict[str, Any]]:
        with self.hub.db.connect() as c:
            q = (select(activity_participants).join(activities, activities.c.id == activity_participants.c.activity_id)
                 .where(activities.c.source == NAME, activities.c.external_id == external_id))
            return [dict(r) for r in c.execute(q).mappings()]


@pytest.fixture
def rig(db_url: str, tmp_path: Path) -> Iterator[Rig]:
    store = TwilioStore(calls=90, our_numbers=OURS)
    with SandboxServer(store) as server:
        r = Rig(db_url, store, server.url, tmp_path)
        try:
            yield r
        finally:
            r.hub.close()


def test_every_call_once_and_a_call_that_ends_is_a_new_version(rig: Rig) -> None:
    first = rig.run()
    assert (first.read, first.written, first.failed) == (90, 90, 0)
    rows = rig.rows()
    assert set(rows) == rig.store.ids() and all(r["versions"] == 1 and r["type"] == "call" for r in rows.values())
    assert rig.run().read == 0, "nothing changed: nothing read again"

    live = rig.store.create(1, in_progress=True)[0]
    assert rig.run().read == 1 and rig.rows()[live]["status"] == "in-progress"
    rig.store.end(live, duration=125)
    assert rig.run().read == 1
    row = rig.rows()[live]
    assert (row["status"], row["versions"]) == ("completed", 2)
    assert row["ended_at"] - row["occurred_at"] == timedelta(seconds=125)
    assert rig.run().read == 0


def test_internal_numbers_never_become_contacts_and_the_caller_finds_the_contact(rig: Rig) -> None:
    call = next(c for c in rig.store.calls.values() if c["direction"] == "inbound")
    number = call["from"]  # +1AAA555NNNN, as Twilio writes it
    cid = new_id()
    with rig.hub.db.begin() as c:  # the canonical store holds numbers in E.164 (the `phone` transform)
        c.execute(contacts.insert().values(id=cid, first_name="Ann", phone=number))
    rig.run()
    parts = {p["role"]: p for p in rig.participants(call["sid"])}
    assert parts["caller"]["phone"] == number and parts["caller"]["contact_id"] == cid
    assert parts["callee"]["phone"] in OURS and parts["callee"]["internal"] and parts["callee"]["contact_id"] is None
    assert rig.rows()[call["sid"]]["contact_id"] == cid
    with rig.hub.db.connect() as c:
        on_timeline = [t for t in timeline(c, cid) if t["source"] == NAME]
        assert int(c.execute(select(func.count()).select_from(contacts)).scalar_one()) == 1
    assert [t["direction"] for t in on_timeline][:1] == ["inbound"] and len(on_timeline) >= 1


def test_status_callbacks_become_versions_and_a_redelivery_changes_nothing(rig: Rig) -> None:
    app = create_app(rig.cfg, rig.hub.db)
    proc = InboxProcessor(rig.hub.db, rig.hub.factory, rig.hub.engine,
                          settings=ProcessorSettings(backoff=timedelta(0)))
    sid = rig.store.create(1, in_progress=True)[0]
    with live_server(app) as base, httpx.Client() as client:
        url = f"{base}/webhooks/{NAME}"
        assert [r.status_code for r in send_status_callbacks(rig.store, url, sid, ("ringing", "in-progress"),
                                                             client=client)] == [200, 200]
        assert proc.process_batch().done == 2
        assert rig.rows()[sid]["status"] == "in-progress"
        rig.store.end(sid, duration=61)
        [done] = send_status_callbacks(rig.store, url, sid, ("completed",), client=client)
        [again] = send_status_callbacks(rig.store, url, sid, ("completed",), client=client)
    assert done.json() == {"stored": 1, "duplicates": 0} and again.json() == {"stored": 0, "duplicates": 1}
    assert proc.process_batch().done == 1 and proc.process_batch().claimed == 0
    row = rig.rows()[sid]
    # ringing and in-progress were claimed in one batch, where the newest version of a record wins
    assert (row["status"], row["versions"]) == ("completed", 2)
