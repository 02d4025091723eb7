"""End to end: a legacy CRM migrated in three waves, on SQLite (legacy in SQLite) and on PostgreSQL
(legacy in MariaDB): plan; dry run (writes nothing); run wave 1 SIGKILLed mid-run, then resumed;
verify; waves 2 and 3; roll back wave 2 leaving 1 and 3 exact; legacy edits brought over by a
delta; cut over wave 1, after which legacy edits to it are no longer applied.

The runs that are killed and resumed are real `python -m hub.cli migrate run` processes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, func, insert, select, update

from connectors.legacy_sql.sandbox import people, seed
from hub.app import Hub
from hub.migrate.cutover import cutover
from hub.migrate.plan import plan
from hub.migrate.rollback import rollback
from hub.migrate.run import WaveRunner
from hub.migrate.verify import verify
from hub.migrate.waves import MigrateError
from state.db import make_engine
from state.migration_repo import held_ids
from state.schema import (
    CRM,
    ENTITY_TABLES,
    HUB,
    change_log,
    contacts,
    external_links,
    metadata,
    migration_items,
    migration_waves,
)
from tests.conftest import truncate_all
from tests.test_legacy_support import mariadb_database

ROOT = Path(__file__).resolve().parent.parent
COMPANIES = 300  # 100 per region; 3 people and 1 deal each: 500 records per wave
PAGE = 10  # small legacy pages: many commits, so a kill lands mid-run
PRE_EXISTING = "person4@company2.example.com"  # an AMER person already in the CRM before the migration


@dataclass
class Stack:
    hub: Hub
    config: Path
    legacy: Engine
    hub_url: str
    workdir: Path


def _config(workdir: Path, hub_url: str, legacy_url: str) -> Path:
    cfg = {
        "database": hub_url,
        "connectors": {"legacy": {"kind": "legacy_sql", "url": legacy_url, "page_size": PAGE, "streams": {
            "accounts": {"table": "companies", "key": "id", "updated_at": "updated_on"},
            "contacts": {"table": "people", "key": "id", "updated_at": "updated_on"},
            "opportunities": {"table": "deals", "key": "id", "updated_at": "updated_on"}}}},
        "waves": {"emea": {"source": "legacy", "root": "accounts", "where": "region = 'EMEA'"},
                  "amer": {"source": "legacy", "root": "accounts", "where": "region = 'AMER'"},
                  "apac": {"source": "legacy", "root": "accounts", "where": "region = 'APAC'"},
                  # never run: plan reports its overlap with emea
                  "atlantic": {"source": "legacy", "root": "accounts", "where": "region IN ('EMEA', 'AMER')"}},
        "sync": {"lease_ttl_seconds": 600},
    }
    path = workdir / "crmhub.yaml"
    path.write_text(json.dumps(cfg))
    return path


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def stack(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stack]:
    if request.param == "sqlite":
        hub_url = f"sqlite:///{tmp_path / 'crm.db'}"
        with _stack(tmp_path, hub_url, f"sqlite:///{tmp_path / 'legacy.db'}") as s:
            yield s
        return
    hub_url = request.getfixturevalue("pg_url")
    eng = make_engine(hub_url)
    truncate_all(eng)
    eng.dispose()
    with mariadb_database() as legacy_url, _stack(tmp_path, hub_url, legacy_url) as s:
        yield s


class _stack:
    def __init__(self, workdir: Path, hub_url: str, legacy_url: str):
        self.workdir, self.hub_url, self.legacy_url = workdir, hub_url, legacy_url

    def __enter__(self) -> Stack:
        legacy = create_engine(self.legacy_url)
        seed(legacy, COMPANIES, people_per_company=3, deals_per_company=1)
        path = _config(self.workdir, self.hub_url, self.legacy_url)
        hub = Hub.from_path(str(path)).ready()
        self.s = Stack(hub, path, legacy, self.hub_url, self.workdir)
        return self.s

    def __exit__(self, *exc: Any) -> None:
        self.s.hub.close()
        self.s.legacy.dispose()


# -- helpers -----------------------------------------------------------------------------------------

def _reader(url: str) -> Engine:
    """Reads that never take SQLite's write lock (make_engine's BEGIN IMMEDIATE would)."""
    eng = create_engine(url, isolation_level="AUTOCOMMIT")
    if eng.dialect.name == "sqlite":
        eng = eng.execution_options(schema_translate_map={CRM: None, HUB: None})
    return eng


def _counts(s: Stack) -> dict[str, int]:
    with s.hub.db.connect() as c:
        return {t.name: c.execute(select(func.count()).select_from(t)).scalar_one() for t in metadata.sorted_tables}


def _items(s: Stack, wave: str) -> dict[tuple[str, str], dict[str, Any]]:
    with s.hub.db.connect() as c:
        q = select(migration_items).where(migration_items.c.wave == wave)
        return {(r["stream"], r["legacy_id"]): dict(r) for r in c.execute(q).mappings()}


def _snapshot(s: Stack, wave: str) -> dict[str, Any]:
    """Every canonical row and link of a wave's records, as stored."""
    out: dict[str, Any] = {}
    with s.hub.db.connect() as c:
        for (stream, ext), it in _items(s, wave).items():
            t = ENTITY_TABLES[it["entity"]]
            row = c.execute(select(t).where(t.c.id == it["entity_id"])).mappings().one()
            links = sorted(tuple(r) for r in c.execute(
                select(external_links.c.connector, external_links.c.external_id, external_links.c.deleted_at)
                .where(external_links.c.entity == it["entity"], external_links.c.entity_id == it["entity_id"])))
            out[f"{stream}/{ext}"] = (dict(row), links)
    return out


