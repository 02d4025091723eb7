"""A sync of the Salesforce sandbox (on loopback) through `Hub`, into SQLite and real PostgreSQL.

Entities land mapped by mappings/salesforce.yaml, contacts and opportunities point at their
accounts, Task/Event become activities; an incremental run moves only changes and deletes; a
purged delete log makes the next run a recorded full resync.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import func, select

from connectors.salesforce.sandbox import SandboxServer, SandboxStore
from hub.app import Hub
from hub.config import parse_config
from state.schema import accounts, activities, contacts, external_links, leads, opportunities, sync_runs

TOKEN = "00DDn0000000001!AQ4AQsync.test.token"


class OrgClock:
    """The org's clock: real time shifted by `skew` seconds (the org may run behind the hub)."""

    def __init__(self) -> None:
        self.skew = 0.0

    def __call__(self) -> datetime:
        return (datetime.now(UTC) + timedelta(seconds=self.skew)).replace(microsecond=0)


@pytest.fixture
def org() -> Iterator[tuple[SandboxStore, SandboxServer]]:
    store = SandboxStore(accounts=30, contacts=2_300, leads=25, opportunities=40, tasks=20, events=15,
                         clock=OrgClock())
    with SandboxServer(store, token=TOKEN) as server:
        yield store, server


def hub_for(db_url: str, server: SandboxServer) -> Hub:
    cfg = parse_config({"database": db_url, "connectors": {"sf_main": {
        "kind": "salesforce", "auth": {"access_token": TOKEN, "instance_url": server.url}}}})
    return Hub(cfg, sleep=lambda _s: None).ready()


def count(hub: Hub, table: Any, *where: Any) -> int:
    with hub.db.connect() as c:
        return int(c.execute(select(func.count()).select_from(table).where(*where)).scalar_one())


def link(hub: Hub, entity: str, external_id: str) -> Any:
    with hub.db.connect() as c:
        return c.execute(select(external_links.c.entity_id, external_links.c.deleted_at).where(
            external_links.c.connector == "sf_main", external_links.c.entity == entity,
            external_links.c.external_id == external_id)).one()


def test_a_full_then_incremental_sync_lands_every_object(db_url: str, org: tuple[SandboxStore, SandboxServer]) -> None:
    store, server = org
    hub = hub_for(db_url, server)
    try:
        results = hub.engine.run()
        assert [(r.stream, r.status) for r in results][:1] == [("Account", "ok")], "accounts go first"
        assert all(r.status == "ok" for r in results), [(r.stream, r.error) for r in results if r.error]
        by = {r.stream: r for r in results}
        assert by["Contact"].read == 2_300 and by["Contact"].pages == 2 and by["Contact"].requests == 2
        assert (count(hub, accounts), count(hub, contacts), count(hub, leads), count(hub, opportunities)) == \
            (30, 2_300, 25, 40)
        assert count(hub, activities, activities.c.source == "sf_main") == 35

        # mapped values, and references resolved to canonical ids through the links
        some = store.ids("Contact")[5]
        raw = store.get("Contact", some) or {}
        opp_raw = store.get("Opportunity", store.ids("Opportunity")[0]) or {}
        contact_id, opp_id = link(hub, "contact", some).entity_id, link(hub, "opportunity", opp_raw["Id"]).entity_id
        with hub.db.connect() as c:
            row = c.execute(select(contacts).where(contacts.c.id == contact_id)).mappings().one()
            opp = c.execute(select(opportunities).where(opportunities.c.id == opp_id)).mappings().one()
        assert (row["email"], row["last_name"]) == (raw["Email"], raw["LastName"])
        assert row["account_id"] == link(hub, "account", raw["AccountId"]).entity_id
        assert (opp["stage"], Decimal(str(opp["amount"])), str(opp["close_date"])) == \
            (opp_raw["StageName"], Decimal(str(opp_raw["Amount"])), "2026-03-31")
        assert opp["account_id"] == link(hub, "account", opp_raw["AccountId"]).entity_id

        # Task/Event as activities, tied through refs to the contact (WhoId), account and opportunity (WhatId)
        task = store.get("Task", store.ids("Task")[0]) or {}
        event = store.get("Event", store.ids("Event")[0]) or {}
        want = [(link(hub, "contact", x["WhoId"]).entity_id, link(hub, "account", x["AccountId"]).entity_id,
                 link(hub, "opportunity", x["WhatId"]).entity_id) for x in (task, event)]
        with hub.db.connect() as c:
            got = {r["external_id"]: r for r in c.execute(select(activities).where(
                activities.c.external_id.in_([task["Id"], event["Id"]]))).mappings()}
        assert [(got[x["Id"]]["contact_id"], got[x["Id"]]["account_id"], got[x["Id"]]["opportunity_id"])
                for x in (task, event)] == want
        assert (got[task["Id"]]["type"], got[event["Id"]]["type"]) == ("call", "meeting")

        # an incremental run reads only what changed, and the deletes
        changed = store.modify("Contact", count=4, values={"Title": "VP Sales"})
        gone = store.delete("Contact", [store.ids("Contact")[100], store.ids("Contact")[200]])
        store.reset_stats()
        again = {r.stream: r for r in hub.engine.run("sf_main.Contact")}["Contact"]
        assert again.status == "ok", again.error
        assert (again.read, again.deleted) == (4, 2)
        assert store.stats == {"getDeleted": 1, "query": 1}
        ids = [link(hub, "contact", i).entity_id for i in changed]
        with hub.db.connect() as c:
            titles = c.execute(select(contacts.c.title).where(contacts.c.id.in_(ids))).scalars().all()
        assert titles == ["VP Sales"] * 4
        assert all(link(hub, "contact", i).deleted_at is not None for i in gone)
    finally:
        hub.close()


def test_a_purged_delete_log_makes_a_recorded_full_resync(db_url: str, org: tuple[SandboxStore, SandboxServer]) -> None:
    store, server = org
    clock = store.clock
    assert isinstance(clock, OrgClock)
    clock.skew = -10  # the org's clock runs behind ours; the delete window follows the org's
    hub = hub_for(db_url, server)
    try:
        first = hub.engine.run("sf_main.Lead")[0]
        assert first.status == "ok" and first.read == 25
        clock.skew = -5  # later, on the org's clock
        store.delete("Lead", store.ids("Lead")[:1])
        store.purge_deletes("Lead")  # the recycle bin is emptied: the delete window has passed
        store.modify("Lead", count=1)
        resync = hub.engine.run("sf_main.Lead")[0]
        assert resync.status == "ok", resync.error
        assert resync.full_resync and "cursor expired" in (resync.resync_reason or "")
        assert resync.read == 24  # everything still there, read again from the start
        with hub.db.connect() as c:
            run = c.execute(select(sync_runs).where(sync_runs.c.id == resync.run_id)).mappings().one()
        assert run["full_resync"] and "earliestDateAvailable" in run["resync_reason"]
        # after the resync, deletes are read from the new window again
        store.delete("Lead", store.ids("Lead")[:1])
        after = hub.engine.run("sf_main.Lead")[0]
        assert after.status == "ok" and after.deleted == 1 and not after.full_resync
    finally:
        hub.close()


def test_the_sandbox_clock_is_the_vendors(org: tuple[SandboxStore, SandboxServer]) -> None:
    """Changes are stamped by the org's clock to the second, like Salesforce's examples."""
    store, _server = org
    rid = store.modify("Account", count=1)[0]
    stamp = (store.get("Account", rid) or {})["SystemModstamp"]
    assert stamp.endswith(".000+0000")
    assert abs(datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.000%z") - datetime.now(UTC)).total_seconds() < 5
