"""A wave brings the legacy CRM's logged activities along: each follows its account, lands on its
contact's and account's timeline once (a second run and a delta add nothing twice), a delta adds the
new ones, and verify agrees. Legacy in SQLite; hub on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, select, text

from connectors.legacy_sql.sandbox import seed
from hub.app import Hub
from hub.migrate.run import WaveRunner
from hub.migrate.verify import verify
from state.schema import activities, external_links

STREAMS = {"accounts": {"table": "companies", "key": "id", "updated_at": "updated_on"},
           "contacts": {"table": "people", "key": "id", "updated_at": "updated_on"},
           "activities": {"table": "logged", "key": "id", "updated_at": "updated_on"}}


def _log(legacy: Engine, rows: list[tuple[int, int, int, str, str, datetime]]) -> None:
    with legacy.begin() as c:
        for i, person, company, kind, subject, at in rows:
            c.execute(text("INSERT INTO logged (id, person_id, company_id, kind, subject, direction, happened_on, "
                           "updated_on) VALUES (:i, :p, :c, :k, :s, 'outbound', :t, :t)"),
                      {"i": i, "p": person, "c": company, "k": kind, "s": subject, "t": at})


@pytest.fixture
def world(db_url: str, tmp_path: Path) -> Iterator[tuple[Hub, Engine]]:
    legacy = create_engine(f"sqlite:///{tmp_path / 'legacy.db'}")
    seed(legacy, 6, people_per_company=2, deals_per_company=0)
    with legacy.begin() as c:
        c.execute(text("CREATE TABLE logged (id INTEGER PRIMARY KEY, person_id INTEGER, company_id INTEGER, "
                       "kind TEXT, subject TEXT, direction TEXT, happened_on TIMESTAMP, updated_on TIMESTAMP)"))
    cfg = {"database": db_url,
           "connectors": {"legacy": {"kind": "legacy_sql", "url": str(legacy.url), "page_size": 3,
                                     "streams": STREAMS}},
           "waves": {"emea": {"source": "legacy", "root": "accounts", "where": "region = 'EMEA'"}}}
    (tmp_path / "crmhub.yaml").write_text(json.dumps(cfg))
    hub = Hub.from_path(str(tmp_path / "crmhub.yaml")).ready()
    yield hub, legacy
    hub.close()
    legacy.dispose()


def test_activities_follow_their_account_into_the_wave(world: tuple[Hub, Engine]) -> None:
    hub, legacy = world
    with legacy.connect() as c:
        people = c.execute(text("SELECT p.id, p.company_id, c.region FROM people p JOIN companies c "
                                "ON c.id = p.company_id ORDER BY p.id")).all()
    emea = [(p, co) for p, co, region in people if region == "EMEA"]
    other = next((p, co) for p, co, region in people if region != "EMEA")
    t = datetime(2024, 3, 1, 9, 0)
    _log(legacy, [(1, emea[0][0], emea[0][1], "Call", "Intro call", t),
                  (2, emea[0][0], emea[0][1], "", "Follow-up note", t.replace(day=2)),  # no kind: a note
                  (3, emea[1][0], emea[1][1], "Meeting", "Demo", t.replace(day=3)),
                  (4, other[0], other[1], "Call", "Not this wave", t.replace(day=4))])
    rep = WaveRunner(hub, "emea").run()
    assert rep.status == "ok"
    by = {s.stream: s for s in rep.streams}
    assert by["activities"].created == 3 and by["activities"].selected == 3, (by["activities"], rep.rejects)

    def timeline() -> dict[str, dict[str, str]]:
        with hub.db.connect() as c:
            link = {(e, x): eid for e, x, eid in c.execute(select(
                external_links.c.entity, external_links.c.external_id, external_links.c.entity_id).where(
                external_links.c.connector == "legacy"))}
            rows = c.execute(select(activities).where(activities.c.source == "legacy")).mappings().all()
        return {r["external_id"]: {"type": r["type"], "subject": r["subject"],
                                   "contact": r["contact_id"], "account": r["account_id"], "link": link} for r in rows}

    got = timeline()
    assert set(got) == {"1", "2", "3"}
    links = got["1"]["link"]
    assert got["1"]["type"] == "call" and got["2"]["type"] == "note" and got["3"]["type"] == "meeting"
    for ext, (person, company) in (("1", emea[0]), ("2", emea[0]), ("3", emea[1])):
        assert got[ext]["contact"] == links[("contact", str(person))]
        assert got[ext]["account"] == links[("account", str(company))]
    assert verify(hub, "emea").ok

    # a second run adds nothing; a delta adds the new one once
    assert sum(s.created for s in WaveRunner(hub, "emea").run().streams) == 0
    _log(legacy, [(5, emea[1][0], emea[1][1], "Call", "Renewal", datetime(2030, 1, 1))])
    d = WaveRunner(hub, "emea").delta()
    assert {s.stream: s.created for s in d.streams}["activities"] == 1
    assert set(timeline()) == {"1", "2", "3", "5"}
    assert verify(hub, "emea").ok
