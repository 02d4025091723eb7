"""The `crmhub` command line (typer + rich)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.markup import escape

from hub.auth.cli import auth_app
from hub.cli_hub import open_hub
from hub.config import ConfigError
from hub.tables import table

app = typer.Typer(help="crmhub: sync vendors into one canonical CRM store.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
connectors_app = typer.Typer(help="Installed and configured connectors.", no_args_is_help=True)
sync_app = typer.Typer(help="Run syncs.", no_args_is_help=True)
retries_app = typer.Typer(help="The retry queue and its dead letters.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(connectors_app, name="connectors")
app.add_typer(sync_app, name="sync")
app.add_typer(retries_app, name="retries")
app.add_typer(auth_app, name="auth")

out = Console()
err = Console(stderr=True)
_state: dict[str, Any] = {"config": None}

ConfigOpt = Annotated[str | None, typer.Option("--config", "-c", envvar="CRMHUB_CONFIG",
                                                help="crmhub.yaml to use (default ./crmhub.yaml)")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print one JSON document")]


@app.callback()
def main(config: ConfigOpt = None) -> None:
    _state["config"] = config


def _dump(doc: Any) -> None:
    sys.stdout.write(orjson.dumps(doc, default=str, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode() + "\n")


def _hub(ready: bool = True) -> AbstractContextManager[Any]:
    return open_hub(_state["config"], err, ready=ready)


# -- db ------------------------------------------------------------------------------------------

@db_app.command("upgrade")
def db_upgrade(revision: str = "head") -> None:
    """Apply the schema migrations (Alembic) to the configured database."""
    from state.db import current_revision, upgrade

    with _hub(ready=False) as h:
        upgrade(h.db, revision)
        out.print(f"database at revision {current_revision(h.db)} ({h.db.url.render_as_string(hide_password=True)})")


# -- connectors ----------------------------------------------------------------------------------

@connectors_app.command("list")
def connectors_list(as_json: JsonOpt = False) -> None:
    """Connector kinds installed, and the instances configured."""
    from hub.registry import connector_kinds

    with _hub(ready=False) as h:
        kinds = sorted(connector_kinds())
        instances = [{"name": n, "kind": c.kind, "enabled": c.enabled,
                      "streams": [s.name for s in h.factory.build(n).enabled_streams()]}
                     for n, c in h.factory.configs.items()]
        if as_json:
            _dump({"kinds": kinds, "instances": instances})
            return
        out.print("installed kinds: " + ", ".join(kinds))
        t = table("instance", "kind", "enabled", "streams")
        for i in instances:
            t.add_row(i["name"], i["kind"], "yes" if i["enabled"] else "no", ", ".join(i["streams"]))
        out.print(t)


@connectors_app.command("check")
def connectors_check(name: Annotated[str | None, typer.Argument()] = None) -> None:
    """Make one cheap call per connector instance to prove its credentials work, and load
    the mappings of its enabled streams (a mistake is named by file, line and key)."""
    with _hub(ready=False) as h:
        bad = 0
        for n in [name] if name else h.factory.names():
            c = h.factory.build(n)
            try:
                out.print(f"[green]ok[/green]   {n}: {c.check()}")
            except Exception as e:
                bad += 1
                out.print(f"[red]fail[/red] {n}: {type(e).__name__}: {e}")
            try:
                for problem in h.engine.mapping_problems(c):
                    bad += 1
                    out.print(f"[red]fail[/red] {n}: mapping: {escape(problem)}", highlight=False)
            finally:
                c.close()
        raise typer.Exit(1 if bad else 0)


# -- sync ----------------------------------------------------------------------------------------

def _progress_printer(as_json: bool) -> tuple[Callable[[Any], None], Callable[[], None]]:
    """A rich progress display on a terminal, plain lines elsewhere (never on stdout with --json)."""
    console = err if as_json else out
    if console.is_terminal:
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        prog = Progress(SpinnerColumn(), TextColumn("{task.description}"), TextColumn("{task.fields[stats]}"),
                        TimeElapsedColumn(), console=console, transient=False)
        prog.start()
        tasks: dict[str, Any] = {}

        def on_page(r: Any) -> None:
            key = f"{r.connector}.{r.stream}"
            if key not in tasks:
                tasks[key] = prog.add_task(key, total=None, stats="")
            rate = r.read / r.seconds if r.seconds else 0
            prog.update(tasks[key], stats=f"read {r.read:,}  written {r.written:,}  failed {r.failed:,}"
                        + (f"  {rate:,.0f}/s" if rate else ""))
        return on_page, prog.stop

    last = {"t": time.monotonic()}

    def on_page_plain(r: Any) -> None:
        now = time.monotonic()
        if now - last["t"] >= 5:
            last["t"] = now
            console.print(f"{r.connector}.{r.stream}: read {r.read} written {r.written} failed {r.failed}",
                          markup=False, highlight=False)
    return on_page_plain, lambda: None


def _stream_doc(r: Any) -> dict[str, Any]:
    return {"connector": r.connector, "stream": r.stream, "status": r.status, "read": r.read,
            "written": r.written, "deleted": r.deleted, "failed": r.failed, "requests": r.requests,
            "pages": r.pages, "retried": r.retried, "cursor": r.cursor, "full_resync": r.full_resync,
            "resync_reason": r.resync_reason, "error": r.error, "run_id": r.run_id,
            "seconds": round(r.seconds, 3)}


@sync_app.command("run")
def sync_run(
    target: Annotated[str | None, typer.Argument(help="CONNECTOR or CONNECTOR.STREAM (default: all enabled)")] = None,
    full: Annotated[bool, typer.Option("--full", help="ignore stored cursors and read everything again")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Sync now: each page is one transaction, so an interrupted run resumes where it stopped."""
    with _hub() as h:
        try:
            plan = h.engine.plan(target)
        except KeyError as e:
            err.print(f"[red]error:[/red] {e.args[0]}")
            raise typer.Exit(2) from None
        on_page, stop = _progress_printer(as_json)
        started = time.perf_counter()
        results = []
        try:
            for name, stream in plan:
                conn = h.engine.build(name)
                try:
                    results.append(h.engine.run_stream(conn, stream, full=full, progress=on_page))
                finally:
                    conn.close()
        finally:
            stop()
        seconds = time.perf_counter() - started
        if as_json:
            _dump({"streams": [_stream_doc(r) for r in results], "seconds": round(seconds, 3)})
        else:
            t = table("stream", "status", "read", "written", "deleted", "failed", "requests", "seconds")
            for r in results:
                color = {"ok": "green", "busy": "yellow"}.get(r.status, "red")
                t.add_row(f"{r.connector}.{r.stream}", f"[{color}]{r.status}[/{color}]", f"{r.read:,}",
                          f"{r.written:,}", f"{r.deleted:,}", f"{r.failed:,}", f"{r.requests:,}", f"{r.seconds:.1f}")
            out.print(t)
            for r in results:
                if r.full_resync:
                    out.print(f"{r.connector}.{r.stream}: full resync ({r.resync_reason})")
                if r.error:
                    out.print(f"[red]{r.connector}.{r.stream}: {r.error}[/red]", markup=True)
        raise typer.Exit(0 if all(r.status == "ok" for r in results) else 1)


