"""`crmhub migrate`: plan, run (--dry-run), verify, rollback (--force), delta, cutover, status."""

from __future__ import annotations

import sys
import time
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeRemainingColumn

from hub.cli_hub import open_hub
from hub.migrate.waves import MigrateError
from hub.tables import table

migrate_app = typer.Typer(help="Wave migrations from a legacy source (docs/migrations.md).", no_args_is_help=True)

out = Console()
err = Console(stderr=True)
WaveArg = Annotated[str, typer.Argument(help="the wave's name under `waves:` in crmhub.yaml")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print one JSON document")]


def _dump(doc: Any) -> None:
    sys.stdout.write(orjson.dumps(doc, default=str, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode()
                     + "\n")


def _hub(ctx: typer.Context) -> AbstractContextManager[Any]:
    """The hub of `crmhub --config ...` (read from the root command's parameters)."""
    return open_hub(ctx.find_root().params.get("config"), err, errors=(MigrateError,))


def _report_path(h: Any, wave: str, what: str) -> Path:
    d = h.cfg.base_dir() / ".crmhub" / "migrate"
    d.mkdir(parents=True, exist_ok=True)
    return d / f"{wave}-{what}.json"


def _progress(as_json: bool) -> tuple[Any, Any]:
    """A progress bar per stream: records read, rate, and an ETA when the source tells how far its read
    is (hub.migrate.run.read_progress: bytes of a CSV file, or rows against a table's count)."""
    if as_json or not out.is_terminal:
        return None, None
    bar = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[read]:,} read"),
                   TextColumn("{task.fields[rate]:,.0f}/s"), TimeRemainingColumn(), console=out)
    tasks: dict[str, TaskID] = {}
    starts: dict[str, tuple[float, int]] = {}

    def on_page(rep: Any, at: Any) -> None:
        if rep.stream not in tasks:
            # measured from the first page on, so a resume's jump to its position is not speed
            tasks[rep.stream] = bar.add_task(rep.stream, total=at.total, completed=at.done, read=rep.read, rate=0.0)
            starts[rep.stream] = (time.perf_counter(), rep.read)
            return
        t0, read0 = starts[rep.stream]
        spent = time.perf_counter() - t0
        rate = (rep.read - read0) / spent if spent > 0 else 0.0
        bar.update(tasks[rep.stream], total=at.total, completed=at.done, read=rep.read, rate=rate)

    return bar, on_page


def _run_table(rep: Any) -> None:
    t = table("stream", "status", "read", "selected", "created", "matched", "updated", "unchanged", "rejected",
              "overlaps", "held", "seconds")
    for s in rep.streams:
        t.add_row(s.stream, s.status, f"{s.read:,}", f"{s.selected:,}", f"{s.created:,}", f"{s.matched:,}",
                  f"{s.updated:,}", f"{s.unchanged:,}", f"{s.rejected:,}", f"{s.overlaps:,}", f"{s.held:,}",
                  f"{s.seconds:.1f}")
    out.print(t)
    for s in rep.streams:
        if s.error:
            out.print(f"[red]{s.stream}[/red]: {s.error}", highlight=False)
    if rep.rejects:
        out.print(f"rejected rows (first {len(rep.rejects)}; all in hub.migration_rejects):")
        for r in rep.rejects:
            out.print(f"  {r['stream']} {r['legacy_id']}: {r['reason']}", markup=False, highlight=False)


