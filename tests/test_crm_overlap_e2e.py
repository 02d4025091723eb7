"""HubSpot and Salesforce hold the same people with conflicting fields; both sync (their sandboxes on
loopback, the real engine) into the store, and every field ends as the ownership rules say, with
`crmhub explain` naming the source and the rule. Runs on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from connectors.hubspot.sandbox import SandboxServer as HubSpotServer
from connectors.hubspot.sandbox import SandboxStore as HubSpotStore
from connectors.salesforce.sandbox import SandboxServer as SalesforceServer
from connectors.salesforce.sandbox import SandboxStore as SalesforceStore
from hub.app import Hub
from hub.cli import app as cli_app
from hub.config import parse_config
from state.schema import contacts, external_links

HS_TOKEN, SF_TOKEN = "pat-na1-overlap-0001", "00DDn0000000001!AQ4AQoverlap.token"
RULES = {
    "contact.phone": {"rule": "owner", "system": "hubspot_main"},
    "contact.title": {"rule": "priority", "systems": ["sf_main", "hubspot_main"]},
    "contact.lifecycle_stage": {"rule": "fill_empty"},
    "contact.*": {"rule": "most_recent"},
}
PEOPLE = [  # email, HubSpot's values, Salesforce's values
    ("ann@overlap.example", {"firstname": "Ann", "phone": "(415) 555-0101", "jobtitle": "CTO", "lifecyclestage": "lead"},
     {"FirstName": "Annie", "Phone": "+1 212 555 0101", "Title": "Chief Technology Officer"}),
    ("bob@overlap.example", {"firstname": "Bob", "phone": None, "jobtitle": None, "lifecyclestage": "customer"},
     {"FirstName": "Robert", "Phone": "212.555.0102", "Title": "VP Sales"}),
]


@pytest.fixture
def world(db_url: str, tmp_path: Path) -> Iterator[tuple[Hub, Path]]:
    hs_store = HubSpotStore(contacts=3)
    sf_store = SalesforceStore(accounts=2, contacts=3, leads=0, opportunities=0, tasks=0, events=0)
    for email, hs, sf in PEOPLE:
        hs_store.create("contacts", 1, {"email": email, "lastname": "Overlap", **hs})
        sf_store.create("Contact", {"Email": email.upper(), "LastName": "Overlap", **sf})
    with HubSpotServer(hs_store, token=HS_TOKEN) as hs_srv, SalesforceServer(sf_store, token=SF_TOKEN) as sf_srv:
        doc: dict[str, Any] = {"database": db_url, "ownership": RULES, "connectors": {
            "hubspot_main": {"kind": "hubspot", "base_url": hs_srv.url, "auth": {"token": HS_TOKEN},
                             "search_lag_ms": 0, "streams": ["contacts"]},
            "sf_main": {"kind": "salesforce", "auth": {"access_token": SF_TOKEN, "instance_url": sf_srv.url},
                        "streams": ["Contact"]}}}
        cfg_path = tmp_path / "crmhub.yaml"
        cfg_path.write_text(json.dumps(doc))
        hub = Hub(parse_config(doc, path=str(cfg_path)), sleep=lambda _s: None).ready()
        try:
            yield hub, cfg_path
        finally:
            hub.close()


def test_both_crms_sync_and_every_field_follows_its_rule(world: tuple[Hub, Path]) -> None:
    hub, cfg_path = world
    results = hub.engine.run("hubspot_main") + hub.engine.run("sf_main")
    assert all(r.status == "ok" for r in results), [r.error for r in results]
    with hub.db.connect() as c:
        rows = {r["email"]: dict(r) for r in c.execute(select(contacts).where(
            contacts.c.email.like("%@overlap.example"))).mappings()}
        linked = dict(c.execute(select(external_links.c.connector, func.count()).where(
            external_links.c.entity_id.in_([r["id"] for r in rows.values()])).group_by(external_links.c.connector)).all())
    assert set(rows) == {"ann@overlap.example", "bob@overlap.example"}  # one record per person: matched by email
    assert linked == {"hubspot_main": 2, "sf_main": 2}
    ann, bob = rows["ann@overlap.example"], rows["bob@overlap.example"]
    # owner: only HubSpot writes the phone (Bob has none in HubSpot: Salesforce's is refused all the same)
    assert ann["phone"] == "+14155550101" and bob["phone"] is None
    # priority: Salesforce first
    assert ann["title"] == "Chief Technology Officer" and bob["title"] == "VP Sales"
    # fill_empty: HubSpot filled it first; Salesforce has no value for it
    assert (ann["lifecycle_stage"], bob["lifecycle_stage"]) == ("lead", "customer")
    # most_recent: Salesforce's records changed later than HubSpot's
    assert (ann["first_name"], bob["first_name"]) == ("Annie", "Robert")
    res = CliRunner().invoke(cli_app, ["--config", str(cfg_path), "explain", "contact", "bob@overlap.example",
                                       "phone", "--json"])
    assert res.exit_code == 0, res.output
    phone = json.loads(res.stdout)["fields"]["phone"]
    refused = [h for h in phone["history"] if not h["accepted"]]
    assert phone["value"] is None and refused and refused[0]["source"] == "sf_main" and refused[0]["rule"] == "owner"
    # a second run of both changes nothing
    again = hub.engine.run("hubspot_main") + hub.engine.run("sf_main")
    assert sum(r.written for r in again) == 0
