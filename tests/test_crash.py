"""Crash test: SIGKILL a real `crmhub sync run` at random moments, resume, and prove the store equals the source.

The HubSpot sandbox runs as its own process with 20,000 contacts (and 2,000 companies); the sync is
`python -m hub.cli sync run --json` in a child process. The test watches the database (the per-page
counters in `hub.sync_runs`, committed with each page) and kills the child with SIGKILL once it has
passed a random point, plus a random few milliseconds, so each kill lands while pages are being
read and written: once in the companies stream, three times in the contacts full load, once in
the contacts incremental phase. Between kills it changes the source (modifies and archives
contacts) so the resumed runs also exercise the incremental phase and deletes. Then it syncs to
completion, once more to prove nothing is written twice, and compares the canonical store with
the source record by record through the same mapping the engine uses.

The kill points come from a seeded `random.Random`; the seed is printed, and
`CRMHUB_CRASH_SEED=<n>` replays one (the kill points are reproduced up to scheduling jitter).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, create_engine, func, select

from hub.mapping import load_mappings
from state.db import make_engine
from state.schema import (
    CRM,
    HUB,
    accounts,
    change_log,
    contacts,
    cursors,
    external_links,
    retry_queue,
    sync_runs,
)

ROOT = Path(__file__).resolve().parent.parent
CONNECTOR = "hubspot_crash"
TOKEN = "crash-token"
N_CONTACTS = 20_000
N_COMPANIES = 2_000  # the sandbox's default: contacts // 10
#: long: a resume must take the killed worker's lease over (its process is gone), not wait it out
LEASE_TTL = 600.0
POLL_SECONDS = 0.01
#: a kill lands this long (at most) after the progress point was seen: anywhere in the next page
MAX_KILL_DELAY = 0.06
PROC_TIMEOUT = 120.0

pytestmark = pytest.mark.slow


def _seed() -> int:
    env = os.environ.get("CRMHUB_CRASH_SEED")
    return int(env) if env else random.SystemRandom().randrange(1, 1 << 31)


def _to_ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


# -- processes -----------------------------------------------------------------------------------

@contextmanager
def _sandbox(workdir: Path) -> Iterator[str]:
    """The HubSpot sandbox as its own process; yields its URL."""
    args = [sys.executable, "-m", "connectors.hubspot.sandbox", "--contacts", str(N_CONTACTS),
            "--deals", "0", "--token", TOKEN, "--rate-limit-max", "1000000000"]
    with open(workdir / "sandbox.err", "wb") as err:
        proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=err, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line, f"the sandbox exited without a URL: {(workdir / 'sandbox.err').read_text()[-2000:]}"
        yield str(json.loads(line)["url"])
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def _write_config(workdir: Path, db_url: str, sandbox_url: str) -> Path:
    cfg = {
        "database": db_url,
        "connectors": {CONNECTOR: {
            "kind": "hubspot", "base_url": sandbox_url, "auth": {"token": TOKEN},
            "streams": ["companies", "contacts"], "requests_per_second": 100_000, "search_lag_ms": 0,
        }},
        # commits of ~300 records (three vendor pages): the companies load is several commits, so
        # a kill point in it always has commits after it (with 1,000 a late point could only be
        # seen at the last commit, and the kill landed after the stream had finished)
        "sync": {"lease_ttl_seconds": LEASE_TTL, "commit_records": 250},
    }
    path = workdir / "crmhub.yaml"
    path.write_text(json.dumps(cfg))  # JSON is YAML
    return path


class Cli:
    """Runs `python -m hub.cli --config CFG ...` children, each with its own stdout/stderr files."""

    def __init__(self, workdir: Path, config: Path):
        self.workdir, self.config = workdir, config
        self.n = 0
        self.current: subprocess.Popen[bytes] | None = None
        self.env = {k: v for k, v in os.environ.items() if k not in ("CRMHUB_CONFIG", "CRMHUB_DATABASE_URL")}

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        self.n += 1
        self.out = self.workdir / f"cli{self.n}.out"
        self.err = self.workdir / f"cli{self.n}.err"
        with open(self.out, "wb") as out, open(self.err, "wb") as err:
            self.current = subprocess.Popen([sys.executable, "-m", "hub.cli", "--config", str(self.config), *args],
                                            cwd=ROOT, stdout=out, stderr=err, env=self.env)
        return self.current

    def tail(self) -> str:
        return f"stdout: {self.out.read_text()[-1500:]}\nstderr: {self.err.read_text()[-3000:]}"

    def run(self, *args: str) -> str:
        proc = self.start(*args)
        proc.wait(timeout=PROC_TIMEOUT)
        assert proc.returncode == 0, f"crmhub {' '.join(args)} exited {proc.returncode}\n{self.tail()}"
        return self.out.read_text()

    def sync(self) -> dict[str, Any]:
        """One sync run to completion: exit 0, every stream ok; its --json document."""
        doc: dict[str, Any] = json.loads(self.run("sync", "run", "--json"))
        bad = [s for s in doc["streams"] if s["status"] != "ok"]
        assert not bad, f"streams not ok: {bad}"
        return doc

    def stop(self) -> None:
        if self.current is not None and self.current.poll() is None:
            self.current.kill()
            self.current.wait()


# -- watching the database -----------------------------------------------------------------------

def _watch_engine(db_url: str) -> Engine:
    """A reader that never takes SQLite's write lock (make_engine's BEGIN IMMEDIATE would)."""
    eng = create_engine(db_url, isolation_level="AUTOCOMMIT")
    if eng.dialect.name == "sqlite":
        eng = eng.execution_options(schema_translate_map={CRM: None, HUB: None})
    return eng


def _runs(eng: Engine) -> list[dict[str, Any]]:
    q = (select(sync_runs.c.id, sync_runs.c.stream, sync_runs.c.status, sync_runs.c.read, sync_runs.c.pages,
                sync_runs.c.full_resync)
         .where(sync_runs.c.connector == CONNECTOR).order_by(sync_runs.c.id))
    with eng.connect() as c:
        return [dict(r) for r in c.execute(q).mappings()]


def _cursor(eng: Engine, stream: str) -> dict[str, Any] | None:
    with eng.connect() as c:
        got = c.execute(select(cursors.c.cursor).where(cursors.c.connector == CONNECTOR,
                                                       cursors.c.stream == stream)).scalar()
    return json.loads(got) if isinstance(got, str) else got


def _kill_when(cli: Cli, eng: Engine, rng: random.Random, stream: str, what: str,
               reached: Callable[[list[dict[str, Any]], dict[str, Any]], bool], after_run: int) -> str:
    """SIGKILL the running sync once `reached(runs, its run of stream)` holds, after a random short delay.

    Fails if the sync ends first. Returns a description; asserts the killed run never finished.
    """
    proc = cli.current
    assert proc is not None
    deadline = time.monotonic() + PROC_TIMEOUT
    while True:
        if proc.poll() is not None:
            pytest.fail(f"the sync exited ({proc.returncode}) before the kill point ({what})\n{cli.tail()}")
        assert time.monotonic() < deadline, f"kill point never reached: {what}"
        runs = _runs(eng)
        mine = [r for r in runs if r["id"] > after_run and r["stream"] == stream]
        if mine and mine[-1]["status"] == "running" and mine[-1]["read"] > 0 and reached(runs, mine[-1]):
            break
        time.sleep(POLL_SECONDS)
    delay = rng.uniform(0, MAX_KILL_DELAY)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, f"expected death by SIGKILL, got {proc.returncode}\n{cli.tail()}"
    run = next(r for r in _runs(eng) if r["id"] == mine[-1]["id"])
    assert run["status"] == "running", f"the kill ({what}) landed after {stream} finished: {run}"
    return (f"{what}: killed {stream} run {run['id']} at read={run['read']} pages={run['pages']} "
            f"(seen at read={mine[-1]['read']}, +{delay * 1000:.0f} ms)")


def _contacts_read_at_least(n: int) -> Callable[[list[dict[str, Any]], dict[str, Any]], bool]:
    """Progress through the contacts full load: records committed by all runs so far."""
    return lambda runs, _run: sum(r["read"] for r in runs if r["stream"] == "contacts") >= n


def _last_run_id(eng: Engine) -> int:
    runs = _runs(eng)
    return runs[-1]["id"] if runs else 0


# -- the source ----------------------------------------------------------------------------------

class Source:
    def __init__(self, url: str):
        self.admin = httpx.Client(base_url=url, timeout=120)
        self.api = httpx.Client(base_url=url, timeout=120, headers={"Authorization": f"Bearer {TOKEN}"})
        self.live = {str(1001 + i) for i in range(N_CONTACTS)}  # contact ids not archived

    def close(self) -> None:
        self.admin.close()
        self.api.close()

    def change(self, rng: random.Random, modify: int, archive: int) -> str:
        r = self.admin.post("/_sandbox/modify", json={"type": "contacts", "count": modify})
        r.raise_for_status()
        changed = r.json()["ids"]
        gone = rng.sample(sorted(self.live), archive)
        r = self.admin.post("/_sandbox/archive", json={"type": "contacts", "ids": gone})
        r.raise_for_status()
        self.live -= set(gone)
        return f"source: modified {len(changed)} contacts, archived {len(gone)}"

    def all(self, obj: str, properties: list[str], archived: bool = False) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        after: str | None = None
        while True:
            params: dict[str, Any] = {"limit": 100, "properties": ",".join(properties),
                                      "archived": "true" if archived else "false"}
            if after:
                params["after"] = after
            r = self.api.get(f"/crm/v3/objects/{obj}", params=params)
            r.raise_for_status()
            data = r.json()
            out.extend(data["results"])
            after = ((data.get("paging") or {}).get("next") or {}).get("after")
            if not after:
                return out


# -- the comparison ------------------------------------------------------------------------------

def _props(paths: list[str]) -> list[str]:
    return sorted({p.split(".")[1] for p in paths if p.startswith("properties.")})


def _links(c: Any, entity: str) -> list[dict[str, Any]]:
    q = select(external_links).where(external_links.c.connector == CONNECTOR, external_links.c.entity == entity)
    return [dict(r) for r in c.execute(q).mappings()]


def _assert_store_equals_source(db_url: str, src: Source, tag: str) -> None:
    maps = load_mappings(None)
    m_contacts = maps.stream(CONNECTOR, "hubspot", "contacts")
    m_companies = maps.stream(CONNECTOR, "hubspot", "companies")
    live_c = src.all("contacts", _props(m_contacts.paths))
    archived_c = src.all("contacts", ["hs_object_id"], archived=True)
    live_a = src.all("companies", _props(m_companies.paths))
    assert {r["id"] for r in live_c} == src.live, f"{tag}: the sandbox disagrees with the test's own bookkeeping"
    assert len(live_c) + len(archived_c) == N_CONTACTS
    assert len(live_a) == N_COMPANIES

    eng = make_engine(db_url)
    try:
        with eng.connect() as c:
            c_links = _links(c, "contact")
            a_links = _links(c, "account")
            c_rows = {r["id"]: dict(r) for r in c.execute(select(contacts)).mappings()}
            a_rows = {r["id"]: dict(r) for r in c.execute(select(accounts)).mappings()}
            creates = Counter(c.execute(select(change_log.c.entity_id).where(
                change_log.c.entity == "contact", change_log.c.op == "create")).scalars())
            a_creates = Counter(c.execute(select(change_log.c.entity_id).where(
                change_log.c.entity == "account", change_log.c.op == "create")).scalars())
            queued = c.execute(select(func.count()).select_from(retry_queue)).scalar()
            cur_c = _cursor_of(c, "contacts")
            cur_a = _cursor_of(c, "companies")
    finally:
        eng.dispose()

    # links: one per source record, one per canonical entity, none dangling
    by_ext = Counter(link["external_id"] for link in c_links)
    assert [e for e, n in by_ext.items() if n > 1] == [], f"{tag}: doubled contact links"
    by_entity = Counter(link["entity_id"] for link in c_links)
    doubled = {e: n for e, n in by_entity.items() if n > 1}
    assert not doubled, f"{tag}: {len(doubled)} contact entities linked more than once"
    link_of = {link["external_id"]: link for link in c_links}
    missing = sorted(src.live - set(link_of), key=int)
    assert not missing, f"{tag}: {len(missing)} live source contacts have no link (lost), e.g. {missing[:10]}"
    archived_ids = {r["id"] for r in archived_c}
    stray = sorted(set(link_of) - src.live - archived_ids)
    assert not stray, f"{tag}: links to contacts the source never had: {stray[:10]}"
    assert set(by_entity) == set(c_rows), (
        f"{tag}: contact rows without a link: {len(set(c_rows) - set(by_entity))}, "
        f"links without a row: {len(set(by_entity) - set(c_rows))}")
    assert sum(1 for r in c_rows.values() if r["archived_at"] is None) == len(src.live), f"{tag}: live counts differ"

    # accounts: the companies stream, and the contacts' references to them
    a_link_of = {link["external_id"]: link for link in a_links}
    assert len(a_links) == len(a_link_of) == len({link["entity_id"] for link in a_links}) == N_COMPANIES
    assert set(a_rows) == {link["entity_id"] for link in a_links}
    assert all(n == 1 for n in a_creates.values()) and set(a_creates) == set(a_rows), f"{tag}: account creates"
    bad_a = []
    for rec in live_a:
        row = a_rows[a_link_of[rec["id"]]["entity_id"]]
        want = m_companies.map(rec).values
        if row["archived_at"] is not None or any(row[k] != v for k, v in want.items()):
            bad_a.append((rec["id"], {k: (row[k], v) for k, v in want.items() if row[k] != v}))
    assert not bad_a, f"{tag}: {len(bad_a)} accounts differ from the source, e.g. {bad_a[:3]}"

    # every live contact: exactly the source's values, not archived, its company resolved
    bad = []
    for rec in live_c:
        link = link_of[rec["id"]]
        row = c_rows[link["entity_id"]]
        mapped = m_contacts.map(rec)
        diff = {k: (row[k], v) for k, v in mapped.values.items() if row[k] != v}
        ref = mapped.refs.get("account_id")
        want_account = a_link_of[ref]["entity_id"] if ref else None
        if row["account_id"] != want_account:
            diff["account_id"] = (row["account_id"], want_account)
        if link["deleted_at"] is not None or row["archived_at"] is not None:
            diff["archived"] = (link["deleted_at"], row["archived_at"])
        if diff:
            bad.append((rec["id"], diff))
    assert not bad, f"{tag}: {len(bad)} live contacts differ from the source, e.g. {bad[:3]}"

    # every archived source contact that was ever linked: unlinked and archived
    not_archived = [e for e in archived_ids if e in link_of and (
        link_of[e]["deleted_at"] is None or c_rows[link_of[e]["entity_id"]]["archived_at"] is None)]
    assert not not_archived, f"{tag}: {len(not_archived)} archived source contacts still live here: {not_archived[:10]}"

    # the change log: exactly one create per contact entity, none doubled, none missing
    doubled_creates = {e: n for e, n in creates.items() if n != 1}
    assert not doubled_creates, f"{tag}: {len(doubled_creates)} contacts created more than once in the change log"
    assert set(creates) == set(c_rows), f"{tag}: change-log creates do not match the contact rows"
    assert queued == 0, f"{tag}: {queued} records in the retry queue"

    # the cursors: at the end of the incremental phase, on the source's newest change
    newest_c = max(_to_ms(r["properties"]["lastmodifieddate"]) for r in live_c)
    newest_a = max(_to_ms(r["properties"]["hs_lastmodifieddate"]) for r in live_a)
    for name, cur, newest in (("contacts", cur_c, newest_c), ("companies", cur_a, newest_a)):
        assert cur is not None and cur.get("phase") == "incremental", f"{tag}: {name} cursor {cur}"
        assert cur["ts"] == newest, f"{tag}: {name} cursor ts {cur['ts']} != newest source change {newest}"
        assert cur.get("id_after") is None and not cur.get("collapsed") and cur.get("archived_after") is None, cur


def _cursor_of(c: Any, stream: str) -> dict[str, Any] | None:
    got = c.execute(select(cursors.c.cursor).where(cursors.c.connector == CONNECTOR,
                                                   cursors.c.stream == stream)).scalar()
    return json.loads(got) if isinstance(got, str) else got


def _change_log_size(db_url: str) -> int:
    eng = make_engine(db_url)
    try:
        with eng.connect() as c:
            return int(c.execute(select(func.count()).select_from(change_log)).scalar() or 0)
    finally:
        eng.dispose()


# -- the test ------------------------------------------------------------------------------------

def test_sigkill_at_random_moments_then_resume_matches_source_exactly(db_url: str, tmp_path: Path) -> None:
    seed = _seed()
    backend = "postgres" if db_url.startswith("postgresql") else "sqlite"
    tag = f"[crash {backend} seed={seed}]"
    rng = random.Random(seed)
    print(f"\n{tag} CRMHUB_CRASH_SEED={seed} replays this run")
    log: list[str] = []

    def note(line: str) -> None:
        log.append(line)
        print(f"{tag} {line}", flush=True)

    t0 = time.perf_counter()
    with _sandbox(tmp_path) as url:
        cfg = _write_config(tmp_path, db_url, url)
        cli = Cli(tmp_path, cfg)
        src = Source(url)
        eng = _watch_engine(db_url)
        try:
            cli.run("db", "upgrade")

            # 1: mid-way through the companies stream, in the very first run
            at = rng.randrange(100, 1100)
            cli.start("sync", "run", "--json")
            note(_kill_when(cli, eng, rng, "companies", f"kill 1 (companies read >= {at})",
                            lambda _runs, run: run["read"] >= at, 0))

            # 2-4: the contacts full load, at rising points; the source changes in between
            t = 0
            for k in (2, 3, 4):
                t += rng.randrange(300 if k == 2 else 1000, 5000 if k == 2 else 5500)  # <= 16,000 of 20,000
                before = _last_run_id(eng)
                cli.start("sync", "run", "--json")
                note(_kill_when(cli, eng, rng, "contacts", f"kill {k} (contacts read in all runs >= {t})",
                                _contacts_read_at_least(t), before))
                cur = _cursor(eng, "contacts")
                assert cur is not None and cur["phase"] == "full", f"{tag}: kill {k} was not in the full load: {cur}"
                note(src.change(rng, modify=rng.randrange(150, 400), archive=rng.randrange(5, 25)))

            # the rest of the full load, then the incremental phase picks up the changes
            doc = cli.sync()
            note(f"resumed to completion: {[(s['stream'], s['read'], s['written'], s['deleted']) for s in doc['streams']]}")
            assert (_cursor(eng, "contacts") or {}).get("phase") == "incremental", f"{tag}: not incremental"

            # 5: mid-way through an incremental phase of several search pages
            note(src.change(rng, modify=4000, archive=rng.randrange(10, 40)))  # 20 search pages of 200
            at = rng.randrange(200, 2600)
            before = _last_run_id(eng)
            cli.start("sync", "run", "--json")
            note(_kill_when(cli, eng, rng, "contacts", f"kill 5 (incremental, contacts read >= {at})",
                            lambda _runs, run: run["read"] >= at, before))
            assert (_cursor(eng, "contacts") or {}).get("phase") == "incremental", f"{tag}: not incremental"
            note(src.change(rng, modify=rng.randrange(50, 200), archive=rng.randrange(5, 20)))

            # resume to the end
            doc = cli.sync()
            note(f"final resume: {[(s['stream'], s['read'], s['written'], s['deleted']) for s in doc['streams']]}")
            resyncs = [r for r in _runs(eng) if r["full_resync"]]
            assert not resyncs, f"{tag}: a resume fell back to a full resync: {resyncs}"

            t1 = time.perf_counter()
            _assert_store_equals_source(db_url, src, tag)
            note(f"store equals source ({time.perf_counter() - t1:.1f} s to compare)")

            # once more: nothing new to write, nothing new in the change log
            logged = _change_log_size(db_url)
            doc = cli.sync()
            assert [s["written"] for s in doc["streams"]] == [0, 0], f"{tag}: idempotent run wrote {doc['streams']}"
            assert _change_log_size(db_url) == logged, f"{tag}: the idempotent run added change-log rows"
            note(f"idempotent run: {[(s['stream'], s['read'], s['written'], s['deleted']) for s in doc['streams']]}")
            _assert_store_equals_source(db_url, src, tag)
        finally:
            cli.stop()
            src.close()
            eng.dispose()
    note(f"passed in {time.perf_counter() - t0:.1f} s with {sum(1 for line in log if 'killed' in line)} kills")