@migrate_app.command("plan")
def plan_cmd(ctx: typer.Context, wave: WaveArg, as_json: JsonOpt = False,
             report: Annotated[Path | None, typer.Option(help="where to write the JSON report")] = None) -> None:
    """What a run of WAVE would do (a dry run), mapping coverage, duplicates, matches, overlaps, time."""
    from hub.migrate.plan import plan

    with _hub(ctx) as h:
        rep = plan(h, wave)
        doc = rep.as_dict()
        path = report or _report_path(h, wave, "plan")
        path.write_bytes(orjson.dumps(doc, default=str, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS))
        if as_json:
            _dump(doc)
            return
        est = f"{rep.estimate_seconds:.1f}" if rep.estimate_seconds < 10 else f"{rep.estimate_seconds:,.0f}"
        out.print(f"wave [bold]{rep.wave}[/bold]: {rep.source}.{rep.root} where {rep.where or 'all'} — "
                  f"{rep.records:,} records, estimated {est} s")
        t = table("stream", "read", "records", "create", "match", "update", "reject", "conflicts", "overlaps")
        for s in rep.streams:
            t.add_row(s.stream, f"{s.read:,}", f"{s.records:,}", f"{s.would_create:,}", f"{s.would_match:,}",
                      f"{s.would_update:,}", f"{s.would_reject:,}", f"{s.conflicts:,}", f"{s.overlaps_migrated:,}")
        out.print(t)
        for s in rep.streams:
            if s.unmapped_columns:
                out.print(f"{s.stream}: columns no mapping reads: {', '.join(s.unmapped_columns)}", highlight=False)
            for f, info in s.transform_failures.items():
                samples = "; ".join(f"{x['legacy_id']}: {x['error']}" for x in info["samples"])
                out.print(f"{s.stream}.{f}: {info['count']:,} values fail the transform ({samples})",
                          markup=False, highlight=False)
            if s.duplicates:
                out.print(f"{s.stream}: {s.duplicates['count']:,} duplicates by {s.duplicates['key']} "
                          f"(e.g. {', '.join(s.duplicates['samples'])})", markup=False, highlight=False)
            for f, info in s.conflict_fields.items():
                samples = "; ".join(f"{x['legacy_id']}: {x['reason']}" for x in info["samples"])
                out.print(f"{s.stream}.{f}: the ownership rules refuse {info['count']:,} values of {rep.source} "
                          f"({info['rule']}; {samples})", markup=False, highlight=False)
        for other, o in rep.overlaps.items():
            out.print(f"[yellow]overlap[/yellow] with wave {other}: {o['count']:,} root records "
                      f"(e.g. {', '.join(o['samples'])}); the wave that runs first keeps them", highlight=False)
        if rep.left_out:
            out.print(f"streams not related to {rep.root}, left out: {', '.join(rep.left_out)}")
        if rep.rejects:
            total = sum(s.would_reject for s in rep.streams)
            out.print(f"rows a run would reject ({len(rep.rejects):,} of {total:,} listed):")
            for r in rep.rejects:
                out.print(f"  {r['stream']} {r['legacy_id']}: {r['reason']}", markup=False, highlight=False)
        out.print(f"report: {path}", highlight=False)


@migrate_app.command("run")
def run_cmd(ctx: typer.Context, wave: WaveArg, dry_run: Annotated[bool, typer.Option("--dry-run", help="every step but the commit")] = False,
            as_json: JsonOpt = False) -> None:
    """Migrate WAVE (resumes a run that was stopped); --dry-run writes nothing."""
    from hub.migrate.run import WaveRunner

    with _hub(ctx) as h:
        bar, on_page = _progress(as_json)
        runner = WaveRunner(h, wave, progress=on_page)
        if bar is not None:
            with bar:
                rep = runner.run(dry_run=dry_run)
        else:
            rep = runner.run(dry_run=dry_run)
        if as_json:
            _dump(rep.as_dict())
        else:
            out.print(f"wave {rep.wave}: {'dry run, nothing written' if dry_run else 'run'}"
                      f"{' (resumed)' if rep.resumed else ''}, pass {rep.pass_no}, {rep.seconds:.1f} s")
            _run_table(rep)
        raise typer.Exit(0 if rep.status == "ok" else 1)


@migrate_app.command("delta")
def delta_cmd(ctx: typer.Context, wave: WaveArg, as_json: JsonOpt = False,
              deletes: Annotated[bool, typer.Option("--deletes", help="also find rows deleted from the legacy "
                                                    "tables (reads every id of the wave: run it less often)")] = False,
              ) -> None:
    """Bring over what changed in the source since WAVE's last run or delta (soft deletes included)."""
    from hub.migrate.run import WaveRunner

    with _hub(ctx) as h:
        rep = WaveRunner(h, wave).delta(deletes=deletes)
        if as_json:
            _dump(rep.as_dict())
        else:
            out.print(f"wave {rep.wave}: delta, {rep.seconds:.1f} s")
            _run_table(rep)
        raise typer.Exit(0 if rep.status == "ok" else 1)


