"""Custom objects declared in crmhub.yaml: an ops person adds an object, then a field, by editing
YAML and re-running; the records go through identity, ownership, provenance, the change log and
`crmhub explain` as a contact's do. Runs on SQLite and PostgreSQL, through the CLI.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import inspect, select, text
from typer.testing import CliRunner

from hub.cli import app as cli_app
from hub.config import ConfigError, parse_config
from hub.mapping import MappingLoadError, parse_mapping
from hub.objects import activate
from hub.ownership import ConfigError as RulesError
from hub.ownership import parse_rules
from state.custom import CustomSchemaError, ensure_tables
from state.db import make_engine
from state.schema import ENTITY_TABLES, accounts, change_log

SUBSCRIPTIONS = (
    "id,company_id,code,plan,status,mrr,seats,renews,updated_on\r\n"
    "s1,1,SUB-001,Pro,active,49.90,5,2027-01-31,2026-10-01T10:00:00\r\n"
    "s2,1,SUB-002,Team,past_due,19.00,2,2026-12-15,2026-10-02T10:00:00\r\n"
    "s3,2,SUB-003,Pro,cancelled,0,1,,2026-10-03T10:00:00\r\n"
)
COMPANIES = (
    "id,name,website,updated_on\r\n"
    "1,Acme,acme.example,2026-01-01T00:00:00\r\n"
    "2,Globex,globex.example,2026-01-01T00:00:00\r\n"
)

OBJECTS: dict[str, Any] = {"subscription": {
    "description": "a customer's plan, from the billing export",
    "fields": {"code": "text", "plan": "text", "status": "text", "mrr": "decimal", "seats": "integer",
               "renews_on": "date", "account_id": {"references": "account"}},
    "match": ["code"],
}}

MAPPING: dict[str, Any] = {"kind": "legacy_csv", "streams": {
    "accounts": {"target": "account", "fields": {"name": "name", "domain": {"path": "website", "transform": "lower"}}},
    "subscriptions": {"target": "subscription", "fields": {
        "code": {"path": "code", "transform": "trim"},
        "plan": "plan",
        "status": {"path": "status", "transform": {"map": {"active": "Active", "past_due": "Past due",
                                                             "cancelled": "Cancelled"}}},
        "mrr": {"path": "mrr", "transform": "decimal"},
        "seats": {"path": "seats", "transform": "int"},
        "renews_on": {"path": "renews", "transform": "date"},
    }, "references": {"account_id": {"path": "company_id", "entity": "account"}}},
}}


def _cli(cfg: Path, *args: str) -> Any:
    res = CliRunner().invoke(cli_app, ["--config", str(cfg), *args])
    return res


@pytest.fixture
def setup(db_url: str, tmp_path: Path) -> Iterator[tuple[Path, Path, str]]:
    export = tmp_path / "export"
    export.mkdir()
    (export / "companies.csv").write_text(COMPANIES, encoding="utf-8")
    (export / "subscriptions.csv").write_text(SUBSCRIPTIONS, encoding="utf-8")
    (tmp_path / "mappings").mkdir()
    (tmp_path / "mappings" / "billing.yaml").write_text(yaml.safe_dump(MAPPING), encoding="utf-8")
    cfg = tmp_path / "crmhub.yaml"
    doc = {"database": db_url, "objects": OBJECTS,
           "ownership": {"subscription.status": {"rule": "owner", "system": "billing"},
                         "subscription.plan": {"rule": "fill_empty"}},
           "connectors": {"billing": {"kind": "legacy_csv", "path": str(export), "streams": {
               "accounts": {"file": "companies.csv", "key": "id", "updated_at": "updated_on"},
               "subscriptions": {"file": "subscriptions.csv", "key": "id", "updated_at": "updated_on",
                                 "target": "subscription"}}}}}
    cfg.write_text(yaml.safe_dump(doc), encoding="utf-8")
    yield cfg, export, db_url
    eng = make_engine(db_url)
    with eng.begin() as c:  # the PostgreSQL test database outlives the test
        c.execute(text("DROP TABLE IF EXISTS crm.obj_subscription" if eng.dialect.name == "postgresql"
                       else "DROP TABLE IF EXISTS obj_subscription"))
    eng.dispose()
    activate({})


def _rows(url: str) -> dict[str, dict[str, Any]]:
    eng = make_engine(url)
    t = ENTITY_TABLES["subscription"]
    with eng.connect() as c:
        out = {r["code"].upper(): dict(r) for r in c.execute(select(t)).mappings()}
    eng.dispose()
    return out


def test_an_object_declared_in_yaml_is_synced_owned_and_explained(setup: tuple[Path, Path, str]) -> None:
    cfg, export, url = setup
    res = _cli(cfg, "sync", "run")
    assert res.exit_code == 0, res.output
    rows = _rows(url)
    assert set(rows) == {"SUB-001", "SUB-002", "SUB-003"}
    s1 = rows["SUB-001"]
    assert s1["status"] == "Active" and s1["plan"] == "Pro" and s1["seats"] == 5
    assert str(s1["mrr"]).startswith("49.9") and s1["renews_on"].isoformat() == "2027-01-31"
    eng = make_engine(url)
    with eng.connect() as c:
        acme = c.execute(select(accounts.c.id).where(accounts.c.name == "Acme")).scalar_one()
        logged = c.execute(select(change_log.c.op).where(change_log.c.entity == "subscription")).scalars().all()
    eng.dispose()
    assert s1["account_id"] == acme and rows["SUB-002"]["account_id"] == acme  # a reference, resolved
    assert sorted(logged) == ["create"] * 3
    assert s1["provenance"]["status"][0] == "billing"

    # explain by the object's match key, as ops asks it
    res = _cli(cfg, "explain", "subscription", "sub-001", "status", "--json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["entity"] == "subscription" and doc["id"] == s1["id"]
    st = doc["fields"]["status"]
    assert st["value"] == "Active" and st["source"] == "billing" and st["rule"] == "owner"

    # the export changes: a changed status is applied (billing owns it); `plan` is fill_empty: kept
    (export / "subscriptions.csv").write_text(SUBSCRIPTIONS.replace(
        "s1,1,SUB-001,Pro,active,49.90,5,2027-01-31,2026-10-01T10:00:00",
        "s1,1,SUB-001,Enterprise,past_due,99.00,9,2027-01-31,2026-11-01T10:00:00"), encoding="utf-8")
    res = _cli(cfg, "sync", "run")
    assert res.exit_code == 0, res.output
    s1 = _rows(url)["SUB-001"]
    assert s1["status"] == "Past due" and s1["seats"] == 9 and s1["plan"] == "Pro"
    res = _cli(cfg, "explain", "subscription", s1["id"], "plan", "--json")
    hist = json.loads(res.stdout)["fields"]["plan"]["history"]
    assert any(h.get("value") == "Enterprise" and not h["accepted"] for h in hist), hist


def test_adding_a_field_is_a_yaml_edit_and_a_rerun(setup: tuple[Path, Path, str]) -> None:
    cfg, _export, url = setup
    assert _cli(cfg, "sync", "run").exit_code == 0
    # ops adds `renews_soon` to the object and its mapping, then runs a full sync again
    doc = yaml.safe_load(cfg.read_text())
    doc["objects"]["subscription"]["fields"]["currency"] = "text"
    cfg.write_text(yaml.safe_dump(doc), encoding="utf-8")
    mapping = json.loads(json.dumps(MAPPING))
    mapping["streams"]["subscriptions"]["fields"]["currency"] = {"transform": {"constant": "EUR"}}
    (cfg.parent / "mappings" / "billing.yaml").write_text(yaml.safe_dump(mapping), encoding="utf-8")
    res = _cli(cfg, "sync", "run", "--full")
    assert res.exit_code == 0, res.output
    rows = _rows(url)
    assert {r["currency"] for r in rows.values()} == {"EUR"}
    assert rows["SUB-002"]["status"] == "Past due"  # data of the first run kept

    # a type change would lose data: refused, naming the key and the fix
    doc["objects"]["subscription"]["fields"]["seats"] = "text"
    cfg.write_text(yaml.safe_dump(doc), encoding="utf-8")
    res = _cli(cfg, "sync", "run")
    assert res.exit_code == 2
    assert "objects.subscription.fields.seats" in res.output and "Fix:" in res.output


def test_identity_matches_on_the_declared_key(setup: tuple[Path, Path, str]) -> None:
    cfg, _export, url = setup
    assert _cli(cfg, "sync", "run").exit_code == 0
    # a second export names the same subscription (another id, the code in another case): linked, not doubled
    other = cfg.parent / "export2"
    other.mkdir()
    (other / "subscriptions.csv").write_text(
        "id,company_id,code,plan,status,mrr,seats,renews,updated_on\r\n"
        "x9,1, sub-002 ,Team,active,19.00,3,2026-12-15,2026-10-05T10:00:00\r\n", encoding="utf-8")
    doc = yaml.safe_load(cfg.read_text())
    doc["connectors"]["billing2"] = {"kind": "legacy_csv", "path": str(other), "streams": {
        "subscriptions": {"file": "subscriptions.csv", "key": "id", "updated_at": "updated_on",
                          "target": "subscription"}}}
    cfg.write_text(yaml.safe_dump(doc), encoding="utf-8")
    m2 = {"kind": "legacy_csv", "streams": {"subscriptions": MAPPING["streams"]["subscriptions"]}}
    (cfg.parent / "mappings" / "billing2.yaml").write_text(yaml.safe_dump(m2), encoding="utf-8")
    res = _cli(cfg, "sync", "run", "billing2")
    assert res.exit_code == 0, res.output
    rows = _rows(url)
    assert len(rows) == 3
    s2 = rows["SUB-002"]
    assert s2["seats"] == 3  # most_recent (the default): billing2's later record wins
    assert s2["status"] == "Past due"  # billing owns status: billing2's write refused


def test_bad_object_declarations_name_the_key_and_the_fix() -> None:
    with pytest.raises(ConfigError) as e:
        parse_config({"objects": {
            "contact": {"fields": {"x": "text"}},
            "subscription": {"fields": {"mrr": "decmal", "account_id": {"references": "acount"}}},
            "invoice": {"fields": {"created_at": "timestamp"}},
            "ticket": {"fields": {"code": "integer"}, "match": ["code"]},
        }})
    msg = "\n".join(e.value.problems)
    assert "objects.subscription.fields.mrr: unknown type 'decmal'. Fix: use `mrr: decimal`" in msg
    assert ("objects.subscription.fields.account_id: references unknown entity 'acount'. "
            "Fix: use `references: account`") in msg
    assert "objects.invoice.fields.created_at: every object has 'created_at' already" in msg
    assert "objects.ticket.match: names 'code', which is integer, not text. Fix: match on a text field" in msg
    assert "objects.contact: 'contact' is a built-in entity. Fix:" in msg
    assert len(e.value.problems) == 5, msg


def test_mappings_and_rules_know_the_objects_of_the_config() -> None:
    try:
        with pytest.raises(MappingLoadError, match="unknown target 'subscription'"):
            parse_mapping(yaml.safe_dump(MAPPING), "billing.yaml")
        with pytest.raises(RulesError, match="unknown entity 'subscription'"):
            parse_rules({"subscription.status": {"rule": "fill_empty"}})
        cfg = parse_config({"objects": OBJECTS})
        activate(cfg.objects)
        streams = parse_mapping(yaml.safe_dump(MAPPING), "billing.yaml")
        assert streams["subscriptions"].target == "subscription"
        parse_rules({"subscription.status": {"rule": "fill_empty"}})
        bad = json.loads(json.dumps(MAPPING))
        bad["streams"]["subscriptions"]["fields"]["seats"] = "seats"  # raw text into an integer
        with pytest.raises(MappingLoadError, match=r"streams.subscriptions.fields.seats: type mismatch: "
                                                   r"subscription.seats is integer.*Fix: end the transform chain with `int`"):
            parse_mapping(yaml.safe_dump(bad), "billing.yaml")
    finally:
        activate({})


def test_tables_follow_the_config_additively(db_url: str) -> None:
    cfg = parse_config({"objects": {"gadget": {"fields": {"name": "text"}, "match": ["name"]}}})
    activate(cfg.objects)
    eng = make_engine(db_url)
    schema = "crm" if eng.dialect.name == "postgresql" else None
    try:
        assert ensure_tables(eng) == ["created crm.obj_gadget for object gadget"]
        assert ensure_tables(eng) == []  # idempotent
        cfg = parse_config({"objects": {"gadget": {"fields": {"name": "text", "weight": "decimal"}}}})
        activate(cfg.objects)
        assert ensure_tables(eng)[0].startswith("added gadget.weight")
        cols = {c["name"] for c in inspect(eng).get_columns("obj_gadget", schema=schema)}
        assert {"id", "name", "weight", "provenance", "archived_at"} <= cols
        activate(parse_config({"objects": {"gadget": {"fields": {"name": "integer"}}}}).objects)
        with pytest.raises(CustomSchemaError, match=r"objects\.gadget\.fields\.name"):
            ensure_tables(eng)
    finally:
        with eng.begin() as c:
            c.execute(text(f"DROP TABLE IF EXISTS {'crm.' if schema else ''}obj_gadget"))
        eng.dispose()
        activate({})


def test_a_wave_brings_its_accounts_custom_records_along_and_rolls_them_back(setup: tuple[Path, Path, str]) -> None:
    cfg, _export, url = setup
    doc = yaml.safe_load(cfg.read_text())
    doc["waves"] = {"acme": {"source": "billing", "root": "accounts", "ids_file": "acme.txt"},
                    "globex": {"source": "billing", "root": "accounts", "ids_file": "globex.txt"}}
    cfg.write_text(yaml.safe_dump(doc), encoding="utf-8")
    (cfg.parent / "acme.txt").write_text("1\n", encoding="utf-8")
    (cfg.parent / "globex.txt").write_text("2\n", encoding="utf-8")
    res = _cli(cfg, "migrate", "plan", "acme", "--json")
    assert res.exit_code == 0, res.output
    counts = {s["stream"]: (s["target"], s["records"]) for s in json.loads(res.stdout)["streams"]}
    assert counts == {"accounts": ("account", 1), "subscriptions": ("subscription", 2)}, counts
    for wave in ("acme", "globex"):
        res = _cli(cfg, "migrate", "run", wave)
        assert res.exit_code == 0, res.output
    assert set(_rows(url)) == {"SUB-001", "SUB-002", "SUB-003"}
    res = _cli(cfg, "migrate", "verify", "acme")
    assert res.exit_code == 0, res.output
    res = _cli(cfg, "migrate", "rollback", "acme")
    assert res.exit_code == 0, res.output
    assert set(_rows(url)) == {"SUB-003"}  # globex's subscription stays
