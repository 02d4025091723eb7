"""Merging duplicate canonical records (hub.merge) on SQLite and PostgreSQL: fields by the ownership
rules, links moved, references re-pointed, the duplicate archived and its history kept."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select
from typer.testing import CliRunner

from hub.cli import app as cli_app
from hub.mapping import StreamMapping, parse_mapping
from hub.merge import MergeError, duplicates, merge_records
from hub.ownership import load_rules
from hub.sdk.activity import ActivityEvent, Participant
from hub.sdk.types import RawRecord
from hub.writer import PageWriter
from state.bulk import Batch
from state.db import ensure_schema, make_engine
from state.schema import activities, contacts, external_links

MAPPING = parse_mapping("""
streams:
  contacts:
    target: contact
    fields:
      email: {path: email, transform: email}
      first_name: first
      title: title
      phone: {path: phone, transform: phone}
""", "m.yaml")["contacts"]
RULES = load_rules({"contact.phone": {"rule": "owner", "system": "hubspot_a"}}, systems=["hubspot_a", "hubspot_b"])


@pytest.fixture
def db(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url)
    ensure_schema(engine)
    yield engine
    engine.dispose()


def sync(db: Engine, source: str, recs: list[dict[str, Any]], at: str) -> None:
    w = PageWriter(source, "contacts", MAPPING, RULES)
    prepared = w.prepare([RawRecord(r["id"], at, r) for r in recs])
    with db.begin() as c:
        b = Batch(c)
        w.write(b, prepared, [], datetime.now(UTC), None)
        b.flush()


def contact(db: Engine, **where: Any) -> dict[str, Any]:
    q = select(contacts)
    for k, v in where.items():
        q = q.where(contacts.c[k] == v)
    with db.connect() as c:
        return dict(c.execute(q).mappings().one())


def test_merge_keeps_links_history_and_decides_fields_by_the_rules(db: Engine, db_url: str, tmp_path: Path) -> None:
    sync(db, "hubspot_a", [{"id": "a1", "email": "ann@acme.com", "first": "Ann", "title": None,
                            "phone": "415 555 0100"}], "2026-11-01T00:00:00Z")
    # the same person in B under another address: identity cannot know, so a second record
    sync(db, "hubspot_b", [{"id": "b1", "email": "ann.lee@acme.com", "first": "Annie", "title": "CTO",
                            "phone": "212 555 0100"}], "2026-11-05T00:00:00Z")
    a, b = contact(db, email="ann@acme.com"), contact(db, email="ann.lee@acme.com")
    w = PageWriter("gmail", "messages", StreamMapping("messages", "activity", []))
    prepared = w.prepare([RawRecord("m1", None, {}, activity=ActivityEvent(
        "email", "m1", "2026-11-06T00:00:00Z", [Participant("from", email="ann.lee@acme.com")]))])
    with db.begin() as c:
        bt = Batch(c)
        w.write(bt, prepared, [], datetime.now(UTC), None)
        bt.flush()
    with db.begin() as c:
        doc = merge_records(c, RULES, "contact", a["id"], b["id"])
    assert doc["links_moved"] == 1 and doc["references_repointed"] == 2  # the activity and its participant
    kept = contact(db, id=a["id"])
    # most_recent (B is newer) for first_name and title; email too (B's claim is newer), phone is A's (owner)
    assert (kept["first_name"], kept["title"], kept["phone"]) == ("Annie", "CTO", "+14155550100")
    assert kept["provenance"]["title"][0] == "hubspot_b" and kept["provenance"]["phone"][0] == "hubspot_a"
    gone = contact(db, id=b["id"])
    assert gone["archived_at"] is not None and gone["custom"]["merged_into"] == a["id"]  # kept, not dropped
    with db.connect() as c:
        links = dict(c.execute(select(external_links.c.external_id, external_links.c.entity_id)).all())
        assert links == {"a1": a["id"], "b1": a["id"]}
        assert c.execute(select(activities.c.contact_id)).scalar_one() == a["id"]
    # B's next change lands on the survivor through the moved link
    sync(db, "hubspot_b", [{"id": "b1", "email": "ann.lee@acme.com", "first": "Annie", "title": "CEO",
                            "phone": None}], "2026-11-07T00:00:00Z")
    assert contact(db, id=a["id"])["title"] == "CEO"
    # explain of the survivor shows the duplicate's history as well
    cfg = tmp_path / "crmhub.yaml"
    cfg.write_text(json.dumps({"database": db_url}))
    res = CliRunner().invoke(cli_app, ["--config", str(cfg), "explain", "contact", a["id"], "title", "--json"])
    assert res.exit_code == 0, res.output
    hist = json.loads(res.stdout)["fields"]["title"]["history"]
    assert [(h["op"], h["source"], h["value"]) for h in hist] == [
        ("create", "hubspot_b", "CTO"), ("merge", "crm", "CTO"), ("update", "hubspot_b", "CEO")]
    with db.begin() as c, pytest.raises(MergeError, match="merged into"):
        merge_records(c, RULES, "contact", a["id"], b["id"])


def test_duplicates_lists_records_sharing_a_key_and_the_cli_merges(db: Engine, db_url: str, tmp_path: Path) -> None:
    sync(db, "hubspot_a", [{"id": "a1", "email": "bob@x.io", "first": "Bob"}], "2026-11-01T00:00:00Z")
    with db.begin() as c:  # a CRM user typed the same person in again
        c.execute(contacts.insert().values(id="crm-bob", email="BOB@x.io", first_name="Robert",
                                           created_at=datetime(2026, 11, 2, tzinfo=UTC)))
    with db.connect() as c:
        groups = duplicates(c, "contact")
    first = contact(db, first_name="Bob")["id"]
    assert [(g["key"], g["value"], set(g["ids"])) for g in groups] == [("email", "bob@x.io", {first, "crm-bob"})]
    cfg = tmp_path / "crmhub.yaml"
    cfg.write_text(json.dumps({"database": db_url}))
    res = CliRunner().invoke(cli_app, ["--config", str(cfg), "merge", "contact", first, "crm-bob", "--json"])
    assert res.exit_code == 0, res.output
    with db.connect() as c:
        assert duplicates(c, "contact") == []
    res = CliRunner().invoke(cli_app, ["--config", str(cfg), "merge", "contact", first, "nobody"])
    assert res.exit_code == 1 and "no contact with id 'nobody'" in res.output