# -- status --------------------------------------------------------------------------------------

def status_doc(h: Any) -> dict[str, Any]:
    from state import repos, tokens

    now = datetime.now(UTC)
    with h.db.connect() as c:
        runs = repos.last_runs(c)
        cursors = repos.all_cursors(c)
        fails = repos.count_failures(c)
        auth = tokens.list_tokens(c)
        unassigned = _unassigned(c, h.cfg.routing)
    streams = []
    keys = {(n, s) for n in h.factory.names(enabled_only=False) for s in
            [sp.name for sp in h.factory.build(n).enabled_streams()]}
    keys |= set(runs) | set(cursors)
    for n, s in sorted(keys):
        run = runs.get((n, s))
        finished = run and run.get("finished_at")
        streams.append({
            "connector": n, "stream": s,
            "read": run["read"] if run else 0, "written": run["written"] if run else 0,
            "deleted": run["deleted"] if run else 0, "failed": run["failed"] if run else 0,
            "cursor": cursors.get((n, s)),
            "last_run": None if not run else {
                "id": run["id"], "status": run["status"], "started_at": run["started_at"],
                "finished_at": run["finished_at"], "full_resync": run["full_resync"],
                "resync_reason": run["resync_reason"], "error": run["error"], "requests": run["requests"]},
            "lag_seconds": round((now - finished).total_seconds(), 1) if finished else None,
            "retry_queue": fails.get((n, s, False), 0),
            "dead_letters": fails.get((n, s, True), 0),
        })
    return {"streams": streams, "auth": auth, "unassigned": unassigned}


