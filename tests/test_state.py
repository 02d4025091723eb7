"""State: schema at head on both backends, leases across processes, retry queue and dead letters."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from state import repos
from state.db import make_engine
from state.schema import metadata

NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.postgres
def test_alembic_head_matches_the_model(pg_only_url: str) -> None:
    eng = make_engine(pg_only_url)
    with eng.connect() as c:
        ctx = MigrationContext.configure(c, opts={"include_schemas": True, "compare_type": True})
        diffs = [d for d in compare_metadata(ctx, metadata)
                 if not (d[0] == "remove_table" and d[1].name == "alembic_version")]
    eng.dispose()
    assert diffs == []


def test_revisions_read_without_alembic_agree_with_alembic(db_url: str) -> None:
    from alembic.runtime.migration import MigrationContext as Ctx
    from alembic.script import ScriptDirectory

    from state.db import _version_schema, alembic_config, current_revision, head_revision

    eng = make_engine(db_url)
    assert head_revision() == ScriptDirectory.from_config(alembic_config(eng)).get_current_head()
    with eng.connect() as c:
        expected = Ctx.configure(c, opts={"version_table_schema": _version_schema(eng)}).get_current_revision()
    assert current_revision(eng) == expected == head_revision()
    eng.dispose()


def test_a_database_never_upgraded_has_no_revision(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from state.db import current_revision

    eng = make_engine(f"sqlite:///{tmp_path / 'empty.db'}")
    assert current_revision(eng) is None
    eng.dispose()


def test_no_table_name_shared_between_schemas() -> None:
    # SQLite maps both schemas onto one database
    names = [t.name for t in metadata.sorted_tables]
    assert len(names) == len(set(names))


def test_lease_excludes_second_owner_until_expiry(db_url: str) -> None:
    eng = make_engine(db_url)
    ttl = timedelta(seconds=60)
    with eng.begin() as c:
        assert repos.acquire_lease(c, "stream:x.y", "a", NOW, ttl)
    with eng.begin() as c:
        assert not repos.acquire_lease(c, "stream:x.y", "b", NOW + timedelta(seconds=59), ttl)
        assert repos.acquire_lease(c, "stream:x.y", "a", NOW + timedelta(seconds=59), ttl), "re-entrant"
    with eng.begin() as c:
        # a's renewal moved expiry to 119 s; b takes over only after that
        assert not repos.acquire_lease(c, "stream:x.y", "b", NOW + timedelta(seconds=118), ttl)
        assert repos.acquire_lease(c, "stream:x.y", "b", NOW + timedelta(seconds=120), ttl)
    with eng.begin() as c:
        assert not repos.renew_lease(c, "stream:x.y", "a", NOW + timedelta(seconds=121), ttl), "a was fenced off"
    eng.dispose()


HOLDER = textwrap.dedent("""
    import sys, time
    from datetime import UTC, datetime, timedelta
    from state import repos
    from state.db import make_engine
    eng = make_engine(sys.argv[1])
    with eng.begin() as c:
        ok = repos.acquire_lease(c, "stream:hubspot_main.contacts", sys.argv[2], datetime.now(UTC), timedelta(seconds=30))
    print("acquired" if ok else "busy", flush=True)
    if ok and sys.argv[3] == "hold":
        sys.stdin.readline()  # hold until told to go
        with eng.begin() as c:
            repos.release_lease(c, "stream:hubspot_main.contacts", sys.argv[2])
        print("released", flush=True)
""")


@pytest.mark.postgres
def test_lease_excludes_another_process_on_postgres(pg_only_url: str) -> None:
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, pg_only_url, "worker-a", "hold"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdin is not None
        assert holder.stdout.readline().strip() == "acquired"
        other = subprocess.run([sys.executable, "-c", HOLDER, pg_only_url, "worker-b", "once"],
                               capture_output=True, text=True, timeout=60)
        assert other.stdout.strip() == "busy", other.stderr
        holder.stdin.write("go\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "released"
        again = subprocess.run([sys.executable, "-c", HOLDER, pg_only_url, "worker-b", "once"],
                               capture_output=True, text=True, timeout=60)
        assert again.stdout.strip() == "acquired", again.stderr
    finally:
        holder.kill()
        holder.wait()


def test_retry_queue_counts_attempts_and_dead_letters(db_url: str) -> None:
    eng = make_engine(db_url)
    fail = [{"external_id": "42", "payload": {"id": "42", "properties": {"email": "nope"}}, "reason": "bad email"}]
    for i in range(3):
        with eng.begin() as c:
            repos.record_failures(c, "hs", "contacts", fail, NOW + timedelta(minutes=i), timedelta(minutes=1), 3)
    with eng.begin() as c:
        (row,) = repos.list_failures(c)
        assert row["attempts"] == 3 and row["dead"] is True
        assert row["payload"] == fail[0]["payload"] and row["reason"] == "bad email"
        assert repos.due_failures(c, "hs", "contacts", NOW + timedelta(days=1)) == [], "dead letters are not due"
        assert repos.count_failures(c) == {("hs", "contacts", True): 1}
        assert repos.requeue_failures(c, [row["id"]], NOW) == 1
        (due,) = repos.due_failures(c, "hs", "contacts", NOW)
        assert due["dead"] is False and due["attempts"] == 0
        assert repos.clear_failures(c, "hs", "contacts", ["42"]) == 1
    eng.dispose()


def test_cursor_roundtrip(db_url: str) -> None:
    eng = make_engine(db_url)
    with eng.begin() as c:
        repos.put_cursor(c, "hs", "contacts", {"phase": "full", "after": "NTI1Cg%3D%3D"}, NOW)
        repos.put_cursor(c, "hs", "contacts", {"phase": "incremental", "ts": 1}, NOW)
    with eng.connect() as c:
        assert repos.get_cursor(c, "hs", "contacts") == {"phase": "incremental", "ts": 1}
    eng.dispose()


def test_lease_of_a_dead_worker_on_this_host_is_taken_over(db_url: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A sync killed with SIGKILL leaves its lease; the next run on the same host takes it over at once."""
    import socket

    from hub.config import parse_config
    from hub.sync import SyncEngine

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_owner = f"{socket.gethostname()}:{dead.stdout.strip()}"
    eng = make_engine(db_url)
    now = datetime.now(UTC)
    with eng.begin() as c:
        assert repos.acquire_lease(c, "stream:x.contacts", dead_owner, now, timedelta(hours=1))
        assert repos.acquire_lease(c, "stream:x.other", f"{socket.gethostname()}:1", now, timedelta(hours=1))
        sync = SyncEngine(parse_config({}), eng, None, None)  # type: ignore[arg-type]
        assert sync._take_over_from_dead_worker(c, "stream:x.contacts")
        assert repos.lease_holder(c, "stream:x.contacts")["owner"] == sync.worker  # type: ignore[index]
        assert not sync._take_over_from_dead_worker(c, "stream:x.other"), "pid 1 is alive: no take-over"
    eng.dispose()
