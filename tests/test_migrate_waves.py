"""Waves: config errors name the key and the fix; ids files; overlaps between waves; checksums;
one run of a wave at a time."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select, update

from connectors.legacy_sql.sandbox import seed
from hub.app import Hub
from hub.config import ConfigError, parse_config
from hub.migrate.checksum import checksum, norm
from hub.migrate.plan import plan
from hub.migrate.run import WaveRunner
from hub.migrate.waves import MigrateError, load_wave
from hub.migrate.where import WhereError, match_in_memory
from hub.sdk.types import RawRecord
from state import migration_repo as mrepo
from state import repos
from state.schema import accounts, leases, migration_items, migration_rejects

ROOT = Path(__file__).resolve().parents[1]

STREAMS = {"accounts": {"table": "companies", "key": "id", "updated_at": "updated_on"},
           "contacts": {"table": "people", "key": "id", "updated_at": "updated_on"},
           "opportunities": {"table": "deals", "key": "id", "updated_at": "updated_on"}}


def test_wave_config_mistakes_name_the_key_and_the_fix() -> None:
    conns = {"legacy": {"kind": "legacy_sql", "url": "sqlite:///x.db", "streams": STREAMS}}
    with pytest.raises(ConfigError) as e:
        parse_config({"connectors": conns, "waves": {"emea": {"source": "legcy", "root": "accounts"}}})
    assert "waves.emea.source names 'legcy'" in str(e.value) and "Fix: use one of: legacy" in str(e.value)
    with pytest.raises(ConfigError) as e:
        parse_config({"connectors": conns, "waves": {"emea": {"source": "legacy", "root": "accounts",
                                                              "where": "1=1", "ids_file": "ids.txt"}}})
    assert "both `where` and `ids_file`" in str(e.value)
    with pytest.raises(ConfigError) as e:
        parse_config({"connectors": conns, "waves": {"emea": {"source": "legacy", "root": "accounts", "wher": "x"}}})
    assert "waves.emea.wher" in str(e.value)


@pytest.fixture
def hub(db_url: str, tmp_path: Path) -> Iterator[Hub]:
    legacy = f"sqlite:///{tmp_path / 'legacy.db'}"
    eng = create_engine(legacy)
    seed(eng, 12, people_per_company=2)
    eng.dispose()
    (tmp_path / "first.txt").write_text("# the first three companies\n1\n2\n3\n")
    cfg = {"database": db_url,
           "connectors": {"legacy": {"kind": "legacy_sql", "url": legacy, "page_size": 5, "streams": STREAMS}},
           "waves": {"first": {"source": "legacy", "root": "accounts", "ids_file": "first.txt"},
                     "emea": {"source": "legacy", "root": "accounts", "where": "region = 'EMEA'"},
                     "bad_root": {"source": "legacy", "root": "widgets"}}}
    (tmp_path / "crmhub.yaml").write_text(json.dumps(cfg))
    h = Hub.from_path(str(tmp_path / "crmhub.yaml")).ready()
    yield h
    h.close()


def test_an_ids_file_wave_and_an_overlapping_wave(hub: Hub) -> None:
    p = plan(hub, "emea")
    assert p.overlaps["first"] == {"count": 1, "samples": ["1"]}  # company 1 is EMEA and in the ids file
    first = WaveRunner(hub, "first").run()
    assert [s.selected for s in first.streams] == [3, 6, 3]
    emea = WaveRunner(hub, "emea").run()
    by = {s.stream: s for s in emea.streams}
    # company 1 stays in wave `first`; its contacts and deal follow it there, not here
    assert (by["accounts"].selected, by["accounts"].overlaps) == (3, 1)
    assert by["contacts"].selected == 6 and by["opportunities"].selected == 3
    with hub.db.connect() as c:
        waves = dict(c.execute(select(migration_items.c.legacy_id, migration_items.c.wave).where(
            migration_items.c.stream == "accounts")).all())
        reasons = list(c.execute(select(migration_rejects.c.reason)).scalars())
        n = c.execute(select(func.count()).select_from(accounts)).scalar_one()
    assert waves == {"1": "first", "2": "first", "3": "first", "4": "emea", "7": "emea", "10": "emea"}
    assert reasons == ["already migrated by wave first: a record belongs to one wave only"]
    assert n == 6


def test_wave_errors_say_what_to_fix(hub: Hub) -> None:
    with pytest.raises(MigrateError, match=r"no wave 'nope'.*Fix"):
        load_wave(hub, "nope")
    with pytest.raises(MigrateError, match=r"waves.bad_root.root: legacy has no stream 'widgets'. Fix"):
        load_wave(hub, "bad_root")
    with pytest.raises(MigrateError, match="a delta follows a finished run"):
        WaveRunner(hub, "emea").delta()


def test_where_in_memory_has_sql_meaning_over_nested_records() -> None:
    recs = [RawRecord("1", None, {"properties": {"region": "EMEA", "size": 10}}),
            RawRecord("2", None, {"properties": {"region": "AMER", "size": 500}})]
    assert match_in_memory(recs, "properties_region = 'EMEA' OR properties_size > 100") == {"1", "2"}
    assert match_in_memory(recs, "properties_region IN ('AMER')") == {"2"}
    with pytest.raises(WhereError, match="no such column"):
        match_in_memory(recs, "region = 'EMEA'")


def test_checksums_agree_across_database_round_trips() -> None:
    t = datetime(2020, 1, 1, 10, 0, tzinfo=UTC)
    a = {"amount": Decimal("1500.5"), "at": t, "n": None, "s": "x"}
    b = {"amount": Decimal("1500.5000"), "at": t.astimezone(timezone(timedelta(hours=2))), "n": None, "s": "x"}
    fields = ["amount", "at", "n", "s"]
    assert checksum(a, fields) == checksum(b, fields)
    assert checksum(a, fields) != checksum({**a, "s": "y"}, fields)
    assert norm(None) != norm("") and norm(Decimal("0E-4")) == norm(0)


def test_verify_names_a_record_that_differs_and_exits_non_zero(hub: Hub) -> None:
    from sqlalchemy import update
    from typer.testing import CliRunner

    from hub.cli import app
    from state.schema import contacts

    assert WaveRunner(hub, "first").run().status == "ok"
    cfg = str(hub.cfg.path)
    ok = CliRunner().invoke(app, ["--config", cfg, "migrate", "verify", "first", "--json"])
    assert ok.exit_code == 0, ok.output
    with hub.db.begin() as c:
        eid = c.execute(select(migration_items.c.entity_id).where(migration_items.c.stream == "contacts",
                                                                  migration_items.c.legacy_id == "3")).scalar_one()
        c.execute(update(contacts).where(contacts.c.id == eid).values(last_name="Changed behind our back"))
    bad = CliRunner().invoke(app, ["--config", cfg, "migrate", "verify", "first", "--json"])
    assert bad.exit_code == 1
    doc = json.loads(bad.output)
    assert doc["ok"] is False
    by = {s["stream"]: s for s in doc["streams"]}
    assert by["contacts"]["mismatched_ids"] == ["3"] and by["accounts"]["mismatched"] == 0
    assert doc["diffs"] == [{"stream": "contacts", "legacy_id": "3", "entity_id": eid, "field": "last_name",
                             "source": "Last3", "store": "Changed behind our back"}]
    plan_doc = CliRunner().invoke(app, ["--config", cfg, "migrate", "plan", "emea", "--json"])
    assert plan_doc.exit_code == 0, plan_doc.output
    planned = json.loads(plan_doc.output)
    # 4 EMEA companies, one of them (1) already in wave `first` with its people and deal
    assert planned["records"] == 4 + 6 + 3
    assert [(s["stream"], s["overlaps_migrated"]) for s in planned["streams"]] == \
        [("accounts", 1), ("contacts", 0), ("opportunities", 0)]


ISSUE_CONFIG = """
connectors:
  legacy:
    kind: legacy_sql
    url: "mysql+pymysql://root@127.0.0.1:3306/legacy_crm"
    streams:
      accounts: {table: companies, key: id, updated_at: updated_on}
      contacts: {table: people, key: id, updated_at: updated_on}
      opportunities: {table: deals, key: id, updated_at: updated_on}