def _contact(s: Stack, email: str) -> dict[str, Any] | None:
    with s.hub.db.connect() as c:
        row = c.execute(select(contacts).where(contacts.c.email == email)).mappings().first()
    return dict(row) if row else None


def _cli(s: Stack, *args: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k not in ("CRMHUB_CONFIG", "CRMHUB_DATABASE_URL")}
    n = len(list(s.workdir.glob("cli*.out"))) + 1
    with open(s.workdir / f"cli{n}.out", "wb") as out, open(s.workdir / f"cli{n}.err", "wb") as err:
        return subprocess.Popen([sys.executable, "-m", "hub.cli", "--config", str(s.config), *args],
                                cwd=ROOT, stdout=out, stderr=err, env=env)


def _output(s: Stack) -> str:
    n = len(list(s.workdir.glob("cli*.out")))
    return (s.workdir / f"cli{n}.out").read_text() + (s.workdir / f"cli{n}.err").read_text()[-3000:]


def _edit_person(s: Stack, pid: int, **values: Any) -> None:
    with s.legacy.begin() as c:
        c.execute(update(people).where(people.c.id == pid).values(**values))


# -- the story -----------------------------------------------------------------------------------------

def test_three_waves_from_plan_to_cutover(stack: Stack) -> None:
    s = stack
    with s.hub.db.begin() as c:  # a person of the AMER wave is already in the CRM (typed in by a user)
        c.execute(insert(contacts).values(id="pre-existing-1", email=PRE_EXISTING, first_name="Pat",
                                          last_name="Existing", title="VP Sales"))

    # plan: counts, coverage, overlaps, matches
    p = plan(s.hub, "emea")
    by = {x.stream: x for x in p.streams}
    assert (by["accounts"].records, by["contacts"].records, by["opportunities"].records) == (100, 300, 100)
    assert by["accounts"].would_create == 100 and "fax" in by["accounts"].unmapped_columns
    assert by["opportunities"].unmapped_columns == ["notes"]
    assert p.overlaps["atlantic"]["count"] == 100
    assert {x.stream: x.would_match for x in plan(s.hub, "amer").streams}["contacts"] == 1

    # dry run: the same answers, nothing written
    before = _counts(s)
    dry = WaveRunner(s.hub, "emea").run(dry_run=True)
    assert (dry.total("created"), dry.total("rejected")) == (500, 0)
    assert _counts(s) == before

    # wave 1, killed mid-run (a real process, SIGKILL), then resumed
    watch = _reader(s.hub_url)
    proc = _cli(s, "migrate", "run", "emea", "--json")
    deadline = time.monotonic() + 120
    while True:
        assert proc.poll() is None, f"the run ended before the kill point\n{_output(s)}"
        assert time.monotonic() < deadline
        with watch.connect() as c:
            n = c.execute(select(func.count()).select_from(migration_items).where(
                migration_items.c.wave == "emea", migration_items.c.stream == "contacts")).scalar_one()
        if n >= 60:
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    killed = _items(s, "emea")
    assert 160 <= len(killed) < 500
    with watch.connect() as c:
        assert c.execute(select(migration_waves.c.state).where(migration_waves.c.name == "emea")).scalar() == "running"
    proc = _cli(s, "migrate", "run", "emea", "--json")
    assert proc.wait(timeout=120) == 0, _output(s)
    doc = json.loads((s.workdir / "cli2.out").read_text())
    assert doc["resumed"] is True and doc["status"] == "ok"
    assert {x["stream"]: x["status"] for x in doc["streams"]}["accounts"] == "done"
    items = _items(s, "emea")
    assert len(items) == 500
    assert {k: v["entity_id"] for k, v in killed.items()} == {k: items[k]["entity_id"] for k in killed}
    counts = _counts(s)
    assert (counts["accounts"], counts["contacts"], counts["opportunities"]) == (100, 301, 100)  # no doubles

    # verify; a second run changes nothing
    v = verify(s.hub, "emea")
    assert v.ok, v.as_dict()
    assert [x.matched for x in v.streams] == [100, 300, 100]
    again = WaveRunner(s.hub, "emea").run()
    assert again.total("created") + again.total("updated") + again.total("matched") == 0
    assert _counts(s)["change_log"] == counts["change_log"]

    # waves 2 and 3
    amer = WaveRunner(s.hub, "amer").run()
    assert amer.status == "ok" and {x.stream: x.matched for x in amer.streams}["contacts"] == 1
    assert WaveRunner(s.hub, "apac").run().status == "ok"
    assert verify(s.hub, "amer").ok and verify(s.hub, "apac").ok
    matched = _contact(s, PRE_EXISTING)
    assert matched is not None and matched["id"] == "pre-existing-1" and matched["first_name"] == "First4"

    # roll back wave 2: refused while a CRM user's edit would be undone, then forced
    emea_before, apac_before = _snapshot(s, "emea"), _snapshot(s, "apac")
    edited = _items(s, "amer")[("contacts", "5")]["entity_id"]
    with s.hub.db.begin() as c:
        c.execute(update(contacts).where(contacts.c.id == edited).values(title="Edited in the CRM"))
    refused = rollback(s.hub, "amer")
    assert not refused.applied and refused.conflict_count == 1
    assert refused.conflicts[0]["legacy_id"] == "5"
    assert len(_items(s, "amer")) == 500  # nothing changed
    done = rollback(s.hub, "amer", force=True)
    assert done.applied and done.deleted == 499 and done.restored == 1 and done.unlinked == 1
    assert _items(s, "amer") == {}
    restored = _contact(s, PRE_EXISTING)
    assert restored is not None
    assert (restored["first_name"], restored["last_name"], restored["title"], restored["account_id"]) == \
        ("Pat", "Existing", "VP Sales", None)
    counts = _counts(s)
    assert (counts["accounts"], counts["contacts"], counts["opportunities"]) == (200, 601, 200)
    assert _snapshot(s, "emea") == emea_before and _snapshot(s, "apac") == apac_before
    assert verify(s.hub, "emea").ok and verify(s.hub, "apac").ok

    # legacy edits while both systems run: a delta brings wave 1's over, not wave 3's
    later = datetime(2030, 1, 1, 12, 0, 0)
    _edit_person(s, 2, job_title="Chief Buyer", updated_on=later)  # EMEA (company 1)
    _edit_person(s, 9, job_title="Not this wave", updated_on=later)  # APAC (company 3)
    with s.legacy.begin() as c:
        c.execute(insert(people).values(id=10_001, company_id=1, first_name="New", last_name="Person",
                                        email="new.person@company1.example.com", stage="lead", updated_on=later))
    d = WaveRunner(s.hub, "emea").delta()
    by_stream = {x.stream: x for x in d.streams}
    assert by_stream["contacts"].updated == 1 and by_stream["contacts"].created == 1
    assert _contact(s, "person2@company1.example.com")["title"] == "Chief Buyer"  # type: ignore[index]
    assert _contact(s, "person9@company3.example.com")["title"] != "Not this wave"  # type: ignore[index]
    assert _contact(s, "new.person@company1.example.com") is not None

    # cut over wave 1: crm owns it; later legacy edits to it are not applied
    cut = cutover(s.hub, "emea")
    assert cut.done, cut.reason
    _edit_person(s, 3, job_title="Edited in legacy after cutover", updated_on=datetime(2031, 1, 1))
    held = WaveRunner(s.hub, "emea").delta()
    assert {x.stream: x.held for x in held.streams}["contacts"] == 1
    assert _contact(s, "person3@company1.example.com")["title"] != "Edited in legacy after cutover"  # type: ignore[index]
    with pytest.raises(MigrateError, match="cut over"):
        WaveRunner(s.hub, "emea").run()
    with s.hub.db.connect() as c:  # the per-page look-up a plain sync of `legacy` would need (held_ids)
        assert held_ids(c, "legacy", "contacts", ["1", "2", "3", "800"]) == {"1": "emea", "2": "emea", "3": "emea"}

    # a rolled-back wave runs again; status shows every wave
    assert WaveRunner(s.hub, "amer").run().status == "ok"
    proc = _cli(s, "migrate", "status", "--json")
    assert proc.wait(timeout=60) == 0, _output(s)
    status = {w["wave"]: w for w in json.loads((s.workdir / "cli3.out").read_text())}
    assert (status["emea"]["state"], status["amer"]["state"], status["apac"]["state"]) == \
        ("cut_over", "migrated", "migrated")
    assert status["emea"]["records"] == {"accounts": 100, "contacts": 301, "opportunities": 100}
    assert status["emea"]["last_verify_ok"] is True and status["atlantic"]["state"] == "planned"
    with s.hub.db.connect() as c:  # the change log tells the rollback apart from the sources
        assert c.execute(select(func.count()).select_from(change_log).where(
            change_log.c.source == "migrate.amer")).scalar_one() == 500

    # a plain sync of the legacy source (not `migrate delta`) skips the cut-over wave too, and says why
    engine = s.hub.engine
    conn = engine.build("legacy")
    try:
        synced = engine.run_stream(conn, "contacts", full=True)
    finally:
        conn.close()
    assert synced.status == "ok", synced.error
    assert _contact(s, "person3@company1.example.com")["title"] != "Edited in legacy after cutover"  # type: ignore[index]
    with s.hub.db.connect() as c:
        reasons = [f["_rejected"]["*"]["reason"] for f in c.execute(select(change_log.c.fields).where(
            change_log.c.op == "reject", change_log.c.source == "legacy")).scalars() if "*" in f.get("_rejected", {})]
    assert reasons and all(r == "wave emea is cut over: crm owns these records" for r in reasons)
    watch.dispose()