@migrate_app.command("verify")
def verify_cmd(ctx: typer.Context, wave: WaveArg, as_json: JsonOpt = False,
               sample: Annotated[int, typer.Option(help="field differences to show")] = 20) -> None:
    """Compare WAVE's source records with the canonical store; exit 1 on any mismatch."""
    from hub.migrate.verify import verify

    with _hub(ctx) as h:
        rep = verify(h, wave, sample=sample)
        if as_json:
            _dump(rep.as_dict())
        else:
            t = table("stream", "source", "crosswalk", "matched", "mismatched", "missing", "rejected", "gone",
                      "owned elsewhere", "changed since")
            for s in rep.streams:
                t.add_row(s.stream, f"{s.source:,}", f"{s.crosswalk:,}", f"{s.matched:,}", f"{s.mismatched:,}",
                          f"{s.missing:,}", f"{s.rejected:,}", f"{s.gone_from_source:,}", f"{s.owned_elsewhere:,}",
                          f"{s.changed_since:,}")
            out.print(t)
            for s in rep.streams:
                if s.mismatched_ids:
                    out.print(f"{s.stream}: differing records: {', '.join(s.mismatched_ids)}", highlight=False)
            for d in rep.diffs:
                out.print(f"  {d['stream']} {d['legacy_id']}.{d['field']}: source {d['source']!r} != store "
                          f"{d['store']!r}", markup=False, highlight=False)
            out.print("[green]verified[/green]" if rep.ok else "[red]differences found[/red]")
        raise typer.Exit(0 if rep.ok else 1)


@migrate_app.command("rollback")
def rollback_cmd(ctx: typer.Context, wave: WaveArg, force: Annotated[bool, typer.Option("--force", help="also undo fields others "
                                                                    "changed since")] = False,
                 as_json: JsonOpt = False) -> None:
    """Remove what WAVE created and restore what it changed; refuses over later changes without --force."""
    from hub.migrate.rollback import rollback

    with _hub(ctx) as h:
        rep = rollback(h, wave, force=force)
        if as_json:
            _dump(rep.as_dict())
        elif rep.applied:
            out.print(f"wave {wave} rolled back: {rep.deleted:,} deleted, {rep.restored:,} restored, "
                      f"{rep.unlinked:,} unlinked")
        else:
            out.print(f"[red]not rolled back[/red]: {rep.conflict_count:,} records were changed since by another "
                      "system or a CRM user (--force undoes them too):")
            for c in rep.conflicts:
                fields = ", ".join(f"{f['field'] or '(record)'} by {f['by']}" for f in c["fields"])
                out.print(f"  {c['stream']} {c['legacy_id']} ({c['entity_id']}): {fields}", markup=False,
                          highlight=False)
        raise typer.Exit(0 if rep.applied else 1)


@migrate_app.command("cutover")
def cutover_cmd(ctx: typer.Context, wave: WaveArg, force: Annotated[bool, typer.Option("--force", help="cut over although verify "
                                                                   "found differences")] = False,
                as_json: JsonOpt = False) -> None:
    """A last delta and a verify, then crm owns WAVE's records (the source stops writing them)."""
    from hub.migrate.cutover import cutover

    with _hub(ctx) as h:
        rep = cutover(h, wave, force=force)
        if as_json:
            _dump(rep.as_dict())
        elif rep.done:
            out.print(f"wave {wave} cut over: crm owns its records; the source no longer writes them")
        else:
            out.print(f"[red]not cut over[/red]: {rep.reason}", highlight=False)
        raise typer.Exit(0 if rep.done else 1)


@migrate_app.command("status")
def status_cmd(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Every wave: state, records per stream, rejects, last run, last verification."""
    from hub.migrate.status import status

    with _hub(ctx) as h:
        rows = status(h)
        if as_json:
            _dump(rows)
            return
        t = table("wave", "state", "records", "rejected", "last run", "verified", "cut over")
        for r in rows:
            recs = ", ".join(f"{s} {n:,}" for s, n in r["records"].items())
            rej = sum(r["rejected"].values())
            ver = "" if r["last_verify_ok"] is None else ("ok" if r["last_verify_ok"] else "FAILED")
            t.add_row(r["wave"], r["state"], recs, f"{rej:,}", str(r["last_run_at"] or ""),
                      f"{ver} {r['last_verified_at'] or ''}".strip(), str(r["cutover_at"] or ""))
        out.print(t)
