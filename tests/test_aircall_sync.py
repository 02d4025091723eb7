"""Aircall through the real sync engine and the webhook path into SQLite and PostgreSQL, against
the sandbox on loopback: every call once though the windows split under the result cap, the
contact's number as Aircall writes it (`+1 646-555-1542`) finds the contact stored in E.164,
the line and the agent are internal (never contacts), a call that ends is a new version by
polling and by webhook, and a redelivered webhook changes nothing."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from connectors.aircall.sandbox import (
    API_ID,
    API_TOKEN,
    WEBHOOK_TOKEN,
    AircallStore,
    SandboxServer,
    send_webhook,
)
from hub.app import Hub
from hub.config import parse_config
from hub.ids import new_id
from hub.sync import StreamResult
from hub.transforms import e164
from hub.webhooks.processor import InboxProcessor, ProcessorSettings
from hub.webhooks.server import create_app
from state.schema import activities, activity_participants, activity_versions, contacts
from tests.test_twilio_webhooks import live_server

NAME = "aircall_main"
INTERNAL = ["@sandbox-company.example", "+33 1 76 36 06 95", "+1 415-555-0100"]


class Rig:
    def __init__(self, db_url: str, store: AircallStore, url: str, home: Path, cap: int) -> None:
        self.store = store
        self.cfg = parse_config({"database": db_url, "sync": {"retry_backoff_seconds": 0}, "connectors": {NAME: {
            "kind": "aircall", "base_url": url, "lookback_days": 15, "requests_per_second": 10_000,
            "result_cap": cap, "settle_seconds": 0, "auth": {"api_id": API_ID, "api_token": API_TOKEN},
            "internal": INTERNAL, "webhook_secrets": [WEBHOOK_TOKEN]}}}, path=str(home / "crmhub.yaml"))
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
    store = AircallStore(calls=180)
    with SandboxServer(store, result_cap=100) as server:
        r = Rig(db_url, store, server.url, tmp_path, cap=100)
        try:
            yield r
        finally:
            r.hub.close()


def test_every_call_once_through_split_windows_and_a_call_that_ends_is_a_new_version(rig: Rig) -> None:
    first = rig.run()
    assert (first.read, first.written, first.failed) == (180, 180, 0)
    assert first.requests > 180 // 50 + 1, "the window was split (probes cost requests)"
    rows = rig.rows()
    assert set(rows) == rig.store.ids() and all(r["versions"] == 1 for r in rows.values())
    assert rig.run().read == 0
    missed = [r for r in rows.values() if r["status"] == "missed"]
    assert missed and all(r["direction"] == "inbound" for r in missed)

    live = rig.store.create(1, done=False, ago=300)[0]
    assert rig.run().read == 1 and rig.rows()[live]["status"] in ("ringing", "in-progress")
    rig.store.end(live, duration=75)
    assert rig.run().read == 1
    row = rig.rows()[live]
    assert (row["status"], row["versions"]) == ("completed", 2)
    assert row["ended_at"] - row["occurred_at"] == timedelta(seconds=75)
    assert rig.run().read == 0, "settled (settle_seconds 0): not fetched again"


def test_the_number_as_aircall_writes_it_finds_the_contact_and_the_team_stays_internal(rig: Rig) -> None:
    call = next(c for c in rig.store.calls.values() if c["user"] is not None and c["direction"] == "inbound")
    cid = new_id()
    stored = e164(call["raw_digits"])  # "+1 646-555-1542" -> "+16465551542", as the CRM holds it
    assert stored is not None and stored != call["raw_digits"]
    with rig.hub.db.begin() as c:
        c.execute(contacts.insert().values(id=cid, first_name="Lee", phone=stored))
    rig.run()
    parts = {p["role"]: p for p in rig.participants(str(call["id"]))}
    assert (parts["caller"]["phone"], parts["caller"]["contact_id"]) == (stored, cid)
    assert parts["callee"]["internal"] and parts["callee"]["contact_id"] is None  # the Aircall line
    assert parts["agent"]["user_id"] == str(call["user"]["id"]) and parts["agent"]["internal"]
    assert rig.rows()[str(call["id"])]["contact_id"] == cid
    with rig.hub.db.connect() as c:
        assert int(c.execute(select(func.count()).select_from(contacts)).scalar_one()) == 1


def test_webhooks_become_versions_and_a_redelivery_changes_nothing(rig: Rig) -> None:
    app = create_app(rig.cfg, rig.hub.db)
    proc = InboxProcessor(rig.hub.db, rig.hub.factory, rig.hub.engine,
                          settings=ProcessorSettings(backoff=timedelta(0)))
    cid = rig.store.create(1, done=False, ago=120, direction="inbound", status="initial", answered_at=None)[0]
    started = rig.store.calls[int(cid)]["started_at"]
    with live_server(app) as base, httpx.Client() as client:
        url = f"{base}/webhooks/{NAME}"
        assert send_webhook(rig.store, url, cid, "call.created", client=client, timestamp=started).status_code == 200
        assert proc.process_batch().done == 1
        assert rig.rows()[cid]["status"] == "ringing"
        rig.store.end(cid, duration=40)
        ended = send_webhook(rig.store, url, cid, "call.ended", client=client, timestamp=started + 70)
        again = send_webhook(rig.store, url, cid, "call.ended", client=client, timestamp=started + 70)
    assert ended.json() == {"stored": 1, "duplicates": 0} and again.json() == {"stored": 0, "duplicates": 1}
    assert proc.process_batch().done == 1 and proc.process_batch().claimed == 0
    row = rig.rows()[cid]
    assert (row["status"], row["versions"]) == ("completed", 2)
    # the poll that follows reads the same call: the activity keeps its one row
    rig.run()
    assert len([r for r in rig.rows() if r == cid]) == 1