waves:
  emea:
    source: legacy
    root: accounts
    where: "region = 'EMEA'"   # on the root object; contacts, opportunities and activities follow their account
"""


def test_the_config_of_the_issue_works_as_written(tmp_path: Path) -> None:
    (tmp_path / "crmhub.yaml").write_text(ISSUE_CONFIG)
    h = Hub.from_path(str(tmp_path / "crmhub.yaml"))
    w = load_wave(h, "emea")  # the packaged mappings/legacy.yaml maps the streams; nothing is read yet
    assert (w.source, w.root, w.where) == ("legacy", "accounts", "region = 'EMEA'")
    assert [(s.name, s.parent, s.ref_field) for s in w.streams] == [
        ("accounts", None, None), ("contacts", "accounts", "account_id"), ("opportunities", "accounts", "account_id")]
    h.close()


#: a second run of a wave in its own process: it stops after its first page (committed, lease held)
#: until told to go on, so the test can try a delta while it runs
HOLDER = """
import sys
from hub.app import Hub
from hub.migrate.run import WaveRunner

hub = Hub.from_path(sys.argv[1]).ready()
held = []

def on_page(rep, at):
    if not held:
        held.append(rep.stream)
        print("holding", flush=True)
        sys.stdin.readline()

rep = WaveRunner(hub, sys.argv[2], progress=on_page).run()
hub.close()
print(rep.status, flush=True)
"""


def test_a_delta_refuses_while_another_run_of_the_wave_holds_its_lease(hub: Hub) -> None:
    assert WaveRunner(hub, "emea").run().status == "ok"
    env = {k: v for k, v in os.environ.items() if k not in ("CRMHUB_CONFIG", "CRMHUB_DATABASE_URL")}
    errors = Path(str(hub.cfg.path)).parent / "holder.err"
    with errors.open("w") as err:
        holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(hub.cfg.path), "emea"], cwd=ROOT, env=env,
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True)
    try:
        assert holder.stdout is not None and holder.stdin is not None
        assert holder.stdout.readline() == "holding\n", errors.read_text()
        owner = f"{socket.gethostname()}:{holder.pid}"
        with pytest.raises(MigrateError, match=rf"wave emea is being migrated by {owner} \(lease until "):
            WaveRunner(hub, "emea").delta()
        with hub.db.connect() as c:  # the refused delta changed nothing: the pass is the holder's
            assert mrepo.get_wave(c, "emea")["pass_no"] == 2  # type: ignore[index]
            assert repos.lease_holder(c, "migrate:emea")["owner"] == owner  # type: ignore[index]
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert holder.wait(timeout=60) == 0, errors.read_text()
        assert holder.stdout.read() == "ok\n"
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
    # the holder released the lease at its end: the delta runs now
    assert WaveRunner(hub, "emea").delta().status == "ok"


def test_a_lease_of_another_machine_is_waited_out_not_taken(hub: Hub) -> None:
    assert WaveRunner(hub, "first").run().status == "ok"
    now = datetime.now(UTC)
    with hub.db.begin() as c:  # a run on another machine: its process cannot be checked from here
        assert repos.acquire_lease(c, "migrate:first", "elsewhere:4242", now, timedelta(minutes=2))
    with pytest.raises(MigrateError, match=r"wave first is being migrated by elsewhere:4242"):
        WaveRunner(hub, "first").delta()
    with hub.db.begin() as c:  # its lease runs out (time shifted in SQL, not slept)
        c.execute(update(leases).where(leases.c.name == "migrate:first").values(expires_at=now - timedelta(seconds=1)))
    assert WaveRunner(hub, "first").delta().status == "ok"
    with hub.db.connect() as c:
        assert repos.lease_holder(c, "migrate:first") is None  # released at the delta's end


def test_a_rollback_waits_for_the_wave_s_lease_and_holds_it(hub: Hub) -> None:
    from hub.migrate.rollback import rollback

    assert WaveRunner(hub, "first").run().status == "ok"
    now = datetime.now(UTC)
    with hub.db.begin() as c:  # a delta of the wave on another machine
        assert repos.acquire_lease(c, "migrate:first", "elsewhere:4242", now, timedelta(minutes=2))
    with pytest.raises(MigrateError, match=r"wave first is being migrated by elsewhere:4242 .*roll it back when"):
        rollback(hub, "first")
    with hub.db.connect() as c:
        assert c.execute(select(migration_items)).first() is not None, "nothing was undone"
    with hub.db.begin() as c:
        c.execute(update(leases).where(leases.c.name == "migrate:first").values(expires_at=now - timedelta(seconds=1)))
    assert rollback(hub, "first").applied
    with hub.db.connect() as c:
        assert repos.lease_holder(c, "migrate:first") is None  # released at its end
        assert c.execute(select(migration_items).where(migration_items.c.wave == "first")).first() is None
