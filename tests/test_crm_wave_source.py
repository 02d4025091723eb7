"""A vendor CRM as a wave's source: HubSpot and Salesforce (their sandboxes on loopback, the real
connectors) migrated in waves — plan, run, verify, a second run that changes nothing, rollback —
with `where` evaluated over each page's records (nested properties flattened) and children
following their account. The expected sets are computed from the source's own records.
SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from connectors.hubspot.sandbox import SandboxServer as HubSpotServer
from connectors.hubspot.sandbox import SandboxStore as HubSpotStore
from connectors.salesforce.sandbox import SandboxServer as SalesforceServer
from connectors.salesforce.sandbox import SandboxStore as SalesforceStore
from hub.app import Hub
from hub.config import parse_config
from hub.migrate.plan import plan
from hub.migrate.rollback import rollback
from hub.migrate.run import WaveRunner
from hub.migrate.verify import verify
from state.schema import accounts, contacts, migration_items

HS_TOKEN, SF_TOKEN = "pat-na1-wave-0001", "00DDn0000000001!AQ4AQwave.token"


def _all(hub: Hub, instance: str, stream: str) -> dict[str, dict[str, Any]]:
    c = hub.engine.build(instance)
    try:
        return {r.external_id: r.data for p in c.read(stream, None) for r in p.records}
    finally:
        c.close()


def _migrated(hub: Hub, wave: str) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    with hub.db.connect() as c:
        for stream, legacy_id in c.execute(select(migration_items.c.stream, migration_items.c.legacy_id).where(
                migration_items.c.wave == wave)):
            out.setdefault(stream, set()).add(legacy_id)
    return out


def _canonical_counts(hub: Hub) -> tuple[int, int]:
    with hub.db.connect() as c:
        return (c.execute(select(func.count()).select_from(accounts)).scalar_one(),
                c.execute(select(func.count()).select_from(contacts)).scalar_one())


def _hub(doc: dict[str, Any], tmp_path: Path) -> Iterator[Hub]:
    cfg = tmp_path / "crmhub.yaml"
    cfg.write_text(json.dumps(doc))
    hub = Hub(parse_config(doc, path=str(cfg)), sleep=lambda _s: None).ready()
    try:
        yield hub
    finally:
        hub.close()


@pytest.fixture
def hubspot(db_url: str, tmp_path: Path) -> Iterator[Hub]:
    store = HubSpotStore(contacts=60, companies=12, deals=0, engagements=0)
    with HubSpotServer(store, token=HS_TOKEN) as srv:
        doc: dict[str, Any] = {"database": db_url, "connectors": {
            "hubspot_main": {"kind": "hubspot", "base_url": srv.url, "auth": {"token": HS_TOKEN},
                             "search_lag_ms": 0, "streams": ["companies", "contacts"]}},
            "waves": {"picked": {"source": "hubspot_main", "root": "companies", "ids_file": "picked.txt"},
                      "by_industry": {"source": "hubspot_main", "root": "companies",
                                      "where": "properties_industry IS NOT NULL AND properties_industry < 'M'"}}}
        yield from _hub(doc, tmp_path)


def test_hubspot_companies_and_their_contacts_migrate_as_waves(hubspot: Hub, tmp_path: Path) -> None:
    hub = hubspot
    companies = _all(hub, "hubspot_main", "companies")
    people = _all(hub, "hubspot_main", "contacts")
    picked = sorted(companies)[:3]
    (tmp_path / "picked.txt").write_text("\n".join(picked) + "\n")

    def followers(roots: set[str]) -> set[str]:
        return {x for x, d in people.items() if str((d.get("properties") or {}).get("associatedcompanyid")) in roots}

    want_people = followers(set(picked))
    assert want_people, "the sandbox associates contacts with companies"
    rep = plan(hub, "picked")
    counts = {s.stream: s.records for s in rep.streams}
    assert counts == {"companies": 3, "contacts": len(want_people)}
    before = _canonical_counts(hub)
    assert WaveRunner(hub, "picked").run(dry_run=True).status == "ok"
    assert _canonical_counts(hub) == before  # a dry run writes nothing

    assert WaveRunner(hub, "picked").run().status == "ok"
    assert _migrated(hub, "picked") == {"companies": set(picked), "contacts": want_people}
    assert verify(hub, "picked").ok
    again = WaveRunner(hub, "picked").run()
    assert sum(s.created + s.updated for s in again.streams) == 0  # idempotent

    # a `where` wave over flattened properties: the other companies of those industries
    by_industry = {x for x, d in companies.items() if (ind := (d.get("properties") or {}).get("industry"))
                   and ind < "M" and x not in picked}
    rep2 = WaveRunner(hub, "by_industry").run()
    assert rep2.status == "ok"
    got = _migrated(hub, "by_industry")
    assert got.get("companies", set()) == by_industry  # picked ones belong to the first wave: overlaps
    assert got.get("contacts", set()) == followers(by_industry)
    assert {s.stream: s.overlaps for s in rep2.streams}["companies"] == \
        len({x for x in picked if ((companies[x].get("properties") or {}).get("industry") or "Z") < "M"})

    rb = rollback(hub, "picked")
    assert rb.applied and rb.conflict_count == 0
    assert _migrated(hub, "picked") == {}
    assert _migrated(hub, "by_industry") == got  # the other wave untouched
    assert verify(hub, "by_industry").ok


@pytest.fixture
def salesforce(db_url: str, tmp_path: Path) -> Iterator[Hub]:
    store = SalesforceStore(accounts=10, contacts=40, leads=0, opportunities=0, tasks=0, events=0)
    with SalesforceServer(store, token=SF_TOKEN) as srv:
        doc: dict[str, Any] = {"database": db_url, "connectors": {
            "sf_main": {"kind": "salesforce", "auth": {"access_token": SF_TOKEN, "instance_url": srv.url},
                        "streams": ["Account", "Contact"]}},
            "waves": {"tech": {"source": "sf_main", "root": "Account", "where": "Industry = 'Technology'"}}}
        yield from _hub(doc, tmp_path)


def test_salesforce_accounts_and_their_contacts_migrate_as_a_wave(salesforce: Hub) -> None:
    hub = salesforce
    accts = _all(hub, "sf_main", "Account")
    people = _all(hub, "sf_main", "Contact")
    tech = {x for x, d in accts.items() if d.get("Industry") == "Technology"}
    want = {x for x, d in people.items() if d.get("AccountId") in tech}
    assert tech and want
    assert {s.stream: s.records for s in plan(hub, "tech").streams} == {"Account": len(tech), "Contact": len(want)}
    assert WaveRunner(hub, "tech").run().status == "ok"
    assert _migrated(hub, "tech") == {"Account": tech, "Contact": want}
    assert verify(hub, "tech").ok
    rb = rollback(hub, "tech")
    assert rb.applied and _migrated(hub, "tech") == {}
    assert _canonical_counts(hub) == (0, 0)
