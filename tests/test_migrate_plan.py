"""`migrate plan`: the whole report, in JSON, in the report file and on the terminal.

A small wave of a legacy SQLite database, made to hold one of each thing a plan must find: values
a transform refuses, a duplicate within the wave, a record already in the CRM whose field the
ownership rules keep, and rows a run would reject.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, insert, update
from typer.testing import CliRunner

from connectors.legacy_sql.sandbox import people, seed
from hub.app import Hub
from hub.cli import app
from state.schema import contacts

STREAMS = {"accounts": {"table": "companies", "key": "id", "updated_at": "updated_on"},
           "contacts": {"table": "people", "key": "id", "updated_at": "updated_on"},
           "opportunities": {"table": "deals", "key": "id", "updated_at": "updated_on"}}


@pytest.fixture
def config(db_url: str, tmp_path: Path) -> Iterator[Path]:
    legacy = f"sqlite:///{tmp_path / 'legacy.db'}"
    eng = create_engine(legacy)
    seed(eng, 6, people_per_company=3)  # EMEA: companies 1 and 4, people 1-3 and 10-12
    with eng.begin() as c:
        c.execute(update(people).where(people.c.id == 1).values(phone="call me maybe"))
        c.execute(update(people).where(people.c.id == 2).values(email="not-an-email"))
        c.execute(update(people).where(people.c.id == 12).values(email="Person10@Company4.example.com",
                                                                   job_title=None))
    eng.dispose()
    cfg = {"database": db_url,
           "connectors": {"legacy": {"kind": "legacy_sql", "url": legacy, "page_size": 5, "streams": STREAMS}},
           "ownership": {"contact.title": {"rule": "fill_empty"}},
           "waves": {"emea": {"source": "legacy", "root": "accounts", "where": "region = 'EMEA'"}}}
    path = tmp_path / "crmhub.yaml"
    path.write_text(json.dumps(cfg))
    h = Hub.from_path(str(path)).ready()
    with h.db.begin() as c:  # person 11 is already in the CRM, with a title of its own
        c.execute(insert(contacts).values(id="pre-11", email="person11@company4.example.com", first_name="Pat",
                                          title="CTO"))
    h.close()
    yield path


def _plan(config: Path, *args: str) -> str:
    res = CliRunner().invoke(app, ["--config", str(config), "migrate", "plan", "emea", *args],
                             env={"COLUMNS": "250"})
    assert res.exit_code == 0, res.output
    return res.output


def test_the_json_report_has_every_finding_and_is_written_where_the_cli_says(config: Path) -> None:
    doc = json.loads(_plan(config, "--json"))
    by = {s["stream"]: s for s in doc["streams"]}
    c = by["contacts"]
    assert (c["read"], c["records"], c["would_create"], c["would_match"], c["would_reject"]) == (18, 6, 3, 1, 2)
    assert c["transform_failures"] == {
        "phone": {"count": 1, "samples": [{"legacy_id": "1", "error": "not a phone number: 'call me maybe'"}]},
        "email": {"count": 1, "samples": [{"legacy_id": "2", "error": "not an email address: 'not-an-email'"}]}}
    assert c["duplicates"] == {"key": "email", "count": 1, "samples": ["person10@company4.example.com"]}
    # the CRM's own title of person 11 stays: fill_empty refuses the legacy one
    assert c["conflicts"] == 1
    assert c["conflict_fields"] == {"title": {"count": 1, "rule": "fill_empty", "samples": [
        {"legacy_id": "11", "value": "Buyer", "reason": "the field already has a value"}]}}
    assert [(r["stream"], r["legacy_id"], r["reason"]) for r in doc["rejects"]] == [
        ("contacts", "1", "mapping failed: phone: not a phone number: 'call me maybe'"),
        ("contacts", "2", "mapping failed: email: not an email address: 'not-an-email'")]
    assert by["accounts"]["unmapped_columns"] == ["fax"] and by["accounts"]["would_create"] == 2
    assert by["opportunities"]["would_create"] == 2 and by["accounts"]["conflict_fields"] == {}
    assert doc["records"] == 2 + 6 + 2
    assert 0 < doc["estimate_seconds"] <= doc["seconds"]
    # the report file beside crmhub.yaml holds the same document (but for its own timings)
    written = json.loads((config.parent / ".crmhub" / "migrate" / "emea-plan.json").read_text())
    strip = ("estimate_seconds", "seconds")
    assert {k: v for k, v in written.items() if k not in strip} == {k: v for k, v in doc.items() if k not in strip}
    elsewhere = config.parent / "reports" / "emea.json"
    elsewhere.parent.mkdir()
    out = _plan(config, "--report", str(elsewhere))
    assert json.loads(elsewhere.read_text())["rejects"] == doc["rejects"]
    assert out.rstrip().endswith(f"report: {elsewhere}")


def test_the_terminal_view_says_why_rows_would_be_rejected(config: Path) -> None:
    lines = [line.rstrip() for line in _plan(config).splitlines()]
    assert lines[0].startswith("wave emea: legacy.accounts where region = 'EMEA' — 10 records, estimated ")
    for expected in [
        "accounts: columns no mapping reads: fax",
        "contacts.phone: 1 values fail the transform (1: not a phone number: 'call me maybe')",
        "contacts.email: 1 values fail the transform (2: not an email address: 'not-an-email')",
        "contacts: 1 duplicates by email (e.g. person10@company4.example.com)",
        "contacts.title: the ownership rules refuse 1 values of legacy (fill_empty; 11: the field already has "
        "a value)",
        "rows a run would reject (2 of 2 listed):",
        "  contacts 1: mapping failed: phone: not a phone number: 'call me maybe'",
        "  contacts 2: mapping failed: email: not an email address: 'not-an-email'",
        f"report: {config.parent / '.crmhub' / 'migrate' / 'emea-plan.json'}",
    ]:
        assert expected in lines, f"{expected!r} not in:\n" + "\n".join(lines)