def _unassigned(c: Any, routing: dict[str, Any]) -> dict[str, Any]:
    """Records the routing chain left without an owner (hub.routing): counts and the newest ids."""
    from sqlalchemy import func, select

    from state.schema import ENTITY_TABLES

    out: dict[str, Any] = {}
    for entity in ("lead", "contact"):
        if not routing.get(entity):
            continue
        t = ENTITY_TABLES[entity]
        live = (t.c.owner_id.is_(None), t.c.archived_at.is_(None))
        n = c.execute(select(func.count()).select_from(t).where(*live)).scalar_one()
        ids = c.execute(select(t.c.id).where(*live).order_by(t.c.id.desc()).limit(10)).scalars().all()
        out[entity] = {"count": n, "newest": list(ids)}
    return out


@app.command()
def status(as_json: JsonOpt = False) -> None:
    """Each stream's last run, cursor, lag, and retry-queue and dead-letter counts."""
    with _hub() as h:
        doc = status_doc(h)
        if as_json:
            _dump(doc)
            return
        t = table("stream", "last run", "read", "written", "failed", "lag", "retry queue", "dead")
        for s in doc["streams"]:
            lr = s["last_run"]
            state = "never" if not lr else lr["status"] + (" (full resync)" if lr["full_resync"] else "")
            lag = "-" if s["lag_seconds"] is None else f"{s['lag_seconds']:.0f}s"
            t.add_row(f"{s['connector']}.{s['stream']}", state, f"{s['read']:,}", f"{s['written']:,}",
                      f"{s['failed']:,}", lag, str(s["retry_queue"]), str(s["dead_letters"]))
        out.print(t)
        for s in doc["streams"]:
            if s["last_run"] and s["last_run"]["error"]:
                out.print(f"[red]{s['connector']}.{s['stream']}: {s['last_run']['error']}[/red]")
        for entity, u in doc["unassigned"].items():
            if u["count"]:
                out.print(f"{u['count']} {entity}(s) no routing rule matched, left without an owner "
                          f"(newest: {', '.join(u['newest'])}); see `crmhub explain {entity} ID owner_id`",
                          style="yellow", markup=False, highlight=False)
        for a in doc["auth"]:
            if a["needs_reauth"]:
                sub = f" --subject {a['subject']}" if a["subject"] else ""
                out.print(f"{a['connector']}{sub}: needs re-authorisation ({a['reauth_reason']}); "
                          f"run `crmhub auth login {a['connector']}{sub}`", style="red", markup=False, highlight=False)


# -- retries -------------------------------------------------------------------------------------

@retries_app.command("list")
def retries_list(
    dead: Annotated[bool, typer.Option("--dead", help="only dead letters")] = False,
    connector: Annotated[str | None, typer.Option(help="only this connector instance")] = None,
    limit: int = 100,
    as_json: JsonOpt = False,
) -> None:
    """Records that failed, with their reason; dead letters have used up their attempts."""
    from state import repos

    with _hub() as h, h.db.connect() as c:
        rows = repos.list_failures(c, connector=connector, dead=True if dead else None, limit=limit)
        if as_json:
            _dump({"retries": rows})
            return
        t = table("id", "stream", "external id", "attempts", "dead", "last failed")
        t.add_column("reason", overflow="ellipsis", no_wrap=True, max_width=70)
        for r in rows:
            t.add_row(str(r["id"]), f"{r['connector']}.{r['stream']}", r["external_id"], str(r["attempts"]),
                      "yes" if r["dead"] else "", str(r["last_failed_at"])[:19], r["reason"])
        out.print(t)
        out.print(f"{len(rows)} row(s)")


