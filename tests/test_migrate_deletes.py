"""Legacy deletes while both systems run: `migrate delta` brings soft deletes (a flag column) and
hard deletes (rows gone from the legacy table) over to the wave's records, through the ownership
rules' delete outcome; verify stays green, status counts only live records, a cut-over wave is
not touched, and a rollback still removes what the wave created. SQLite (legacy in SQLite) and
PostgreSQL (legacy in MariaDB).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, delete, select, text

from connectors.legacy_sql.sandbox import people, seed
from hub.app import Hub
from hub.migrate.cutover import cutover
from hub.migrate.rollback import rollback
from hub.migrate.run import WaveRunner
from hub.migrate.status import status
from hub.migrate.verify import verify
from state.db import make_engine
from state.schema import change_log, contacts, external_links, migration_items
from tests.conftest import truncate_all
from tests.test_legacy_support import mariadb_database

LATER = datetime(2030, 1, 1, 12, 0, 0)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def stack(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Hub, Engine]]:
    if request.param == "sqlite":
        hub_url, legacy_cm = f"sqlite:///{tmp_path / 'crm.db'}", None
    else:
        hub_url = request.getfixturevalue("pg_url")
        eng = make_engine(hub_url)
        truncate_all(eng)
        eng.dispose()
        legacy_cm = mariadb_database()
    legacy_url = f"sqlite:///{tmp_path / 'legacy.db'}" if legacy_cm is None else legacy_cm.__enter__()
    try:
        legacy = create_engine(legacy_url)
        seed(legacy, 6, people_per_company=3, deals_per_company=0)
        with legacy.begin() as c:  # the legacy CRM's soft-delete flag
            c.execute(text("ALTER TABLE people ADD COLUMN is_deleted INTEGER DEFAULT 0"))
        cfg: dict[str, Any] = {
            "database": hub_url,
            "connectors": {"legacy": {"kind": "legacy_sql", "url": legacy_url, "page_size": 4, "streams": {
                "accounts": {"table": "companies", "key": "id", "updated_at": "updated_on"},
                "contacts": {"table": "people", "key": "id", "updated_at": "updated_on", "deleted": "is_deleted"}}}},
            "waves": {"emea": {"source": "legacy", "root": "accounts", "where": "region = 'EMEA'"},
                      "amer": {"source": "legacy", "root": "accounts", "where": "region = 'AMER'"}},
        }
        path = tmp_path / "crmhub.yaml"
        path.write_text(json.dumps(cfg))
        hub = Hub.from_path(str(path)).ready()
        yield hub, legacy
        hub.close()
        legacy.dispose()
    finally:
        if legacy_cm is not None:
            legacy_cm.__exit__(None, None, None)


def _person_ids(legacy: Engine, region: str) -> list[int]:
    with legacy.connect() as c:
        return list(c.execute(text("SELECT p.id FROM people p JOIN companies c ON c.id = p.company_id "
                                   "WHERE c.region = :r ORDER BY p.id"), {"r": region}).scalars())


def _contact(hub: Hub, legacy_id: int) -> dict[str, Any]:
    with hub.db.connect() as c:
        eid = c.execute(select(migration_items.c.entity_id).where(
            migration_items.c.stream == "contacts", migration_items.c.legacy_id == str(legacy_id))).scalar_one()
        return dict(c.execute(select(contacts).where(contacts.c.id == eid)).mappings().one())


def test_soft_and_hard_legacy_deletes_reach_the_wave_in_a_delta(stack: tuple[Hub, Engine]) -> None:
    hub, legacy = stack
    assert WaveRunner(hub, "emea").run().status == "ok"
    assert WaveRunner(hub, "amer").run().status == "ok"
    emea, amer = _person_ids(legacy, "EMEA"), _person_ids(legacy, "AMER")
    soft, hard, amer_gone = emea[0], emea[1], amer[0]
    with legacy.begin() as c:
        c.execute(text("UPDATE people SET is_deleted = 1, updated_on = :t WHERE id = :i"), {"t": LATER, "i": soft})
        c.execute(delete(people).where(people.c.id.in_([hard, amer_gone])))

    # a plain delta sees the flag (the row changed); the gone row needs the sweep
    d = WaveRunner(hub, "emea").delta()
    assert d.status == "ok"
    assert {s.stream: s.deleted for s in d.streams} == {"accounts": 0, "contacts": 1}
    assert _contact(hub, hard)["archived_at"] is None
    d = WaveRunner(hub, "emea").delta(deletes=True)
    assert d.status == "ok"
    assert {s.stream: s.deleted for s in d.streams} == {"accounts": 0, "contacts": 1}
    for lid in (soft, hard):
        c = _contact(hub, lid)
        assert c["archived_at"] is not None  # legacy was its only system: the delete archives it
    assert _contact(hub, emea[2])["archived_at"] is None
    assert _contact(hub, amer_gone)["archived_at"] is None  # another wave's: not this delta's business
    with hub.db.connect() as c:
        ops = c.execute(select(change_log.c.op).where(change_log.c.source == "legacy", change_log.c.op == "archive")
                        ).scalars().all()
        links = c.execute(select(external_links.c.external_id).where(
            external_links.c.connector == "legacy", external_links.c.entity == "contact",
            external_links.c.deleted_at.is_not(None))).scalars().all()
    assert len(ops) == 2 and sorted(links) == sorted([str(soft), str(hard)])

    # verify agrees (a delete applied is not a record gone unseen); status counts live records
    assert verify(hub, "emea").ok
    st = {w["wave"]: w for w in status(hub)}
    assert st["emea"]["records"]["contacts"] == len(emea) - 2 and st["emea"]["actions"]["contacts"]["deleted"] == 2
    assert not verify(hub, "amer").ok  # its gone row is still live in the CRM until amer's own delta

    # a second delta finds nothing more; the flag cleared brings the record back
    again = WaveRunner(hub, "emea").delta(deletes=True)
    assert {s.stream: s.deleted for s in again.streams}["contacts"] == 0
    with legacy.begin() as c:
        c.execute(text("UPDATE people SET is_deleted = 0, updated_on = :t WHERE id = :i"),
                  {"t": datetime(2030, 2, 1), "i": soft})
    WaveRunner(hub, "emea").delta()
    assert _contact(hub, soft)["archived_at"] is None
    assert verify(hub, "emea").ok

    # cut over: crm owns amer's records, a legacy delete no longer reaches them
    cut = cutover(hub, "amer")  # its last delta sweeps for hard deletes: amer_gone is applied, verify passes
    assert cut.done, cut.reason
    assert _contact(hub, amer_gone)["archived_at"] is not None
    with legacy.begin() as c:
        c.execute(delete(people).where(people.c.id == amer[1]))
    held = WaveRunner(hub, "amer").delta(deletes=True)
    assert {s.stream: s.deleted for s in held.streams}["contacts"] == 0
    assert _contact(hub, amer[1])["archived_at"] is None

    # a rollback still removes what the wave created, deleted ones included
    rb = rollback(hub, "emea")
    assert rb.applied and rb.conflict_count == 0, rb
    assert rb.deleted == len(emea) + 2  # its accounts and contacts, the deleted contacts included
    with hub.db.connect() as c:
        left = c.execute(select(migration_items.c.legacy_id).where(migration_items.c.wave == "emea")).all()
        gone = c.execute(select(contacts.c.id).where(contacts.c.email.like("%@company%"))).all()
    assert left == [] and len(gone) == len(amer)

    # a cut-over record is not unlinked nor archived through a plain sync of the source, which reads the soft-delete flag as a delete
    with legacy.begin() as c:
        c.execute(text("UPDATE people SET is_deleted = 1, updated_on = :t WHERE id = :i"), {"t": LATER, "i": amer[2]})
    (res,) = hub.engine.run("legacy.contacts")
    assert res.status == "ok", res.error
    kept = _contact(hub, amer[2])
    assert kept["archived_at"] is None
    with hub.db.connect() as c:
        live = c.execute(select(external_links.c.deleted_at).where(
            external_links.c.connector == "legacy", external_links.c.entity == "contact",
            external_links.c.external_id == str(amer[2]))).scalar_one()
        refused = c.execute(select(change_log.c.fields).where(change_log.c.entity_id == kept["id"],
                                                              change_log.c.op == "reject")).scalars().all()
    assert live is None
    assert any("the delete is not applied" in str(f) for f in refused), refused
