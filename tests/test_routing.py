"""Lead routing (hub.routing) through the real page writer, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, insert, select
from typer.testing import CliRunner

from hub.cli import app as cli_app
from hub.config import ConfigError
from hub.mapping import parse_mapping
from hub.routing import Router, load_routing
from hub.sdk.types import RawRecord
from hub.writer import PageWriter
from state.bulk import Batch
from state.db import ensure_schema, make_engine
from state.schema import accounts, activities, contacts, leads

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
ROUTING: dict[str, Any] = {
    "teams": {"emea": ["anna", "bert"], "us": ["carl", "dora", "ed"], "enterprise": ["erin"]},
    "lead": [
        {"rule": "account_owner"},
        {"rule": "score", "min": 80, "team": "enterprise"},
        {"rule": "territory", "field": "country", "territories": {"DE": "emea", "FR": "emea", "US": "us", "USA": "us"}},
    ],
    "contact": [{"rule": "account_owner"}, {"rule": "team", "team": "us"}],
}
LEADS = parse_mapping("""
streams:
  leads:
    target: lead
    fields:
      email: {path: email, transform: email}
      company: company
      score: {path: score, transform: int}
    custom:
      country: country
""", "mappings/legacy.yaml")["leads"]


@pytest.fixture
def db(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url)
    ensure_schema(engine)
    with engine.begin() as c:
        c.execute(insert(accounts), [{"id": "acc1", "name": "Acme", "domain": "acme.com", "owner_id": "olga"},
                                     {"id": "acc2", "name": "Globex", "domain": None, "owner_id": "gus"}])
    yield engine
    engine.dispose()


def sync_leads(db: Engine, records: list[dict[str, Any]], router: Router) -> None:
    writer = PageWriter("legacy", "leads", LEADS, router=router)
    prepared = writer.prepare([RawRecord(r["id"], None, r) for r in records])
    with db.begin() as c:
        batch = Batch(c)
        writer.write(batch, prepared, [], NOW, None)
        batch.flush()


def owners(db: Engine) -> dict[str, str | None]:
    with db.connect() as c:
        return {r.email: r.owner_id for r in c.execute(select(leads.c.email, leads.c.owner_id))}


def test_the_chain_assigns_by_account_score_territory_and_round_robin(db: Engine) -> None:
    router = Router(load_routing(ROUTING) or pytest.fail("no spec"))
    sync_leads(db, [
        {"id": "1", "email": "x@acme.com", "company": "whatever", "score": 99, "country": "US"},  # account by domain
        {"id": "2", "email": "y@gmail.com", "company": "GLOBEX", "country": "US"},  # account by company name
        {"id": "3", "email": "z@big.io", "score": 85, "country": "DE"},  # score beats territory
        {"id": "4", "email": "a@de.io", "country": "de"},
        {"id": "5", "email": "b@fr.io", "country": "FR"},
        {"id": "6", "email": "c@us.io", "country": "usa"},
        {"id": "7", "email": "d@nowhere.io", "country": "BR"},  # no rule matches
    ], router)
    got = owners(db)
    assert got["x@acme.com"] == "olga" and got["y@gmail.com"] == "gus" and got["z@big.io"] == "erin"
    assert (got["a@de.io"], got["b@fr.io"]) == ("anna", "bert")  # round robin within emea
    assert got["c@us.io"] == "carl" and got["d@nowhere.io"] is None  # left unassigned, never dropped
    # the next page (a restart, another worker) continues the round robin where it stopped
    sync_leads(db, [{"id": "8", "email": "e@de.io", "country": "DE"}, {"id": "9", "email": "f@us.io", "country": "US"}],
               Router(load_routing(ROUTING) or pytest.fail("no spec")))
    got = owners(db)
    assert (got["e@de.io"], got["f@us.io"]) == ("anna", "dora")
    # idempotent: syncing the same leads again re-assigns nothing
    sync_leads(db, [{"id": "4", "email": "a@de.io", "country": "US"}], router)
    assert owners(db)["a@de.io"] == "anna"
    with db.connect() as c:
        acts = {r.external_id: r for r in c.execute(select(activities).where(activities.c.type == "assignment"))}
    assert len(acts) == 8  # one per assigned lead, none for the unassigned one
    lead4 = next(a for a in acts.values() if a.actor_id == "anna" and a.payload["inputs"].get("country") == "de")
    assert lead4.payload["rule"] == "territory" and lead4.payload["inputs"]["round_robin"] == "1 of 2"


def test_contacts_without_an_owner_get_one_and_explain_says_why(db: Engine, db_url: str, tmp_path: Path) -> None:
    router = Router(load_routing(ROUTING) or pytest.fail("no spec"))
    mapping = parse_mapping("streams:\n  people:\n    target: contact\n    fields:\n      email: {path: email, "
                            "transform: email}\n    references:\n      account_id: {path: company, entity: account}\n",
                            "m.yaml")["people"]
    writer = PageWriter("hubspot_main", "people", mapping, router=router)
    prepared = writer.prepare([RawRecord("p1", None, {"email": "p1@x.io"}),
                               RawRecord("p2", None, {"email": "p2@x.io"})])
    with db.begin() as c:
        batch = Batch(c)
        writer.write(batch, prepared, [], NOW, None)
        batch.flush()
    with db.connect() as c:
        got = dict(c.execute(select(contacts.c.email, contacts.c.owner_id)).all())
    assert got == {"p1@x.io": "carl", "p2@x.io": "dora"}
    cfg = tmp_path / "crmhub.yaml"
    cfg.write_text(json.dumps({"database": db_url}))
    res = CliRunner().invoke(cli_app, ["--config", str(cfg), "explain", "contact", "p1@x.io", "owner_id", "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)["fields"]["owner_id"]
    assert doc["value"] == "carl" and doc["source"] == "routing" and doc["rule"] == "routing:team"
    assert "rule 2 (team) matched: team=us, round_robin=1 of 3" in json.dumps(doc["history"])
    res = CliRunner().invoke(cli_app, ["--config", str(cfg), "explain", "contact", "p1@x.io", "owner_id"])
    assert "set by routing under routing:team;" in res.output and "record None" not in res.output


@pytest.mark.parametrize(("routing", "message"), [
    ({"lead": [{"rule": "territory", "field": "country", "territories": {"DE": "emea"}}]}, "unknown team 'emea'"),
    ({"teams": {"us": []}, "lead": [{"rule": "team", "team": "us"}]}, "needs at least one member"),
    ({"lead": [{"rule": "score", "min": 10}]}, "needs one of `team:` or `owner:`"),
    ({"lead": [{"rule": "roulette"}]}, "routing.lead.0.rule"),
])
def test_a_bad_routing_config_names_the_key(routing: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_routing(routing)
    assert message in str(err.value)


def test_status_lists_leads_no_rule_matched(db: Engine, db_url: str, tmp_path: Path) -> None:
    spec = {"teams": {"us": ["carl"]}, "lead": [{"rule": "territory", "field": "country", "territories": {"US": "us"}}]}
    sync_leads(db, [{"id": "1", "email": "a@x.io", "country": "US"}, {"id": "2", "email": "b@y.io", "country": "BR"}],
               Router(load_routing(spec) or pytest.fail("no spec")))
    cfg = tmp_path / "crmhub.yaml"
    cfg.write_text(json.dumps({"database": db_url, "routing": spec}))
    res = CliRunner().invoke(cli_app, ["--config", str(cfg), "status", "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)["unassigned"]
    assert doc["lead"]["count"] == 1 and len(doc["lead"]["newest"]) == 1
    res = CliRunner().invoke(cli_app, ["--config", str(cfg), "status"])
    assert "1 lead(s) no routing rule matched" in res.output
    # "why has this lead no owner": the routing decision made when the lead was created
    with db.connect() as c:
        lead_id = c.execute(select(leads.c.id).where(leads.c.email == "b@y.io")).scalar_one()
    res = CliRunner().invoke(cli_app, ["--config", str(cfg), "explain", "lead", lead_id, "owner_id", "--json"])
    assert res.exit_code == 0, res.output
    (h,) = json.loads(res.stdout)["fields"]["owner_id"]["history"]
    assert (h["source"], h["accepted"], h["rule"]) == ("routing", False, "routing")
    assert h["reason"] == "no routing rule matched: left unassigned"
    res = CliRunner().invoke(cli_app, ["--config", str(cfg), "explain", "lead", lead_id, "owner_id"])
    text = " ".join(res.output.split())  # rich wraps long lines
    assert "owner_id = - not set by any system; rule now: most_recent" in text
    assert "refused reject routing: - (rule: routing) — no routing rule matched: left unassigned" in text