@retries_app.command("replay")
def retries_replay(
    ids: Annotated[list[int] | None, typer.Argument(help="retry-queue ids (default: with --all, every row)")] = None,
    all_: Annotated[bool, typer.Option("--all", help="replay every row, dead letters too")] = False,
    connector: Annotated[str | None, typer.Option(help="only this connector instance")] = None,
    now: Annotated[bool, typer.Option("--now/--next-sync", help="run the affected streams now")] = True,
) -> None:
    """Make rows due again (dead letters too) and, by default, run their streams now."""
    from state import repos

    if not ids and not all_ and not connector:
        err.print("name retry-queue ids, or --all, or --connector NAME")
        raise typer.Exit(2)
    with _hub() as h:
        with h.db.begin() as c:
            rows = repos.list_failures(c, connector=connector, limit=100_000)
            wanted = {r["id"] for r in rows} if not ids else set(ids)
            streams = sorted({(r["connector"], r["stream"]) for r in rows if r["id"] in wanted})
            n = repos.requeue_failures(c, sorted(wanted), datetime.now(UTC), connector)
        out.print(f"{n} row(s) due again")
        if now:
            for name, stream in streams:
                conn = h.engine.build(name)
                try:
                    r = h.engine.run_stream(conn, stream)
                finally:
                    conn.close()
                out.print(f"{name}.{stream}: {r.status}, replayed {r.retried}, failed {r.failed}")


@retries_app.command("drop")
def retries_drop(
    ids: Annotated[list[int] | None, typer.Argument()] = None,
    dead: Annotated[bool, typer.Option("--dead", help="drop every dead letter")] = False,
    connector: Annotated[str | None, typer.Option()] = None,
) -> None:
    """Give up on rows for good (their payload is deleted)."""
    from state import repos

    if not ids and not dead:
        err.print("name retry-queue ids, or --dead")
        raise typer.Exit(2)
    with _hub() as h, h.db.begin() as c:
        n = repos.drop_failures(c, ids, connector, dead_only=dead)
        out.print(f"{n} row(s) dropped")


@app.command()
def explain(
    entity: Annotated[str, typer.Argument(help="account, contact, lead, opportunity or a custom object")],
    key: Annotated[str, typer.Argument(help="canonical id, email (contact, lead), domain (account) or match key (custom object)")],
    field: Annotated[str | None, typer.Argument(help="one field (default: all)")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Why a field holds its value: its source, its rule, and every decision about it (accepted and refused)."""
    from hub.explain import ExplainError, explain_doc, render
    from hub.ownership import load_rules

    with _hub() as h:
        rules = load_rules(h.cfg.ownership, systems=list(h.cfg.connectors))
        try:
            if as_json:
                _dump(explain_doc(h.db, rules, entity, key, field))
            else:
                render(out, h.db, rules, entity, key, field)
        except ExplainError as e:
            err.print(f"[red]error:[/red] {e}")
            raise typer.Exit(e.status) from None


@app.command()
def merge(
    entity: Annotated[str, typer.Argument(help="account, contact, lead, opportunity or a custom object")],
    survivor: Annotated[str, typer.Argument(help="canonical id of the record that stays")],
    duplicate: Annotated[str, typer.Argument(help="canonical id of the record merged into it (archived, kept)")],
    as_json: JsonOpt = False,
) -> None:
    """Merge two records of one person or company: fields by the ownership rules, links and history kept."""
    from hub.merge import MergeError, merge_records
    from hub.ownership import load_rules

    with _hub() as h:
        rules = load_rules(h.cfg.ownership, systems=list(h.cfg.connectors))
        try:
            with h.db.begin() as tx:
                doc = merge_records(tx, rules, entity, survivor, duplicate)
        except MergeError as e:
            err.print(f"[red]error:[/red] {e}")
            raise typer.Exit(1) from None
    if as_json:
        _dump(doc)
        return
    out.print(f"{entity} {duplicate} merged into {survivor}: fields changed {', '.join(doc['fields_changed']) or 'none'}; "
              f"{doc['links_moved']} link(s) moved; {doc['references_repointed']} reference(s) re-pointed", markup=False)


@app.command()
def duplicates(
    entity: Annotated[str, typer.Argument(help="contact, lead or account")],
    as_json: JsonOpt = False,
) -> None:
    """Live records that share a match key (email, domain): candidates for `crmhub merge`."""
    from hub.merge import duplicates as find

    with _hub() as h, h.db.connect() as c:
        groups = find(c, entity)
    if as_json:
        _dump({"entity": entity, "groups": groups})
        return
    t = table("key", "value", "records (oldest first)")
    for g in groups:
        t.add_row(g["key"], g["value"], ", ".join(g["ids"]))
    out.print(t)


# -- activities ----------------------------------------------------------------------------------

activities_app = typer.Typer(help="The timeline: emails, meetings, calls, payments.", no_args_is_help=True)
app.add_typer(activities_app, name="activities")


@activities_app.command("relink")
def activities_relink() -> None:
    """Attach activity participants that matched no contact to contacts that exist now."""
    from hub.activities import relink

    with _hub() as h, h.db.begin() as tx:
        n = relink(tx)
    out.print(f"{n} participant(s) attached to contacts")


@activities_app.command("timeline")
def activities_timeline(
    key: Annotated[str, typer.Argument(help="contact id or email")],
    limit: Annotated[int, typer.Option(help="at most this many activities")] = 200,
    as_json: JsonOpt = False,
) -> None:
    """One contact's activities in time order (its own, and those it took part in)."""
    from sqlalchemy import func, select

    from hub.activities import timeline
    from state.schema import contacts

    with _hub() as h, h.db.connect() as c:
        cid = c.execute(select(contacts.c.id).where(
            (contacts.c.id == key) | (func.lower(contacts.c.email) == key.strip().lower()))
            .order_by(contacts.c.created_at).limit(1)).scalar()
        if cid is None:
            err.print(f"[red]error:[/red] no contact with id or email {key!r}")
            raise typer.Exit(1)
        items = timeline(c, cid, limit)
    if as_json:
        _dump({"contact_id": cid, "activities": items})
        return
    t = table("when", "type", "source", "direction", "status", "subject")
    for a in items:
        t.add_row(f"{a['occurred_at']:%Y-%m-%d %H:%M}", a["type"], a["source"], a["direction"] or "",
                  a["status"] or "", a["subject"] or "")
    out.print(t)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8080,
    public_base_url: Annotated[str | None, typer.Option(
        help="scheme://host[:port] vendors post to, when a proxy sits in front (HubSpot and Twilio sign it)")] = None,
    process_workers: Annotated[int, typer.Option(help="inbox processing threads (0: only store events)")] = 1,
) -> None:
    """Receive webhooks: POST /webhooks/{connector} (verified, stored durably before 2xx), /healthz, /metrics."""
    from hub.webhooks.cli import serve as run_server
    from hub.webhooks.server import WebhookSettings

    try:
        run_server(_state["config"], host, port, settings=WebhookSettings(public_base_url=public_base_url,
                                                                      process_workers=process_workers))
    except ConfigError as e:
        err.print(f"[red]{e.source}: invalid configuration[/red]")
        for p in e.problems:
            err.print(f"  - {p}", markup=False)
        raise typer.Exit(2) from None


@app.command()
def demo(
    contacts: Annotated[int, typer.Option(help="contacts in the sandbox")] = 2000,
    workdir: Annotated[str, typer.Option(help="where the demo's SQLite file goes")] = ".crmhub/demo",
) -> None:
    """Offline demo: a HubSpot sandbox on loopback, a full sync into SQLite, a change, an incremental sync."""
    from hub.demo import run_demo

    raise typer.Exit(run_demo(out, contacts=contacts, workdir=workdir))


# -- migrate (hub/migrate/cli.py) ----------------------------------------------------------------
from hub.migrate.cli import migrate_app  # noqa: E402 - mounted last: it reuses this module's helpers

app.add_typer(migrate_app, name="migrate")


if __name__ == "__main__":  # pragma: no cover
    app()
